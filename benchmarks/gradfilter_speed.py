"""Benchmark: backward of a trained conv with gradient filtering (r = 2, 4) against the plain conv.

A 3×3 conv 64→64 on a 56×56 map at batch 8 (ResNet's layer1), input and weight gradients both
computed, median of 20 runs after warm-up, measured side by side in one process. The issue's
target: r = 2 takes at most half the time of the plain backward.

    .venv/bin/python benchmarks/gradfilter_speed.py
"""

from __future__ import annotations

import statistics
import time

import torch
import torch.nn as nn

from tlplan.plan.options import LayerOptions
from tlplan.plan.plan import Plan
from tlplan.runtime import apply_plan

SHAPE = (8, 64, 56, 56)


def backward_ms(model: nn.Module, runs: int = 20) -> float:
    samples = []
    for i in range(runs + 3):
        x = torch.randn(SHAPE, requires_grad=True)
        y = model(x)
        g = torch.randn_like(y)
        t0 = time.perf_counter()
        y.backward(g)
        if i >= 3:
            samples.append((time.perf_counter() - t0) * 1e3)
        model.zero_grad(set_to_none=True)
    return statistics.median(samples)


def main() -> None:
    torch.manual_seed(0)
    plain = nn.Sequential(nn.Identity(), nn.Conv2d(64, 64, 3, padding=1))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; conv 64→64 3×3 on {SHAPE}, dx and dW")
    base = backward_ms(plain)
    print(f"{'plain conv backward':28s} {base:8.2f} ms   1.00")
    for r in (2, 4, 7):
        filtered = apply_plan(
            nn.Sequential(nn.Identity(), nn.Conv2d(64, 64, 3, padding=1)),
            Plan("bench", SHAPE, {"1": LayerOptions(weight=1.0, bias=True, grad_filter=r)}),
        )
        ms = backward_ms(filtered)
        print(f"{f'gradient filter r={r}':28s} {ms:8.2f} ms   {ms / base:.2f} of plain")


if __name__ == "__main__":
    main()
