"""Reporters of ``tlplan check``: the plan's numbers against the budget, fit for a CI job summary."""

from __future__ import annotations

import csv
import io

from rich.console import Console
from rich.markup import escape

from ..checking import CheckResult
from . import tables, units

ROWS = (
    ("peak memory", "peak_bytes"), ("kept for backward", "saved_bytes"), ("trainable parameters", "trainable_param_bytes"),
    ("gradients", "grad_bytes"), ("optimizer state", "optimizer_bytes"),
)
COLUMNS, ALIGN = ("", "predicted now", "in the plan", ""), "lrrl"
NOTE = "predicted: recomputed now from the model (peak by a simulated timeline, the rest derived); KB = 1024 bytes"


def status(result: CheckResult) -> str:
    if result.passed:
        return "PASS"
    reasons = []
    if not result.fits:
        reasons.append(f"over budget by {units.human_bytes(result.predicted['peak_bytes'] - result.budget_bytes)}")
    if not result.fast_enough:
        reasons.append(f"step {result.step_ms:.1f} ms ({result.step_on}) over the plan's limit of {result.max_step_ms:g} ms")
    if result.stale:
        reasons.append("stale prediction: " + ", ".join("the model changed" if s == "model" else s for s in result.stale))
    return "FAIL: " + "; ".join(reasons)


def _cells(result: CheckResult) -> list[list[str]]:
    rows = [[f"budget ({result.budget_source})", units.human_bytes(result.budget_bytes), "", ""]]
    for label, key in ROWS:
        now, stored = result.predicted.get(key), result.stored.get(key)
        mark = "" if stored is None or stored == now else "changed"
        rows.append([label, "-" if now is None else units.human_bytes(now), "-" if stored is None else units.human_bytes(stored), mark])
    if result.step_ms is not None:
        stored = result.stored_step_ms
        mark = "" if result.fast_enough else f"over the {result.max_step_ms:g} ms limit"
        rows.append([_step_label(result), f"{result.step_ms:.1f} ms", "-" if stored is None else f"{stored:.1f} ms", mark])
    return rows


def _step_label(result: CheckResult) -> str:
    return f"step time on {result.step_on.device}"


def note(result: CheckResult) -> str:
    return NOTE + (f"; step time: {result.step_on}" if result.step_on else "") + "".join(f"; {n}" for n in result.notes)


def title(result: CheckResult) -> str:
    return f"check {result.plan_path} · {result.model} · runtime {result.runtime}"


def render_table(result: CheckResult, console: Console) -> None:
    console.print(tables.rich(title(result), COLUMNS, _cells(result), ALIGN, caption=note(result)))
    console.print(f"[bold]{escape(status(result))}[/bold]", highlight=False, soft_wrap=True)


def to_json(result: CheckResult) -> str:
    return tables.json_text(result.to_dict(), "tlplan.check/1")


def to_csv(result: CheckResult) -> str:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["item", "predicted_bytes", "plan_bytes"])
    w.writerow(["budget", result.budget_bytes, ""])
    for label, key in ROWS:
        w.writerow([label, result.predicted.get(key), result.stored.get(key, "")])
    if result.step_ms is not None:
        w.writerow([_step_label(result) + " (ms)", result.step_ms, result.stored_step_ms])
    return out.getvalue()


def to_markdown(result: CheckResult) -> str:
    lines = [f"### {title(result)}", "", *tables.markdown(COLUMNS, _cells(result), ALIGN)]
    lines += ["", f"**{status(result)}**", "", f"- {note(result)}"]
    return "\n".join(lines) + "\n"
