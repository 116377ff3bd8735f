"""Op specs: one per op kind, owning everything tlplan knows about it (see ``spec.OpSpec``).

Every stage asks the registry through the functions below; none keeps its own list of op kinds.
An op no spec recognises is traced as ``"unsupported"``: named in every report, costed as zero
with a warning, and offered no option.
"""

from __future__ import annotations

from ..plan.options import LayerOptions
from ..trace.graph import Layer, LayerGraph
from . import activation, conv, elementwise, linear, norm, pool
from .probe import probed_saved
from .registry import REGISTRY, UNSUPPORTED, OpRegistry, register
from .spec import (
    RUNTIMES, GradState, OpSpec, SavedTensor, Setting, TensorShape, honours_options, mask_bytes, planned,
)
from .weighted import WeightOpSpec

for _spec in (
    conv.Conv2dSpec(), conv.ConvTranspose2dSpec(), linear.LinearSpec(),
    norm.BatchNormSpec(), norm.GroupNormSpec(), norm.LayerNormSpec(), norm.InstanceNormSpec(),
    activation.ReLUSpec(), activation.ReLU6Spec(), activation.HardtanhSpec(), activation.HardswishSpec(),
    *activation.SIMPLE, activation.LeakyReLUSpec(),
    pool.MaxPoolSpec(), pool.AvgPoolSpec(), pool.AdaptiveAvgPoolSpec(), pool.AdaptiveMaxPoolSpec(),
    elementwise.AddSpec(), elementwise.SubSpec(), elementwise.MulSpec(), elementwise.CatSpec(),
    elementwise.MeanSpec(), elementwise.DropoutSpec(), elementwise.InterpolateSpec(),
    elementwise.FlattenSpec(), elementwise.ReshapeSpec(), elementwise.IdentitySpec(),
):
    REGISTRY.register(_spec)

_NO_SPEC = OpSpec()  # what an unsupported op gets: no MACs, nothing kept, no options


def spec_of(layer: Layer) -> OpSpec:
    """The layer's spec (an empty one for an unsupported op: the caller reports it)."""
    return REGISTRY.get(layer.op) or _NO_SPEC


def supported(layer: Layer) -> bool:
    return layer.op in REGISTRY


def saved(layer: Layer, state: GradState, runtime: str, element_bytes: int) -> list[SavedTensor]:
    """What ``layer`` keeps for backward on ``runtime`` in ``state`` (activations of ``element_bytes``)."""
    spec = spec_of(layer)
    if runtime == "mcu":
        return spec.mcu_saved(layer, state)
    if "probe" in layer.attrs:  # a module with its own forward: what it was measured to keep
        return probed_saved(layer, state)
    if runtime == "tlplan" and planned(layer):
        return spec.planned_saved(layer, state, element_bytes)
    return spec.eager_saved(layer, state)


def trained_roles(layer: Layer, opts: LayerOptions) -> frozenset[str]:
    return spec_of(layer).trained_roles(layer, opts)


def option_problem(layer: Layer, opts: LayerOptions, runtime: str | None = None) -> str | None:
    """Why ``opts`` cannot apply to ``layer`` (on ``runtime``), or None."""
    if opts == LayerOptions():
        return None
    if not supported(layer):
        return f"tlplan has no rules for {layer.target} ({layer.op}), so it takes no options"
    return spec_of(layer).option_problem(layer, opts, runtime)


def is_weighted(layer: Layer) -> bool:
    """A linear map through a weight (conv, linear): trains weights and biases."""
    return isinstance(REGISTRY.get(layer.op), WeightOpSpec)


def is_norm(layer: Layer) -> bool:
    return spec_of(layer).family == "norm"


def is_conv(layer: Layer) -> bool:
    """A 2-d convolution (not a transposed one): what the 256KB paper's conv index counts."""
    return isinstance(REGISTRY.get(layer.op), conv.Conv2dSpec)


def classifier_layer(graph: LayerGraph) -> Layer | None:
    """The layer producing the logits: the last trainable linear map (a Linear or a conv)."""
    return next((layer for layer in reversed(graph.layers) if is_weighted(layer) and layer.params), None)


__all__ = [
    "REGISTRY", "RUNTIMES", "UNSUPPORTED", "GradState", "OpRegistry", "OpSpec", "SavedTensor", "Setting",
    "TensorShape", "WeightOpSpec", "classifier_layer", "honours_options", "is_conv", "is_norm", "is_weighted",
    "mask_bytes", "option_problem", "planned", "register", "saved", "spec_of", "supported", "trained_roles",
]
