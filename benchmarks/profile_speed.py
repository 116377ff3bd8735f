"""Benchmark: `tlplan.profile` against fvcore's FlopCountAnalysis and torchinfo's summary.

Each tool runs in a fresh Python process of its own, as a command-line run would, in rounds that
interleave the tools. Inside each process, torch is imported, the model built and run forward
once (the first conv of a process pays oneDNN's set-up, which must not be credited to a tool);
then, timed:

- ``tlplan``: the first ``tlplan.profile`` of the model (trace with a forward at batch 1, costs,
  peak simulation), as the CLI's ``profile --no-measure`` does;
- ``tlplan again``: a second call in the same process (a notebook, or ``compare`` and ``solve``
  asking again): the trace comes from the per-process trace cache;
- ``render``: the default rich table of that report;
- ``fvcore``: FlopCountAnalysis with its per-module totals;
- ``torchinfo``: ``summary`` at the same input (when torchinfo is installed: it is not a
  dependency of tlplan; ``pip install torchinfo`` to compare).

One round per model goes first, uncounted, so every import reads compiled bytecode as in an
installed package. Prints medians (seconds, measured here) and the ratios. The issue's targets: tlplan no slower
than torchinfo in process, and within 2x fvcore.

    .venv/bin/python benchmarks/profile_speed.py [resnet50 ...]
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import subprocess
import sys

RUNS = 5
TOOLS = ("tlplan", "tlplan again", "render", "fvcore", "torchinfo")

CHILD = r"""
import io, json, sys, time, warnings
warnings.filterwarnings("ignore")
import torch, tlplan
name, tool = sys.argv[1], sys.argv[2]
model = tlplan.load_model(name)
res = tlplan.default_resolution(name)
shape = (1, 3, res, res)
with torch.no_grad():  # oneDNN's first-call set-up, credited to no tool
    model.eval()(torch.zeros(shape))
model.train()
seconds = {}
if tool == "tlplan":
    from rich.console import Console
    from tlplan.report.text import render_table
    t0 = time.perf_counter(); report = tlplan.profile(model, shape, model_name=name); seconds["tlplan"] = time.perf_counter() - t0
    t0 = time.perf_counter(); report = tlplan.profile(model, shape, model_name=name); seconds["tlplan again"] = time.perf_counter() - t0
    t0 = time.perf_counter(); render_table(report, Console(file=io.StringIO(), width=200)); seconds["render"] = time.perf_counter() - t0
elif tool == "fvcore":
    from fvcore.nn import FlopCountAnalysis
    t0 = time.perf_counter()
    a = FlopCountAnalysis(model, torch.randn(shape))
    a.unsupported_ops_warnings(False); a.uncalled_modules_warnings(False)
    a.by_module()
    seconds["fvcore"] = time.perf_counter() - t0
elif tool == "torchinfo":
    try:
        import torchinfo
    except ImportError:
        pass
    else:
        t0 = time.perf_counter(); torchinfo.summary(model, input_size=shape, verbose=0); seconds["torchinfo"] = time.perf_counter() - t0
print(json.dumps(seconds))
"""


# Imports read compiled bytecode, as they do in an installed package (pip compiles it): a shell's
# PYTHONDONTWRITEBYTECODE would otherwise make every lazy import inside a timed call compile source.
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def run(name: str) -> dict[str, float]:
    """One round: each tool in a fresh process of its own (after the same warm-up forward), so no
    tool inherits another's one-time set-up (torch's override tables, allocator pages, imports)."""
    seconds: dict[str, float] = {}
    for tool in ("tlplan", "fvcore", "torchinfo"):
        out = subprocess.run([sys.executable, "-c", CHILD, name, tool], check=True, capture_output=True, text=True, env=ENV)
        seconds.update(json.loads(out.stdout.strip().splitlines()[-1]))
    return seconds


def main(names: list[str]) -> None:
    import torch

    print(f"{datetime.date.today()} · {platform.machine()} · torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; median of {RUNS} fresh processes each (seconds, measured here)")
    print(f"{'model':16s} " + " ".join(f"{t:>12s}" for t in TOOLS) + f" {'tlplan/torchinfo':>17s} {'tlplan/fvcore':>14s}")
    for name in names:
        run(name)  # not counted: writes the bytecode of anything first imported here
        runs = [run(name) for _ in range(RUNS)]
        med = {t: statistics.median(r[t] for r in runs) for t in TOOLS if all(t in r for r in runs)}
        cells = " ".join(f"{med[t]:12.3f}" if t in med else f"{'-':>12s}" for t in TOOLS)
        vs_info = f"{med['tlplan'] / med['torchinfo']:17.2f}" if "torchinfo" in med else f"{'-':>17s}"
        print(f"{name:16s} {cells} {vs_info} {med['tlplan'] / med['fvcore']:14.2f}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:] or ["resnet50", "mobilenet_v2", "mcunet-5fps"])
