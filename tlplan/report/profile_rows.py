"""The profile table's columns and summary lines, as plain strings: shared by every text format."""

from __future__ import annotations

from typing import Any

from ..ops.registry import UNSUPPORTED
from ..profiling import ProfileReport
from . import units

KB_NOTE = ("trained: trainable params; MMACs: millions of multiply-accumulates; kept KB: bytes kept for backward; "
           "KB = 1024 bytes")

#: ``--columns`` names, in table order: the fixed columns, then measured and predicted times (when present)
COLUMN_NAMES = ("layer", "op", "output", "params", "trained", "macs-fwd", "macs-bwd", "kept", "ms-fwd", "ms-bwd",
                "predicted-fwd", "predicted-bwd")


def _named_columns(report: ProfileReport) -> list[tuple[str, str]]:
    """(``--columns`` name, header) of each column the report has, in table order."""
    headers = ["layer", "op", "output", "params", "trained", "MMACs fwd", "MMACs bwd", "kept KB"]
    if report.measured:
        headers += ["measured ms fwd", "measured ms bwd"] if report.predicted else ["ms fwd", "ms bwd"]
    names = list(COLUMN_NAMES[: len(headers)])
    if report.predicted:
        headers += predicted_columns(report)
        names += ["predicted-fwd", "predicted-bwd"]
    return list(zip(names, headers, strict=True))


def columns(report: ProfileReport) -> list[str]:
    return [header for _, header in _named_columns(report)]


def column_names(report: ProfileReport) -> list[str]:
    """The ``--columns`` name of each of ``columns(report)``."""
    return [name for name, _ in _named_columns(report)]


def select(report: ProfileReport, chosen: tuple[str, ...] | None) -> list[int]:
    """Indexes of the columns ``chosen`` names (all when None), in the table's order. A name the
    report has no column for (``ms-fwd`` without measuring) is left out; an unknown one is the
    caller's to refuse (``COLUMN_NAMES``)."""
    names = column_names(report)
    if chosen is None:
        return list(range(len(names)))
    return [i for i, name in enumerate(names) if name in chosen]


def predicted_columns(report: ProfileReport) -> list[str]:
    """``<device> ms fwd (fitted)`` or ``(datasheet)``: whose time, and where it comes from."""
    p = report.predicted or {}
    how = "datasheet" if p.get("device_source") == "datasheet" else "fitted"
    return [f"{p.get('device')} ms fwd ({how})", f"{p.get('device')} ms bwd ({how})"]


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
        if report.predicted:
            lat = row.latency_ms_predicted or {}
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
    if report.predicted:
        lat = t.get("latency_ms_predicted", {})
        cells += [units.ms(lat.get("fwd")), units.ms(lat.get("bwd"))]
    return cells


class _Numeric:
    """Columns holding numbers, right-aligned in every format: the fixed ones and every ms column."""

    FIXED = frozenset({"params", "trained", "MMACs fwd", "MMACs bwd", "kept KB"})

    def __contains__(self, col: object) -> bool:
        return col in self.FIXED or (isinstance(col, str) and ("ms fwd" in col or "ms bwd" in col))


