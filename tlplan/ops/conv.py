"""Convolutions: ``conv2d`` (dense, grouped, depthwise with or without a channel multiplier,
dilated; module or functional) and ``conv_transpose2d``."""

from __future__ import annotations

import math
from typing import Any, Mapping

import torch.nn as nn
import torch.nn.functional as F

from ..plan.options import LayerOptions, filter_size_problem
from ..runtime.functional import filtered_grid
from ..runtime.modules import PlannedConv2dModule, make_planned
from ..trace.graph import Layer, _numel
from .spec import GradState, SavedTensor, Setting, TensorShape, bind, has_own_parts, pair, planned, tensor_bytes
from .weighted import WeightOpSpec

_CONV_ARGS = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")


def numeric_padding(padding: Any, kernel: tuple[int, ...], dilation: tuple[int, ...]) -> tuple[int, int] | None:
    """Symmetric numeric padding for a padding given as numbers, "valid" or "same" (None where
    "same" needs more on one side than the other: PyTorch pads a copy of the input first)."""
    if padding == "valid":
        return (0, 0)
    if padding == "same":
        totals = [d * (k - 1) for d, k in zip(dilation, kernel)]
        return None if any(t % 2 for t in totals) else (totals[0] // 2, totals[1] // 2)
    return pair(padding)


def groups(layer: Layer) -> int:
    return int(layer.attrs.get("groups", 1))


def is_depthwise(layer: Layer) -> bool:
    """One group per input channel (a channel multiplier is allowed: C_out = m · C_in)."""
    g = groups(layer)
    return g > 1 and g == layer.input_shapes[0][1]


def weight_shape(layer: Layer) -> tuple[int, ...] | None:
    shape = layer.attrs.get("weight_shape")
    if shape is None:
        w = layer.param("weight")
        shape = w.shape if w is not None else None
    return tuple(shape) if shape is not None else None


class Conv2dSpec(WeightOpSpec):
    kind = "conv2d"
    family = "conv"

    def mcu_in_place(self, layer) -> bool:
        # TinyEngine's depthwise kernels work channel by channel over their input's buffer
        return is_depthwise(layer)

    def mcu_scratch(self, layer, phase: str) -> tuple[int, int]:
        # TinyEngine's kernels (code_generator/operators): the int8 forward's im2col (two 16-bit
        # columns) and 16-bit weight copy for k>1, the in-place depthwise kernel's 16-bit padded
        # plane; backward in fp32: the depthwise input gradient (a transposed conv) keeps a padded
        # fp32 plane, the weight gradient is a group conv whose kernel is the output gradient's
        # plane (H_out x W_out): 80 (48) bytes per kernel element where C_out is a multiple of 16 (8)
        shape = weight_shape(layer)
        if shape is None or len(layer.input_shapes[0]) != 4 or len(layer.output_shape) != 4:
            return 0, 0
        _, c_in, h_in, w_in = layer.input_shapes[0]
        c_out, h_out, w_out = layer.output_shape[1:]
        kh, kw = shape[2], shape[3]
        pad = layer.attrs.get("numeric_padding") or (0, 0)
        ph, pw = (pad, pad) if isinstance(pad, int) else tuple(pad[:2])
        depthwise = is_depthwise(layer)
        if phase == "forward":
            if depthwise:
                return 2 * (h_in + 2 * ph) * (w_in + 2 * pw), 0
            weights = c_out * shape[1] * kh * kw
            return kh * kw * c_in * 4, (2 * weights if kh > 1 else 0)
        if phase == "input_grad":
            return ((h_in + kh - 1) * (w_in + kw - 1) * 4 if depthwise else 0), 0
        if phase == "weight_grad":
            if depthwise:
                return (h_in + 2 * ph) * (w_in + 2 * pw) * 4 + h_out * w_out * c_in * 4, 0
            per = 80 if c_out % 16 == 0 else 48 if c_out % 8 == 0 else 0
            return h_out * w_out * per, 0
        return 0, 0
    summary = "2-d convolution: dense, grouped, depthwise (with a channel multiplier too), dilated, strided"
    modules = (nn.Conv2d,)
    functions = (F.conv2d,)
    arguments = _CONV_ARGS
    planned_class = PlannedConv2dModule

    # ---- recognition

    def module_attrs(self, module: nn.Module) -> dict[str, Any]:
        kernel, dilation = tuple(module.kernel_size), tuple(module.dilation)
        padding = module.padding if isinstance(module.padding, str) else tuple(module.padding)
        attrs = dict(
            in_channels=module.in_channels, out_channels=module.out_channels, kernel_size=kernel,
            stride=tuple(module.stride), padding=padding, dilation=dilation, groups=module.groups,
            weight_shape=tuple(module.weight.shape),
        )
        numeric = numeric_padding(padding, kernel, dilation)
        if numeric is not None:
            attrs["numeric_padding"] = numeric
        return attrs

    def call_attrs(self, args: tuple, kwargs: Mapping[str, Any]) -> dict[str, Any]:
        bound = bind(self.arguments, args, kwargs)
        g = int(bound.get("groups", 1))
        attrs: dict[str, Any] = dict(stride=pair(bound.get("stride", 1)), dilation=pair(bound.get("dilation", 1)), groups=g)
        padding = bound.get("padding", 0)
        attrs["padding"] = padding if isinstance(padding, str) else pair(padding)
        w = bound.get("weight")
        if isinstance(w, TensorShape):  # read from the weight's shape, as torch's flop counter does
            attrs.update(weight_shape=tuple(w), kernel_size=tuple(w[2:4]), out_channels=w[0], in_channels=w[1] * g)
            numeric = numeric_padding(attrs["padding"], tuple(w[2:4]), attrs["dilation"])
            if numeric is not None:
                attrs["numeric_padding"] = numeric
        return attrs

    def standard(self, module: nn.Module) -> bool:
        return (
            type(module).forward is nn.Conv2d.forward
            and type(module)._conv_forward is nn.Conv2d._conv_forward
            and module.padding_mode == "zeros"
            and numeric_padding(module.padding, tuple(module.kernel_size), tuple(module.dilation)) is not None
            and not has_own_parts(module)
        )

    def runtime_module(self, module: nn.Module, options: LayerOptions, precision: str) -> nn.Module:
        padding = numeric_padding(module.padding, tuple(module.kernel_size), tuple(module.dilation))
        return make_planned(module, PlannedConv2dModule, options, precision, padding)

    # ---- shapes and options

    def partial_ok(self, layer: Layer) -> str | None:
        c_in, c_out = layer.input_shapes[0][1], layer.output_shape[1]
        if groups(layer) == 1 or (is_depthwise(layer) and c_out == c_in):
            return None
        if is_depthwise(layer):
            return "a depthwise conv with a channel multiplier trains its whole weight or none"
        return "partial weights and gradient filtering need a dense or depthwise conv"

    def filter_ok(self, layer: Layer) -> str | None:
        problem = self.partial_ok(layer)
        if problem is None and pair(layer.attrs.get("dilation", 1)) != (1, 1):
            problem = "gradient filtering needs an undilated conv"
        return problem

    def filter_size_problem(self, layer: Layer, r: int) -> str | None:
        # r×r patches tile the output map (the runtime's kernels would otherwise average partial
        # patches at its edges: not what the paper's formulas say)
        return filter_size_problem(tuple(layer.output_shape[-2:]), r)

    def macs_fwd(self, layer: Layer) -> int:
        w = weight_shape(layer)
        if w is not None:
            return _numel(layer.output_shape) * w[1] * w[2] * w[3]
        kernel = layer.attrs.get("kernel_size", (1, 1))
        return _numel(layer.output_shape) * (layer.input_shapes[0][1] // groups(layer)) * kernel[0] * kernel[1]

    def filtered_macs(self, layer: Layer, r: int) -> int:
        """Gradient filtering works on the patch grid: one MAC per patch and channel pair."""
        n, c_out, h, w = layer.output_shape
        ph, pw = filtered_grid((h, w), r)
        return n * ph * pw * c_out * (layer.input_shapes[0][1] // groups(layer))

    # ---- what is kept

    def eager_saved(self, layer: Layer, state: GradState) -> list[SavedTensor]:
        # convolution has one formula for input, weight and bias: the input is kept whatever is trained
        if not state.recorded:
            return []
        extra = _same_padding_remainder(layer)
        if extra is not None:  # "same" needing more on one side: PyTorch convolves a padded copy
            n, c, h, w = layer.input_shapes[0]
            return [SavedTensor("padded input", private_bytes=n * c * (h + extra[0]) * (w + extra[1]) * layer.output_dtype_bytes)]
        return [SavedTensor("input", value=layer.inputs[0])]

    def weight_input(self, layer: Layer, state: GradState, element_bytes: int) -> SavedTensor:
        r = state.options.grad_filter
        if r:  # the r·stride patch sums of the input
            n, c_in = layer.input_shapes[0][:2]
            ph, pw = filtered_grid(tuple(layer.output_shape[2:4]), r)
            return SavedTensor("patch sums", private_bytes=n * c_in * ph * pw * element_bytes)
        return super().weight_input(layer, state, element_bytes)

    # ---- workspace (oneDNN reorders operands into blocked layouts; read off torch.profiler)

    def forward_workspace(self, layer: Layer, cost: Any, run: Setting) -> int:
        # the weight, and the output (stride 1) or the input (strided) into oneDNN's layout
        out, x = tensor_bytes(layer.output_shape), tensor_bytes(layer.input_shapes[0])
        moved = out if pair(layer.attrs.get("stride", 1))[0] == 1 else max(out, x)
        return _weight_bytes(layer) + moved

    def backward_workspace(self, layer: Layer, cost: Any, run: Setting) -> int:
        out, x, w = tensor_bytes(layer.output_shape), tensor_bytes(layer.input_shapes[0]), _weight_bytes(layer)
        stride = pair(layer.attrs.get("stride", 1))[0]
        for_input = out if stride == 1 else (x if groups(layer) > 1 else 2 * x)
        needs_x, needs_w = cost.state.needs_input_grad, "weight" in cost.state.trained
        opts = cost.state.options
        if run.runtime == "tlplan" and planned(layer) and needs_w:
            if opts.grad_filter:  # patch products, and the input gradient spread back: about one input
                return (x + w) if needs_x else 0
            if opts.weight < 1.0:  # the input gradient, then the weight gradient of a channel subset
                part = self.trained_channels(layer, opts.weight) / layer.input_shapes[0][1]
                x_k, w_k = int(x * part), int(w * part)
                return max(for_input + w if needs_x else 0, x_k + out + 2 * w_k)
            if run.store_bytes != 4:
                x += x  # the kept fp16 input comes back as fp32 first
        if needs_x and needs_w:
            return max(for_input, x + out) + w
        if needs_x:
            return for_input + w
        return x + out + w if needs_w else 0

    def keeps_input(self, layer: Layer, opts: LayerOptions | None) -> bool:
        # PyTorch's conv keeps its input whenever it is recorded; the runtime's for a whole weight
        return not planned(layer) or (opts is not None and opts.weight == 1.0 and not opts.grad_filter)

    def calibration(self, layer: Layer, option: LayerOptions | None) -> str | None:
        if option is not None:  # the tlplan runtime's kernels
            if option.grad_filter:
                return "conv2d.tl.gf"
            return "conv2d.tl.part" if 0 < option.weight < 1 else "conv2d.tl"
        if is_depthwise(layer):
            return "conv2d.dw"
        kernel = layer.attrs.get("kernel_size") or (1, 1)
        return "conv2d.pw" if groups(layer) == 1 and kernel[0] == 1 else "conv2d"


class ConvTranspose2dSpec(WeightOpSpec):
    """Transposed convolution (decoder and upsampling heads). PyTorch's kernels only."""

    kind = "conv_transpose2d"
    family = "conv"
    summary = "2-d transposed convolution (whole weight and bias; PyTorch's kernels)"
    modules = (nn.ConvTranspose2d,)
    functions = (F.conv_transpose2d,)
    arguments = ("input", "weight", "bias", "stride", "padding", "output_padding", "groups", "dilation")

    def module_attrs(self, module: nn.Module) -> dict[str, Any]:
        return dict(
            in_channels=module.in_channels, out_channels=module.out_channels, kernel_size=tuple(module.kernel_size),
            stride=tuple(module.stride), padding=tuple(module.padding), dilation=tuple(module.dilation),
            groups=module.groups, weight_shape=tuple(module.weight.shape),
        )

    def call_attrs(self, args: tuple, kwargs: Mapping[str, Any]) -> dict[str, Any]:
        bound = bind(self.arguments, args, kwargs)
        attrs: dict[str, Any] = dict(stride=pair(bound.get("stride", 1)), groups=int(bound.get("groups", 1)))
        w = bound.get("weight")
        if isinstance(w, TensorShape):
            attrs.update(weight_shape=tuple(w), kernel_size=tuple(w[2:4]))
        return attrs

    def standard(self, module: nn.Module) -> bool:
        return type(module).forward is nn.ConvTranspose2d.forward and module.padding_mode == "zeros" and not has_own_parts(module)

    def partial_ok(self, layer: Layer) -> str | None:
        return "a transposed conv trains its whole weight or none"

    def macs_fwd(self, layer: Layer) -> int:
        # every input element meets C_out/groups · k·k weights (PyTorch's flop counter's convention)
        w = weight_shape(layer)
        if w is None:
            return 0
        return _numel(layer.input_shapes[0]) * w[1] * w[2] * w[3]

    def eager_saved(self, layer: Layer, state: GradState) -> list[SavedTensor]:
        return [SavedTensor("input", value=layer.inputs[0])] if state.recorded else []

    def keeps_input(self, layer: Layer, opts: LayerOptions | None) -> bool:
        return opts is not None and opts.weight == 1.0


def _same_padding_remainder(layer: Layer) -> tuple[int, int] | None:
    """Rows and columns PyTorch adds to a copy of the input for a "same" padding it cannot split evenly."""
    if layer.attrs.get("padding") != "same" or "numeric_padding" in layer.attrs or "weight_shape" not in layer.attrs:
        return None
    kernel, dilation = layer.attrs["weight_shape"][2:4], pair(layer.attrs.get("dilation", 1))
    extra = tuple((d * (k - 1)) % 2 for d, k in zip(dilation, kernel))
    return extra if any(extra) else None


def _weight_bytes(layer: Layer) -> int:
    w = layer.param("weight")
    return w.numel * w.dtype_bytes if w is not None else 0
