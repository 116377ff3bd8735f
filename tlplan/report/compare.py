"""Reporters of ``tlplan compare``: a rich table, JSON, CSV and markdown."""

from __future__ import annotations

import csv
import io

from rich.console import Console
from rich.markup import escape

from ..comparing import CompareReport
from . import tables, units

COLUMNS = ["scheme", "kept KB (PyTorch)", "kept KB (tlplan)", "×full", "peak KB", "×full ", "trainable", "MMACs bwd", "ms/step", "×full  "]
NOTE = ("kept: derived (exact for the runtime named); peak: predicted (tlplan runtime); "
        "ms/step: measured here (tlplan runtime); ×full: ratio to full; KB = 1024 bytes")


def _ratio(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def columns(report: CompareReport) -> list[str]:
    if not report.predicted:
        return COLUMNS
    return COLUMNS + [f"{report.predicted.device} ms/step (predicted)", "×full   "]


def _align(cols: list[str]) -> str:
    return "l" + "r" * (len(cols) - 1)  # the scheme, then numbers


def note(report: CompareReport) -> str:
    bits = f"; peak counts frozen parameters at {report.frozen_bits} bits" if report.frozen_bits != 32 else ""
    return NOTE + bits + (f"; ms/step on the device: {report.predicted}, tlplan runtime" if report.predicted else "")


def rows(report: CompareReport) -> list[list[str]]:
    out = []
    for r in report.rows:
        cells = [
            r.scheme, units.kb(r.kept_eager_bytes), units.kb(r.kept_tlplan_bytes), _ratio(report.ratio(r, "kept_tlplan_bytes")),
            units.kb(r.peak_bytes), _ratio(report.ratio(r, "peak_bytes")), units.count(r.trainable_params),
            units.mmacs(r.macs_bwd), units.ms(r.step_ms), _ratio(report.ratio(r, "step_ms")),
        ]
        if report.predicted:
            cells += [units.ms(r.step_ms_predicted), _ratio(report.ratio(r, "step_ms_predicted"))]
        out.append(cells)
    return out


def title(report: CompareReport) -> str:
    return f"{report.model} · input {units.shape(report.input_shape)} · schemes compared"


def render_table(report: CompareReport, console: Console) -> None:
    cols = columns(report)
    console.print(tables.rich(title(report), cols, rows(report), _align(cols), caption=note(report)))
    if report.measured:
        console.print(f"measured here: {escape(str(report.measured))}", highlight=False, soft_wrap=True)
    for warning in report.warnings:
        console.print(f"[yellow]warning[/yellow]: {escape(warning)}", highlight=False, soft_wrap=True)


def to_json(report: CompareReport) -> str:
    return tables.json_text(report.to_dict(), "tlplan.compare/1")


def to_csv(report: CompareReport) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["scheme", "kept_eager_bytes", "kept_tlplan_bytes", "peak_bytes", "trainable_params", "macs_bwd", "step_ms",
                     "step_ms_predicted", "predicted_for"])
    device = report.predicted.device if report.predicted else ""
    for r in report.rows:
        writer.writerow([r.scheme, r.kept_eager_bytes, r.kept_tlplan_bytes, r.peak_bytes, r.trainable_params, r.macs_bwd,
                         "" if r.step_ms is None else r.step_ms, "" if r.step_ms_predicted is None else r.step_ms_predicted,
                         device])
    return out.getvalue()


def to_markdown(report: CompareReport) -> str:
    cols = columns(report)
    lines = [f"### {title(report)}", "", *tables.markdown(cols, rows(report), _align(cols))]
    lines += ["", f"- {note(report)}"]
    if report.measured:
        lines.append(f"- measured here: {report.measured}")
    lines += [f"- warning: {w.replace('|', '/')}" for w in report.warnings]
    return "\n".join(lines) + "\n"
