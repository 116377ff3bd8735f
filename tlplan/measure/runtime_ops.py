"""Calibration ops of the tlplan runtime: its autograd Functions, timed as they run in a plan.

A ``tlplan``-runtime plan swaps conv, linear, batch-norm and ReLU-family modules for
``tlplan.runtime``'s versions. Their kernels differ from PyTorch's own where the plan's options
change what backward does, so a measured profile times them as ops of their own:

* ``conv2d.tl``: any conv under the runtime (full weight, bias only, frozen): the input gradient
  is a transposed conv, the bias gradient a separate sum;
* ``conv2d.tl.part``: the weight trained on a share of its input channels (``weight_per_mille``):
  the forward copies those channels, the weight gradient is a smaller convolution_backward
  scattered into a zero tensor;
* ``conv2d.tl.gf``: gradient filtering with patch size ``grad_filter``: the forward keeps patch
  sums, the gradients come from patch-averaged output gradients;
* ``linear.tl``: a linear layer (any share of input features);
* ``batch_norm.tl``: a norm on running statistics (``frozen`` / ``shift``); ``affine`` runs
  PyTorch's own batch norm and is priced as ``batch_norm``;
* ``relu.mask``, ``relu6.mask``, ``hardswish.mask``: activations that keep a packed 1-bit mask.

A layer's op spec names one of them only with the plan's options in hand (``option`` is a
``LayerOptions``), which the predictor passes for ``tlplan``-runtime cost tables only. Having no layer of a plain network
to sample near, each borrows the shape prior of the PyTorch ops it stands in for (``prior_from``)
and draws its option fields (``vary``).
"""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any, Callable

import torch
import torch.nn as nn

from ..plan.options import FILTER_SIZES, WEIGHT_RATIOS, LayerOptions
from ..trace.graph import Layer
from .microbench import (
    CALIBRATION_OPS, Bench, Config, conform_conv, conform_depthwise, conform_linear, conv_config, elementwise_config,
    linear_config, norm_config, padding_for, random_tensor, register_op, same_size,
)

#: what a partial weight trains in sampled configurations (the plans' ratios below 1, per mille)
PARTIAL_PER_MILLE = tuple(round(1000 * r) for r in WEIGHT_RATIOS if r < 1)


def _with_options(config: Config, option: Any) -> Config:
    per_mille = round(1000 * option.weight) if 0 < option.weight < 1 else 1000
    return replace(config, weight_per_mille=per_mille, grad_filter=int(option.grad_filter))


def _vary_partial(config: Config, rng: random.Random) -> Config:
    return replace(config, weight_per_mille=rng.choice(PARTIAL_PER_MILLE), grad_filter=0)


def _vary_filter(config: Config, rng: random.Random) -> Config:
    return replace(config, weight_per_mille=1000, grad_filter=rng.choice(FILTER_SIZES))


def _vary_none(config: Config, rng: random.Random) -> Config:
    return replace(config, weight_per_mille=1000, grad_filter=0)


def _vary_linear(config: Config, rng: random.Random) -> Config:
    return replace(config, weight_per_mille=rng.choice((1000, 1000, *PARTIAL_PER_MILLE)), grad_filter=0)


def _conform_any_conv(c: Config) -> Config:
    """A depthwise configuration stays depthwise (groups = channels), any other is dense."""
    return conform_depthwise(c) if c.groups > 1 else conform_conv(c)


def _conv_params(c: Config) -> tuple[nn.Parameter, nn.Parameter | None]:
    conv = nn.Conv2d(c.c_in, c.c_out, c.k, groups=c.groups, bias=bool(c.bias))
    return conv.weight, conv.bias


def _build_planned_conv(c: Config) -> Bench:
    from ..runtime.functional import PlannedConv2d, channel_index

    weight, bias = _conv_params(c)
    pad = padding_for(c.h, c.h_out, c.k, c.stride)
    index = channel_index(weight, c.weight_per_mille / 1000, "first", c.groups) if c.weight_per_mille < 1000 else None
    stride, padding, dilation = (c.stride, c.stride), (pad, pad), (1, 1)

    def fn(x: torch.Tensor) -> torch.Tensor:
        return PlannedConv2d.apply(x, weight, bias, stride, padding, dilation, c.groups, index, c.grad_filter, None)

    return _weighted_bench(fn, random_tensor(c.batch, c.c_in, c.h, c.w), weight, bias)


def _weighted_bench(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, weight: torch.Tensor,
                    bias: torch.Tensor | None) -> Bench:
    """A conv or linear Function: ``bwd_weight`` differentiates for the weight with its bias."""
    biases = [bias] if bias is not None else []
    return Bench(fn=fn, inputs=[x], weight=[weight, *biases], bias=biases, graph_per_pass=True)


def _build_planned_linear(c: Config) -> Bench:
    from ..runtime.functional import PlannedLinear, channel_index

    linear = nn.Linear(c.c_in, c.c_out, bias=bool(c.bias))
    weight, bias = linear.weight, linear.bias
    index = channel_index(weight, c.weight_per_mille / 1000, "first") if c.weight_per_mille < 1000 else None

    def fn(x: torch.Tensor) -> torch.Tensor:
        return PlannedLinear.apply(x, weight, bias, index, None)

    return _weighted_bench(fn, random_tensor(c.batch, c.c_in), weight, bias)


def _build_frozen_norm(c: Config) -> Bench:
    from ..runtime.functional import FrozenNorm

    norm = nn.BatchNorm2d(c.c_in)
    norm.weight.requires_grad_(False)  # γ is never trained on running statistics (``shift`` trains β)

    def fn(x: torch.Tensor) -> torch.Tensor:
        return FrozenNorm.apply(x, norm.weight, norm.bias, norm.running_mean, norm.running_var, norm.eps)

    return Bench(fn=fn, inputs=[random_tensor(c.batch, c.c_in, c.h, c.w)], bias=[norm.bias], graph_per_pass=True)


def _build_masked(kind: str) -> Callable[[Config], Bench]:
    def build(c: Config) -> Bench:
        from ..runtime.functional import MaskedActivation

        inplace = bool(c.inplace)
        return Bench(fn=lambda x: MaskedActivation.apply(x, kind, inplace), inputs=[random_tensor(c.batch, c.c_in, c.h, c.w)],
                     graph_per_pass=True)

    return build


_CONV_PRIOR = ("conv2d", "conv2d.dw", "conv2d.pw")
register_op("conv2d.tl", conv_config, _build_planned_conv, _conform_any_conv,
            with_options=_with_options, prior_from=_CONV_PRIOR, vary=_vary_none)
register_op("conv2d.tl.part", conv_config, _build_planned_conv, _conform_any_conv,
            with_options=_with_options, prior_from=_CONV_PRIOR, vary=_vary_partial)
register_op("conv2d.tl.gf", conv_config, _build_planned_conv, _conform_any_conv,
            with_options=_with_options, prior_from=_CONV_PRIOR, vary=_vary_filter)
register_op("linear.tl", linear_config, _build_planned_linear, conform_linear,
            with_options=_with_options, prior_from=("linear",), vary=_vary_linear)
register_op("batch_norm.tl", norm_config, _build_frozen_norm, same_size, prior_from=("batch_norm",))
for _kind in ("relu", "relu6", "hardswish"):
    register_op(f"{_kind}.mask", elementwise_config, _build_masked(_kind), same_size, prior_from=(_kind,))

#: the ops above, by name (each borrows a plain op's shape prior)
RUNTIME_OPS = tuple(entry.name for entry in CALIBRATION_OPS if entry.prior_from)
