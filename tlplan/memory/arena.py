"""The mcu runtime's memory: a static arena planned as the 256KB paper's int8 training engine plans it.

The engine (TinyEngine, compiled from the fused forward + backward graph) knows every tensor's
lifetime at compile time and places all of them in one SRAM arena before it runs, biggest first,
each at the lowest address free for its whole lifetime (TinyEngine's ``GeneralMemoryScheduler``,
TFLite Micro's greedy-by-size planner). Beside the arena it keeps two kernel buffers (im2col /
runtime and a 16-bit kernel copy), each as big as the most one op of the step asks (the op specs'
``mcu_scratch``). TinyEngine reports arena + kernel buffers as its peak (``engine_peak_bytes``);
the trained weights (int8, the trained channels) and biases (int32) are kept outside it, and
``peak_bytes`` adds them: the SRAM the step needs. Frozen weights stay in flash. What it models,
step by step over the schedule (forward layer i at step i, backward of layer i at step 2N-1-i,
the update at step 2N):

* int8 activations (1 byte per element). An op the engine runs in place (its spec's
  ``mcu_in_place``: depthwise convs, activations fused into the conv, adds) writes over its first
  input when that input dies there; a value dies after its last forward use unless backward
  keeps it;
* what backward keeps (each op spec's ``mcu_saved``): clamp masks and the int8 inputs of trained
  channels, from the forward step that makes them to the backward of the layer keeping them.
  Masks are stored at ``mask_bits`` per element: 1 as the paper's analytic rule counts them;
* gradients of activations in fp32 (4 bytes per element, as the paper's compiled graphs compute
  them), from the backward step that makes one to the backward of the layer that consumes it;
* gradients of trained weights and biases in fp32. With operator reordering (``reorder``) the
  weight gradient's kernel (an output-stationary group conv) writes each element into the int8
  weight as it computes it, so no weight gradient is ever a buffer, and a bias gradient lives
  one step; without it every one lives until the update at the end (the paper's "full" and
  "sparse" columns).

Not modelled: the engine's clamp masks of residual adds (a byte per element, in the trained
part only), its planner's own quirks (docs/mcu.md). Deterministic: ties in the placement are
broken by start step, then by name.
"""

from __future__ import annotations

import bisect
import itertools
from dataclasses import dataclass

from .. import ops
from ..costs.annotate import CostTable
from ..trace.graph import INPUT

#: bytes per element of an activation gradient in the engine's backward (fp32)
GRAD_BYTES = 4
#: bytes per element of a weight or bias gradient (fp32)
PARAM_GRAD_BYTES = 4


@dataclass(frozen=True)
class Block:
    """One tensor of the arena: its bytes and the steps it lives (both ends included)."""

    name: str
    size_bytes: int
    first_step: int
    last_step: int
    kind: str  # activation, kept, mask, grad, param_grad, input


@dataclass(frozen=True)
class ArenaPlan:
    blocks: tuple[Block, ...]
    offsets: tuple[int, ...]  # each block's address in the arena, in bytes
    arena_bytes: int  # the planned arena: the highest address any block reaches
    live_peak_bytes: int  # the most bytes alive at one step (a lower bound of any placement)
    live_peak_step: int
    static_bytes: int  # trained weights and biases, in SRAM all the step
    param_grad_bytes: int  # weight and bias gradients (fp32), all of them
    steps: tuple[str, ...]  # what runs at each step
    live_bytes: tuple[int, ...]  # bytes alive at each step
    #: the engine's two kernel buffers (im2col / runtime, 16-bit kernel copy), each as big as the
    #: most one op of the step asks, outside the arena (the op specs' ``mcu_scratch``)
    scratch_bytes: int = 0

    @property
    def engine_peak_bytes(self) -> int:
        """The peak as TinyEngine's planner reports it: the tensor arena plus its kernel buffers;
        the trained weights and biases are kept outside it (its code generator's accounting)."""
        return self.arena_bytes + self.scratch_bytes

    @property
    def peak_bytes(self) -> int:
        """The SRAM the step needs: the engine's peak and the trained weights and biases."""
        return self.engine_peak_bytes + self.static_bytes


