"""The exact solver: the backward depth and one option per layer, in one sweep of Pareto fronts.

The problem: choose a backward depth d and one option per layer at or above it, maximising
Σ importance subject to fixed_cost(d) + Σ option cost ≤ budget — a multiple-choice knapsack per
depth. Depth is one more decision, not an outer loop of solves: one sweep from the output down
keeps, for every choice k, the Pareto front of (Σ cost, Σ importance) over choices k..end, the
plans no other plan beats on both (as cheap or cheaper and at least as important). The front at
k then answers "the most important plan whose backward starts at k, within c bytes" for any c
with a binary search, exactly: every plan is dominated by a point of the front, so the point found
is a proven optimum (gap 0, no MILP tolerance). Fronts are cut at the most bytes any depth may
spend, and — given a warm start, a greedy plan the full model accepts — at every point whose
importance plus the LP bound of the layers below it cannot beat that plan; on the zoo's largest
models that leaves tens of thousands of points instead of millions.

Answers are then checked with the full memory model (simulated peak): the additive costs are
upper bounds for what layers keep (a tensor two layers keep is counted twice) but do not see every
transient. If the peak exceeds the budget, the depth's capacity shrinks by the excess and it is
asked again. Depths are checked from the best additive optimum down, and one whose optimum cannot
beat the plan in hand is not simulated at all (checking only ever lowers a depth's first answer),
so a solve simulates a handful of plans, not one or more per depth. At the three most promising
depths the room a checked plan left is then handed back and they are asked again, as before.

With a step-time limit the knapsack has a second constraint that fronts of two numbers cannot
answer: each depth whose memory-only optimum (an upper bound) could still beat the plan in hand is
solved as a MILP by HiGHS (scipy), and HiGHS's relative gap is reported.
"""

from __future__ import annotations

import os
import sys
import time as _time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Callable, Mapping, Optional

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
    gap: float  # relative optimality gap of the knapsack behind it (0: its optimum)
    step_ms: float | None = None  # predicted on the device of a time limit, where one was given
    # found only after the simulated peak ruled out a more important answer of the additive model
    # (its capacity shrunk, or a larger budget's search found it): then not proven optimal
    shrunk: bool = False

    @property
    def proven_optimal(self) -> bool:
        """The optimum of the solver's additive memory model, and its simulated peak fits."""
        return self.gap <= 0 and not self.shrunk


@dataclass(frozen=True)
class SolveResult:
    best: Solution
    budget_bytes: int
    minimum_bytes: int  # the cheapest plan (classifier only): below it nothing fits
    next_better: Solution | None  # the best plan of more importance found with a larger budget need
    # per depth that fits: (depth, importance, model bytes) of its knapsack optimum under the
    # budget, on the additive model (before the full model's check)
    per_depth: tuple[tuple[int | None, float, int], ...] = ()
    seconds: float = 0.0  # finding ``best`` (the plan; the next better plan's search is ``next_seconds``)
    max_step_ms: float | None = None
    time: "TimeModel | None" = field(default=None, compare=False)  # the device's time model, where steps were predicted
    next_seconds: float = 0.0  # finding ``next_better`` (and predicting both plans' step times, with a device)


# ---------------------------------------------------------------- Pareto fronts (the exact knapsack)


@dataclass(frozen=True)
class Fronts:
    """Per choice k ≥ ``start``: the Pareto front of the plans over choices k..end, cheapest first.

    Along a front both Σ cost and Σ importance rise, so the last point within a capacity is the
    most important plan that fits it.
    """

    start: int  # the lowest choice swept (no depth below it fits)
    cost_bytes: tuple[np.ndarray, ...]  # [k - start]: Σ option cost, ascending (int64)
    importance: tuple[np.ndarray, ...]  # [k - start]: Σ importance, strictly rising with the cost
    pick: tuple[np.ndarray, ...]  # [k - start]: the candidate of choice k each point takes
    parent: tuple[np.ndarray, ...]  # [k - start]: the point of front k + 1 it extends
    reach_bytes: tuple[int, ...]  # [k - start]: points costing more were cut; asks beyond it are not answered

    def answers(self, depth: int, capacity_bytes: int) -> bool:
        """Whether ``best(depth, capacity_bytes)`` is exact (the front was not cut below that capacity)."""
        return depth < self.start or capacity_bytes <= self.reach_bytes[depth - self.start]

    def best(self, depth: int, capacity_bytes: int) -> tuple[list[int], float, int] | None:
        """The most important plan whose backward starts at ``depth`` within ``capacity_bytes``: the
        candidate index per choice ≥ depth, Σ importance and Σ cost; None if nothing fits."""
        i = depth - self.start
        if i < 0 or capacity_bytes < 0:
            return None
        j = int(np.searchsorted(self.cost_bytes[i], capacity_bytes, side="right")) - 1
        if j < 0:
            return None
        value, cost = float(self.importance[i][j]), int(self.cost_bytes[i][j])
        chosen = []
        for level in range(i, len(self.pick)):
            chosen.append(int(self.pick[level][j]))
            j = int(self.parent[level][j])
        return chosen, value, cost


