"""Benchmark: the exact solver against the 256KB paper's kind of evolutionary search (5000 samples).

Same search space, same memory model, same importance prior; both objectives and times printed
side by side, with the solver's plan checked by the full memory model (simulated peak).

    .venv/bin/python benchmarks/solver_vs_evolution.py
"""

from __future__ import annotations

import time

import tlplan
from tlplan.sizes import parse_size
from tlplan.solve import build_space, solve_space
from tlplan.solve.evolution import evolve
from tlplan.trace import trace_model

CASES = [
    ("mcunet-5fps", "mcu", "256KB", 1, 128, 10),
    ("mbv2-w0.35", "mcu", "256KB", 1, 128, 10),
    ("proxyless-w0.3", "mcu", "256KB", 1, 128, 10),
    ("mobilenet_v2", "tlplan", "64MB", 8, 128, 10),
    ("resnet50", "tlplan", "512MB", 8, 224, 1000),
]


def main() -> None:
    print(f"{'model':16s} {'runtime':7s} {'budget':>7s} {'solver':>8s} {'time':>7s} {'evolution':>9s} {'time':>7s} {'solver/evo':>10s} {'peak/budget':>11s}")
    for name, runtime, budget, batch, res, classes in CASES:
        graph = trace_model(tlplan.load_model(name, num_classes=classes), (batch, 3, res, res), name)
        t0 = time.perf_counter()
        space = build_space(graph, runtime, "int8" if runtime == "mcu" else "fp32")
        result = solve_space(space, parse_size(budget))
        t_solver = time.perf_counter() - t0
        t0 = time.perf_counter()
        evo = evolve(space, parse_size(budget), samples=5000)
        t_evo = time.perf_counter() - t0
        ratio = result.best.importance / evo if evo else float("inf")
        print(f"{name:16s} {runtime:7s} {budget:>7s} {result.best.importance:8.3f} {t_solver:6.2f}s {evo:9.3f} {t_evo:6.2f}s "
              f"{ratio:10.2f} {result.best.memory.peak_bytes / parse_size(budget):11.3f}")


if __name__ == "__main__":
    main()
