"""Predicted peak memory of one training step: a simulated forward + backward + optimizer timeline.

What is resident through the step: the parameters (frozen ones at the cost table's
``frozen_bits``: 32 as PyTorch holds them, or 8 as TinyTL counts its quantised frozen weights; the
MCU engine keeps frozen weights in flash: only trained parameters count), buffers, the input batch, and the optimizer state. Then, in order:
- forward: each layer allocates its output and what it keeps for backward, plus a moment of
  workspace (its op spec's); a value is freed after its last consumer unless it is kept, and
  a kept value lives until the backward of the earliest layer keeping it;
- backward, in reverse: each recorded layer holds its output gradient, allocates its input
  gradients and workspace, and the gradients of trained parameters (kept until the optimizer step;
  the MCU engine applies them in place at once);
- the optimizer step: the parameter gradients and the optimizer's own temporaries.
Workspace (bytes an op allocates for a moment) comes from each op's spec.
Measured against torch.profiler's memory events in ``tests/test_memory.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import ops
from ..costs.annotate import ELEMENT_BYTES, CostTable
from ..plan.plan import Optimizer
from ..trace.graph import INPUT
from .tinytl import tinytl_activation


@dataclass(frozen=True)
class MemoryBreakdown:
    param_bytes: int  # parameters resident in RAM (all of them; for the MCU engine the trained ones)
    frozen_param_bytes: int  # frozen parameters at frozen_bits (in flash on the MCU engine, in RAM otherwise)
    trainable_param_bytes: int
    buffer_bytes: int  # running statistics
    grad_bytes: int  # gradients of the trained parameters
    optimizer_bytes: int  # optimizer state (momentum, Adam moments)
    saved_bytes: int  # activations kept for backward
    mask_bytes: int  # of which 1-bit masks
    input_bytes: int
    resident_bytes: int  # before the step starts
    peak_bytes: int  # the simulated peak, everything above included at that moment
    peak_at: str  # where it happens: "forward <layer>", "backward <layer>" or "optimizer step"
    # the most the forward holds above parameters, buffers and optimizer state: the input, values
    # kept so far, live values and the running layer's transients (tlplan's timeline; TinyTL's own
    # figure, by its arithmetic, is ``tinytl_activation_bytes``)
    activation_peak_bytes: int = 0
    # TinyTL's accounting: trained parameters at 32 bits, frozen ones at 8, plus TinyTL's own peak
    # activation (``tinytl_activation_bytes``, its released arithmetic: ``tlplan.memory.tinytl``)
    tinytl_bytes: int = 0
    timeline: tuple[tuple[str, int], ...] = ()  # (moment, bytes in use) through the step
    frozen_bits: int = 32  # bits each frozen parameter is counted at (8: 1 byte an element)
    tinytl_activation_bytes: int = 0  # TinyTL's peak activation (its arithmetic, not this timeline)
    tinytl_peak_at: str = ""  # the layer at which TinyTL's peak activation falls
    reorder: bool | None = None  # mcu: each gradient applied as computed (operator reordering); None elsewhere
    #: mcu: the peak as TinyEngine's planner reports it (tensor arena and kernel buffers; the
    #: trained weights and biases outside it), the 256KB paper's convention; None elsewhere
    engine_peak_bytes: int | None = None


def simulate_peak(costs: CostTable, optimizer: Optimizer = Optimizer(), *, detail: bool = True) -> MemoryBreakdown:
    """The step's memory under ``costs``. ``detail=False``: the same totals and peak without the
    timeline (what a solver checking hundreds of plans needs; the timeline is most of the work)."""
    graph = costs.graph
    if costs.runtime == "mcu":  # the int8 engine plans one static arena: its own planner (reordering included)
        return _arena_breakdown(costs, optimizer, detail)
    value_bytes = graph.value_bytes

    walk = _walk(graph)
    all_params = walk.param_bytes
    trained = [p for p in walk.params if p.name in costs.trainable]
    trained_full = sum(p.numel * p.dtype_bytes for p in trained)
    trainable_bytes = costs.totals["trainable_param_bytes"]
    frozen_elements = walk.param_numel - sum(p.numel for p in trained)
    # 32: each frozen tensor as it is stored (fp32); 8: one byte an element (TinyTL's k-means
    # quantised frozen weights, the MCU engine's int8 ones)
    frozen_bytes = all_params - trained_full if costs.frozen_bits == 32 else frozen_elements * costs.frozen_bits // 8
    param_bytes = trained_full + frozen_bytes
    buffers = walk.buffer_bytes
    # the runtime allocates a full-size gradient even for a partially trained weight
    grad_total = trained_full
    # momentum buffers / Adam's two moments, plus Adam's step count (a float per parameter tensor)
    optimizer_bytes = optimizer.state_slots * trained_full + (4 * len(trained) if optimizer.name == "adam" else 0)
    input_bytes = value_bytes(INPUT)
    # the caller holds the input batch through the step
    resident = param_bytes + buffers + optimizer_bytes + input_bytes

    release_after, roots = walk.release_after, walk.roots
    kept_until: dict[str, int] = {}  # storage root -> earliest layer keeping it (its backward frees it)
    private: dict[int, int] = {}
    for i, cost in enumerate(costs.layers):
        for t in cost.saved:
            if t.value is None:
                private[i] = private.get(i, 0) + t.private_bytes
            else:
                root = graph.storage_root(t.value)
                kept_until[root] = min(kept_until.get(root, i), i)
    freed_by: dict[int, list[str]] = {}  # layer -> the kept values its backward frees
    for root, first in kept_until.items():
        freed_by.setdefault(first, []).append(root)

    peak, peak_at = resident, "start"
    timeline: list[tuple[str, int]] = []
    activation_peak = 0

    def check(now: int, moment: str, layer: str | None = None) -> None:
        nonlocal peak, peak_at
        if detail:
            timeline.append((moment if layer is None else f"{moment} {layer}", now))
        if now > peak:
            peak, peak_at = now, (moment, layer)  # named at the end: most moments are no peak

    # ---- forward (``live`` and its running total ``live_bytes``: values alive now)
    live: dict[str, int] = {}
    live_bytes = 0
    private_live = 0
    out_root = walk.out_root
    start = 0
    if not detail:
        # up to the first recorded layer nothing is kept, so the forward there is the same in
        # every plan whose kept values all live past it: taken from the last check that ran it
        start, live, live_bytes, most, most_at, activation_peak = _forward_prefix(graph, costs, walk, kept_until)
        live = dict(live)
        if resident + most > peak:
            peak, peak_at = resident + most, ("forward", most_at)
    for i in range(start, len(graph.layers)):
        layer, cost = graph.layers[i], costs.layers[i]
        root = roots[i]
        if root != INPUT and root not in live:
            live[root] = value_bytes(layer.name)
            live_bytes += live[root]
        private_live += private.get(i, 0)
        ws = cost.workspace_fwd_bytes
        activations = live_bytes + private_live + ws + input_bytes
        activation_peak = max(activation_peak, activations)
        check(resident + live_bytes + private_live + ws, "forward", layer.name)
        for r in release_after.get(i, ()):
            if r not in kept_until and r != out_root and r != INPUT:
                live_bytes -= live.pop(r, 0)

    # ---- backward, in reverse; only recorded layers run (``grads_bytes``: the running total of ``grads``)
    grads: dict[str, int] = {}
    if costs.layers and costs.layers[-1].state.recorded:
        grads[graph.layers[-1].name] = value_bytes(graph.layers[-1].name)
    grads_bytes = sum(grads.values())
    param_grads = 0
    for i in range(len(graph.layers) - 1, -1, -1):
        layer, cost = graph.layers[i], costs.layers[i]
        if not cost.state.recorded:
            continue
        layer_grads = sum(p.numel * p.dtype_bytes for p in layer.params if p.name in costs.trainable)  # owned: counted once
        param_grads += layer_grads
        for src, rg in zip(layer.inputs, cost.state.inputs_require_grad):
            if rg and src not in grads:
                grads[src] = value_bytes(src)
                grads_bytes += grads[src]
        ws = cost.workspace_bwd_bytes
        check(resident + param_grads + live_bytes + private_live + grads_bytes + ws, "backward", layer.name)
        grads_bytes -= grads.pop(layer.name, 0)
        private_live -= private.get(i, 0)
        for r in freed_by.get(i, ()):
            live_bytes -= live.pop(r, 0)

    # ---- optimizer step: gradients still held, plus the optimizer's temporaries (Adam's update)
    # on CPU the optimizers update one parameter at a time: Adam's temporaries are about two
    # copies of the largest trained parameter; SGD (with momentum too) works in place
    largest = max((p.numel * p.dtype_bytes for p in trained), default=0)
    step_temp = 2 * largest if optimizer.name == "adam" else 0
    check(resident + grad_total + step_temp, "optimizer step")

    saved_total = costs.totals["saved_bytes"]
    tinytl = tinytl_activation(costs) if detail else None  # TinyTL's own arithmetic (tlplan.memory.tinytl)
    if isinstance(peak_at, tuple):
        peak_at = peak_at[0] if peak_at[1] is None else f"{peak_at[0]} {peak_at[1]}"
    return MemoryBreakdown(
        param_bytes=param_bytes,
        frozen_param_bytes=frozen_bytes,
        trainable_param_bytes=trainable_bytes,
        buffer_bytes=buffers,
        grad_bytes=grad_total,
        optimizer_bytes=optimizer_bytes,
        saved_bytes=saved_total,
        mask_bytes=sum(c.mask_bytes for c in costs.layers),
        input_bytes=input_bytes,
        resident_bytes=resident,
        peak_bytes=peak,
        peak_at=peak_at,
        activation_peak_bytes=activation_peak,
        # always TinyTL's 8-bit frozen weights, whatever frozen_bits the rest of the breakdown uses
        # trained parameters at 32 bits, as TinyTL counts them (whatever the runtime stores them at)
        tinytl_bytes=4 * costs.totals["trainable_params"] + frozen_elements + tinytl.peak_bytes if tinytl else 0,
        timeline=tuple(timeline),
        frozen_bits=costs.frozen_bits,
        tinytl_activation_bytes=tinytl.peak_bytes if tinytl else 0,
        tinytl_peak_at=tinytl.peak_at if tinytl else "",
    )


@dataclass(frozen=True)
class _Walk:
    """What the timeline needs of a graph whatever the plan (computed once per graph)."""

    params: tuple  # every parameter, owned ones once each (ParamInfo)
    param_bytes: int
    param_numel: int
    buffer_bytes: int
    roots: tuple[str, ...]  # per layer: the storage root of its output
    last_use: dict[str, int]  # storage root -> the last layer that needs it alive in the forward
    release_after: dict[int, tuple[str, ...]]  # layer -> the storage roots whose last use it is
    out_root: str


def _forward_prefix(graph, costs: CostTable, walk: _Walk, kept_until: dict[str, int]):
    """The forward up to the first recorded layer, without the resident bytes: (that layer's index,
    the values live there, their bytes, the most the prefix held and where, its activation peak).
    Cached per graph by what it depends on, each prefix layer's forward workspace; a plan that
    keeps a value the prefix would free gets an empty prefix (its own loop runs it all)."""
    layers = costs.layers
    first = next((i for i, c in enumerate(layers) if c.state.recorded), len(layers))
    if any(walk.last_use.get(root, first) < first for root in kept_until):
        return 0, {}, 0, 0, None, 0
    key = ("forward-prefix", first, tuple(c.workspace_fwd_bytes for c in layers[:first]))
    found = graph.memo.get(key)
    if found is None:
        input_bytes = graph.value_bytes(INPUT)
        live: dict[str, int] = {}
        live_bytes = most = activation_peak = 0
        most_at = None
        for i in range(first):
            root = walk.roots[i]
            if root != INPUT and root not in live:
                live[root] = graph.value_bytes(graph.layers[i].name)
                live_bytes += live[root]
            ws = layers[i].workspace_fwd_bytes
            activation_peak = max(activation_peak, live_bytes + ws + input_bytes)
            if live_bytes + ws > most:
                most, most_at = live_bytes + ws, graph.layers[i].name
            for r in walk.release_after.get(i, ()):
                if r != walk.out_root and r != INPUT:
                    live_bytes -= live.pop(r, 0)
        found = graph.memo[key] = (first, live, live_bytes, most, most_at, activation_peak)
    return found


def _walk(graph) -> _Walk:
    found = graph.memo.get("timeline")
    if found is not None:
        return found
    params = tuple(p for layer in graph.layers for p in layer.params)
    # a block's forward holds its argument until it returns (Python keeps the reference), so a
    # value entering a block lives at least to the block's last layer
    block_end = {layer.block: i for i, layer in enumerate(graph.layers) if layer.block}
    producer_block = {layer.name: layer.block for layer in graph.layers}
    last_use: dict[str, int] = {}
    for i, layer in enumerate(graph.layers):
        for src in layer.inputs:
            end = i
            if layer.block and producer_block.get(src) != layer.block:
                end = max(end, block_end[layer.block])
            root = graph.storage_root(src)
            last_use[root] = max(last_use.get(root, end), end)
    release_after: dict[int, list[str]] = {}
    for root, i in last_use.items():
        release_after.setdefault(i, []).append(root)
    walk = _Walk(
        params=params,
        param_bytes=sum(p.numel * p.dtype_bytes for p in params),
        param_numel=sum(p.numel for p in params),
        buffer_bytes=sum(layer.buffer_bytes for layer in graph.layers),
        roots=tuple(graph.storage_root(layer.name) for layer in graph.layers),
        last_use=last_use,
        release_after={i: tuple(r) for i, r in release_after.items()},
        out_root=graph.storage_root(graph.layers[-1].name) if graph.layers else INPUT,
    )
    graph.memo["timeline"] = walk
    return walk


def _arena_breakdown(costs: CostTable, optimizer: Optimizer, detail: bool = True) -> MemoryBreakdown:
    """The mcu runtime's step: the engine's planned arena plus the trained parameters in SRAM
    (``tlplan.memory.arena``); gradients are held (``grad_bytes``) only without reordering."""
    from .arena import plan_arena

    graph = costs.graph
    reorder = optimizer.reorders("mcu")
    arena = plan_arena(costs, reorder=reorder)
    all_params = sum(p.numel * p.dtype_bytes for layer in graph.layers for p in layer.params)
    trained_full = sum(p.numel * p.dtype_bytes for layer in graph.layers for p in layer.params if p.name in costs.trainable)
    trainable_bytes = costs.totals["trainable_param_bytes"]
    n = len(graph.layers)
    forward_live = max(arena.live_bytes[:n], default=0)
    frozen_elements = sum(p.numel for layer in graph.layers for p in layer.params if p.name not in costs.trainable)
    frozen_bits = getattr(costs, "frozen_bits", 32)  # (in flash on the engine: counted, never resident)
    tinytl = tinytl_activation(costs) if detail else None
    return MemoryBreakdown(
        frozen_bits=frozen_bits,
        reorder=reorder,
        engine_peak_bytes=arena.engine_peak_bytes,
        param_bytes=trainable_bytes,
        frozen_param_bytes=all_params - trained_full if frozen_bits == 32 else frozen_elements * frozen_bits // 8,
        trainable_param_bytes=trainable_bytes,
        buffer_bytes=0,
        grad_bytes=0 if reorder else arena.param_grad_bytes,
        optimizer_bytes=0,  # SGD without momentum (QAS too): no state beyond the gradient
        saved_bytes=costs.totals["saved_bytes"],
        mask_bytes=sum(c.mask_bytes for c in costs.layers),
        input_bytes=graph.value_bytes(INPUT, 1),
        resident_bytes=trainable_bytes,
        peak_bytes=arena.peak_bytes,
        peak_at=arena.steps[arena.live_peak_step] if arena.steps else "start",
        activation_peak_bytes=forward_live,
        # trained parameters at 32 bits, as TinyTL counts them (whatever the runtime stores them at)
        tinytl_bytes=4 * costs.totals["trainable_params"] + frozen_elements + tinytl.peak_bytes if tinytl else 0,
        tinytl_activation_bytes=tinytl.peak_bytes if tinytl else 0,
        tinytl_peak_at=tinytl.peak_at if tinytl else "",
        timeline=tuple((step, trainable_bytes + live) for step, live in zip(arena.steps, arena.live_bytes)) if detail else (),
    )
