"""Benchmark: how repeatable a training step's time is with glibc's default malloc and with freed memory kept.

Four whole training steps (tlplan's calibration timing: a freshly built model, median over a
0.5 s window) are timed three times in each of several fresh processes, processes alternating
between ``TLPLAN_KEEP_FREED_MEMORY=0`` (glibc's default: large blocks mmap'd and returned on every
free) and tlplan's setting (``tlplan.measure.allocator``). Printed per step and setting: the
median, and the spread (slowest / fastest − 1) within a process and over all of them.

    .venv/bin/python benchmarks/allocator_noise.py [--processes 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

CASES = [("mcunet-5fps", "last", 1), ("mbv2-w0.35", "full", 4), ("resnet18", "last", 1), ("mobilenet_v3_small", "blocks:3", 8)]
BUILDS = 3


def worker() -> None:
    from tlplan.measure.allocator import keep_freed_memory
    from tlplan.predict.calibration import step_resolution, time_step
    from tlplan.predict.predictor import StepCases

    keep_freed_memory()
    cases = StepCases()
    out = {}
    for network, scheme, batch in CASES:
        res = step_resolution(network)
        trainable = cases.costs(network, scheme, batch, res).trainable
        out[f"{network} {scheme} b{batch}"] = [time_step(network, scheme, batch, res, threshold=0.05, trainable=trainable)[0]
                                               for _ in range(BUILDS)]
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
    print(f"{args.processes} processes per setting, alternating; {BUILDS} builds per step in each; ms per step")
    print(f"{'step':34s} {'setting':18s} {'median':>8s} {'in-process spread':>18s} {'overall spread':>15s}")
    for case in runs["default malloc"][0]:
        for setting, per_process in runs.items():
            values = sorted(v for p in per_process for v in p[case])
            within = max(max(p[case]) / min(p[case]) - 1 for p in per_process)
            print(f"{case:34s} {setting:18s} {values[len(values) // 2]:8.2f} {100 * within:17.0f}% "
                  f"{100 * (values[-1] / values[0] - 1):14.0f}%")


if __name__ == "__main__":
    main()
