"""Measured latency on this machine: each layer alone (forward, backward) and a whole training step."""

from __future__ import annotations

import copy
import statistics
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F

from ..costs.annotate import CostTable
from ..trace.ops import symbolic_trace
from .accelerator import CPU, Accelerator
from .allocator import keep_freed_memory
from .saved import set_trainable


@dataclass(frozen=True)
class LayerTiming:
    fwd_ms: float
    bwd_ms: float | None  # None where the layer has no backward under the scheme


@dataclass(frozen=True)
class Timings:
    layers: dict[str, LayerTiming]
    step_ms: float  # one whole training step: forward, loss, backward
    repeats: int
    threads: int
    accelerator: str = "cpu"  # where they were timed: "cpu" or "cuda"
    where: str = ""  # the CPU (and threads) or the GPU, in words


Progress = Callable[[int, int], None]  # (done, total)

#: how the runs of one timing are summed up. ``min``, the fastest run, is what ``timeit`` advises:
#: on a shared machine a slower run measures the neighbours, not the code, and the fastest of runs
#: spread over minutes repeats far better than their median (docs/devices.md, "Accuracy").
STATISTICS: dict[str, Callable[[Sequence[float]], float]] = {"median": statistics.median, "min": min}


def summary(samples: Sequence[float], statistic: str) -> float:
    """``samples`` summed up by ``statistic`` (a key of ``STATISTICS``)."""
    return float(STATISTICS[statistic](samples))


@contextmanager
def framework_threads(threads: int | None) -> Iterator[int]:
    """Run the block with ``threads`` framework (intra-op) threads (None: as set), then restore."""
    before = torch.get_num_threads()
    if threads is not None and threads != before:
        torch.set_num_threads(threads)
    try:
        yield torch.get_num_threads()
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def _samples_ms(fn: Callable[[], Any], warmup: int, repeats: int, accelerator: Accelerator = CPU) -> list[float]:
    keep_freed_memory()  # every timing under the same allocator settings (see tlplan.measure.allocator)
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        accelerator.synchronize()  # nothing queued before the run is counted in it
        timer = accelerator.timer()
        timer.start()
        fn()
        timer.stop()
        samples.append(timer.ms())  # on a GPU: once the stream has run the queued work
    return samples


Prepared = tuple[Callable[[], torch.Tensor], Sequence[Sequence[torch.Tensor]]]


def time_passes(prepare: Callable[[], Prepared], *, warmup: int, repeats: int,
                statistic: str = "median", accelerator: Accelerator = CPU) -> tuple[float, tuple[float, ...]]:
    """Ms (the ``statistic`` of the runs) of a forward and of each backward group computed on its graph.

    ``prepare()`` (not timed) returns ``(forward, groups)``: a thunk running the op with autograd
    recording, and the tensor groups to differentiate for, one ``torch.autograd.grad`` call each,
    in order, on the same graph (kept between calls). An empty ``groups`` times the forward only.
    Each pass is timed by ``accelerator``'s stopwatch (host clock; CUDA events on a GPU), read
    once the run's queued work is done.
    """
    keep_freed_memory()
    fwd: list[float] = []
    bwd: list[list[float]] = []
    for i in range(warmup + repeats):
        forward, groups = prepare()
        accelerator.synchronize()  # preparing (copies of the inputs) is not timed
        forward_timer = accelerator.timer()
        forward_timer.start()
        out = forward()
        forward_timer.stop()
        timers = []
        if groups:
            grad = torch.randn_like(out)
            for j, group in enumerate(groups):
                accelerator.synchronize()
                timer = accelerator.timer()
                timer.start()
                torch.autograd.grad(out, list(group), grad, retain_graph=j < len(groups) - 1, allow_unused=True)
                timer.stop()
                timers.append(timer)
        accelerator.synchronize()
        if i >= warmup:
            fwd.append(forward_timer.ms())
            bwd.append([timer.ms() for timer in timers])
    return summary(fwd, statistic), tuple(summary(column, statistic) for column in zip(*bwd))


