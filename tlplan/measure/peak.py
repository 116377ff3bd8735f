"""Measured peak memory of one training step: on the CPU from torch.profiler's memory events; on a
GPU from the CUDA caching allocator's own statistics (``torch.cuda.max_memory_allocated``)."""

from __future__ import annotations

import os
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from ..plan.plan import Optimizer
from .accelerator import CPU, Accelerator


@dataclass(frozen=True)
class PeakMeasurement:
    resident_bytes: int  # before the step: parameters, buffers, the input batch, optimizer state (not the labels)
    step_peak_bytes: int  # the most the step allocated on top of that at any moment
    peak_bytes: int  # resident + step peak
    accelerator: str = "cpu"  # where it was measured: "cpu" or "cuda"


def make_optimizer(params: list[torch.nn.Parameter], spec: Optimizer) -> torch.optim.Optimizer:
    """The optimizer training runs (``tlplan.runtime.qas.make_optimizer``: QAS, Adam or SGD), so
    what is measured is what is trained."""
    from ..runtime.qas import make_optimizer as training_optimizer

    return training_optimizer(params, spec)


def _storage_bytes(tensors) -> int:
    seen: dict[int, int] = {}
    for t in tensors:
        if isinstance(t, torch.Tensor) and t.numel():
            s = t.untyped_storage()
            seen[s.data_ptr()] = s.nbytes()
    return sum(seen.values())


def measure_peak(model: nn.Module, input_shape: tuple[int, ...], optimizer: Optimizer = Optimizer(),
                 accelerator: Accelerator = CPU) -> PeakMeasurement:
    """Peak bytes of a training step (forward, cross-entropy, backward, optimizer step, zero_grad).

    ``model`` is used as it is (apply a plan first; it is moved to ``accelerator``'s device). A
    first step runs unmeasured, so the optimizer state exists. On the CPU the second step is
    profiled and every allocation and free is replayed in order. On a GPU the caching allocator
    counts: resident is what it has allocated before the second step (parameters, buffers, the
    input and labels, optimizer state, and what libraries keep, such as cuBLAS's workspace), the
    peak its ``max_memory_allocated`` over that step; both count blocks as the allocator rounds
    them (``tlplan.memory.cuda``).
    """
    model.to(accelerator.device)
    model.train()
    x = torch.randn(input_shape, device=accelerator.device)
    target = torch.zeros(input_shape[0], dtype=torch.long, device=accelerator.device)
    trained = [p for p in model.parameters() if p.requires_grad]
    opt = make_optimizer(trained, optimizer) if trained else None

    def step() -> None:
        out = model(x)
        loss = F.cross_entropy(out, target)
        if trained:
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

    step()
    if accelerator.kind != "cpu":  # the allocator's own statistics
        resident = accelerator.allocated_bytes() or 0
        accelerator.reset_peak()
        step()
        peak = accelerator.max_allocated_bytes() or 0
        return PeakMeasurement(resident_bytes=resident, step_peak_bytes=max(peak - resident, 0), peak_bytes=max(peak, resident),
                               accelerator=accelerator.kind)
    state = [t for s in (opt.state.values() if opt else []) for t in s.values() if isinstance(t, torch.Tensor)]
    resident = _storage_bytes([*model.parameters(), *model.buffers(), x, *state])
    with _without_kineto_log(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events = sorted(
        (e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"
    )
    now = peak = 0
    for _, delta in events:
        now += delta
        peak = max(peak, now)
    return PeakMeasurement(resident_bytes=resident, step_peak_bytes=peak, peak_bytes=resident + target.nbytes + peak)


# the profiler's C++ side (kineto) writes "USDT: ... profiler_start" lines straight to file
# descriptor 2 whatever its log level; they mean nothing to a tlplan user
_KINETO_PREFIXES = (b"USDT:", b"STAGE:", b"INFO:")


@contextmanager
def _without_kineto_log() -> Iterator[None]:
    """Run the block with fd 2 going to a temp file; afterwards pass on every line but kineto's."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable fd 2 (an embedding host): nothing to hide
        yield
        return
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            kept = [line for line in caught.read().splitlines(keepends=True) if not line.startswith(_KINETO_PREFIXES)]
            if kept:
                sys.stderr.write(b"".join(kept).decode("utf-8", "replace"))
