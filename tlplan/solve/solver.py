"""The exact solver: for each backward depth, a multiple-choice knapsack solved as a MILP (HiGHS).

Maximise Σ importance over one option per layer above the depth, subject to
fixed_cost(depth) + Σ option cost ≤ budget. The best depth wins. The plan found is then checked
with the full memory model (simulated peak); if that exceeds the budget (costs are additive
upper bounds, transients are not), the depth's capacity shrinks by the excess and it is solved
again.
"""

from __future__ import annotations

import os
import sys
import time as _time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Mapping

import numpy as np

from ..costs.annotate import annotate
from ..errors import CheckFailed, arg
from ..memory.timeline import MemoryBreakdown, simulate_peak
from ..plan.options import LayerOptions
from ..sizes import human_bytes
from .space import SearchSpace
from .timing import TimeModel


@dataclass(frozen=True)
class Solution:
    options: Mapping[str, LayerOptions]  # every layer's options (base options included)
    importance: float
    model_bytes: int  # the solver's additive memory: fixed cost + Σ option costs
    depth: int | None  # choice index where backward starts (None: classifier only)
    memory: MemoryBreakdown  # the full memory model of this plan (simulated peak)
    gap: float  # MILP relative gap reported by HiGHS (0: proven optimal)
    step_ms: float | None = None  # predicted on the device of a time limit, where one was given


@dataclass(frozen=True)
class SolveResult:
    best: Solution
    budget_bytes: int
    minimum_bytes: int  # the cheapest plan (classifier only): below it nothing fits
    next_better: Solution | None  # the best plan of more importance found with a larger budget need
    per_depth: tuple[tuple[int | None, float, int], ...] = ()  # (depth, importance, model bytes)
    seconds: float = 0.0
    max_step_ms: float | None = None
    time: "TimeModel | None" = field(default=None, compare=False)  # the device's time model, where steps were predicted


@contextmanager
def _quiet_stdout():
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # captured (tests): nothing to silence at fd level
        yield
        return
    sys.stdout.flush()
    saved = os.dup(fd)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), fd)
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)


def _knapsack(space: SearchSpace, depth: int, capacity: int, time: TimeModel | None = None,
              time_capacity: float = np.inf) -> tuple[list[int], float, float] | None:
    """Best option index per choice ≥ depth under ``capacity`` bytes (and ``time_capacity`` ms of
    the options' added step time), its objective and HiGHS's relative gap; None if nothing fits."""
    from scipy.optimize import Bounds, LinearConstraint, milp  # scipy only when solving, not at start-up

    if capacity < 0:
        return None
    layers = space.choices[depth:]
    sizes = [len(c.candidates) for c in layers]
    n = sum(sizes)
    values = np.concatenate([[c.importance for c in ch.candidates] for ch in layers])
    costs = np.concatenate([[c.cost_bytes for c in ch.candidates] for ch in layers]).astype(float)
    rows, start = [], 0
    for s in sizes:
        row = np.zeros(n)
        row[start : start + s] = 1
        rows.append(row)
        start += s
    one_each = LinearConstraint(np.array(rows), 1, 1)
    budget = LinearConstraint(costs.reshape(1, -1), -np.inf, float(capacity))
    constraints = [one_each, budget]
    if time is not None:
        constraints.append(LinearConstraint(np.concatenate(time.deltas[depth:]).reshape(1, -1), -np.inf, time_capacity))
    with _quiet_stdout():  # HiGHS prints internal notes on its own, below Python
        res = milp(-values, integrality=np.ones(n), bounds=Bounds(0, 1), constraints=constraints,
                   options={"mip_rel_gap": 0.0, "disp": False})
    if res.status != 0 or res.x is None:
        return None
    chosen, start = [], 0
    for s in sizes:
        chosen.append(int(np.argmax(res.x[start : start + s])))
        start += s
    return chosen, float(values @ np.round(res.x)), float(getattr(res, "mip_gap", 0.0) or 0.0)


def _assemble(space: SearchSpace, depth: int | None, chosen: list[int]) -> tuple[dict[str, LayerOptions], float, int]:
    options = dict(space.base_options)
    importance, cost = 0.0, 0
    if depth is not None:
        for ch, k in zip(space.choices[depth:], chosen):
            cand = ch.candidates[k]
            if cand.options != LayerOptions():
                options[ch.layer] = cand.options
            importance += cand.importance
            cost += cand.cost_bytes
    return options, importance, cost


def _memory(space: SearchSpace, options: Mapping[str, LayerOptions]) -> MemoryBreakdown:
    return simulate_peak(annotate(space.graph, options, space.runtime, space.precision), space.optimizer)


