"""Reporters of ``tlplan solve``: the chosen layers, the memory against the budget, the next better plan."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.markup import escape

from ..costs.annotate import CostTable
from ..display import Tabular, clip, shape_text, size
from ..plan.plan import Plan
from ..solve.importance import option_key
from ..solve.solver import SolveResult
from . import tables, units


@dataclass(frozen=True, repr=False)  # repr: a line (Tabular's)
class SolveReport(Tabular):
    """A solved plan with its solver's numbers. In a notebook, the CLI's table; ``to_dataframe()``: one row per trained layer."""

    _reporter = __name__  # this module's render_table

    plan: Plan
    result: SolveResult
    costs: CostTable  # the plan's per-layer costs on its runtime

    def chosen(self) -> list[dict[str, Any]]:
        rows = []
        for cost in self.costs.layers:
            opts = self.plan.layers.get(cost.name)
            if opts is None or option_key(opts) == "frozen":
                continue
            rows.append({
                "layer": cost.name, "op": cost.op, "trains": option_key(opts),
                "kept_bytes": cost.saved_bytes, "trainable_params": cost.trainable_params,
                "trainable_param_bytes": cost.trainable_param_bytes,
            })
        return rows

    def to_dict(self) -> dict[str, Any]:
        r, p = self.result, self.plan
        nb = r.next_better
        return {
            "model": p.model, "input_shape": list(p.input_shape), "runtime": p.runtime, "budget_bytes": r.budget_bytes,
            "minimum_bytes": r.minimum_bytes, "importance": p.predicted.get("importance"),
            "predicted": dict(p.predicted), "layers": self.chosen(), "solve_seconds": round(r.seconds, 3),
            "next_better_seconds": round(r.next_seconds, 3),
            "mip_gap": r.best.gap, "proven_optimal": r.best.proven_optimal, "frozen_bits": p.frozen_bits_in_effect,
            "next_better": None if nb is None else {"importance": round(nb.importance, 6), "peak_bytes": nb.memory.peak_bytes,
                                                    "step_ms": None if nb.step_ms is None else round(nb.step_ms, 3)},
        }

    def _summary(self) -> str:
        p, budget = self.plan, self.result.budget_bytes
        peak, importance = p.predicted.get("peak_bytes"), p.predicted.get("importance")
        text = (f"{clip(p.model, 48)} · {shape_text(p.input_shape)} · runtime {p.runtime} · budget {size(budget)}: "
                f"{len(self.chosen())} layers trained")
        if importance is not None:
            text += f", importance {importance:.4f}"
        if peak is not None:
            text += f", peak {size(peak)} ({peak / budget:.1%} of the budget)"
        return text

    def _frame(self) -> tuple[list[str], list[dict[str, Any]]]:
        # chosen()'s fields, as the CSV writes them
        return ["layer", "op", "trains", "kept_bytes", "trainable_params", "trainable_param_bytes"], self.chosen()


def _memory_lines(report: SolveReport) -> list[tuple[str, str]]:
    r, p = report.result, report.plan.predicted
    budget = r.budget_bytes
    lines = [
        ("budget", f"{units.human_bytes(budget)}; predicted peak {units.human_bytes(p['peak_bytes'])} "
                   f"({p['peak_bytes'] / budget:.1%} of it)"),
        ("memory", f"kept for backward {units.human_bytes(p['saved_bytes'])}, params {units.human_bytes(p['param_bytes'])}, "
                   f"grads {units.human_bytes(p['grad_bytes'])}, optimizer {units.human_bytes(p['optimizer_bytes'])}"),
        ("importance", f"{p['importance']:.4f} ({_optimality(r.best)}; "
                       f"cheapest plan needs {units.human_bytes(r.minimum_bytes)})"),
    ]
    nb = r.next_better
    if nb is not None:
        lines.append(("next better", f"importance {nb.importance:.4f} (+{nb.importance - p['importance']:.4f}) needs "
                                     f"{units.human_bytes(nb.memory.peak_bytes)} (+{units.human_bytes(nb.memory.peak_bytes - budget)} over budget)"))
    else:
        limit = " and the step-time limit" if p.get("max_step_ms") is not None else ""
        lines.append(("next better", f"none within 1.25× the budget{limit}"))
    if "step_ms" in p:
        limit = f"; limit {p['max_step_ms']:g} ms" if p.get("max_step_ms") is not None else ""
        lines.append(("step time", f"{p['step_ms']:.1f} ms, {p['step_ms_source']}{limit}"))
    if report.plan.frozen_bits_in_effect != 32 and report.plan.runtime != "mcu":
        # the solver's costs count frozen parameters as PyTorch holds them; fewer bits only lower the peak
        lines.append(("frozen bits", f"{report.plan.frozen_bits_in_effect} in the predicted figures; the solver chose "
                                     "with 32-bit frozen parameters, so the plan fits at either"))
    lines.append(("solved in", f"{r.seconds:.2f} s (measured here; the next better plan {r.next_seconds:.2f} s more)"))
    return lines


COLUMNS, ALIGN = ("layer", "op", "trains", "kept KB", "trained params", "param KB"), "lllrrr"


def _cells(report: SolveReport) -> list[list[str]]:
    return [[row["layer"], row["op"], row["trains"], units.kb(row["kept_bytes"]), units.count(row["trainable_params"]),
             units.kb(row["trainable_param_bytes"])] for row in report.chosen()]


NOTE = "kept, params: derived; peak: predicted by a simulated timeline; importance: the documented prior unless --importance"


def render_table(report: SolveReport, console: Console) -> None:
    p = report.plan
    title = f"{p.model} · input {units.shape(p.input_shape)} · runtime {p.runtime} · plan for {units.human_bytes(report.result.budget_bytes)}"
    console.print(tables.rich(title, COLUMNS, _cells(report), ALIGN, caption=NOTE + "; KB = 1024 bytes", wrap_left=True))
    for what, value in _memory_lines(report):
        console.print(f"[bold]{what}[/bold]: {escape(value)}", highlight=False, soft_wrap=True)


def to_json(report: SolveReport) -> str:
    return tables.json_text(report.to_dict(), "tlplan.solve/1")


def to_csv(report: SolveReport) -> str:
    out = io.StringIO()
    rows = report.chosen()
    writer = csv.DictWriter(out, fieldnames=["layer", "op", "trains", "kept_bytes", "trainable_params", "trainable_param_bytes"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def to_markdown(report: SolveReport) -> str:
    p = report.plan
    lines = [f"### {p.model} · runtime {p.runtime} · plan for {units.human_bytes(report.result.budget_bytes)}", "",
             *tables.markdown(COLUMNS, _cells(report), ALIGN), ""]
    lines += [f"- **{what}**: {value}" for what, value in _memory_lines(report)]
    lines.append(f"- {NOTE}; KB = 1024 bytes")
    return "\n".join(lines) + "\n"


def _optimality(best) -> str:  # noqa: ANN001 - a Solution
    if best.shrunk:
        return "best found, not proven optimal: the memory model's optimum did not fit the simulated peak"
    if best.gap <= 0:
        return "proven optimal for the solver's memory model"
    return f"within {best.gap:.1%} of optimal"