def _hull(candidates) -> tuple[float, np.ndarray, np.ndarray]:
    """The LP relaxation of one choice: its free importance (at no cost) and the steps of its upper
    concave hull from there, (Δ cost, Δ importance), best importance per byte first. Taking nothing
    is allowed too (a relaxation: a backward-config layer must take its bias)."""
    points = sorted({(0, 0.0), *((c.cost_bytes, c.importance) for c in candidates)}, key=lambda p: (p[0], -p[1]))
    free = max(v for c, v in points if c == 0)
    hull = [(0, free)]
    for c, v in points:
        if v <= hull[-1][1]:
            continue  # as costly or more and no more important
        # drop the last point while it lies on or below the line from the one before to this one
        while len(hull) > 1 and (hull[-1][1] - hull[-2][1]) * (c - hull[-2][0]) <= (v - hull[-2][1]) * (hull[-1][0] - hull[-2][0]):
            hull.pop()
        hull.append((c, v))
    steps = np.diff(np.array(hull, dtype=float), axis=0)
    return free, steps[:, 0], steps[:, 1]


@dataclass(frozen=True)
class _Bound:
    """An upper bound on the importance that choices [start, k) add within ``r`` bytes, for every k
    (their LP relaxation: hull steps taken best per byte first, the last one in part)."""

    free: tuple[float, ...]  # [k - start]: importance at no cost
    cost_bytes: tuple[np.ndarray, ...]  # [k - start]: cumulative cost of the steps, best per byte first (0 first)
    importance: tuple[np.ndarray, ...]  # [k - start]: cumulative importance with it

    @classmethod
    def of(cls, space: SearchSpace, start: int, stop: int) -> "_Bound":
        free, costs, values = [0.0], [np.zeros(1)], [np.zeros(1)]
        dc, dv = np.zeros(0), np.zeros(0)
        for k in range(start, stop):
            f, c, v = _hull(space.choices[k].candidates)
            dc, dv = np.concatenate([dc, c]), np.concatenate([dv, v])
            order = np.argsort(-dv / dc, kind="stable")
            dc, dv = dc[order], dv[order]
            free.append(free[-1] + f)
            costs.append(np.concatenate([[0.0], np.cumsum(dc)]))
            values.append(np.concatenate([[0.0], np.cumsum(dv)]))
        return cls(tuple(free), tuple(costs), tuple(values))

    def at(self, k: int, start: int, room_bytes: np.ndarray) -> np.ndarray:
        i = k - start
        return self.free[i] + np.interp(room_bytes, self.cost_bytes[i], self.importance[i])


