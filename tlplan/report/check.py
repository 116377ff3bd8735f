"""Reporters of ``tlplan check``: the plan's numbers against the budget, fit for a CI job summary."""

from __future__ import annotations

import csv
import io
import json

from rich.console import Console
from rich.table import Table

from ..checking import CheckResult
from . import units

ROWS = (
    ("peak memory", "peak_bytes"), ("kept for backward", "saved_bytes"), ("trainable parameters", "trainable_param_bytes"),
    ("gradients", "grad_bytes"), ("optimizer state", "optimizer_bytes"),
)
NOTE = "predicted: recomputed now from the model (peak by a simulated timeline, the rest derived); KB = 1024 bytes"


def status(result: CheckResult) -> str:
    if result.passed:
        return "PASS"
    reasons = []
    if not result.fits:
        reasons.append(f"over budget by {units.human_bytes(result.predicted['peak_bytes'] - result.budget_bytes)}")
    if result.stale:
        reasons.append("stale prediction: " + ", ".join(result.stale))
    return "FAIL: " + "; ".join(reasons)


def _cells(result: CheckResult) -> list[list[str]]:
    rows = [["budget", units.human_bytes(result.budget_bytes), "", ""]]
    for label, key in ROWS:
        now, stored = result.predicted.get(key), result.stored.get(key)
        mark = "" if stored is None or stored == now else "changed"
        rows.append([label, units.human_bytes(now), "-" if stored is None else units.human_bytes(stored), mark])
    return rows


def title(result: CheckResult) -> str:
    return f"check {result.plan_path} · {result.model} · runtime {result.runtime}"


def render_table(result: CheckResult, console: Console) -> None:
    table = Table(title=title(result), caption=NOTE)
    for col, right in (("", False), ("predicted now", True), ("in the plan", True), ("", False)):
        table.add_column(col, justify="right" if right else "left", no_wrap=True)
    for row in _cells(result):
        table.add_row(*row)
    console.print(table)
    console.print(f"[bold]{status(result)}[/bold]", highlight=False, soft_wrap=True)


def to_json(result: CheckResult) -> str:
    return json.dumps(result.to_dict(), indent=2) + "\n"


def to_csv(result: CheckResult) -> str:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["item", "predicted_bytes", "plan_bytes"])
    w.writerow(["budget", result.budget_bytes, ""])
    for label, key in ROWS:
        w.writerow([label, result.predicted.get(key), result.stored.get(key, "")])
    return out.getvalue()


def to_markdown(result: CheckResult) -> str:
    lines = [f"### {title(result)}", "", "| | predicted now | in the plan | |", "|---|---:|---:|---|"]
    lines += ["| " + " | ".join(row) + " |" for row in _cells(result)]
    lines += ["", f"**{status(result)}**", "", f"- {NOTE}"]
    return "\n".join(lines) + "\n"
