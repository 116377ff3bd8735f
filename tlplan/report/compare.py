"""Reporters of ``tlplan compare``: a rich table, JSON, CSV and markdown."""

from __future__ import annotations

import csv
import io
import json

from rich.console import Console
from rich.table import Table

from ..comparing import CompareReport
from . import units

COLUMNS = ["scheme", "kept KB (PyTorch)", "kept KB (tlplan)", "×full", "peak KB", "×full ", "trainable", "MMACs bwd", "ms/step", "×full  "]
NOTE = ("kept: derived (exact for the runtime named); peak: predicted (tlplan runtime); "
        "ms/step: measured here (tlplan runtime); ×full: ratio to full; KB = 1024 bytes")


def _ratio(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def columns(report: CompareReport) -> list[str]:
    if not report.predicted:
        return COLUMNS
    device = report.predicted.split(" (")[0].removeprefix("predicted for ")
    return COLUMNS + [f"{device} ms/step (predicted)", "×full   "]


def note(report: CompareReport) -> str:
    return NOTE + (f"; {device_note(report)}" if report.predicted else "")


def device_note(report: CompareReport) -> str:
    return f"ms/step on the device: {report.predicted}, tlplan runtime"


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
    table = Table(title=title(report), caption=note(report))
    for col in columns(report):
        table.add_column(col, justify="left" if col == "scheme" else "right", no_wrap=True)
    for cells in rows(report):
        table.add_row(*cells)
    console.print(table)
    if report.measured:
        console.print(f"measured here: {report.measured}", highlight=False, soft_wrap=True)


def to_json(report: CompareReport) -> str:
    return json.dumps(report.to_dict(), indent=2) + "\n"


def to_csv(report: CompareReport) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["scheme", "kept_eager_bytes", "kept_tlplan_bytes", "peak_bytes", "trainable_params", "macs_bwd", "step_ms",
                     "step_ms_predicted", "predicted_for"])
    device = report.predicted.split(" (")[0].removeprefix("predicted for ") if report.predicted else ""
    for r in report.rows:
        writer.writerow([r.scheme, r.kept_eager_bytes, r.kept_tlplan_bytes, r.peak_bytes, r.trainable_params, r.macs_bwd,
                         "" if r.step_ms is None else r.step_ms, "" if r.step_ms_predicted is None else r.step_ms_predicted,
                         device])
    return out.getvalue()


def to_markdown(report: CompareReport) -> str:
    cols = columns(report)
    lines = [f"### {title(report)}", "", "| " + " | ".join(c.strip() for c in cols) + " |",
             "|" + "|".join("---" if c == "scheme" else "---:" for c in cols) + "|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows(report)]
    lines += ["", f"- {note(report)}"]
    if report.measured:
        lines.append(f"- measured here: {report.measured}")
    return "\n".join(lines) + "\n"
