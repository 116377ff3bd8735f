"""The walker: one pass over the layer graph, applying the rule tables under per-layer options."""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property
from typing import Mapping

from .. import ops
from ..ops import RUNTIMES, GradState, SavedTensor
from ..plan.options import LayerOptions
from ..trace.graph import INPUT, LayerGraph
#: bytes per element of the activations each runtime keeps, by precision
ELEMENT_BYTES = {"fp32": 4, "fp16": 2, "int8": 1}


#: precisions a frozen parameter may be counted at (TinyTL's k-means quantised frozen weights are 8-bit)
FROZEN_BITS = (8, 32)


def default_frozen_bits(runtime: str) -> int:
    """What a runtime holds a frozen parameter at: PyTorch (eager, tlplan) its fp32 tensor; the
    ``mcu`` engine an int8 copy, in flash."""
    return 8 if runtime == "mcu" else 32


def check_frozen_bits(runtime: str, frozen_bits: int | None) -> int:
    """``frozen_bits`` (None: the runtime's own), or a one-line BadInputError."""
    from ..errors import BadInputError

    if frozen_bits is None:
        return default_frozen_bits(runtime)
    if isinstance(frozen_bits, bool) or frozen_bits not in FROZEN_BITS:
        raise BadInputError(f"frozen bits {frozen_bits!r}; use 8 or 32 (bits per frozen parameter)")
    if runtime == "mcu" and frozen_bits != 8:
        raise BadInputError("the mcu runtime is an int8 engine: its frozen weights are 8-bit, in flash (frozen bits 8)")
    return int(frozen_bits)


def runtime_precision(runtime: str, precision: str) -> str:
    """The precision a runtime really keeps: the ``mcu`` engine is int8 whatever was asked."""
    return "int8" if runtime == "mcu" else precision


@dataclass(frozen=True)
class LayerCost:
    """Costs of one layer under one plan and runtime (analytic: derived, not measured)."""

    name: str
    op: str
    block: str | None
    output_shape: tuple[int, ...]
    params: int
    trainable_params: int  # of a partial weight, only its trained channels
    trainable_param_bytes: int  # in the runtime's precision for trained parameters
    macs_fwd: int
    macs_bwd_input: int
    macs_bwd_weight: int
    saved_bytes: int  # bytes kept for backward, each storage counted at the first layer keeping it
    saved: tuple[SavedTensor, ...]  # what the layer keeps (before deduplication)
    state: GradState
    supported: bool
    # bytes the op allocates for a moment beyond its output (forward) and its input gradients
    # (backward), its spec's rule on this runtime
    workspace_fwd_bytes: int = 0
    workspace_bwd_bytes: int = 0
    mask_bytes: int = 0  # of what it keeps, 1-bit masks (part of ``saved``, the layer's own)
    #: a masked ReLU / ReLU6 keeping its output instead of a mask: a later layer keeps it anyway
    mask_from_output: bool = False

    @property
    def macs_bwd(self) -> int:
        return self.macs_bwd_input + self.macs_bwd_weight


@dataclass(frozen=True)
class CostTable:
    graph: LayerGraph
    options: Mapping[str, LayerOptions]
    trainable: frozenset[str]  # parameters with requires_grad
    runtime: str
    precision: str
    layers: tuple[LayerCost, ...]
    #: bits per frozen parameter the memory model counts (8: TinyTL's quantised frozen weights)
    frozen_bits: int = 32

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


