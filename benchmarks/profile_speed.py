"""Benchmark: `tlplan profile MODEL --no-measure` against fvcore's FlopCountAnalysis.

Each measurement runs in a fresh Python process, as a command-line run would (the first conv of
a process pays oneDNN's set-up, which must not be credited to whichever tool runs second). Inside
the process, torch is imported and the model built first; the timed part is the analysis: for
tlplan, trace + costs + peak simulation + rendering the table; for fvcore, FlopCountAnalysis
with its per-module totals. Prints the medians and the ratio tlplan / fvcore (target: ≤ 2).

    .venv/bin/python benchmarks/profile_speed.py [resnet50 ...]
"""

from __future__ import annotations

import statistics
import subprocess
import sys

RUNS = 5

CHILD = r"""
import io, sys, time, warnings
warnings.filterwarnings("ignore")
import torch, tlplan
name, tool = sys.argv[1], sys.argv[2]
model = tlplan.load_model(name)
res = tlplan.default_resolution(name)
t0 = time.perf_counter()
if tool == "tlplan":
    from rich.console import Console
    from tlplan.report.text import render_table
    report = tlplan.profile(model, (1, 3, res, res), model_name=name)
    render_table(report, Console(file=io.StringIO(), width=200))
else:
    from fvcore.nn import FlopCountAnalysis
    a = FlopCountAnalysis(model, torch.randn(1, 3, res, res))
    a.unsupported_ops_warnings(False); a.uncalled_modules_warnings(False)
    a.by_module()
print(time.perf_counter() - t0)
"""


def run(name: str, tool: str) -> float:
    out = subprocess.run([sys.executable, "-c", CHILD, name, tool], check=True, capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1])


def main(names: list[str]) -> None:
    import torch

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; median of {RUNS} fresh processes each")
    print(f"{'model':22s} {'tlplan':>9s} {'fvcore':>9s} {'tlplan/fvcore':>14s}")
    for name in names:
        t = statistics.median(run(name, "tlplan") for _ in range(RUNS))
        f = statistics.median(run(name, "fvcore") for _ in range(RUNS))
        print(f"{name:22s} {t:8.3f}s {f:8.3f}s {t / f:14.2f}")


if __name__ == "__main__":
    main(sys.argv[1:] or ["resnet50", "mobilenet_v2", "mcunet-5fps"])
