"""The budget → importance frontier, with the named schemes as points beside it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..costs.annotate import annotate
from ..display import Tabular, clip, size
from ..errors import CheckFailed, SchemeError
from ..memory.timeline import simulate_peak
from ..plan.schemes import classifier_layers, parse_scheme, scheme_options
from ..predict.predictor import PredictedOn
from .importance import importance_of
from .solver import solve_space
from .space import SearchSpace
from .timing import TimeModel

NAMED = ("last", "bias", "blocks:1", "blocks:3", "blocks:5", "mobiletl:5", "gradfilter:4:2", "full")


@dataclass(frozen=True)
class Point:
    label: str  # "solved" or a scheme name
    budget_bytes: int | None
    importance: float
    peak_bytes: int
    step_ms: float | None = None  # predicted on the frontier's device, where one was given


@dataclass(frozen=True, repr=False)  # repr: a line (Tabular's)
class Frontier(Tabular):
    """Budget → importance. In a notebook, the CLI's table; ``to_dataframe()``: one row per point, solved then named."""

    _reporter = "tlplan.report.pareto"

    model: str
    runtime: str
    points: tuple[Point, ...]  # solved plans, by budget
    schemes: tuple[Point, ...]  # the named schemes
    step_on: PredictedOn | None = None  # where the points' steps were predicted, if they were

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "runtime": self.runtime, "step_ms_source": str(self.step_on) if self.step_on else None,
                "frontier": [p.__dict__ for p in self.points], "schemes": [p.__dict__ for p in self.schemes]}

    def _summary(self) -> str:
        text = f"{clip(self.model, 48)} · runtime {self.runtime}: {len(self.points)} solved points"
        if self.points:
            low, high = self.points[0], self.points[-1]
            text += (f" (importance {low.importance:.4f} at {size(low.peak_bytes)} to {high.importance:.4f} "
                     f"at {size(high.peak_bytes)})")
        text += f", {len(self.schemes)} named schemes"
        if self.step_on:
            text += f", steps predicted for {clip(self.step_on.device, 24)}"
        return text

    def _frame(self) -> tuple[list[str], list[dict[str, Any]]]:
        # the CSV's fields ("plan": "solved" or the scheme's name), each as the frontier holds it
        device = self.step_on.device if self.step_on else None
        columns = ["plan", "budget_bytes", "importance", "peak_bytes", "step_ms_predicted", "predicted_for"]
        return columns, [{"plan": p.label, "budget_bytes": p.budget_bytes, "importance": p.importance, "peak_bytes": p.peak_bytes,
                          "step_ms_predicted": p.step_ms, "predicted_for": device} for p in (*self.points, *self.schemes)]


def scheme_importance(space: SearchSpace, scheme: str, time: TimeModel | None = None) -> tuple[float, int, float | None]:
    graph = space.graph
    options = scheme_options(graph, parse_scheme(scheme), [])  # a scheme's fallbacks: its row says what it costs
    classifier = {layer.name for layer in classifier_layers(graph)}
    ranks = {c.layer: k for k, c in enumerate(space.choices)}
    n = len(space.choices)
    value = 0.0
    for name, opts in options.items():
        if name in ranks and name not in classifier:
            value += importance_of(graph, graph.by_name[name], (ranks[name] + 1) / (n + 1), opts, None)
    peak = simulate_peak(annotate(graph, options, space.runtime, space.precision), space.optimizer, detail=False).peak_bytes
    return value, peak, time.step_ms(space, options) if time is not None else None


def frontier(space: SearchSpace, max_budget: int, points: int = 8, time: TimeModel | None = None,
             max_step_ms: float | None = None) -> Frontier:
    """Solved plans at ``points`` budgets from the cheapest plan up to ``max_budget`` (log-spaced);
    with ``time``, each point's step predicted on that device (and limited to ``max_step_ms``)."""
    limit = {"time": time, "max_step_ms": max_step_ms}
    first = solve_space(space, max_budget, next_factor=None, refine=False, **limit)
    low = first.minimum_bytes
    budgets = sorted({int(low * (max_budget / low) ** (i / (points - 1))) for i in range(points)}) if max_budget > low else [max_budget]
    solved = []
    for b in budgets:
        try:
            r = first if b == max_budget else solve_space(space, b, next_factor=None, refine=False, **limit)
        except CheckFailed:
            continue
        solved.append(Point("solved", b, r.best.importance, r.best.memory.peak_bytes, r.best.step_ms))
    named = []
    for scheme in NAMED:
        try:
            value, peak, step_ms = scheme_importance(space, scheme, time)
        except SchemeError:
            continue  # e.g. fewer blocks than the scheme asks for
        named.append(Point(scheme, None, value, peak, step_ms))
    return Frontier(space.graph.model_name, space.runtime, tuple(solved), tuple(named), time.on if time is not None else None)