def plan_arena(costs: CostTable, reorder: bool = True, mask_bits: int = 1) -> ArenaPlan:
    """The engine's arena for one training step of ``costs`` (an ``mcu`` cost table)."""
    graph = costs.graph
    layers = graph.layers
    n = len(layers)
    back = {i: 2 * n - 1 - i for i in range(n)}  # the step of layer i's backward
    update_step = 2 * n
    blocks: list[Block] = []

    def int8(name: str) -> int:
        return graph.value_bytes(name, 1)

    # ---- forward values: buffers by storage, in-place ops merged into their input's buffer
    last_use: dict[str, int] = {}
    for i, layer in enumerate(layers):
        for src in layer.inputs:
            last_use[graph.storage_root(src)] = i
    kept_until: dict[str, int] = {}  # storage root -> the last backward step keeping it
    private: list[Block] = []
    for i, cost in enumerate(costs.layers):
        for t in cost.saved:
            if t.value is not None:
                root = graph.storage_root(t.value)
                kept_until[root] = max(kept_until.get(root, 0), back[i])
            elif t.private_bytes:
                size = t.private_bytes * (mask_bits if t.what == "mask" else 1)
                private.append(Block(f"{t.what} of {layers[i].name}", size, i, back[i], "mask" if t.what == "mask" else "kept"))
    buffer_of: dict[str, str] = {INPUT: INPUT}  # storage root -> the buffer it lives in
    size: dict[str, int] = {INPUT: int8(INPUT)}
    first: dict[str, int] = {INPUT: 0}
    last: dict[str, int] = {INPUT: 0}
    for i, layer in enumerate(layers):
        root = graph.storage_root(layer.name)
        if root != layer.name:  # a view or an in-place PyTorch op: the same storage
            continue
        src = graph.storage_root(layer.inputs[0]) if layer.inputs else None
        if (src is not None and ops.spec_of(layer).mcu_in_place(layer) and last_use.get(src) == i
                and src not in kept_until and buffer_of.get(src) is not None):
            buf = buffer_of[src]
            buffer_of[root] = buf
            size[buf] = max(size[buf], int8(layer.name))
        else:
            buffer_of[root] = root
            size[root] = int8(layer.name)
            first[root] = i
            last[root] = i
    for root, buf in buffer_of.items():
        end = max(last_use.get(root, first.get(root, 0)), kept_until.get(root, 0))
        last[buf] = max(last.get(buf, 0), end)
    out_buf = buffer_of.get(graph.storage_root(layers[-1].name)) if layers else None
    recorded = [i for i, c in enumerate(costs.layers) if c.state.recorded]
    if out_buf is not None and recorded:  # the logits live until the loss's gradient is taken
        last[out_buf] = max(last[out_buf], back[n - 1])
    for buf in sorted(set(buffer_of.values()), key=lambda b: (first[b], b)):
        blocks.append(Block(buf, size[buf], first[buf], last[buf], "input" if buf == INPUT else "activation"))
    blocks.extend(private)

    # ---- backward: activation gradients by storage, weight and bias gradients
    grad_born: dict[str, int] = {}
    if recorded:
        grad_born[graph.storage_root(layers[-1].name)] = back[n - 1]
    grad_end: dict[str, int] = {}
    param_grad_total = 0
    for i in range(n - 1, -1, -1):
        layer, cost = layers[i], costs.layers[i]
        if not cost.state.recorded:
            continue
        root = graph.storage_root(layer.name)
        if root in grad_born:
            grad_end[root] = max(grad_end.get(root, back[i]), back[i])
        for src, needs in zip(layer.inputs, cost.state.inputs_require_grad):
            src_root = graph.storage_root(src)
            if needs and src_root != root and src_root not in grad_born:
                grad_born[src_root] = back[i]
        grads = held = 0
        for p in layer.params:
            if p.name not in costs.trainable:
                continue
            weighted = p.role == "weight" and ops.is_weighted(layer)
            share = ops.spec_of(layer).weight_fraction(layer, cost.state.options, "mcu") if weighted else 1.0
            grads += round(p.numel * share) * PARAM_GRAD_BYTES
            # reordered, the weight gradient's kernel writes each element into the weight as it
            # computes it (TinyEngine's in-place SGD): no buffer; a bias gradient is a buffer first
            held += 0 if reorder and weighted else round(p.numel * share) * PARAM_GRAD_BYTES
        param_grad_total += grads
        if held:
            blocks.append(Block(f"gradient of {layer.name}'s parameters", held, back[i],
                                back[i] if reorder else update_step, "param_grad"))
    for root, born in grad_born.items():
        if root == INPUT:
            continue
        blocks.append(Block(f"gradient of {root}", graph.value_numel(root) * GRAD_BYTES, born,
                            grad_end.get(root, born), "grad"))

    blocks = [b for b in blocks if b.size_bytes > 0]
    offsets, arena = _place(blocks)
    scratch = _scratch(costs)
    steps = graph.memo.get("arena_steps")
    if steps is None:  # the same moments for every plan of the graph
        steps = graph.memo["arena_steps"] = tuple(
            [f"forward {layer.name}" for layer in layers] + [f"backward {layers[i].name}" for i in range(n - 1, -1, -1)] + ["update"])
    change = [0] * (len(steps) + 1)  # bytes coming alive at each step, less those freed after the one before
    for b in blocks:
        change[b.first_step] += b.size_bytes
        change[b.last_step + 1] -= b.size_bytes
    live = list(itertools.accumulate(change[:-1]))
    peak_step = max(range(len(live)), key=lambda s: (live[s], -s)) if live else 0
    static = costs.totals["trainable_param_bytes"]
    return ArenaPlan(tuple(blocks), tuple(offsets), arena, live[peak_step] if live else 0, peak_step, static,
                     param_grad_total, steps, tuple(live), scratch)


