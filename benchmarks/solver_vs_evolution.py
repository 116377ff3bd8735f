"""Benchmark: the exact solver against the 256KB paper's kind of evolutionary search (5000 samples)
and against the solver it replaced (one HiGHS MILP per backward depth, kept below as it was).

Every zoo model, as `tlplan solve MODEL` sees it (batch 1, the zoo's resolution; the tiny-training
int8 graphs on the mcu runtime with 10 classes, the others on tlplan with 1000), at three budgets —
the cheapest feasible (the classifier alone), 2× and 4× it — and one budget below it (infeasible).
Same search space, same memory model, same importance prior for all three.

Times are the least of ``--repeats`` runs (the machine is shared: the least is the least
disturbed). What each column means:
- ``space s``: the search space's per-depth fixed costs and cheapest plan (one simulated step per
  depth), computed once per space and shared by both searches: not in either's time below.
- ``solver s``: ``SolveResult.seconds``, finding the plan, as `tlplan solve` reports it;
  ``next s``: ``SolveResult.next_seconds``, then finding the next better plan (the hint `tlplan
  solve` prints after the plan; the evolutionary search has no counterpart).
- ``evo s``: the evolutionary search, 5000 samples; ``solver/evo``: the ratio of the plan's search
  to it (like for like: one plan each); ``+next/evo``: the same with the next better plan's time.
- ``imp``: the solver's importance; ``vs old``: divided by the old solver's; ``vs evo``: by the
  evolutionary search's (whose plan is on the additive model only: ``evo fits`` says whether its
  simulated peak fits the budget, as every solver plan does).
- ``gap``: the optimality gap the solver reports; ``old s``: the old solver's time.
- infeasible rows: the seconds to raise CheckFailed.

    .venv/bin/python benchmarks/solver_vs_evolution.py [--repeats 3] [--no-old] [MODEL ...]
"""

from __future__ import annotations

import argparse
import os
import sys
import time


import tlplan
from tlplan.costs.annotate import annotate
from tlplan.errors import CheckFailed
from tlplan.memory.timeline import simulate_peak
from tlplan.solve import build_space, solve_space
from tlplan.solve.evolution import evolve_plan
from tlplan.solve.solver import _assemble, _knapsack
from tlplan.trace import trace_model
from tlplan.zoo import ZOO, zoo_names

FACTORS = (1, 2, 4)
INFEASIBLE = 0.9  # × the cheapest plan's peak


# ---------------------------------------------------------------- the old solver, as it was


def _old_knapsack(space, depth: int, capacity: int):
    """One depth's MILP, as the old solver posed it (the new solver keeps it for --max-step-ms)."""
    found = _knapsack(space, depth, capacity)
    return None if found is None else found[0]


def _old_assemble(space, depth, chosen):
    options, importance, _ = _assemble(space, depth, chosen)
    return options, importance


def _old_best_over_depths(space, budget, max_rounds, refine, depths=None):
    fixed = space.fixed_bytes
    best, per_depth = None, []
    for depth in depths if depths is not None else reversed(space.depths):
        if fixed[depth] > budget:
            continue
        capacity = budget - fixed[depth]
        found_here = None
        for _ in range(max_rounds):
            chosen = _old_knapsack(space, depth, capacity)
            if chosen is None:
                break
            opts, imp = _old_assemble(space, depth, chosen)
            peak = simulate_peak(annotate(space.graph, opts, space.runtime, space.precision), space.optimizer).peak_bytes
            if peak > budget:
                capacity -= peak - budget
                continue
            if found_here is None or imp > found_here:
                found_here = imp
            slack = budget - peak
            if not refine or slack < budget * 0.01:
                break
            capacity += slack
        if found_here is not None:
            per_depth.append((depth, found_here))
            best = found_here if best is None or found_here > best else best
    return best, per_depth


def old_solve(space, budget: int, max_rounds: int = 4, next_factor: float = 1.25) -> tuple[float, float]:
    """The old solver's importance and seconds (its next better plan included, as it reported them)."""
    t0 = time.perf_counter()
    best, per_depth = _old_best_over_depths(space, budget, max_rounds, refine=False)
    if per_depth:
        top = [d for d, _ in sorted(per_depth, key=lambda r: -r[1])[:3]]
        refined, _ = _old_best_over_depths(space, budget, max_rounds, refine=True, depths=top)
        if refined is not None and (best is None or refined > best):
            best = refined
    _old_best_over_depths(space, int(budget * next_factor), 1, refine=False)
    return max(best or 0.0, 0.0), time.perf_counter() - t0


