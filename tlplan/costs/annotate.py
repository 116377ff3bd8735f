"""The walker: one pass over the layer graph, applying the rule tables under a set of trained params."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Iterable

from ..trace.graph import INPUT, Layer, LayerGraph
from .rules import EAGER_SAVED, LINEAR_MAP_OPS, MACS_FWD, GradState, SavedTensor


@dataclass(frozen=True)
class LayerCost:
    """Costs of one layer under one training configuration (analytic: derived, not measured)."""

    name: str
    op: str
    block: str | None
    output_shape: tuple[int, ...]
    params: int
    trainable_params: int
    trainable_param_bytes: int
    macs_fwd: int
    macs_bwd_input: int
    macs_bwd_weight: int
    saved_bytes: int  # bytes kept for backward, each storage counted at the first layer keeping it
    saved: tuple[SavedTensor, ...]  # what the layer keeps (before deduplication)
    state: GradState
    supported: bool

    @property
    def macs_bwd(self) -> int:
        return self.macs_bwd_input + self.macs_bwd_weight


@dataclass(frozen=True)
class CostTable:
    graph: LayerGraph
    trainable: frozenset[str]
    runtime: str
    layers: tuple[LayerCost, ...]

    @cached_property
    def totals(self) -> dict[str, int]:
        return {
            "params": sum(c.params for c in self.layers),
            "trainable_params": sum(c.trainable_params for c in self.layers),
            "trainable_param_bytes": sum(c.trainable_param_bytes for c in self.layers),
            "macs_fwd": sum(c.macs_fwd for c in self.layers),
            "macs_bwd_input": sum(c.macs_bwd_input for c in self.layers),
            "macs_bwd_weight": sum(c.macs_bwd_weight for c in self.layers),
            "macs_bwd": sum(c.macs_bwd for c in self.layers),
            "saved_bytes": sum(c.saved_bytes for c in self.layers),
        }

    @property
    def unsupported(self) -> list[str]:
        return [c.name for c in self.layers if not c.supported]


RUNTIMES = ("eager",)


def annotate(graph: LayerGraph, trainable: Iterable[str], runtime: str = "eager") -> CostTable:
    """Per-layer costs of training ``graph`` with the named parameters trainable.

    The input gradient of a layer is needed only when something below it is trained (the value it
    reads requires grad); a frozen layer needs no weight gradient; nothing below the lowest trained
    layer is recorded by autograd, so nothing is kept there.
    """
    trainable = frozenset(trainable)
    requires_grad: dict[str, bool] = {INPUT: False}
    seen_storages: set[str] = set()
    costs: list[LayerCost] = []
    for layer in graph.layers:
        trained = frozenset(p.role for p in layer.params if p.name in trainable)
        state = GradState(tuple(requires_grad.get(src, False) for src in layer.inputs), trained)
        requires_grad[layer.name] = state.recorded
        macs_rule = MACS_FWD.get(layer.op)
        saved_rule = EAGER_SAVED.get(layer.op)
        supported = macs_rule is not None and saved_rule is not None
        macs_fwd = macs_rule(layer) if macs_rule else 0
        saved = tuple(saved_rule(layer, state)) if saved_rule else ()
        saved_bytes = 0
        for t in saved:
            if t.value is None:
                saved_bytes += t.private_bytes
                continue
            root = graph.storage_root(t.value)
            if root not in seen_storages:
                seen_storages.add(root)
                saved_bytes += graph.value_bytes(root)
        linear_map = layer.op in LINEAR_MAP_OPS
        costs.append(
            LayerCost(
                name=layer.name,
                op=layer.op,
                block=layer.block,
                output_shape=layer.output_shape,
                params=layer.param_count,
                trainable_params=sum(p.numel for p in layer.params if p.name in trainable),
                trainable_param_bytes=sum(p.numel * p.dtype_bytes for p in layer.params if p.name in trainable),
                macs_fwd=macs_fwd,
                macs_bwd_input=macs_fwd if linear_map and state.needs_input_grad else 0,
                macs_bwd_weight=macs_fwd if linear_map and "weight" in trained else 0,
                saved_bytes=saved_bytes,
                saved=saved,
                state=state,
                supported=supported,
            )
        )
    return CostTable(graph=graph, trainable=trainable, runtime=runtime, layers=tuple(costs))
