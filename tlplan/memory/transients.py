"""Workspace: bytes an op allocates for a moment beyond its output (forward) or input gradients (backward).

Read off PyTorch 2.13's CPU kernels with torch.profiler's memory events (oneDNN convolutions reorder
their operands into blocked layouts) and off tlplan's own runtime ops. One small rule per op kind.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..costs.annotate import LayerCost
from ..costs.registry import RuleTable
from ..costs.runtime_rules import replaced, trained_channels
from ..trace.graph import Layer, _numel



@dataclass(frozen=True)
class Setting:
    runtime: str  # eager, tlplan, mcu
    store_bytes: int  # bytes per element of the activations the runtime's own ops keep


Workspace = Callable[[Layer, LayerCost, Setting], int]

FORWARD_WS: RuleTable[Workspace] = RuleTable("forward workspace")
BACKWARD_WS: RuleTable[Workspace] = RuleTable("backward workspace")


def _bytes(shape: tuple[int, ...], element_bytes: int = 4) -> int:
    return _numel(shape) * element_bytes


def _masked(layer: Layer, cost: LayerCost, run: Setting) -> bool:
    return run.runtime == "tlplan" and replaced(layer) and cost.state.options.mask


def _weight_bytes(layer: Layer) -> int:
    w = layer.param("weight")
    return w.numel * w.dtype_bytes if w is not None else 0


@FORWARD_WS.register("conv2d")
def _conv_fwd(layer: Layer, cost: LayerCost, run: Setting) -> int:
    # oneDNN reorders the weight, and the output (stride 1) or the input (strided) into its layout
    out, x = _bytes(layer.output_shape), _bytes(layer.input_shapes[0])
    moved = out if layer.attrs.get("stride", (1, 1))[0] == 1 else max(out, x)
    return _weight_bytes(layer) + moved


@BACKWARD_WS.register("conv2d")
def _conv_bwd(layer: Layer, cost: LayerCost, run: Setting) -> int:
    out, x, w = _bytes(layer.output_shape), _bytes(layer.input_shapes[0]), _weight_bytes(layer)
    stride = layer.attrs.get("stride", (1, 1))[0]
    depthwise = layer.attrs.get("groups", 1) > 1
    for_input = out if stride == 1 else (x if depthwise else 2 * x)
    needs_x, needs_w = cost.state.needs_input_grad, "weight" in cost.state.trained
    opts = cost.state.options
    if run.runtime == "tlplan" and needs_w:
        if opts.grad_filter:  # patch products, and the input gradient spread back: about one input
            return (x + w) if needs_x else 0
        if opts.weight < 1.0:  # the input gradient, then the weight gradient of a channel subset
            part = trained_channels(layer, opts.weight) / layer.input_shapes[0][1]
            x_k, w_k = int(x * part), int(w * part)
            return max(for_input + w if needs_x else 0, x_k + out + 2 * w_k)
        if run.store_bytes != 4:
            x += x  # the kept fp16 input comes back as fp32 first
    if needs_x and needs_w:
        return max(for_input, x + out) + w
    if needs_x:
        return for_input + w
    return x + out + w if needs_w else 0


@FORWARD_WS.register("relu", "relu6", "hardswish")
def _act_fwd(layer: Layer, cost: LayerCost, run: Setting) -> int:
    if not _masked(layer, cost, run) or not cost.state.needs_input_grad:
        return 0
    numel = layer.output_numel  # bool comparisons (two for ReLU6's band) before packing
    return (2 if layer.op == "relu6" else 1) * numel


@BACKWARD_WS.register("relu", "relu6", "hardswish")
def _act_bwd(layer: Layer, cost: LayerCost, run: Setting) -> int:
    # unpacked bits then bools (one byte each); the bools outlive the bits, next to the input gradient
    return layer.output_numel if _masked(layer, cost, run) else 0


@BACKWARD_WS.register("mul")
def _mul_bwd(layer: Layer, cost: LayerCost, run: Setting) -> int:
    # the gradient of a broadcast operand (squeeze-excitation's scale) is a full product, then reduced
    return _bytes(layer.output_shape) if len(set(layer.input_shapes)) > 1 else 0


_NONE = (
    "linear", "batch_norm", "group_norm", "layer_norm", "hardtanh", "hardsigmoid", "sigmoid", "silu",
    "gelu", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "mean", "flatten", "view", "identity",
    "dropout", "add", "sub", "cat", "interpolate",
)
FORWARD_WS.register_constant(_NONE + ("mul",), lambda layer, cost, run: 0)
BACKWARD_WS.register_constant(_NONE, lambda layer, cost, run: 0)