def _layer_cost(layer, state: GradState, owned: tuple[bool, ...], runtime: str, element_bytes: int) -> LayerCost:
    """One layer's costs in ``state`` (``owned``: which of its own parameters are trained), its
    ``saved_bytes`` not yet deduplicated against the layers before it (0 here)."""
    spec = ops.spec_of(layer)
    opts = state.options
    saved = tuple(ops.saved(layer, state, runtime, element_bytes))
    trained = state.trained
    weight_fraction = spec.weight_fraction(layer, opts, runtime) if "weight" in trained and ops.is_weighted(layer) else 1.0
    trainable_count = 0
    trainable_bytes = 0
    for p, is_trained in zip(layer.params, owned):
        if not is_trained:
            continue
        count = round(p.numel * weight_fraction) if p.role == "weight" else p.numel
        trainable_count += count
        # the MCU engine updates an int8 copy of a weight and 32-bit biases
        trainable_bytes += count * (1 if runtime == "mcu" and p.role == "weight" else p.dtype_bytes)
    macs_x, macs_w = spec.macs_bwd(layer, state, runtime)
    cost = LayerCost(
        name=layer.name,
        op=layer.op,
        block=layer.block,
        output_shape=layer.output_shape,
        params=layer.param_count,
        trainable_params=trainable_count,
        trainable_param_bytes=trainable_bytes,
        macs_fwd=spec.macs_fwd(layer),
        macs_bwd_input=macs_x,
        macs_bwd_weight=macs_w,
        saved_bytes=0,
        saved=saved,
        state=state,
        supported=ops.supported(layer),
    )
    setting = ops.Setting(runtime, element_bytes)
    return replace(cost, workspace_fwd_bytes=spec.forward_workspace(layer, cost, setting),
                   workspace_bwd_bytes=spec.backward_workspace(layer, cost, setting),
                   mask_bytes=sum(t.private_bytes for t in saved if t.what == "mask"))


def _masks_from_output(graph: LayerGraph, parts: list[tuple[LayerCost, dict | None]]) -> list[int]:
    """The ReLU / ReLU6 calls whose 1-bit mask a later layer's kept output makes unneeded.

    A masked ReLU or ReLU6 can back-propagate exactly from its output (``MaskedActivation``'s
    ``from_output``); where a later layer keeps that output anyway (the conv it feeds, training
    its weight), keeping it costs nothing and the mask (its bits, and the time to make and apply
    them) goes. Not where a later in-place op overwrites that storage (the kept output would be
    stale), and only where every call of the module qualifies (it runs one way).
    """
    keepers: dict[str, int] = {}  # storage root -> the last layer keeping it
    for j, (part, _) in enumerate(parts):
        for t in part.saved:
            if t.value is not None:
                keepers[graph.storage_root(t.value)] = j
    writers = graph.memo.get("in-place writers")
    if writers is None:
        writers = graph.memo["in-place writers"] = {}
        for k, layer in enumerate(graph.layers):
            if layer.attrs.get("inplace"):
                writers.setdefault(graph.storage_root(layer.name), []).append(k)
    verdict: dict[str | None, bool] = {}  # module -> all its calls qualify
    calls: dict[str | None, list[int]] = {}
    for i, (part, _) in enumerate(parts):
        opts, layer = part.state.options, graph.layers[i]
        if not opts.mask or layer.op not in ("relu", "relu6") or not part.state.needs_input_grad:
            continue
        if not ops.planned(layer) or layer.module is None:
            continue
        root = graph.storage_root(layer.name)
        ok = keepers.get(root, -1) > i and not any(k > i for k in writers.get(root, ()))
        verdict[layer.module] = verdict.get(layer.module, True) and ok
        calls.setdefault(layer.module, []).append(i)
    return [i for module, found in calls.items() if verdict[module] for i in found]