def _best_over_depths(
    space: SearchSpace, budget_bytes: int, fixed: dict, max_rounds: int, refine: bool = True, depths=None,
    time: TimeModel | None = None, max_step_ms: float | None = None,
) -> tuple[Solution | None, list]:
    best: Solution | None = None
    per_depth = []
    for depth in depths if depths is not None else reversed(space.depths):  # from the output down
        if fixed[depth] > budget_bytes:
            continue
        capacity = budget_bytes - fixed[depth]
        limited = time is not None and max_step_ms is not None
        time_capacity = max_step_ms - time.fixed_ms[depth] if limited else np.inf
        found_here: Solution | None = None
        for _ in range(max_rounds + 2 * limited):
            found = _knapsack(space, depth, capacity, time if limited else None, time_capacity)
            if found is None:
                break
            chosen, _, gap = found
            opts, imp, cost = _assemble(space, depth, chosen)
            memory = _memory(space, opts)
            if memory.peak_bytes > budget_bytes:
                capacity -= memory.peak_bytes - budget_bytes  # the additive model was short: tighten
                continue
            step_ms = time.step_ms(space, opts) if limited else None
            if limited and step_ms > max_step_ms:
                # the same for time: below what this plan's options add, by the excess
                used = sum(float(time.deltas[depth + i][k]) for i, k in enumerate(chosen))
                time_capacity = min(time_capacity, used) - (step_ms - max_step_ms) - 1e-6 * max_step_ms
                continue
            if found_here is None or imp > found_here.importance:
                found_here = Solution(MappingProxyType(opts), imp, fixed[depth] + cost, depth, memory, gap, step_ms)
            slack = budget_bytes - memory.peak_bytes
            # the additive costs are upper bounds (a tensor two layers keep is counted twice):
            # hand the unused room back and solve again, keeping only plans the full model accepts
            if not refine or slack < budget_bytes * 0.01:
                break
            capacity += slack
        if found_here is not None:
            per_depth.append((depth, found_here.importance, found_here.model_bytes))
            if best is None or found_here.importance > best.importance:
                best = found_here
    return best, per_depth


def solve_space(
    space: SearchSpace, budget_bytes: int, *, max_rounds: int = 4, next_factor: float | None = 1.25, refine: bool = True,
    time: TimeModel | None = None, max_step_ms: float | None = None,
) -> SolveResult:
    """The best plan of ``space`` whose simulated peak fits ``budget_bytes`` (and, with ``time`` and
    ``max_step_ms``, whose step predicted on that device takes at most ``max_step_ms``);
    CheckFailed if none.

    Also reports the next better plan: the best one under ``next_factor`` × the budget.
    """
    if max_step_ms is not None and (time is None or not time.fixed_ms):
        raise ValueError("max_step_ms needs a time model of the device with per-depth times (solve.timing.time_model)")
    t0 = _time.perf_counter()
    base_options = dict(space.base_options)
    base_memory = space.base_memory
    minimum = base_memory.peak_bytes
    if minimum > budget_bytes:
        raise CheckFailed(
            f"no plan fits {human_bytes(budget_bytes)}: the cheapest (classifier only) needs "
            f"{human_bytes(minimum)} ({minimum} bytes); raise {arg('ram_bytes')} or lower {arg('input_shape')}"
        )
    if max_step_ms is not None and time.minimum_ms > max_step_ms:
        raise CheckFailed(
            f"no plan runs within {max_step_ms:g} ms per step on {time.device}: the cheapest (classifier only) is "
            f"predicted at {time.minimum_ms:.1f} ms ({time.source}); raise {arg('max_step_ms')} or lower {arg('input_shape')}"
        )
    fixed = space.fixed_bytes
    limit = {"time": time, "max_step_ms": max_step_ms}
    best, per_depth = _best_over_depths(space, budget_bytes, fixed, max_rounds, refine=False, **limit)
    if refine and per_depth:
        # hand back the room the additive bounds left unused, at the most promising depths only
        top = [d for d, _, _ in sorted(per_depth, key=lambda r: -r[1])[:3]]
        refined, _ = _best_over_depths(space, budget_bytes, fixed, max_rounds, refine=True, depths=top, **limit)
        if refined is not None and (best is None or refined.importance > best.importance):
            best = refined
    base = Solution(MappingProxyType(base_options), 0.0, minimum, None, base_memory, 0.0,
                    time.minimum_ms if time is not None else None)
    if best is None or best.importance <= 0:
        best = base
    next_better = None
    if next_factor:
        bigger, _ = _best_over_depths(space, int(budget_bytes * next_factor), fixed, 1, refine=False, **limit)
        gain = 1e-6 * max(1.0, abs(best.importance))
        next_better = bigger if bigger is not None and bigger.importance > best.importance + gain else None
    if time is not None:  # predicted on the device for the report, where the limit did not need it
        best = best if best.step_ms is not None else replace(best, step_ms=time.step_ms(space, best.options))
        if next_better is not None and next_better.step_ms is None:
            next_better = replace(next_better, step_ms=time.step_ms(space, next_better.options))
    return SolveResult(best, budget_bytes, minimum, next_better, tuple(per_depth), _time.perf_counter() - t0,
                       max_step_ms=max_step_ms, time=time)
