"""Predicted peak memory of one training step: a simulated forward + backward timeline.

Eager assumptions (plain PyTorch, SGD without momentum): every parameter is resident; the input
batch lives through the step; a forward value lives until its last consumer ran, or until the
backward of the earliest layer keeping it; in backward, the gradient of each value lives from the
first consumer's backward that produces it until its producer's backward ran; parameter gradients
are allocated at their layer's backward and kept until the optimizer step. Workspace buffers of
individual kernels are not modelled.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..costs.annotate import CostTable
from ..trace.graph import INPUT


@dataclass(frozen=True)
class MemoryBreakdown:
    param_bytes: int  # all parameters, resident
    trainable_param_bytes: int
    grad_bytes: int  # gradients of the trained parameters
    optimizer_bytes: int  # optimizer state (none for plain SGD)
    saved_bytes: int  # activations kept for backward
    input_bytes: int
    peak_bytes: int  # the simulated peak, everything above included at that moment
    peak_at: str  # where it happens: "forward <layer>" or "backward <layer>"


def simulate_peak(costs: CostTable) -> MemoryBreakdown:
    graph = costs.graph
    param_bytes = sum(p.numel * p.dtype_bytes for layer in graph.layers for p in layer.params)
    grad_total = costs.totals["trainable_param_bytes"]
    last_use: dict[str, int] = {}  # storage root -> index of its last forward consumer
    for i, layer in enumerate(graph.layers):
        for src in layer.inputs:
            last_use[graph.storage_root(src)] = i
    # earliest forward layer keeping each storage: its backward releases it
    kept_until: dict[str, int] = {}
    private_saved: dict[int, int] = {}
    for i, cost in enumerate(costs.layers):
        for t in cost.saved:
            if t.value is None:
                private_saved[i] = private_saved.get(i, 0) + t.private_bytes
            else:
                root = graph.storage_root(t.value)
                kept_until[root] = min(kept_until.get(root, i), i)

    # ---- forward
    live: dict[str, int] = {INPUT: graph.value_bytes(INPUT)}
    private_live = 0
    base = param_bytes
    peak, peak_at = 0, "start"
    out_root = graph.storage_root(graph.layers[-1].name) if graph.layers else INPUT
    for i, layer in enumerate(graph.layers):
        root = graph.storage_root(layer.name)
        if root not in live:
            live[root] = graph.value_bytes(layer.name)
        private_live += private_saved.get(i, 0)
        now = base + sum(live.values()) + private_live
        if now > peak:
            peak, peak_at = now, f"forward {layer.name}"
        for src in set(layer.inputs):
            r = graph.storage_root(src)
            if last_use.get(r) == i and r not in kept_until and r not in (INPUT, out_root):
                live.pop(r, None)

    # ---- backward, in reverse; only recorded layers run
    grads: dict[str, int] = {}
    if costs.layers and costs.layers[-1].state.recorded:
        grads[graph.layers[-1].name] = graph.value_bytes(graph.layers[-1].name)
    param_grads = 0
    for i in range(len(graph.layers) - 1, -1, -1):
        layer, cost = graph.layers[i], costs.layers[i]
        if not cost.state.recorded:
            continue
        param_grads += cost.trainable_param_bytes
        new_grads = 0
        for src, rg in zip(layer.inputs, cost.state.inputs_require_grad):
            if rg and src not in grads:
                grads[src] = graph.value_bytes(src)
                new_grads += graph.value_bytes(src)
        now = base + param_grads + sum(live.values()) + private_live + sum(grads.values())
        if now > peak:
            peak, peak_at = now, f"backward {layer.name}"
        grads.pop(layer.name, None)
        private_live -= private_saved.get(i, 0)
        for r, first in list(kept_until.items()):
            if first == i:
                live.pop(r, None)
    return MemoryBreakdown(
        param_bytes=param_bytes,
        trainable_param_bytes=costs.totals["trainable_param_bytes"],
        grad_bytes=grad_total,
        optimizer_bytes=0,
        saved_bytes=costs.totals["saved_bytes"],
        input_bytes=graph.value_bytes(INPUT),
        peak_bytes=peak,
        peak_at=peak_at,
    )