# ---------------------------------------------------------------- the benchmark


def _least(fn, repeats: int):
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return out, min(times)


def _evolution_fits(space, budget: int, depth, picks) -> bool:
    if depth is None:
        return True
    opts, _ = _old_assemble(space, depth, picks)
    return simulate_peak(annotate(space.graph, opts, space.runtime, space.precision), space.optimizer).peak_bytes <= budget


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=zoo_names())
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-old", action="store_true", help="skip the old solver (minutes)")
    args = parser.parse_args(argv)
    print(f"# {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores; least of {args.repeats} runs")
    print(f"{'model':20s} {'runtime':7s} {'budget':>6s} {'space s':>7s} {'solver s':>8s} {'next s':>6s} {'evo s':>6s} {'solver/evo':>10s} "
          f"{'+next/evo':>9s} {'imp':>8s} {'vs old':>7s} {'vs evo':>7s} {'evo fits':>8s} {'gap':>5s} {'old s':>6s}")
    worst = {"ratio": 0.0, "seconds": 0.0, "vs_old": float("inf"), "infeasible": 0.0, "within": 0, "cases": 0}
    for name in args.models:
        mcu = ZOO[name].factory.__module__.endswith(".mcu")
        runtime, classes = ("mcu", 10) if mcu else ("tlplan", 1000)
        res = ZOO[name].resolution
        graph = trace_model(tlplan.load_model(name, num_classes=classes), (1, 3, res, res), name)
        space = build_space(graph, runtime)
        t0 = time.perf_counter()
        space.fixed_bytes, space.base_memory  # shared by both searches (cached on the space)
        t_space = time.perf_counter() - t0
        minimum = space.base_memory.peak_bytes
        for factor in FACTORS:
            budget = minimum * factor
            results = [solve_space(space, budget) for _ in range(args.repeats)]
            result = results[0]
            t_solver = min(r.seconds for r in results)
            t_next = min(r.next_seconds for r in results)
            (evo, depth, picks), t_evo = _least(lambda: evolve_plan(space, budget, samples=5000), args.repeats)
            fits = _evolution_fits(space, budget, depth, picks)
            imp = result.best.importance
            if args.no_old:
                vs_old, t_old = "", ""
            else:
                old, t_old_s = old_solve(space, budget)
                ratio_old = imp / old if old > 0 else (1.0 if imp >= old else 0.0)
                worst["vs_old"] = min(worst["vs_old"], ratio_old)
                vs_old, t_old = f"{ratio_old:7.3f}", f"{t_old_s:6.2f}"
            vs_evo = f"{imp / evo:7.3f}" if evo > 0 else f"{'-':>7s}"
            ratio = t_solver / max(t_evo, 1e-4)  # no depth fits: the search returns at once (< 0.1 ms)
            worst["ratio"] = max(worst["ratio"], ratio)
            worst["within"] += ratio <= 2
            worst["cases"] += 1
            worst["seconds"] = max(worst["seconds"], t_solver + t_next)
            print(f"{name:20s} {runtime:7s} {f'{factor}x':>6s} {t_space:7.3f} {t_solver:8.3f} {t_next:6.3f} {t_evo:6.3f} {ratio:10.2f} "
                  f"{(t_solver + t_next) / max(t_evo, 1e-4):9.2f} {imp:8.3f} {vs_old:>7s} {vs_evo} {'yes' if fits else 'no':>8s} {result.best.gap:5.3f} {t_old:>6s}", flush=True)
        below = int(minimum * INFEASIBLE)

        def infeasible() -> bool:
            try:
                solve_space(space, below)
            except CheckFailed:
                return True
            return False

        raised, t_inf = _least(infeasible, args.repeats)
        worst["infeasible"] = max(worst["infeasible"], t_inf)
        print(f"{name:20s} {runtime:7s} {f'{INFEASIBLE}x':>6s} {'':7s} {t_inf:8.4f} {'':6s} {'':10s} "
              f"{'raises' if raised else 'NO RAISE':>8s}", flush=True)
    print(f"# worst: solver {worst['seconds']:.3f} s (next better plan included), solver/evo {worst['ratio']:.2f} "
          f"({worst['within']} of {worst['cases']} within 2x), importance vs old {worst['vs_old']:.3f}, "
          f"infeasible answered in {worst['infeasible']:.4f} s")


if __name__ == "__main__":
    main(sys.argv[1:])
