"""Reporters of ``tlplan solve --pareto``: the frontier and the named schemes beside it."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from rich.console import Console

from ..solve.pareto import Frontier
from . import tables, units
from .figure import pyplot, save_png

NOTE = "importance: the documented prior; peak: predicted by a simulated timeline; KB = 1024 bytes"


def _rows(front: Frontier) -> list[list[str]]:
    rows = [[p.label, "-" if p.budget_bytes is None else units.human_bytes(p.budget_bytes), f"{p.importance:.4f}",
             units.human_bytes(p.peak_bytes)] + ([units.ms(p.step_ms)] if front.step_on else [])
            for p in (*front.points, *front.schemes)]
    return rows


def _columns(front: Frontier) -> tuple[str, ...]:
    return ("plan", "budget", "importance", "peak") + (("ms/step (predicted)",) if front.step_on else ())


def _title(front: Frontier) -> str:
    return f"{front.model} · runtime {front.runtime} · budget → importance"


def _note(front: Frontier) -> str:
    return NOTE + (f"; ms/step: {front.step_on}" if front.step_on else "")


def render_table(front: Frontier, console: Console) -> None:
    cols = _columns(front)
    console.print(tables.rich(_title(front), cols, _rows(front), "l" + "r" * (len(cols) - 1), caption=_note(front)))


def to_json(front: Frontier) -> str:
    return tables.json_text(front.to_dict(), "tlplan.pareto/1")


def to_csv(front: Frontier) -> str:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["plan", "budget_bytes", "importance", "peak_bytes", "step_ms_predicted", "predicted_for"])
    device = front.step_on.device if front.step_on else ""
    for p in (*front.points, *front.schemes):
        w.writerow([p.label, "" if p.budget_bytes is None else p.budget_bytes, p.importance, p.peak_bytes,
                    "" if p.step_ms is None else round(p.step_ms, 3), device])
    return out.getvalue()


def to_markdown(front: Frontier) -> str:
    cols = _columns(front)
    lines = [f"### {_title(front)}", "", *tables.markdown(cols, _rows(front), "l" + "r" * (len(cols) - 1))]
    return "\n".join(lines + ["", f"- {_note(front)}"]) + "\n"


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
