"""Reporters of ``tlplan solve --pareto``: the frontier and the named schemes beside it."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from ..solve.pareto import Frontier
from . import units
from .figure import pyplot, save_png

NOTE = "importance: the documented prior; peak: predicted by a simulated timeline; KB = 1024 bytes"


def _rows(front: Frontier) -> list[list[str]]:
    rows = [["solved", units.human_bytes(p.budget_bytes), f"{p.importance:.4f}", units.human_bytes(p.peak_bytes)] for p in front.points]
    rows += [[p.label, "-", f"{p.importance:.4f}", units.human_bytes(p.peak_bytes)] for p in front.schemes]
    return rows


COLUMNS = ("plan", "budget", "importance", "peak")


def render_table(front: Frontier, console: Console) -> None:
    table = Table(title=f"{front.model} · runtime {front.runtime} · budget → importance", caption=NOTE)
    for col in COLUMNS:
        table.add_column(col, justify="left" if col == "plan" else "right", no_wrap=True)
    for row in _rows(front):
        table.add_row(*row)
    console.print(table)


def to_json(front: Frontier) -> str:
    return json.dumps(front.to_dict(), indent=2) + "\n"


def to_csv(front: Frontier) -> str:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["plan", "budget_bytes", "importance", "peak_bytes"])
    for p in (*front.points, *front.schemes):
        w.writerow([p.label, "" if p.budget_bytes is None else p.budget_bytes, p.importance, p.peak_bytes])
    return out.getvalue()


def to_markdown(front: Frontier) -> str:
    lines = [f"### {front.model} · runtime {front.runtime} · budget → importance", "", "| plan | budget | importance | peak |",
             "|---|---:|---:|---:|"]
    lines += ["| " + " | ".join(r) + " |" for r in _rows(front)]
    return "\n".join(lines + ["", f"- {NOTE}"]) + "\n"


def plot(front: Frontier, path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    ax.plot([p.peak_bytes / 1024 for p in front.points], [p.importance for p in front.points], "o-", label="solved (frontier)")
    for p in front.schemes:
        ax.scatter([p.peak_bytes / 1024], [p.importance], marker="x")
        ax.annotate(p.label, (p.peak_bytes / 1024, p.importance), fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("predicted peak (KB = 1024 B)")
    ax.set_ylabel("importance (prior)")
    ax.set_title(f"{front.model}, {front.runtime} runtime")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_png(fig, path)