NUMERIC = _Numeric()


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
    if m.frozen_bits != 32:  # --frozen-bits 8: said where the figure is, PyTorch itself holds 32
        return f"trained {units.human_bytes(m.trainable_param_bytes)}, frozen {units.human_bytes(m.frozen_param_bytes)} at {m.frozen_bits} bits"
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
        ("peak memory", f"{units.human_bytes(m.peak_bytes)} at {m.peak_at}",
         "predicted by a simulated timeline" + _cuda_peak_note(report.sources.get("peak_bytes", ""))),
        ("TinyTL's convention", f"{units.human_bytes(m.tinytl_bytes)} = model {units.human_bytes(m.tinytl_bytes - m.tinytl_activation_bytes)} "
         f"(frozen weights 8-bit, trained 32-bit) + peak activation {units.human_bytes(m.tinytl_activation_bytes)}"
         + (f" at {m.tinytl_peak_at}" if m.tinytl_peak_at else ""),
         "derived: TinyTL's own arithmetic, to set beside its tables; not what this runtime allocates"),
    ]
    if report.measured:
        lat = t.get("latency_ms", {})
        lines.append((
            "time",
            f"training step {units.ms(t.get('measured_step_ms'))} ms; layers alone: forward {units.ms(lat.get('fwd'))} ms, "
            f"backward {units.ms(lat.get('bwd'))} ms",
            f"measured here: {report.measured['host']}, {report.measured['statistic']} of {report.measured['repeats']}",
        ))
    if report.predicted:
        kind = "datasheet" if report.predicted.get("device_source") == "datasheet" else "measured"
        lines.append(("device", report.device or "", f"profile source: {kind}"))
        lines.append(predicted_line(report))
    elif report.device:
        lines.append(("device", report.device, "reported only: this profile has no measurements or datasheet figures to predict from"))
    return lines


def predicted_line(report: ProfileReport) -> tuple[str, str, str]:
    t, p = report.totals, report.predicted or {}
    lat = t.get("latency_ms_predicted", {})
    # the label names the device: the value does not repeat it
    value = (f"training step {units.ms(t.get('predicted_step_ms'))} ms; layers forward "
             f"{units.ms(lat.get('fwd'))} ms, backward {units.ms(lat.get('bwd'))} ms")
    if p.get("device_source") == "datasheet":
        return (f"time on {p.get('device')}", value, f"derived from the {p.get('device')} datasheet: a roofline, "
                "source: datasheet, not measured")
    value += f", per-step overhead {units.ms(p.get('overhead_ms'))} ms"
    acc = p.get("accuracy")
    how = f"predicted from a profile fitted on measurements made on {p.get('device')}"
    if "adapted from" in str(p.get("source")):
        how = f"predicted from a profile {p.get('source')}"
    if p.get("drift"):
        how += f"; {p['drift']['note']}"
    if acc:
        how += f"; held-out networks: MAPE {acc.get('mape')}%, {acc.get('within_10')}% within ±10%"
    return (f"time on {p.get('device')}", value, how)


def as_records(report: ProfileReport) -> list[dict[str, Any]]:
    """Flat per-layer records for CSV: the contract's fields, latency split in two columns."""
    records = []
    for row in report.layers:
        d = row.to_dict()
        lat = d.pop("latency_ms") or {}
        d["output_shape"] = "x".join(str(d) for d in row.output_shape)  # CSV stays plain ASCII
        d["block"] = row.block or ""
        d["latency_ms_fwd"] = lat.get("fwd", "")
        d["latency_ms_bwd"] = "" if lat.get("bwd") is None else lat["bwd"]
        predicted = d.pop("latency_ms_predicted", None) or {}
        if report.predicted:
            d["latency_ms_predicted_fwd"] = predicted.get("fwd", "")
            d["latency_ms_predicted_bwd"] = "" if predicted.get("bwd") is None else predicted["bwd"]
        # CSV has no room for the report's warnings: an op without a cost rule says so in its row
        d["note"] = "no cost rule: counted as zero" if row.op == UNSUPPORTED else ""
        records.append(d)
    return records


def _cuda_peak_note(source: str) -> str:
    """How a GPU peak was counted, for the table's footnote (empty for the CPU's): the allocator's
    blocks, cuDNN's and cuBLAS's workspaces, and the compute capability cuBLAS's were sized for."""
    if "CUDA" not in source:
        return ""
    where = source.partition("; cuBLAS workspaces for ")[2]
    return (", as the CUDA caching allocator counts it, cuDNN and cuBLAS workspaces included (cuda"
            + (f"; cuBLAS's for {where}" if where else "") + ")")
