"""The search space: per trainable layer, its update options with their memory cost and importance.

Costs are additive bytes: what the option keeps for backward (the runtime's own rule for that
layer) plus the gradients and optimizer state of what it trains. What does not depend on the
choices — resident parameters, the input, what frozen layers on the backward path keep, forward
and backward transients — is the fixed cost of a backward depth, read off a simulated step.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from functools import cached_property
from types import MappingProxyType
from typing import TYPE_CHECKING, Mapping

from .. import ops
from ..costs.annotate import ELEMENT_BYTES, annotate, runtime_precision
from ..errors import BadInputError
from ..memory.timeline import MemoryBreakdown, simulate_peak
from ..ops import GradState
from ..plan.options import LayerOptions
from ..plan.plan import Optimizer
from ..plan.schemes import classifier_layers, conv_layers
from ..trace.graph import Layer, LayerGraph
from .importance import importance_of

if TYPE_CHECKING:
    from .lite import LiteBranches


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
    #: lite residual branches on offer (``tlplan.solve.lite``): then ``graph`` has them all, and a
    #: plan is costed on ``graph_for`` it, without the branches it does not train
    lite: "LiteBranches | None" = None

    def graph_for(self, options: Mapping[str, LayerOptions]) -> LayerGraph:
        """The graph a plan of this space runs on."""
        return self.graph if self.lite is None else self.lite.graph(options)

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
        return simulate_peak(annotate(self.graph_for(self.base_options), self.base_options, self.runtime, self.precision),
                             self.optimizer)


def _options_for(layer: Layer, runtime: str, form: str | None = None, convs: frozenset[str] = frozenset()) -> list[LayerOptions]:
    """The layer's options (its op spec's choices on ``runtime``); ``form="backward-config"``: what
    the 256KB paper's config says of a conv (``convs``) with a bias: the bias, with or without a
    weight at a channel ratio."""
    choices = ops.spec_of(layer).choices(layer, runtime)
    if form == "backward-config":
        if layer.name not in convs or layer.param("bias") is None:
            return []
        return [o for o in choices if o.bias and not o.grad_filter]
    return choices


def _cost(layer: Layer, opts: LayerOptions, runtime: str, precision: str, optimizer: Optimizer,
          scratch_floor: int = 0) -> int:
    roles = ops.trained_roles(layer, opts)
    state = GradState(tuple(True for _ in layer.inputs), roles, opts)
    kept = 0
    for t in ops.saved(layer, state, runtime, ELEMENT_BYTES[precision]):
        if t.value is None:
            kept += t.private_bytes
        else:  # a shared value counted in full: an upper bound when another layer keeps it too
            shape = layer.input_shapes[layer.inputs.index(t.value)] if t.value in layer.inputs else layer.output_shape
            n = 1
            for d in shape:
                n *= d
            kept += n * (1 if runtime == "mcu" else layer.output_dtype_bytes)
    spec = ops.spec_of(layer)
    params = 0
    for p in layer.params:
        if p.role not in roles:
            continue
        if runtime == "mcu":  # int8 weight copy of the trained channels, 32-bit biases, no gradients kept
            if p.role == "weight" and ops.is_weighted(layer):
                params += round(p.numel * spec.weight_fraction(layer, opts, runtime))
            else:
                params += p.numel * p.dtype_bytes
        else:  # a full-size gradient (also for a partial weight) and the optimizer's state
            params += p.numel * p.dtype_bytes * (1 + optimizer.state_slots)
    if runtime == "mcu" and "weight" in roles:
        # the engine's im2col buffer grows to this weight gradient's where that needs more than
        # the forward's (``scratch_floor``, in every plan's fixed cost); the step holds only the
        # largest, so counting each growth is an upper bound (the solved plan is planned again)
        params += max(0, spec.mcu_scratch(layer, "weight_grad")[0] - scratch_floor)
    return kept + params


def build_space(
    graph: LayerGraph,
    runtime: str = "tlplan",
    precision: str = "fp32",
    optimizer: Optimizer = Optimizer(),
    importance: Mapping[tuple[str, str], float] | None = None,
    form: str | None = None,
    lite: "LiteBranches | None" = None,
) -> SearchSpace:
    """The options of every trainable layer. ``form="backward-config"`` keeps to what the 256KB
    paper's config can say: every conv above the backward depth trains its bias (no frozen option),
    some also a weight at a channel ratio; no norm or gradient-filter options."""
    precision = runtime_precision(runtime, precision)
    if importance:
        unknown = sorted({layer for layer, _ in importance} - set(graph.by_name))
        if unknown:
            raise BadInputError(
                f"the importance table names {len(unknown)} layer(s) that {graph.model_name} does not have, e.g. "
                f"{unknown[0]!r}; was it measured on this model (tlplan importance)?"
            )
    base = base_options(graph)
    classifier = {name for name, opts in base.items() if opts.weight}
    convs = frozenset(layer.name for layer in conv_layers(graph))
    # a module called more than once takes one option for all its calls: not a per-layer choice
    calls = Counter(layer.module for layer in graph.layers if layer.module)
    trainable = [(i, layer) for i, layer in enumerate(graph.layers)
                 if layer.name not in classifier and calls[layer.module] <= 1
                 and _options_for(layer, runtime, form, convs)]
    # mcu: the engine's im2col buffer every plan has (the forward's kernels)
    floor = max((ops.spec_of(layer).mcu_scratch(layer, "forward")[0] for layer in graph.layers), default=0) \
        if runtime == "mcu" else 0
    # a layer's depth in the network, for the importance prior: with lite branches on offer, the
    # branches' layers take the depth of the block output they add to, and every other layer its
    # depth in the model without them (so a plan without branches scores as it does without --lite)
    in_branch = set().union(*lite.layers.values()) if lite is not None else set()
    n = sum(1 for _, layer in trainable if layer.name not in in_branch)
    positions, rank = [], 0
    for _, layer in trainable:
        if layer.name not in in_branch:
            rank += 1
        positions.append(max(rank, 1) / (n + 1))
    choices = []
    for (i, layer), position in zip(trainable, positions):
        cands = [] if form == "backward-config" else [Candidate(LayerOptions(), 0, 0.0)]
        for opts in _options_for(layer, runtime, form, convs):
            cands.append(Candidate(opts, _cost(layer, opts, runtime, precision, optimizer, floor),
                                   importance_of(graph, layer, position, opts, importance)))
        choices.append(LayerChoices(layer.name, i, tuple(_pareto(cands))))
    depths = tuple(k for k, c in enumerate(choices) if ops.is_weighted(graph.by_name[c.layer]))
    if lite is not None:
        from .lite import check_lite

        check_lite(runtime, export=form)
    return SearchSpace(graph, runtime, precision, optimizer, tuple(choices), base, depths, lite)


def base_options(graph: LayerGraph) -> dict[str, LayerOptions]:
    """What every plan has, whatever is chosen: the classifier trained, exact 1-bit masks on ReLU / ReLU6."""
    classifier = {layer.name for layer in classifier_layers(graph)}
    base: dict[str, LayerOptions] = {}
    for layer in graph.layers:
        if layer.name in classifier:
            base[layer.name] = LayerOptions(weight=1.0, bias=layer.param("bias") is not None)
        elif ops.spec_of(layer).masks(layer, surrogate=False):
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
    costs = annotate(space.graph_for(options), options, space.runtime, space.precision)
    return simulate_peak(costs, space.optimizer, detail=False).peak_bytes - own