def annotate(
    graph: LayerGraph,
    options: Mapping[str, LayerOptions],
    runtime: str = "eager",
    precision: str = "fp32",
    frozen_bits: int | None = None,
) -> CostTable:
    """Per-layer costs of training ``graph`` with per-layer ``options`` on ``runtime``.

    The input gradient of a layer is needed only when something below it is trained (the value it
    reads requires grad); a frozen layer needs no weight gradient; nothing below the lowest trained
    layer is recorded by autograd, so nothing is kept there. ``eager`` sees only which parameters
    are trained (``requires_grad``); ``tlplan`` and ``mcu`` honour every option.
    """
    from ..plan.schemes import trainable_params

    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}")
    precision = runtime_precision(runtime, precision)
    frozen_bits = check_frozen_bits(runtime, frozen_bits)
    element_bytes = ELEMENT_BYTES[precision]
    trainable = trainable_params(graph, options)
    # a layer's costs depend on its state alone: kept across the plans costed of one graph
    # (a solver costs hundreds); the registry's generation keys out specs registered since
    memo = graph.memo.setdefault(("annotate", runtime, element_bytes, ops.REGISTRY.generation), {})
    # below the first layer that reads a trained parameter nothing requires grad: each layer there
    # costs what it costs in every plan with its options (most layers of a plan that trains the
    # last blocks), kept per graph and layer
    dead = graph.memo.setdefault(("annotate-dead", runtime, element_bytes, ops.REGISTRY.generation), {})
    first_reader = graph.memo.get("param-first-reader")
    if first_reader is None:
        first_reader = graph.memo["param-first-reader"] = {}
        for i, layer in enumerate(graph.layers):
            for p in layer.all_params:
                first_reader.setdefault(p.name, i)
    first_live = min((first_reader.get(name, len(graph.layers)) for name in trainable), default=len(graph.layers))
    plain = LayerOptions()
    requires_grad: dict[str, bool] = {INPUT: False}
    # each layer's costs before shared values are counted once: (costs, its memo entry; None: a
    # cost taken as it is)
    parts: list[tuple[LayerCost, dict | None]] = []
    for i, layer in enumerate(graph.layers):
        opts = options.get(layer.name, plain)
        if i < first_live:
            cost = dead.get((i, opts))
            if cost is not None:
                parts.append((cost, None))  # not recorded: ``requires_grad`` has no entry (read as False)
                continue
        trained = frozenset(p.role for p in layer.all_params if p.name in trainable)
        state = GradState(tuple(requires_grad.get(src, False) for src in layer.inputs), trained, opts)
        requires_grad[layer.name] = state.recorded
        owned = tuple(p.name in trainable for p in layer.params)
        key = (i, state, owned)
        variants = memo.get(key)  # saved_bytes -> the layer's costs with it
        if variants is None:
            part = _layer_cost(layer, state, owned, runtime, element_bytes)
            variants = memo[key] = {part.saved_bytes: part}
        else:
            part = next(iter(variants.values()))
        parts.append((part, variants))
    if runtime == "tlplan":
        for i in _masks_from_output(graph, parts):
            part = parts[i][0]
            key = (i, part.state, "mask from output")
            variants = memo.get(key)
            if variants is None:
                keeps = replace(part, saved=(SavedTensor("output", value=graph.layers[i].name),), workspace_fwd_bytes=0, workspace_bwd_bytes=0,
                                mask_bytes=0, mask_from_output=True)
                variants = memo[key] = {keeps.saved_bytes: keeps}
            parts[i] = (next(iter(variants.values())), variants)
    seen_storages: set[str] = set()
    costs: list[LayerCost] = []
    for i, (part, variants) in enumerate(parts):
        if variants is None:
            costs.append(part)
            continue
        saved_bytes = 0
        for t in part.saved:
            if t.value is None:
                saved_bytes += t.private_bytes
                continue
            root = graph.storage_root(t.value)
            if root not in seen_storages:
                seen_storages.add(root)
                # PyTorch keeps shared values as they are; the MCU engine's activations are int8
                saved_bytes += graph.value_bytes(root, element_bytes if runtime == "mcu" else None)
        cost = variants.get(saved_bytes)
        if cost is None:
            cost = variants[saved_bytes] = replace(part, saved_bytes=saved_bytes)
        if i < first_live and not part.state.recorded and not part.saved:
            dead[i, part.state.options] = cost
        costs.append(cost)
    return CostTable(graph=graph, options=options, trainable=trainable, runtime=runtime, precision=precision, layers=tuple(costs),
                     frozen_bits=frozen_bits)
