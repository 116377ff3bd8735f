"""Op rules: forward MACs and the tensors plain PyTorch autograd keeps for backward.

Rules see a layer's shapes and which of its inputs and parameters need gradients, never tensors.
The ``EAGER_SAVED`` rules state what PyTorch's autograd formulas (``derivatives.yaml``) save on
CPU, checked op by op against ``saved_tensors_hooks`` in ``tests/test_saved_bytes.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from ..plan.options import LayerOptions
from ..trace.graph import Layer, _numel
from .registry import RuleTable


@dataclass(frozen=True)
class GradState:
    """What autograd sees at one layer: which inputs require grad, which parameters are trained."""

    inputs_require_grad: tuple[bool, ...]
    trained: frozenset[str]  # roles ("weight", "bias") of the layer's parameters that are trained
    options: LayerOptions = field(default_factory=LayerOptions)

    @property
    def needs_input_grad(self) -> bool:
        return any(self.inputs_require_grad)

    @property
    def recorded(self) -> bool:
        """Autograd records the op (and saves anything) only if some input or parameter needs grad."""
        return self.needs_input_grad or bool(self.trained)


@dataclass(frozen=True)
class SavedTensor:
    """One tensor kept for backward: another layer's output (shared by storage) or a private one."""

    what: str  # "input", "output", "stats", "indices", "mask"
    value: str | None = None  # the layer (or INPUT) whose output is kept
    private_bytes: int = 0  # bytes of a tensor only this op holds


MacsRule = Callable[[Layer], int]
SavedRule = Callable[[Layer, GradState], list[SavedTensor]]

MACS_FWD: RuleTable[MacsRule] = RuleTable("macs_fwd")
EAGER_SAVED: RuleTable[SavedRule] = RuleTable("eager saved tensors")

#: ops that are linear maps of their input through a weight: backward costs as much as forward,
#: once for the input gradient and once for the weight gradient.
LINEAR_MAP_OPS = frozenset({"conv2d", "linear"})


# ---- forward MACs: pure shape math, then thin registered adapters --------------------------------


def conv2d_macs_count(out_shape: tuple[int, ...], in_channels: int, groups: int, kernel: tuple[int, int]) -> int:
    return _numel(out_shape) * (in_channels // groups) * kernel[0] * kernel[1]


def linear_macs_count(out_shape: tuple[int, ...], in_features: int) -> int:
    return _numel(out_shape) * in_features


@MACS_FWD.register("conv2d")
def _conv2d_macs(layer: Layer) -> int:
    a = layer.attrs
    in_channels = a.get("in_channels", layer.input_shapes[0][1])
    kernel = a.get("kernel_size") or tuple(layer.params[0].shape[2:4])
    return conv2d_macs_count(layer.output_shape, in_channels, a.get("groups", 1), kernel)


@MACS_FWD.register("linear")
def _linear_macs(layer: Layer) -> int:
    return linear_macs_count(layer.output_shape, layer.input_shapes[0][-1])


#: Ops that are not multiply-accumulates of a weight (elementwise, pooling, data movement).
#: Published MAC figures count only conv and linear layers, and so does tlplan.
NO_MAC_OPS = (
    "batch_norm", "group_norm", "layer_norm", "relu", "relu6", "hardtanh", "hardswish", "hardsigmoid",
    "sigmoid", "silu", "gelu", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "mean",
    "flatten", "view", "identity", "dropout", "add", "sub", "mul", "cat", "interpolate",
)
MACS_FWD.register_constant(NO_MAC_OPS, lambda layer: 0)


# ---- what eager autograd keeps (torch 2.13, CPU, fp32) --------------------------------------------


def _input(layer: Layer, i: int = 0) -> SavedTensor:
    return SavedTensor("input", value=layer.inputs[i])


def _output(layer: Layer) -> SavedTensor:
    return SavedTensor("output", value=layer.name)


@EAGER_SAVED.register("conv2d")
def _conv_saved(layer: Layer, state: GradState) -> list[SavedTensor]:
    # convolution has one formula for input, weight and bias: the input is kept whatever is trained
    return [_input(layer)] if state.recorded else []


@EAGER_SAVED.register("linear")
def _linear_saved(layer: Layer, state: GradState) -> list[SavedTensor]:
    # addmm/mm keep mat1 (the input) only to compute the weight's gradient
    return [_input(layer)] if "weight" in state.trained else []


@EAGER_SAVED.register("batch_norm")
def _batch_norm_saved(layer: Layer, state: GradState) -> list[SavedTensor]:
    if not state.recorded:
        return []
    # train mode: the input plus the batch mean and inverse std (C floats each)
    channels = layer.output_shape[1]
    return [_input(layer), SavedTensor("stats", private_bytes=2 * channels * 4)]


@EAGER_SAVED.register("group_norm", "layer_norm")
def _other_norm_saved(layer: Layer, state: GradState) -> list[SavedTensor]:
    if not state.recorded:
        return []
    groups = layer.attrs.get("num_groups", 1)
    return [_input(layer), SavedTensor("stats", private_bytes=2 * layer.output_shape[0] * groups * 4)]


@EAGER_SAVED.register("relu", "sigmoid")
def _saves_output(layer: Layer, state: GradState) -> list[SavedTensor]:
    return [_output(layer)] if state.needs_input_grad else []


@EAGER_SAVED.register("hardtanh", "relu6", "hardswish", "hardsigmoid", "silu", "gelu", "avg_pool2d")
def _saves_input(layer: Layer, state: GradState) -> list[SavedTensor]:
    if not state.needs_input_grad:
        return []
    if layer.attrs.get("inplace"):
        # the in-place op overwrites the input its backward needs, so autograd keeps a clone of
        # the original: in-place ReLU6 / h-swish keep one tensor more than out-of-place, not less
        return [SavedTensor("input copy", private_bytes=_numel(layer.input_shapes[0]) * layer.output_dtype_bytes)]
    return [_input(layer)]


@EAGER_SAVED.register("max_pool2d")
def _max_pool_saved(layer: Layer, state: GradState) -> list[SavedTensor]:
    if not state.needs_input_grad:
        return []
    return [_input(layer), SavedTensor("indices", private_bytes=layer.output_numel * 8)]  # int64


@EAGER_SAVED.register("adaptive_avg_pool2d")
def _adaptive_pool_saved(layer: Layer, state: GradState) -> list[SavedTensor]:
    # to 1×1 PyTorch computes a mean, which keeps only sizes
    if not state.needs_input_grad or all(d == 1 for d in layer.output_shape[2:]):
        return []
    return [_input(layer)]


@EAGER_SAVED.register("mul")
def _mul_saved(layer: Layer, state: GradState) -> list[SavedTensor]:
    # each operand is kept only to compute the other one's gradient
    if len(layer.inputs) < 2:
        return []
    a_rg, b_rg = state.inputs_require_grad[0], state.inputs_require_grad[1]
    saved = []
    if b_rg:
        saved.append(_input(layer, 0))
    if a_rg:
        saved.append(_input(layer, 1))
    return saved


@EAGER_SAVED.register("dropout")
def _dropout_saved(layer: Layer, state: GradState) -> list[SavedTensor]:
    # CPU dropout is ``input * noise``: the float noise tensor is kept
    if not state.needs_input_grad or layer.attrs.get("p", 0.5) <= 0:
        return []
    return [SavedTensor("mask", private_bytes=layer.output_numel * layer.output_dtype_bytes)]


EAGER_SAVED.register_constant(
    ("add", "sub", "cat", "mean", "flatten", "view", "identity", "interpolate"), lambda layer, state: []
)
