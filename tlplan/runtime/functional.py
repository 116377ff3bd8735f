"""Autograd ops that keep for backward only what a plan says — and only through ``save_for_backward``.

Every tensor an op keeps goes through ``ctx.save_for_backward``, so saved-tensor hooks (and so
checkpointing, offloading and tlplan's own measurement) see every byte. Hyper-parameters travel as
plain Python values on ``ctx``. Parameters and running statistics are saved as they are (they are
resident anyway); activations are saved in the plan's precision (``store_dtype``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

# ---- 1-bit masks --------------------------------------------------------------------------------


_BITS = torch.tensor([1, 2, 4, 8, 16, 32, 64, 128], dtype=torch.uint8)
#: byte value → its eight bits, least significant first (unpacking is one gather from this table)
_BYTE_BITS = ((np.arange(256)[:, None] >> np.arange(8)) & 1).astype(np.uint8)

#: dtypes numpy can view without a copy (bfloat16 cannot: it takes the torch path)
_NUMPY_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bool, torch.uint8)
#: a float's bits as an integer of its width, to zero it exactly (inf and NaN included)
_SAME_WIDTH_INT = {2: np.int16, 4: np.int32, 8: np.int64}

# The fast path below runs numpy's vectorised loops (2-5x torch's comparisons, bit packing and
# masked select on one CPU thread) on memory that torch allocates, through ``out=``: so torch's
# profiler, and with it tlplan's measured peak, sees every buffer as before. The one exception
# is np.packbits' result (numel/8 bytes, copied at once into the kept tensor).


def _numpy_view(t: torch.Tensor):
    """The tensor's memory as a flat numpy array, or None where numpy cannot see it as it is
    (another device, a dtype numpy lacks, a strided view)."""
    if t.device.type != "cpu" or t.dtype not in _NUMPY_DTYPES or not t.is_contiguous():
        return None
    return t.detach().numpy().reshape(-1)


def pack_mask(mask: torch.Tensor) -> torch.Tensor:
    """Bool tensor → uint8 tensor of ⌈numel/8⌉ bytes (bit i of byte j is element 8j+i)."""
    flat = _numpy_view(mask)
    if flat is not None:
        packed = torch.empty(mask_bytes(flat.size), dtype=torch.uint8)
        packed.numpy()[:] = np.packbits(flat, bitorder="little")
        return packed
    flat = mask.reshape(-1)
    pad = (-flat.numel()) % 8
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    bits = flat.view(torch.uint8).view(-1, 8)  # a bool is one byte: a view, no copy
    packed = bits[:, 0].clone()
    for i in range(1, 8):
        packed.bitwise_or_(bits[:, i] << i)
    return packed


def unpack_mask(packed: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    numel = math.prod(shape)
    flat = _numpy_view(packed)
    if flat is not None:
        bits = torch.empty(flat.size * 8, dtype=torch.uint8)
        np.take(_BYTE_BITS, flat, axis=0, out=bits.numpy().reshape(-1, 8))
        return bits[:numel].view(torch.bool).view(shape)
    bits = packed.unsqueeze(1).bitwise_and(_BITS.to(packed.device)) != 0
    return bits.reshape(-1)[:numel].view(shape)


def mask_bytes(numel: int) -> int:
    return (numel + 7) // 8


def _activation_mask(x: torch.Tensor, kind: str) -> torch.Tensor:
    """Where the activation passes its gradient: x > 0 (ReLU; h-swish by MobileTL's surrogate),
    0 < x < 6 (ReLU6); NaN is outside both, as in PyTorch's comparisons. One bool per element
    (two for ReLU6 while they are combined), as the memory model's forward workspace says."""
    flat = _numpy_view(x)
    if flat is None:
        mask = x > 0
        if kind == "relu6":
            mask.logical_and_(x < 6)
        return mask
    mask = torch.empty(x.shape, dtype=torch.bool)
    bits = mask.numpy().reshape(-1)
    np.greater(flat, 0, out=bits)
    if kind == "relu6":
        below_six = torch.empty(x.shape, dtype=torch.bool)
        np.less(flat, 6, out=below_six.numpy().reshape(-1))
        np.logical_and(bits, below_six.numpy().reshape(-1), out=bits)
        del below_six
    return mask


def _masked_gradient(grad: torch.Tensor, packed: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """``grad`` where the mask is set, exactly 0 elsewhere (inf and NaN too, as PyTorch's ReLU)."""
    mask = unpack_mask(packed, shape)
    flat_grad, flat_mask = _numpy_view(grad), _numpy_view(mask.view(torch.uint8))
    if flat_grad is None or flat_mask is None or not grad.is_floating_point():
        return torch.where(mask, grad, 0)  # exact, but several times slower than the path below
    # the gradient's bits times 0 or 1, as integers: exact for every value, and numpy casts the
    # 0/1 bytes in small buffers (torch's mixed-dtype multiply would first copy the mask to float)
    as_int = _SAME_WIDTH_INT[grad.element_size()]
    out = torch.empty_like(grad, memory_format=torch.contiguous_format)
    np.multiply(flat_grad.view(as_int), flat_mask, out=out.numpy().reshape(-1).view(as_int))
    return out


class MaskedActivation(torch.autograd.Function):
    """ReLU, ReLU6 (exact) or h-swish (sign surrogate) keeping a packed 1-bit mask.

    In place when the module it replaces was (the input is overwritten, as the model's author
    chose); the mask is computed only when a gradient will be asked for.

    With ``from_output`` (ReLU and ReLU6 only: 0 < y < 6 exactly where 0 < x < 6, and y > 0 where
    x > 0), it keeps its output instead: where a later layer keeps that output anyway (the conv it
    feeds, training its weight), that costs no byte, and the backward is PyTorch's own kernel.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, kind: str, inplace: bool, from_output: bool = False) -> torch.Tensor:
        if kind not in ("relu", "relu6", "hardswish") or (from_output and kind == "hardswish"):
            raise ValueError(f"no masked backward for {kind}" + (" from its output" if from_output else ""))
        ctx.shape, ctx.kind, ctx.from_output = x.shape, kind, from_output
        if ctx.needs_input_grad[0] and not from_output:
            mask = _activation_mask(x, kind)
            ctx.save_for_backward(pack_mask(mask))
            del mask
        if kind == "relu":
            y = F.relu(x, inplace=inplace)
        elif kind == "relu6":
            y = F.hardtanh(x, 0.0, 6.0, inplace=inplace)
        else:
            y = F.hardswish(x, inplace=inplace)
        if inplace:
            ctx.mark_dirty(y)
        if ctx.needs_input_grad[0] and from_output:
            ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, None, None, None]:
        (kept,) = ctx.saved_tensors
        if not ctx.from_output:
            return _masked_gradient(grad, kept, ctx.shape), None, None, None
        if ctx.kind == "relu":  # what PyTorch's ReLU runs, on the output it keeps too
            return torch.ops.aten.threshold_backward(grad, kept, 0), None, None, None
        # PyTorch's ReLU6 reads its input; on the output the same elements pass (see above)
        return torch.ops.aten.hardtanh_backward(grad, kept, 0.0, 6.0), None, None, None


# ---- norm with frozen statistics ----------------------------------------------------------------


class FrozenNorm(torch.autograd.Function):
    """BatchNorm with running statistics: ``y = x·a + b``, a = γ/√(var+ε), b = β − mean·a.

    Keeps no activation: the input gradient is ``g·a`` and β's gradient is ``Σ g``; γ is never
    trained here (training γ needs the normalised input: that is the ``affine`` mode).
    """

    @staticmethod
    def forward(ctx: Any, x, weight, bias, running_mean, running_var, eps: float):
        a = torch.rsqrt(running_var + eps)
        if weight is not None:
            a = a * weight
        b = -running_mean * a
        if bias is not None:
            b = b + bias
        shape = (1, -1) + (1,) * (x.dim() - 2)
        ctx.eps, ctx.has_weight = eps, weight is not None
        if ctx.needs_input_grad[0]:
            ctx.save_for_backward(running_var, weight) if weight is not None else ctx.save_for_backward(running_var)
        return torch.addcmul(b.view(shape), x, a.view(shape))  # one allocation: the output

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor):
        grad_x = grad_bias = None
        dims = [0] + list(range(2, grad.dim()))
        if ctx.needs_input_grad[2]:
            grad_bias = grad.sum(dims)
        if ctx.needs_input_grad[0]:
            saved = ctx.saved_tensors
            a = torch.rsqrt(saved[0] + ctx.eps)
            if ctx.has_weight:
                a = a * saved[1]
            grad_x = grad * a.view((1, -1) + (1,) * (grad.dim() - 2))
        return grad_x, None, grad_bias, None, None, None


# ---- conv and linear with partial weights, bias only, gradient filtering --------------------------


def channel_index(weight: torch.Tensor, ratio: float, select: str, groups: int = 1) -> torch.Tensor | None:
    """Indices of the trained input channels (None: all of them).

    Dense weights (C_out, C_in, ...) select along dim 1; a depthwise conv's input channel c is its
    group c, so there the selection runs along dim 0.
    """
    depthwise = groups > 1
    c_in = weight.shape[0] if depthwise else weight.shape[1]
    k = max(1, int(round(ratio * c_in)))
    if k >= c_in:
        return None
    if select == "first":
        return torch.arange(k)
    keep_dim = 0 if depthwise else 1
    scores = weight.detach().abs().sum(dim=[d for d in range(weight.dim()) if d != keep_dim])
    return torch.sort(torch.topk(scores, k).indices).values


def _save_for_weight(ctx: Any, weight: torch.Tensor, store_dtype: torch.dtype | None, kept) -> None:
    """Keep what the weight gradient needs (only if the weight is trained), and the weight."""
    if ctx.needs_input_grad[1]:
        keep = kept()
        ctx.save_for_backward(keep if store_dtype is None else keep.to(store_dtype), weight)
    elif ctx.needs_input_grad[0]:
        ctx.save_for_backward(weight)


class PlannedConv2d(torch.autograd.Function):
    """conv2d whose backward keeps only what the plan needs.

    - weight trained on all channels: the input (shared with whoever else keeps it);
    - on a subset of input channels: a compact copy of those channels;
    - with gradient filter r: the r·stride patch sums of the input (where r does not divide the
      output map, the patch grid is rounded up and centred and the edge patches average the cells
      they cover, as the paper's code does);
    - bias only, or frozen on the backward path: nothing (the input gradient needs the weight only).
    """

    @staticmethod
    def forward(ctx: Any, x, weight, bias, stride, padding, dilation, groups: int,
                index: torch.Tensor | None, grad_filter: int, store_dtype: torch.dtype | None):
        y = F.conv2d(x, weight, bias, stride, padding, dilation, groups)
        ctx.conf = (x.shape, stride, padding, dilation, groups, grad_filter, x.dtype)
        ctx.index = index  # the module's own index tensor: resident, not a new allocation

        def kept() -> torch.Tensor:
            if grad_filter:
                return _patch_sums(x, y.shape[-2:], stride, grad_filter)
            # (depthwise: input channel c is group c, the same selection)
            return x if index is None else x.index_select(1, index)

        _save_for_weight(ctx, weight, store_dtype, kept)
        return y

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor):
        x_shape, stride, padding, dilation, groups, r, dtype = ctx.conf
        saved = ctx.saved_tensors  # empty when only the bias is trained and no input gradient is needed
        weight = saved[-1] if saved else None
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[2]:
            grad_b = grad.sum((0, 2, 3))
        if r:
            g_avg = _patch_average(grad, r)
            if ctx.needs_input_grad[0]:
                grad_x = _filtered_input_grad(g_avg, weight, groups, x_shape, stride, r)
            if ctx.needs_input_grad[1]:
                grad_w = _filtered_weight_grad(g_avg, saved[0].to(dtype), weight, groups)
            return grad_x, grad_w, grad_b, None, None, None, None, None, None, None
        index = ctx.index
        if ctx.needs_input_grad[1] and index is None:
            # one convolution_backward for both gradients, as PyTorch's own conv does
            grad_x, grad_w, _ = torch.ops.aten.convolution_backward(
                grad, saved[0].to(dtype), weight, None, stride, padding, dilation, False, (0, 0), groups,
                (ctx.needs_input_grad[0], True, False),
            )
            return grad_x, grad_w, grad_b, None, None, None, None, None, None, None
        if ctx.needs_input_grad[0]:
            grad_x = _conv_input_grad(grad, weight, x_shape, stride, padding, dilation, groups)
        if ctx.needs_input_grad[1]:  # a subset of the input channels
            kept = saved[0].to(dtype)
            if groups == 1:
                part_w, g_part, part_groups = weight.index_select(1, index), grad, 1
            else:  # depthwise: the trained channels are whole groups
                part_w, g_part, part_groups = weight.index_select(0, index), grad.index_select(1, index), len(index)
            part = torch.ops.aten.convolution_backward(
                g_part, kept, part_w, None, stride, padding, dilation, False, (0, 0), part_groups, (False, True, False)
            )[1]
            grad_w = weight.new_zeros(weight.shape)
            if groups == 1:
                grad_w[:, index] = part
            else:
                grad_w[index] = part
        return grad_x, grad_w, grad_b, None, None, None, None, None, None, None


def _conv_input_grad(grad, weight, x_shape, stride, padding, dilation, groups):
    """dx of a conv as the transposed conv of its output gradient.

    (``torch.nn.grad.conv2d_input`` would materialise an input-sized dummy for oneDNN: one whole
    input of memory more at the worst moment of backward.)
    """
    output_padding = tuple(
        x_shape[2 + i] - ((grad.shape[2 + i] - 1) * stride[i] - 2 * padding[i] + dilation[i] * (weight.shape[2 + i] - 1) + 1)
        for i in range(2)
    )
    return F.conv_transpose2d(grad, weight, None, stride, padding, output_padding, groups, dilation)


def filtered_grid(out_hw: tuple[int, int], r: int) -> tuple[int, int]:
    """The patch grid of an output map: (H/r, W/r), rounded up where r does not divide the map
    (centred; an edge patch averages the cells it covers, as the gradient-filter paper's code)."""
    return math.ceil(out_hw[0] / r), math.ceil(out_hw[1] / r)


def _patch_sums(x: torch.Tensor, out_hw, stride, r: int) -> torch.Tensor:
    """Sums of x over r·stride windows, one per r×r patch of the output (Yang et al.)."""
    ph, pw = filtered_grid(tuple(out_hw), r)
    wh, ww = r * stride[0], r * stride[1]
    pad_h, pad_w = math.ceil((ph * wh - x.shape[-2]) / 2), math.ceil((pw * ww - x.shape[-1]) / 2)
    pad_h, pad_w = max(pad_h, 0), max(pad_w, 0)
    sums = F.avg_pool2d(x, (wh, ww), (wh, ww), padding=(pad_h, pad_w), ceil_mode=False, divisor_override=1)
    return sums[..., :ph, :pw].contiguous()


def _patch_average(grad: torch.Tensor, r: int) -> torch.Tensor:
    ph, pw = filtered_grid(tuple(grad.shape[-2:]), r)
    pad_h, pad_w = math.ceil((ph * r - grad.shape[-2]) / 2), math.ceil((pw * r - grad.shape[-1]) / 2)
    return F.avg_pool2d(grad, r, r, padding=(pad_h, pad_w), count_include_pad=False)[..., :ph, :pw]


def _filtered_input_grad(g_avg, weight, groups, x_shape, stride, r):
    """Per patch: the channel product with the spatially summed kernel, spread over the patch."""
    n, c_out, ph, pw = g_avg.shape
    w_sum = weight.sum((2, 3))  # (C_out, C_in/groups)
    if groups == 1:
        gx = torch.einsum("ncp,ci->nip", g_avg.reshape(n, c_out, -1), w_sum).reshape(n, -1, ph, pw)
    else:  # depthwise
        gx = g_avg * w_sum.view(1, c_out, 1, 1)
    wh, ww = r * stride[0], r * stride[1]
    full = gx.repeat_interleave(wh, dim=2).repeat_interleave(ww, dim=3)
    h, w = x_shape[-2:]
    off_h, off_w = max(math.ceil((ph * wh - h) / 2), 0), max(math.ceil((pw * ww - w) / 2), 0)
    out = full[..., off_h : off_h + h, off_w : off_w + w]
    if out.shape[-2] < h or out.shape[-1] < w:  # windows cover less than the input: zero the rest
        out = F.pad(out, (0, w - out.shape[-1], 0, h - out.shape[-2]))
    return out.contiguous()


def _filtered_weight_grad(g_avg, x_sums, weight, groups):
    """The same gradient for every kernel tap: Σ over batch and patches of ĝ · x̃."""
    c_out = weight.shape[0]
    if groups == 1:
        gw = torch.einsum("ncp,nip->ci", g_avg.flatten(2), x_sums.flatten(2))
    else:
        gw = (g_avg * x_sums).sum((0, 2, 3)).view(c_out, 1)
    return gw[:, :, None, None].expand(weight.shape).contiguous()


class PlannedLinear(torch.autograd.Function):
    """linear whose backward keeps the input only for a trained weight (a subset of its features)."""

    @staticmethod
    def forward(ctx: Any, x, weight, bias, index: torch.Tensor | None, store_dtype: torch.dtype | None):
        y = F.linear(x, weight, bias)
        ctx.index, ctx.dtype = index, x.dtype
        _save_for_weight(ctx, weight, store_dtype, lambda: x if index is None else x.index_select(-1, index))
        return y

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor):
        saved = ctx.saved_tensors
        weight = saved[-1] if saved else None
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = grad @ weight
        if ctx.needs_input_grad[2]:
            grad_b = grad.reshape(-1, grad.shape[-1]).sum(0)
        if ctx.needs_input_grad[1]:
            kept = saved[0].to(ctx.dtype)
            g2 = grad.reshape(-1, grad.shape[-1])
            part = g2.t() @ kept.reshape(-1, kept.shape[-1])
            if ctx.index is None:
                grad_w = part
            else:
                grad_w = weight.new_zeros(weight.shape)
                grad_w[:, ctx.index] = part
        return grad_x, grad_w, grad_b, None, None