def pareto_fronts(space: SearchSpace, capacity_bytes: Mapping[int, int], beat: float | None = None) -> Fronts:
    """The fronts of ``space`` for the depths of ``capacity_bytes`` (depth → most bytes its options may cost).

    With ``beat`` (the importance of a plan in hand), a point that cannot end above it at any depth
    — its importance plus the LP bound of the choices below it, within the room it leaves — is cut:
    asks whose optimum exceeds ``beat`` are still answered exactly, others may get less or nothing.
    """
    n = len(space.choices)
    reach = np.full(n + 1, -1, dtype=np.int64)
    for depth, cap in capacity_bytes.items():
        reach[depth] = max(reach[depth], cap)
    # a point of front k serves the depths d ≤ k only: it may cost what the most generous of them allows
    reach = np.maximum.accumulate(reach)
    reaching = np.flatnonzero(reach[:n] >= 0)
    start = int(reaching[0]) if len(reaching) else n
    bound = _Bound.of(space, start, n) if beat is not None else None
    cost = np.zeros(1, dtype=np.int64)
    value = np.zeros(1)
    levels: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
    for k in range(n - 1, start - 1, -1):
        candidates = space.choices[k].candidates
        option_cost = np.array([c.cost_bytes for c in candidates], dtype=np.int64)
        option_value = np.array([c.importance for c in candidates])
        # every point of front k + 1 extended by every candidate of k, one ascending run per candidate
        c = (option_cost[:, None] + cost[None, :]).ravel()
        v = (option_value[:, None] + value[None, :]).ravel()
        inside = np.flatnonzero(c <= reach[k])
        order = inside[np.argsort(c[inside], kind="stable")]  # merging sorted runs: near linear
        c, v = c[order], v[order]
        # a point stays if it is more important than every cheaper one (the first of equal importance: the cheapest)
        kept = np.ones(len(v), dtype=bool)
        if len(v) > 1:
            kept[1:] = v[1:] > np.maximum.accumulate(v)[:-1]
        if bound is not None and k > start:
            # a tie with the plan in hand is kept: only a point that must end below it goes
            kept &= v + bound.at(k, start, (reach[k] - c).astype(float)) >= beat - 1e-9 * max(1.0, abs(beat))
        order = order[kept]
        cost, value = c[kept], v[kept]
        per_run = len(levels[-1][0]) if levels else 1
        levels.append((cost, value, (order // per_run).astype(np.int16), (order % per_run).astype(np.int32)))
    levels.reverse()
    return Fronts(start, tuple(lv[0] for lv in levels), tuple(lv[1] for lv in levels),
                  tuple(lv[2] for lv in levels), tuple(lv[3] for lv in levels),
                  tuple(int(r) for r in reach[start:n]))


@dataclass(frozen=True)
class _Greedy:
    """A warm start: a depth's cheapest candidates, then upgrades along each choice's upper
    concave hull, best importance per byte first, each one that still fits (an upgrade that does
    not fit closes its choice). Within a few percent of the optimum, it lets the sweep cut every
    point that cannot beat it."""

    step_choice: np.ndarray  # per upgrade step, best importance per byte first: its choice
    step_cost: np.ndarray  # bytes it adds
    step_value: np.ndarray  # importance it adds
    step_pick: np.ndarray  # the candidate its choice holds after it

    @classmethod
    def of(cls, space: SearchSpace) -> "_Greedy":
        choice, cost, value, pick = [], [], [], []
        for k, ch in enumerate(space.choices):
            hull = [0]  # candidates are cheapest first and rise in importance (space._pareto)
            for j in range(1, len(ch.candidates)):
                c = ch.candidates[j]
                while len(hull) > 1:  # drop the last while it lies on or below the line to this one
                    a, b = ch.candidates[hull[-2]], ch.candidates[hull[-1]]
                    if (b.importance - a.importance) * (c.cost_bytes - a.cost_bytes) > (c.importance - a.importance) * (b.cost_bytes - a.cost_bytes):
                        break
                    hull.pop()
                hull.append(j)
            for a, b in zip(hull, hull[1:]):
                choice.append(k)
                cost.append(ch.candidates[b].cost_bytes - ch.candidates[a].cost_bytes)
                value.append(ch.candidates[b].importance - ch.candidates[a].importance)
                pick.append(b)
        cost_a, value_a = np.array(cost, dtype=np.int64), np.array(value, dtype=float)
        order = np.argsort(-value_a / np.maximum(cost_a, 1), kind="stable")
        return cls(np.array(choice, dtype=np.int64)[order], cost_a[order], value_a[order], np.array(pick, dtype=np.int64)[order])

    def bound(self, space: SearchSpace, depth: int, capacity_bytes: int) -> float:
        """The LP relaxation's optimum at ``depth``: an upper bound on its knapsack (-inf if nothing fits)."""
        room = capacity_bytes - sum(ch.candidates[0].cost_bytes for ch in space.choices[depth:])
        if room < 0:
            return -np.inf
        mine = self.step_choice >= depth
        spent = np.concatenate([[0], np.cumsum(self.step_cost[mine])])
        gained = np.concatenate([[0.0], np.cumsum(self.step_value[mine])])
        return sum(ch.candidates[0].importance for ch in space.choices[depth:]) + float(np.interp(room, spent, gained))

    def plan(self, space: SearchSpace, depth: int, capacity_bytes: int) -> tuple[list[int], float] | None:
        """Candidate index per choice ≥ ``depth`` within ``capacity_bytes`` and Σ importance; None if even the cheapest do not fit."""
        chosen = [0] * (len(space.choices) - depth)
        room = capacity_bytes - sum(ch.candidates[0].cost_bytes for ch in space.choices[depth:])
        if room < 0:
            return None
        value = sum(ch.candidates[0].importance for ch in space.choices[depth:])
        closed: set[int] = set()
        mine = np.flatnonzero(self.step_choice >= depth)
        for k, cost, gain, pick in zip(self.step_choice[mine].tolist(), self.step_cost[mine].tolist(),
                                       self.step_value[mine].tolist(), self.step_pick[mine].tolist()):
            if k in closed:
                continue
            if cost > room:
                closed.add(k)  # its later steps build on this one
                continue
            room -= cost
            value += gain
            chosen[k - depth] = pick
        return chosen, value


# ---------------------------------------------------------------- the MILP (a step-time limit)


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
    the options' added step time) as a MILP, its objective and HiGHS's relative gap; None if nothing fits."""
    from scipy.optimize import Bounds, LinearConstraint, milp  # scipy only for a time limit, not at start-up

    if capacity < 0:
        return None
    layers = space.choices[depth:]
    sizes = [len(c.candidates) for c in layers]
    n = sum(sizes)
    values = np.concatenate([[c.importance for c in ch.candidates] for ch in layers])
    costs = np.concatenate([[c.cost_bytes for c in ch.candidates] for ch in layers]).astype(float)
    one_each = np.zeros((len(sizes), n))
    start = 0
    for row, s in enumerate(sizes):
        one_each[row, start : start + s] = 1
        start += s
    constraints = [LinearConstraint(one_each, 1, 1), LinearConstraint(costs.reshape(1, -1), -np.inf, float(capacity))]
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


# ---------------------------------------------------------------- from knapsack answers to checked plans


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


def _memory(space: SearchSpace, options: Mapping[str, LayerOptions], detail: bool = False) -> MemoryBreakdown:
    """The full memory model of a plan; without ``detail`` (a check) its totals and peak alone."""
    return simulate_peak(annotate(space.graph_for(options), options, space.runtime, space.precision), space.optimizer,
                         detail=detail)


def _detailed(space: SearchSpace, found: Solution | None) -> Solution | None:
    """``found`` with its memory's timeline (checks skip it: only the answer is shown)."""
    if found is None or found.memory.timeline:
        return found
    return replace(found, memory=_memory(space, found.options, detail=True))


# a knapsack: (depth, capacity bytes, capacity ms) → (chosen candidates, gap) or None
Ask = Callable[[int, int, float], Optional[tuple[list[int], float]]]


class _Checker:
    """The full memory model of plans, each simulated once per solve (depths share plans:
    one that freezes its first layer is the next depth's plan too)."""

    def __init__(self, space: SearchSpace) -> None:
        self.space = space
        self.seen: dict[frozenset, MemoryBreakdown] = {}

    def __call__(self, options: Mapping[str, LayerOptions]) -> MemoryBreakdown:
        key = frozenset(options.items())
        if key not in self.seen:
            self.seen[key] = _memory(self.space, options)
        return self.seen[key]



class _FrontAsk:
    """Knapsack answers from Pareto fronts; swept again, further, where a check hands back more
    room than they reach."""

    def __init__(self, space: SearchSpace, budget_bytes: int, beat: float | None, reach_bytes: int = 0) -> None:
        self.space, self.budget, self.beat = space, budget_bytes, beat
        # bytes beyond budget − fixed cost that every depth's front reaches: handing back room asks
        # a little beyond (checked plans need less than their additive bound), and ``reach_bytes``
        # (a larger budget's asks: the next better plan's) as far
        self.extra = max(budget_bytes // 64, reach_bytes - budget_bytes)
        self.fronts = self._sweep()

    def _sweep(self) -> Fronts:
        fixed = self.space.fixed_bytes
        reach = self.budget + self.extra
        return pareto_fronts(self.space, {d: reach - fixed[d] for d in self.space.depths if fixed[d] <= reach}, self.beat)

    def cover(self, budget_bytes: int) -> None:
        """Sweep further, if needed, so that every depth is answered up to ``budget_bytes``."""
        if budget_bytes > self.budget + self.extra:
            self.extra = budget_bytes - self.budget
            self.fronts = self._sweep()

    def __call__(self, depth: int, capacity_bytes: int, capacity_ms: float = np.inf) -> tuple[list[int], float] | None:
        if not self.fronts.answers(depth, capacity_bytes):
            wanted = capacity_bytes + self.space.fixed_bytes[depth] - self.budget
            self.extra = max(2 * wanted, 2 * self.extra, self.budget // 10)
            self.fronts = self._sweep()
        found = self.fronts.best(depth, capacity_bytes)
        return None if found is None else (found[0], 0.0)  # a front's answer is exact: no gap


def _fit(space: SearchSpace, depth: int, budget_bytes: int, ask: Ask, check: _Checker, rounds: int, refine: bool,
         time: TimeModel | None, max_step_ms: float | None, beat: float | None = None) -> Solution | None:
    """The best checked plan at ``depth``: ask the knapsack, simulate, shrink or hand back room,
    ask again. With ``beat``, it gives up once the answers, before one fits, are no more important
    (shrinking only lowers them)."""
    fixed = space.fixed_bytes[depth]
    capacity = budget_bytes - fixed
    limited = time is not None and max_step_ms is not None
    time_capacity = max_step_ms - time.fixed_ms[depth] if limited else np.inf
    found_here: Solution | None = None
    for _ in range(rounds + 2 * limited):
        found = ask(depth, capacity, time_capacity)
        if found is None:
            break
        chosen, gap = found
        opts, imp, cost = _assemble(space, depth, chosen)
        if found_here is None and beat is not None and imp <= beat:
            break
        memory = check(opts)
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
            found_here = Solution(MappingProxyType(opts), imp, fixed + cost, depth, memory, gap, step_ms,
                                  shrunk=capacity < budget_bytes - fixed)
        slack = budget_bytes - memory.peak_bytes
        # the additive costs are upper bounds (a tensor two layers keep is counted twice):
        # hand the unused room back and ask again, keeping only plans the full model accepts
        if not refine or slack < budget_bytes * 0.01:
            break
        capacity += slack
    return found_here


def _warm_start(space: SearchSpace, budget_bytes: int, check: _Checker, tries: int = 3,
                depths: int = 4) -> tuple[Solution, int] | None:
    """A greedy plan that the full model accepts, and the capacity it was asked at; None if none
    was found in ``tries`` checks. Tried at the ``depths`` most promising depths (by their LP
    bound), the best first, shrunk like any answer."""
    greedy = _Greedy.of(space)
    fixed = space.fixed_bytes
    bounds = {d: greedy.bound(space, d, budget_bytes - fixed[d]) for d in space.depths if fixed[d] <= budget_bytes}
    plans = {}
    for d in sorted(bounds, key=lambda d: (-bounds[d], -d))[:depths]:
        found = greedy.plan(space, d, budget_bytes - fixed[d])
        if found is not None and found[1] > 0:
            plans[d] = (found, budget_bytes - fixed[d])
    for _ in range(tries):
        if not plans:
            return None
        depth = max(plans, key=lambda d: (plans[d][0][1], d))
        (chosen, _), capacity = plans[depth]
        opts, imp, cost = _assemble(space, depth, chosen)
        memory = check(opts)
        if memory.peak_bytes <= budget_bytes:
            return Solution(MappingProxyType(opts), imp, fixed[depth] + cost, depth, memory, 0.0), capacity
        # the additive model is short by about as much at the other depths (the same transient):
        # shrink them all, and weigh them again
        excess = memory.peak_bytes - budget_bytes
        shrunk = {d: (greedy.plan(space, d, c - excess), c - excess) for d, ((_, _), c) in plans.items()}
        plans = {d: (found, c) for d, (found, c) in shrunk.items() if found is not None and found[1] > 0}
    return None


def _depth_by_depth(space: SearchSpace, order: list[int], optima: Mapping, budget_bytes: int, ask: Ask, check: _Checker,
                    rounds: int, time: TimeModel | None, max_step_ms: float | None, best: Solution | None,
                    beat: float | None, misses: int | None) -> tuple[Solution | None, dict[int, Solution]]:
    """The first pass with a step-time limit (each depth a MILP): the most promising depth first,
    each asked until its plan fits, until no depth left can beat the plan in hand."""
    first: dict[int, Solution] = {}
    for depth in order:
        bar = max((b for b in (beat, best.importance if best is not None else None) if b is not None), default=None)
        if bar is not None and optima[depth][1] <= bar:
            break  # nor can any after it: shrinking only lowers an answer, so none can beat the plan in hand
        if misses is not None and misses <= 0:
            break
        found = _fit(space, depth, budget_bytes, ask, check, rounds, False, time, max_step_ms, beat=bar)
        if found is None and misses is not None:
            misses -= 1
        if found is not None:
            first[depth] = found
            if best is None or found.importance > best.importance:
                best = found
    return best, first


def _best_first(space: SearchSpace, order: list[int], optima: Mapping, budget_bytes: int, ask: Ask, check: _Checker,
                rounds: int, best: Solution | None, beat: float | None,
                misses: int | None) -> tuple[Solution | None, dict[int, Solution]]:
    """The first pass on memory alone: the most important answer of any depth is checked next.

    Each depth's answers only fall as a failed check shrinks its capacity, so the first answer
    that fits is the best any depth's first fitting answer can be, and the pass ends there; no
    answer below the plan in hand is simulated. The same plan as asking every depth in turn
    until its plan fits (within ``rounds`` asks a depth), with fewer simulations. With
    ``misses``, it ends once that many depths gave up."""
    import heapq

    fixed = space.fixed_bytes
    rank = {d: i for i, d in enumerate(order)}  # ties: the order the depths were ranked in
    heap = [(-optima[d][1], rank[d], d, budget_bytes - fixed[d], optima[d][0], 1) for d in order]
    heapq.heapify(heap)
    first: dict[int, Solution] = {}
    while heap:
        value, _, depth, capacity, chosen, asked = heapq.heappop(heap)
        bar = max((b for b in (beat, best.importance if best is not None else None) if b is not None), default=None)
        if bar is not None and -value <= bar:
            break  # nor can any answer left: all are at most this one
        opts, imp, cost = _assemble(space, depth, chosen)
        memory = check(opts)
        if memory.peak_bytes <= budget_bytes:
            found = Solution(MappingProxyType(opts), imp, fixed[depth] + cost, depth, memory, 0.0, shrunk=asked > 1)
            first[depth] = found
            if best is None or found.importance > best.importance:
                best = found
            break
        capacity -= memory.peak_bytes - budget_bytes  # the additive model was short: tighten
        again = ask(depth, capacity, np.inf) if asked < rounds else None
        if again is not None:
            value_again = _assemble(space, depth, again[0])[1]
            heapq.heappush(heap, (-value_again, rank[depth], depth, capacity, again[0], asked + 1))
        elif misses is not None:
            misses -= 1
            if misses <= 0:
                break
    return best, first


def _search(space: SearchSpace, budget_bytes: int, check: _Checker, rounds: int, refine: bool,
            time: TimeModel | None, max_step_ms: float | None, beat: float | None = None, misses: int | None = None,
            fronts: _FrontAsk | None = None, reach_bytes: int = 0,
            ) -> tuple[Solution | None, tuple[tuple[int | None, float, int], ...], _FrontAsk | None]:
    """The best checked plan under ``budget_bytes`` (more important than ``beat``, if given), the
    per-depth optima and the fronts asked: warm start, one sweep cut by it (reaching ``reach_bytes``
    too), then the depths most promising first (with ``misses``, only until that many depths found
    nothing). Given ``fronts`` (cut below ``beat``), no warm start and no sweep of its own."""
    fixed = space.fixed_bytes
    if not any(fixed[d] <= budget_bytes for d in space.depths):
        return None, (), fronts  # no backward depth fits: the cheapest plan is the only one
    limited = time is not None and max_step_ms is not None
    # a warm start must fit everything asked: a greedy plan knows nothing of a time limit
    started = None if limited or fronts is not None else _warm_start(space, budget_bytes, check)
    warm = started[0] if started is not None else None
    floor = max(beat if beat is not None else -np.inf, warm.importance if warm is not None else -np.inf)
    if fronts is None:
        fronts = _FrontAsk(space, budget_bytes, floor if np.isfinite(floor) else None, reach_bytes)
    else:
        fronts.cover(budget_bytes)
    if warm is not None:
        # its gap: how far below the optimum of the knapsack it answered it is (nothing at least
        # as important as the warm start was cut); where that optimum fits, it is the warm start
        found = fronts.fronts.best(warm.depth, started[1])
        chosen, value, _ = found if found is not None else ([], -np.inf, 0)  # None: cut, below ``beat``
        if value > warm.importance:
            opts, imp, cost = _assemble(space, warm.depth, chosen)
            memory = check(opts)
            if memory.peak_bytes <= budget_bytes:
                warm = Solution(MappingProxyType(opts), imp, fixed[warm.depth] + cost, warm.depth, memory, 0.0)
            else:
                warm = replace(warm, gap=(value - warm.importance) / abs(value))
    optima = {d: fronts.fronts.best(d, budget_bytes - fixed[d]) for d in space.depths if fixed[d] <= budget_bytes}
    optima = {d: f for d, f in optima.items() if f is not None}
    # exact where at least the floor (the fronts' sums and a plan's own may differ in the last bits)
    tie = 1e-9 * max(1.0, abs(floor)) if np.isfinite(floor) else 0.0
    per_depth = tuple((d, optima[d][1], fixed[d] + optima[d][2]) for d in reversed(space.depths)
                      if d in optima and optima[d][1] >= floor - tie)
    ask: Ask = fronts
    if limited:
        def ask(depth: int, capacity: int, time_capacity: float) -> tuple[list[int], float] | None:
            found = _knapsack(space, depth, capacity, time, time_capacity)
            return None if found is None else (found[0], found[2])
    # first pass: each depth asked at its capacity, shrunk until its plan fits; ties: the depth
    # nearer the output, as the output-down loop before it did
    order = sorted(optima, key=lambda d: (-optima[d][1], -d))
    if limited:
        best, first = _depth_by_depth(space, order, optima, budget_bytes, ask, check, rounds, time, max_step_ms, warm, beat, misses)
    else:
        best, first = _best_first(space, order, optima, budget_bytes, ask, check, rounds, warm, beat, misses)
    if refine:
        # then hand the room the additive bounds left unused back, at the most promising depths
        # (by their checked plans, then by their optima)
        if warm is not None and warm.depth not in first:
            first[warm.depth] = warm
        top = sorted(first, key=lambda d: (-first[d].importance, -d))[:3]
        top += [d for d in order if d not in top][: 3 - len(top)]
        for depth in top:
            found = _fit(space, depth, budget_bytes, ask, check, rounds, True, time, max_step_ms)
            if found is not None and (best is None or found.importance > best.importance):
                best = found
    if best is not None and beat is not None and best.importance <= beat:
        best = None
    return best, per_depth, fronts


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
    # the cheapest plan first: an infeasible budget is answered by one simulation, before any depth's cost
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
    check = _Checker(space)
    limit = {"time": time, "max_step_ms": max_step_ms}
    next_budget = int(budget_bytes * next_factor) if next_factor else 0
    # the fronts reach this budget (and a little more, for handing room back); the next better
    # plan sweeps them further only when it asks (what they cut, nothing more important than a
    # plan that fits this budget, it has no use for)
    best, per_depth, fronts = _search(space, budget_bytes, check, max_rounds, refine, **limit)
    base = Solution(MappingProxyType(dict(space.base_options)), 0.0, minimum, None, base_memory, 0.0,
                    time.minimum_ms if time is not None else None)
    if best is None or best.importance <= 0:
        best = base
    solved = _time.perf_counter()
    next_better = None
    for _ in range(3 if next_factor else 0):
        # a hint, not a plan to run: one ask per depth, no shrinking, and only until a few depths'
        # plans did not fit (each is a simulation)
        gain = 1e-6 * max(1.0, abs(best.importance))
        next_better, _, _ = _search(space, next_budget, check, 1, False, beat=best.importance + gain, misses=3,
                                    fronts=fronts, **limit)
        if next_better is None or next_better.memory.peak_bytes > budget_bytes:
            break
        # it fits this budget too: the plan's own search missed it (shrinking after a check is a
        # heuristic), so it is the plan, found later; then look further again
        best, next_better = replace(next_better, shrunk=True), None
        solved = _time.perf_counter()
    best = _detailed(space, best)
    next_better = _detailed(space, next_better)
    if time is not None:  # predicted on the device for the report, where the limit did not need it
        best = best if best.step_ms is not None else replace(best, step_ms=time.step_ms(space, best.options))
        if next_better is not None and next_better.step_ms is None:
            next_better = replace(next_better, step_ms=time.step_ms(space, next_better.options))
    return SolveResult(best, budget_bytes, minimum, next_better, per_depth, solved - t0,
                       max_step_ms=max_step_ms, time=time, next_seconds=_time.perf_counter() - solved)
