"""Benchmark: a training step on the tlplan runtime against plain PyTorch with the same trainable set.

For each scheme, the scheme's plan is made twice from one copy of the weights: on the ``eager``
runtime (PyTorch's own modules, only ``requires_grad`` set: what a user gets without tlplan) and
on the ``tlplan`` runtime (the runtime's modules swapped in). Both run forward, cross-entropy,
backward and an SGD update on the same batch; their steps are timed in turn (interleaved, so a
change of machine speed touches both) and the medians compared. The saved bytes of one step are
measured on both (saved-tensor hooks), so each ratio stands beside what it buys.

The issue's target: the tlplan step within 5 % of plain PyTorch's for every scheme.

    .venv/bin/python benchmarks/runtime_speed.py [--models mobilenet_v2,resnet18] [--runs 15]
"""

from __future__ import annotations

import argparse
import copy
import datetime
import platform
import statistics
import time

import torch
import torch.nn.functional as F

import tlplan
from tlplan.measure.saved import measure_saved_bytes

SCHEMES = ("full", "bias", "blocks:4", "layers:6", "mobiletl:4", "gradfilter:4:2", "lite+bias")
BATCH, RESOLUTION, CLASSES = 8, 160, 1000


def _models(name: str, scheme: str) -> dict[str, torch.nn.Module]:
    base = tlplan.load_model(name)
    shape = (BATCH, 3, RESOLUTION, RESOLUTION)
    out = {}
    for runtime in ("eager", "tlplan"):
        model = copy.deepcopy(base)
        plan = tlplan.plan_from_scheme(model, shape, scheme, runtime=runtime)
        out[runtime] = tlplan.apply_plan(model, plan).train()
    return out


def _step(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> None:
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(images), labels).backward()
    with torch.no_grad():
        for p in model.parameters():
            if p.grad is not None:
                p.add_(p.grad, alpha=-1e-3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mobilenet_v2,resnet18")
    parser.add_argument("--schemes", default=",".join(SCHEMES))
    parser.add_argument("--runs", type=int, default=15, help="timed steps per runtime and scheme")
    args = parser.parse_args()
    torch.manual_seed(0)
    images = torch.randn(BATCH, 3, RESOLUTION, RESOLUTION)
    labels = torch.randint(0, CLASSES, (BATCH,))
    print(f"{datetime.date.today()} · {platform.machine()} · torch {torch.__version__} · "
          f"{torch.get_num_threads()} threads · batch {BATCH} at {RESOLUTION}×{RESOLUTION}; "
          f"median of {args.runs} interleaved steps (measured here)")
    print(f"{'model':14s} {'scheme':16s} {'eager ms':>9s} {'tlplan ms':>10s} {'ratio':>6s} "
          f"{'eager saved MB':>15s} {'tlplan saved MB':>16s}")
    for name in args.models.split(","):
        for scheme in args.schemes.split(","):
            models = _models(name, scheme)
            saved = {rt: measure_saved_bytes(m, tuple(images.shape)).saved_bytes for rt, m in models.items()}
            for m in models.values():  # warm-up: first-call allocations and oneDNN's primitive caches
                _step(m, images, labels)
                _step(m, images, labels)
            samples: dict[str, list[float]] = {rt: [] for rt in models}
            for _ in range(args.runs):
                for runtime, model in models.items():
                    t0 = time.perf_counter()
                    _step(model, images, labels)
                    samples[runtime].append((time.perf_counter() - t0) * 1e3)
            eager, ours = statistics.median(samples["eager"]), statistics.median(samples["tlplan"])
            print(f"{name:14s} {scheme:16s} {eager:9.1f} {ours:10.1f} {ours / eager:6.2f} "
                  f"{saved['eager'] / 1e6:15.1f} {saved['tlplan'] / 1e6:16.1f}", flush=True)


if __name__ == "__main__":
    main()
