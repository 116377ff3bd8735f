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
NUMERIC = set(COLUMNS[1:])
NOTE = ("kept: derived (exact for the runtime named); peak: predicted (tlplan runtime); "
        "ms/step: measured here (tlplan runtime); ×full: ratio to full; KB = 1024 bytes")


def _ratio(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def rows(report: CompareReport) -> list[list[str]]:
    out = []
    for r in report.rows:
        out.append([
            r.scheme, units.kb(r.kept_eager_bytes), units.kb(r.kept_tlplan_bytes), _ratio(report.ratio(r, "kept_tlplan_bytes")),
            units.kb(r.peak_bytes), _ratio(report.ratio(r, "peak_bytes")), units.count(r.trainable_params),
            units.mmacs(r.macs_bwd), units.ms(r.step_ms), _ratio(report.ratio(r, "step_ms")),
        ])
    return out


def title(report: CompareReport) -> str:
    return f"{report.model} · input {units.shape(report.input_shape)} · schemes compared"


def render_table(report: CompareReport, console: Console) -> None:
    table = Table(title=title(report), caption=NOTE)
    for col in COLUMNS:
        table.add_column(col, justify="right" if col in NUMERIC else "left", no_wrap=True)
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
    writer.writerow(["scheme", "kept_eager_bytes", "kept_tlplan_bytes", "peak_bytes", "trainable_params", "macs_bwd", "step_ms"])
    for r in report.rows:
        writer.writerow([r.scheme, r.kept_eager_bytes, r.kept_tlplan_bytes, r.peak_bytes, r.trainable_params, r.macs_bwd,
                         "" if r.step_ms is None else r.step_ms])
    return out.getvalue()


def to_markdown(report: CompareReport) -> str:
    lines = [f"### {title(report)}", "", "| " + " | ".join(c.strip() for c in COLUMNS) + " |",
             "|" + "|".join("---:" if c in NUMERIC else "---" for c in COLUMNS) + "|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows(report)]
    lines += ["", f"- {NOTE}"]
    if report.measured:
        lines.append(f"- measured here: {report.measured}")
    return "\n".join(lines) + "\n"
