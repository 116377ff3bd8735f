"""The budget → importance frontier, with the named schemes as points beside it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..costs.annotate import annotate
from ..errors import CheckFailed, SchemeError
from ..memory.timeline import simulate_peak
from ..plan.schemes import classifier_layers, parse_scheme, scheme_options
from .importance import importance_of
from .solver import solve_space
from .space import SearchSpace

NAMED = ("last", "bias", "blocks:1", "blocks:3", "blocks:5", "mobiletl:5", "gradfilter:4:2", "full")


@dataclass(frozen=True)
class Point:
    label: str  # "solved" or a scheme name
    budget_bytes: int | None
    importance: float
    peak_bytes: int


@dataclass(frozen=True)
class Frontier:
    model: str
    runtime: str
    points: tuple[Point, ...]  # solved plans, by budget
    schemes: tuple[Point, ...]  # the named schemes

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "runtime": self.runtime,
                "frontier": [p.__dict__ for p in self.points], "schemes": [p.__dict__ for p in self.schemes]}


def scheme_importance(space: SearchSpace, scheme: str) -> tuple[float, int]:
    graph = space.graph
    options = scheme_options(graph, parse_scheme(scheme))
    classifier = {layer.name for layer in classifier_layers(graph)}
    ranks = {c.layer: k for k, c in enumerate(space.choices)}
    n = len(space.choices)
    value = 0.0
    for name, opts in options.items():
        if name in ranks and name not in classifier:
            value += importance_of(graph, graph.by_name[name], (ranks[name] + 1) / (n + 1), opts, None)
    precision = "int8" if space.runtime == "mcu" else space.precision
    return value, simulate_peak(annotate(graph, options, space.runtime, precision), space.optimizer).peak_bytes


def frontier(space: SearchSpace, max_budget: int, points: int = 8) -> Frontier:
    """Solved plans at ``points`` budgets from the cheapest plan up to ``max_budget`` (log-spaced)."""
    first = solve_space(space, max_budget, next_factor=None, refine=False)
    low = first.minimum_bytes
    budgets = sorted({int(low * (max_budget / low) ** (i / (points - 1))) for i in range(points)}) if max_budget > low else [max_budget]
    solved = []
    for b in budgets:
        try:
            r = first if b == max_budget else solve_space(space, b, next_factor=None, refine=False)
        except CheckFailed:
            continue
        solved.append(Point("solved", b, r.best.importance, r.best.memory.peak_bytes))
    named = []
    for scheme in NAMED:
        try:
            value, peak = scheme_importance(space, scheme)
        except SchemeError:
            continue  # e.g. fewer blocks than the scheme asks for
        named.append(Point(scheme, None, value, peak))
    return Frontier(space.graph.model_name, space.runtime, tuple(solved), tuple(named))
