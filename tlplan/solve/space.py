"""The search space: per trainable layer, its update options with their memory cost and importance.

Costs are additive bytes: what the option keeps for backward (the runtime's own rule for that
layer) plus the gradients and optimizer state of what it trains. What does not depend on the
choices — resident parameters, the input, what frozen layers on the backward path keep, forward
and backward transients — is the fixed cost of a backward depth, read off a simulated step.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from types import MappingProxyType
from typing import Mapping

from ..costs.annotate import ELEMENT_BYTES, annotate, runtime_precision
from ..costs.rules import EAGER_SAVED, GradState
from ..costs.runtime_rules import mcu_saved, tlplan_saved, trained_channels
from ..memory.timeline import MemoryBreakdown, simulate_peak
from ..plan.options import FILTER_SIZES, NORM_OPS, WEIGHT_OPS, WEIGHT_RATIOS, LayerOptions
from ..plan.plan import Optimizer
from ..plan.schemes import EXACT_MASK_OPS, classifier_layers
from ..trace.graph import Layer, LayerGraph
from .importance import importance_of


@dataclass(frozen=True)
class Candidate:
    options: LayerOptions
    cost_bytes: int
    importance: float


@dataclass(frozen=True)
class LayerChoices:
    layer: str
    index: int  # position in graph.layers
    candidates: tuple[Candidate, ...]  # cheapest first; candidates[0] is "frozen" unless the form forbids it


@dataclass(frozen=True)
class SearchSpace:
    graph: LayerGraph
    runtime: str
    precision: str
    optimizer: Optimizer
    choices: tuple[LayerChoices, ...]  # in forward order
    base_options: Mapping[str, LayerOptions]  # always on: the classifier, 1-bit ReLU masks
    depths: tuple[int, ...]  # indices into choices where the backward pass may start

    def cheapest(self, depth: int) -> int:
        """Index of the cheapest candidate of choice ``depth`` that trains something."""
        candidates = self.choices[depth].candidates
        return 1 if candidates[0].options == LayerOptions() and len(candidates) > 1 else 0

    # what no budget changes, computed once per space (the frontier solves it at many budgets)
    @cached_property
    def fixed_bytes(self) -> Mapping[int, int]:
        """Per depth: ``fixed_cost``."""
        return MappingProxyType({d: fixed_cost(self, d) for d in self.depths})

    @cached_property
    def base_memory(self) -> MemoryBreakdown:
        """The memory of the cheapest plan: the base options alone (the classifier)."""
        return simulate_peak(annotate(self.graph, self.base_options, self.runtime, self.precision), self.optimizer)


def _options_for(layer: Layer, runtime: str, form: str | None = None) -> list[LayerOptions]:
    has_bias = layer.param("bias") is not None
    if form == "backward-config":  # biases of every conv above the depth, weights at ratios
        if layer.op != "conv2d" or not has_bias:
            return []
        groups = layer.attrs.get("groups", 1)
        ratios = WEIGHT_RATIOS if groups in (1, layer.input_shapes[0][1]) else (1.0,)
        return [LayerOptions(bias=True)] + [
            LayerOptions(weight=r, bias=True, select="magnitude" if r < 1 else "first") for r in ratios
        ]
    biases = (False, True) if has_bias else (False,)
    out: list[LayerOptions] = []
    if layer.op in WEIGHT_OPS:
        ratios = (1.0,) if runtime == "eager" else WEIGHT_RATIOS
        groups = layer.attrs.get("groups", 1)
        dense_or_dw = groups in (1, layer.input_shapes[0][1])
        for bias in biases:
            if bias:
                out.append(LayerOptions(bias=True))
            for r in ratios:
                if r < 1 and not dense_or_dw:
                    continue
                out.append(LayerOptions(weight=r, bias=bias, select="magnitude" if r < 1 else "first"))
            if runtime == "tlplan" and layer.op == "conv2d" and dense_or_dw:
                out.extend(LayerOptions(weight=1.0, bias=bias, grad_filter=f) for f in FILTER_SIZES)
    elif layer.op in NORM_OPS and layer.params:
        out.extend([LayerOptions(norm="shift"), LayerOptions(norm="affine")])
    return out


def _cost(layer: Layer, opts: LayerOptions, runtime: str, precision: str, optimizer: Optimizer) -> int:
    has_bias = layer.param("bias") is not None
    roles = opts.trained_roles(layer.op, has_bias)
    state = GradState(tuple(True for _ in layer.inputs), roles, opts)
    if runtime == "tlplan":
        saved = tlplan_saved(layer, state, ELEMENT_BYTES[precision])
    elif runtime == "mcu":
        saved = mcu_saved(layer, state)
    else:
        saved = EAGER_SAVED.get(layer.op)(layer, state)
    kept = 0
    for t in saved:
        if t.value is None:
            kept += t.private_bytes
        else:  # a shared value counted in full: an upper bound when another layer keeps it too
            numel = layer.input_shapes[layer.inputs.index(t.value)] if t.value in layer.inputs else layer.output_shape
            n = 1
            for d in numel:
                n *= d
            kept += n * (1 if runtime == "mcu" else layer.output_dtype_bytes)
    params = 0
    for p in layer.params:
        if p.role not in roles:
            continue
        if runtime == "mcu":  # int8 weight copy of the trained channels, 32-bit biases, no gradients kept
            k = trained_channels(layer, opts.weight) if p.role == "weight" and layer.op in WEIGHT_OPS else None
            params += (p.numel * k // (layer.input_shapes[0][1] if layer.op == "conv2d" else layer.input_shapes[0][-1])) if k else p.numel * p.dtype_bytes
        else:  # a full-size gradient (also for a partial weight) and the optimizer's state
            params += p.numel * p.dtype_bytes * (1 + optimizer.state_slots)
    return kept + params


def build_space(
    graph: LayerGraph,
    runtime: str = "tlplan",
    precision: str = "fp32",
    optimizer: Optimizer = Optimizer(),
    importance: Mapping[tuple[str, str], float] | None = None,
    form: str | None = None,
) -> SearchSpace:
    """The options of every trainable layer. ``form="backward-config"`` keeps to what the 256KB
    paper's config can say: every conv above the backward depth trains its bias (no frozen option),
    some also a weight at a channel ratio; no norm or gradient-filter options."""
    precision = runtime_precision(runtime, precision)
    base = base_options(graph)
    classifier = {name for name, opts in base.items() if opts.weight}
    trainable = [(i, layer) for i, layer in enumerate(graph.layers)
                 if layer.name not in classifier and _options_for(layer, runtime, form)]
    n = len(trainable)
    choices = []
    for rank, (i, layer) in enumerate(trainable):
        position = (rank + 1) / (n + 1)
        cands = [] if form == "backward-config" else [Candidate(LayerOptions(), 0, 0.0)]
        for opts in _options_for(layer, runtime, form):
            cands.append(Candidate(opts, _cost(layer, opts, runtime, precision, optimizer),
                                   importance_of(graph, layer, position, opts, importance)))
        choices.append(LayerChoices(layer.name, i, tuple(_pareto(cands))))
    depths = tuple(k for k, c in enumerate(choices) if graph.by_name[c.layer].op in WEIGHT_OPS)
    return SearchSpace(graph, runtime, precision, optimizer, tuple(choices), base, depths)


def base_options(graph: LayerGraph) -> dict[str, LayerOptions]:
    """What every plan has, whatever is chosen: the classifier trained, exact 1-bit masks on ReLU / ReLU6."""
    classifier = {layer.name for layer in classifier_layers(graph)}
    base: dict[str, LayerOptions] = {}
    for layer in graph.layers:
        if layer.name in classifier:
            base[layer.name] = LayerOptions(weight=1.0, bias=layer.param("bias") is not None)
        elif layer.op in EXACT_MASK_OPS:
            base[layer.name] = LayerOptions(mask=True)
    return base


def _pareto(cands: list[Candidate]) -> list[Candidate]:
    """Drop dominated options: as costly or more, and no more important, than another."""
    kept = []
    for c in sorted(cands, key=lambda c: (c.cost_bytes, -c.importance)):
        if not kept or c.importance > kept[-1].importance:
            kept.append(c)
    return kept


def fixed_cost(space: SearchSpace, depth: int | None) -> int:
    """Bytes of a step that no choice changes, with backward reaching choice ``depth`` (None: classifier only).

    The simulated peak of the cheapest plan that trains ``depth``, less that option's own cost.
    """
    options = dict(space.base_options)
    own = 0
    if depth is not None:
        choice = space.choices[depth]
        cheapest = choice.candidates[space.cheapest(depth)]
        options[choice.layer] = cheapest.options
        own = cheapest.cost_bytes
    costs = annotate(space.graph, options, space.runtime, space.precision)
    return simulate_peak(costs, space.optimizer).peak_bytes - own
