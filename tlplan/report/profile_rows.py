"""The profile table's columns and summary lines, as plain strings: shared by every text format."""

from __future__ import annotations

from typing import Any

from ..profiling import ProfileReport
from . import units

KB_NOTE = "KB = 1024 bytes"


def columns(report: ProfileReport) -> list[str]:
    cols = ["layer", "op", "output", "params", "trained", "MMACs fwd", "MMACs bwd", "kept KB"]
    if report.measured:
        cols += ["ms fwd", "ms bwd"]
    return cols


def layer_cells(report: ProfileReport) -> list[list[str]]:
    rows = []
    for row in report.layers:
        cells = [
            row.name,
            row.op,
            units.shape(row.output_shape),
            units.count(row.params) if row.params else "",
            units.count(row.trainable_params) if row.trainable_params else "",
            units.mmacs(row.macs_fwd) if row.macs_fwd else "",
            units.mmacs(row.macs_bwd_input + row.macs_bwd_weight) if (row.macs_bwd_input + row.macs_bwd_weight) else "",
            units.kb(row.saved_bytes) if row.saved_bytes else "",
        ]
        if report.measured:
            lat = row.latency_ms or {}
            cells += [units.ms(lat.get("fwd")), units.ms(lat.get("bwd"))]
        rows.append(cells)
    return rows


def total_cells(report: ProfileReport) -> list[str]:
    t = report.totals
    cells = [
        "total",
        "",
        "",
        units.count(t["params"]),
        units.count(t["trainable_params"]),
        units.mmacs(t["macs_fwd"]),
        units.mmacs(t["macs_bwd"]),
        units.kb(t["saved_bytes"]),
    ]
    if report.measured:
        lat = t.get("latency_ms", {})
        cells += [units.ms(lat.get("fwd")), units.ms(lat.get("bwd"))]
    return cells


#: columns holding numbers: right-aligned in every format
NUMERIC = {"params", "trained", "MMACs fwd", "MMACs bwd", "kept KB", "ms fwd", "ms bwd"}


def title(report: ProfileReport) -> str:
    shape = units.shape(report.input_shape)
    return f"{report.model} · input {shape} · scheme {report.scheme} · runtime {report.runtime}"


KEPT_SOURCE = {
    "eager": "derived from PyTorch's autograd rules",
    "tlplan": "derived from the tlplan runtime's rules",
    "mcu": "derived from an int8 engine's accounting (256KB paper)",
}


def _param_note(report: ProfileReport) -> str:
    m = report.memory
    if report.runtime == "mcu":
        return f"trained, in SRAM; frozen {units.human_bytes(m.frozen_param_bytes)} in flash"
    return f"trained {units.human_bytes(m.trainable_param_bytes)}"


def summary_lines(report: ProfileReport) -> list[tuple[str, str, str]]:
    """(what, value, where the number comes from) for the summary under the table."""
    t, m = report.totals, report.memory
    lines: list[tuple[str, str, str]] = [
        ("params", f"{units.count(t['params'])} total, {units.count(t['trainable_params'])} trainable "
         f"({units.human_bytes(t['trainable_param_bytes'])})", "counted"),
        ("MACs", f"forward {units.mmacs(t['macs_fwd'])} M; backward {units.mmacs(t['macs_bwd'])} M "
         f"(input-grad {units.mmacs(t['macs_bwd_input'])} M, weight-grad {units.mmacs(t['macs_bwd_weight'])} M)",
         "derived from shapes"),
        ("kept for backward", f"{units.human_bytes(t['saved_bytes'])} (1-bit masks {units.human_bytes(m.mask_bytes)})",
         KEPT_SOURCE.get(report.runtime, "derived")),
        ("memory", f"params {units.human_bytes(m.param_bytes)} ({_param_note(report)}), "
         f"grads {units.human_bytes(m.grad_bytes)}, optimizer {units.human_bytes(m.optimizer_bytes)}, "
         f"buffers {units.human_bytes(m.buffer_bytes)}, input {units.human_bytes(m.input_bytes)}",
         "counted"),
        ("peak memory", f"{units.human_bytes(m.peak_bytes)} at {m.peak_at}", "predicted by a simulated timeline"),
    ]
    if report.measured:
        lat = t.get("latency_ms", {})
        lines.append((
            "time",
            f"training step {units.ms(t.get('measured_step_ms'))} ms; layers alone: forward {units.ms(lat.get('fwd'))} ms, "
            f"backward {units.ms(lat.get('bwd'))} ms",
            f"measured here: {report.measured['host']}, {report.measured['statistic']} of {report.measured['repeats']}",
        ))
    if report.device:
        lines.append(("device", report.device, "reported only: latency prediction needs a fitted profile"))
    return lines


def as_records(report: ProfileReport) -> list[dict[str, Any]]:
    """Flat per-layer records for CSV: the contract's fields, latency split in two columns."""
    records = []
    for row in report.layers:
        d = row.to_dict()
        lat = d.pop("latency_ms") or {}
        d["output_shape"] = units.shape(row.output_shape)
        d["block"] = row.block or ""
        d["latency_ms_fwd"] = lat.get("fwd", "")
        d["latency_ms_bwd"] = "" if lat.get("bwd") is None else lat["bwd"]
        records.append(d)
    return records