class _LayerBench(torch.fx.Interpreter):
    """Runs the model node by node; times each costed node on copies of its real arguments."""

    def __init__(self, gm: torch.fx.GraphModule, costs: CostTable, warmup: int, repeats: int, progress: Progress | None,
                 accelerator: Accelerator = CPU):
        super().__init__(gm)
        self.accelerator = accelerator
        self.by_node = {layer.fx_node: (layer, cost) for layer, cost in zip(costs.graph.layers, costs.layers)}
        self.warmup, self.repeats, self.progress = warmup, repeats, progress
        self.timings: dict[str, LayerTiming] = {}
        # whether each node's value requires grad under the scheme (the model input does not)
        self.requires_grad = {layer.fx_node: cost.state.recorded for layer, cost in self.by_node.values()}

    def run_node(self, n: torch.fx.Node) -> Any:
        with torch.no_grad():
            result = super().run_node(n)
        entry = self.by_node.get(n.name)
        if entry is not None:
            layer, cost = entry
            self.timings[layer.name] = self._time(n, cost)
            if self.progress:
                self.progress(len(self.timings), len(self.by_node))
        return result

    def _time(self, n: torch.fx.Node, cost: Any) -> LayerTiming:
        leaves: list[torch.Tensor] = []

        def fresh(node: torch.fx.Node) -> Any:
            value = self.env[node]
            if not isinstance(value, torch.Tensor):
                return value
            leaf = value.detach().clone().requires_grad_(self.requires_grad.get(node.name, False))
            if leaf.requires_grad:
                leaves.append(leaf)
            return leaf.clone()  # a non-leaf copy: in-place ops may write it

        def build() -> tuple[Any, Any]:
            leaves.clear()
            return torch.fx.node.map_arg(n.args, fresh), torch.fx.node.map_arg(n.kwargs, fresh)

        target = self.fetch_attr(n.target) if n.op == "call_module" else n.target

        def call(a: tuple[Any, ...], k: dict[str, Any]) -> Any:
            if n.op == "call_method":
                return getattr(a[0], n.target)(*a[1:], **k)
            return target(*a, **k)

        params = [p for p in target.parameters(recurse=False) if p.requires_grad] if isinstance(target, nn.Module) else []
        has_backward = cost.state.recorded and (cost.state.needs_input_grad or bool(params))

        def prepare() -> Prepared:
            a, k = build()
            return (lambda: call(a, k)), ([leaves + params] if has_backward else [])

        fwd_ms, bwd_ms = time_passes(prepare, warmup=self.warmup, repeats=self.repeats, accelerator=self.accelerator)
        return LayerTiming(fwd_ms, bwd_ms[0] if has_backward else None)


def prepared_copy(model: nn.Module, costs: CostTable) -> nn.Module:
    """A copy of ``model`` set up to train as ``costs`` assumes (the caller's model is untouched)."""
    model = copy.deepcopy(model)  # training-mode runs update BN statistics: keep the caller's
    if costs.runtime == "tlplan":
        from ..plan.plan import Plan
        from ..runtime import apply_plan

        graph = costs.graph
        plan = Plan(graph.model_name, graph.input_shape, costs.options, runtime="tlplan", precision=costs.precision)
        return apply_plan(model, plan)
    set_trainable(model, costs.trainable)
    return model


def measure_latency(
    model: nn.Module,
    costs: CostTable,
    *,
    warmup: int = 2,
    repeats: int = 5,
    progress: Progress | None = None,
    accelerator: Accelerator = CPU,
) -> Timings:
    """Time every layer alone (median of ``repeats`` after ``warmup``) and a whole training step.

    Layers are timed on copies of their real inputs, with the scheme's ``requires_grad`` set, so a
    frozen layer's backward computes only the input gradient. Needs an fx-traceable model.
    ``accelerator``: where (``tlplan.measure.accelerator``; the model's copy is moved there).
    """
    from .accelerator import describe

    model = prepared_copy(model, costs).to(accelerator.device)
    model.train()
    x = torch.randn(costs.graph.input_shape, device=accelerator.device)
    layers: dict[str, LayerTiming] = {}
    if costs.graph.traced_by == "fx":
        gm = symbolic_trace(model)
        bench = _LayerBench(gm, costs, warmup, repeats, progress, accelerator)
        bench.run(x)
        layers = bench.timings

    samples = step_samples_ms(model, x, warmup=1, repeats=max(3, repeats // 2), accelerator=accelerator)
    return Timings(layers=layers, step_ms=statistics.median(samples), repeats=repeats, threads=torch.get_num_threads(),
                   accelerator=accelerator.kind, where=describe(accelerator))


def step_samples_ms(model: nn.Module, x: torch.Tensor, *, warmup: int, repeats: int,
                    accelerator: Accelerator = CPU) -> list[float]:
    """Times (ms) of whole training steps: forward, cross-entropy, backward, gradients dropped.

    The model is used as it is (its ``requires_grad`` flags and train mode, on ``x``'s device):
    callers prepare a copy.
    """
    target = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
    trainable_any = any(p.requires_grad for p in model.parameters())

    def step() -> None:
        out = model(x)
        if trainable_any:
            F.cross_entropy(out, target).backward()
            model.zero_grad(set_to_none=True)

    return _samples_ms(step, warmup, repeats, accelerator)


def time_step(model: nn.Module, input_shape: tuple[int, ...], *, repeats: int = 3, accelerator: Accelerator = CPU) -> float:
    """Median ms of a training step of a model set up to train (moved to ``accelerator``)."""
    model = model.to(accelerator.device)
    model.train()
    x = torch.randn(input_shape, device=accelerator.device)
    return statistics.median(step_samples_ms(model, x, warmup=1, repeats=repeats, accelerator=accelerator))