def _scratch(costs: CostTable) -> int:
    """The engine's kernel buffers: the largest im2col / runtime buffer plus the largest kernel
    copy any op of the step asks (every forward; the backward of recorded layers: the input
    gradient where one is needed, the weight gradient where the weight trains)."""
    graph = costs.graph
    # each layer's buffers per phase depend on the layer alone: asked once per graph
    per_layer = graph.memo.setdefault(("mcu_scratch", ops.REGISTRY.generation), {})
    im2col = kernel = 0
    for i, (layer, cost) in enumerate(zip(graph.layers, costs.layers)):
        phases = ["forward"]
        if cost.state.recorded:
            if any(cost.state.inputs_require_grad[:1]):
                phases.append("input_grad")
            weight = layer.param("weight")
            if weight is not None and weight.name in costs.trainable and weight in layer.params:
                phases.append("weight_grad")
        for phase in phases:
            found = per_layer.get((i, phase))
            if found is None:
                found = per_layer[(i, phase)] = ops.spec_of(layer).mcu_scratch(layer, phase)
            a, b = found
            im2col, kernel = max(im2col, a), max(kernel, b)
    return im2col + kernel


def _place(blocks: list[Block]) -> tuple[list[int], int]:
    """Greedy by size: biggest first (ties: earliest, then by name), each at the lowest address
    free for its whole lifetime."""
    order = sorted(range(len(blocks)), key=lambda k: (-blocks[k].size_bytes, blocks[k].first_step, blocks[k].name))
    offsets = [0] * len(blocks)
    placed: list[tuple[int, int, int, int]] = []  # (offset, end, first step, last step) of each block placed, by address
    arena = 0
    for k in order:
        b = blocks[k]
        first, last, size = b.first_step, b.last_step, b.size_bytes
        at = 0
        for lo, hi, f, l in placed:  # by address: the first gap that holds it, among blocks alive with it
            if f > last or first > l:
                continue
            if at + size <= lo:
                break
            if hi > at:
                at = hi
        offsets[k] = at
        bisect.insort(placed, (at, at + size, first, last))
        arena = max(arena, at + size)
    return offsets, arena
