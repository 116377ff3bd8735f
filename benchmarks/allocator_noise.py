"""Benchmark: how repeatable a training step's time is with glibc's default malloc and with freed memory kept.

Four whole training steps (tlplan's calibration timing: a freshly built model, median over a
0.5 s window) are timed three times in each of several fresh processes, processes alternating
between ``TLPLAN_KEEP_FREED_MEMORY=0`` (glibc's default: large blocks mmap'd and returned on every
free) and tlplan's setting (``tlplan.measure.allocator``). Printed per step and setting: the
median, and the spread (slowest / fastest − 1) within a process and over all of them.

What is left across processes is mostly the machine: each worker also reads a gauge, one tiny
elementwise op split over the framework's threads (µs per op). On a virtual machine it has two
levels, and steps of small layers are slower while it reads high (waking the other thread takes
longer; one thread's own work does not change).

    .venv/bin/python benchmarks/allocator_noise.py [--processes 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

CASES = [("mcunet-5fps", "last", 1), ("mbv2-w0.35", "full", 4), ("resnet18", "last", 1), ("mobilenet_v3_small", "blocks:3", 8)]
BUILDS = 3


def handoff_us(ops: int = 20, samples: int = 50) -> float:
    """Median µs of one small elementwise op split over all threads: mostly waking the other threads."""
    import torch

    x = torch.randn(64, 1024)  # large enough for the framework to split it over its threads
    times = []
    for _ in range(samples):
        t0 = time.perf_counter()
        for _ in range(ops):
            x.relu()
        times.append((time.perf_counter() - t0) / ops * 1e6)
    return statistics.median(times)


def worker() -> None:
    from tlplan.measure.allocator import keep_freed_memory
    from tlplan.predict.calibration import step_resolution, time_step
    from tlplan.predict.predictor import StepCases

    keep_freed_memory()
    cases = StepCases()
    out = {"gauge": [handoff_us()]}
    for network, scheme, batch in CASES:
        res = step_resolution(network)
        trainable = cases.costs(network, scheme, batch, res).trainable
        out[f"{network} {scheme} b{batch}"] = [time_step(network, scheme, batch, res, threshold=0.05, trainable=trainable)[0]
                                               for _ in range(BUILDS)]
    out["gauge"].append(handoff_us())
    print(json.dumps(out))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--processes", type=int, default=3)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker()
        return
    runs: dict[str, list[dict[str, list[float]]]] = {"default malloc": [], "freed memory kept": []}
    for _ in range(args.processes):
        for setting, env in (("default malloc", "0"), ("freed memory kept", "1")):
            done = subprocess.run([sys.executable, __file__, "--worker"], capture_output=True, text=True, check=True,
                                  env={**os.environ, "TLPLAN_KEEP_FREED_MEMORY": env})
            runs[setting].append(json.loads(done.stdout))
    print(f"{args.processes} processes per setting, alternating; {BUILDS} builds per step in each; ms per step and µs per gauge op, all measured here")
    for setting, per_process in runs.items():
        print(f"thread hand-off gauge, {setting}, before/after each process: "
              + "  ".join(f"{p['gauge'][0]:.1f}/{p['gauge'][1]:.1f} µs" for p in per_process))
    print(f"{'step':34s} {'setting':18s} {'median':>8s} {'in-process spread':>18s} {'overall spread':>15s}")
    for case in [c for c in runs["default malloc"][0] if c != "gauge"]:
        for setting, per_process in runs.items():
            values = sorted(v for p in per_process for v in p[case])
            within = max(max(p[case]) / min(p[case]) - 1 for p in per_process)
            print(f"{case:34s} {setting:18s} {values[len(values) // 2]:8.2f} {100 * within:17.0f}% "
                  f"{100 * (values[-1] / values[0] - 1):14.0f}%")


if __name__ == "__main__":
    main()
