"""Pooling: max, average and adaptive average / max pooling over 2-d feature maps."""

from __future__ import annotations

from typing import Any, Mapping

import torch.nn as nn
import torch.nn.functional as F

from ..plan.options import LayerOptions
from ..trace.graph import Layer
from .spec import GradState, OpSpec, SavedTensor, bind, saved_input


class PoolSpec(OpSpec):
    family = "pool"
    arguments = ("input", "kernel_size", "stride")

    def module_attrs(self, module: nn.Module) -> dict[str, Any]:
        return {"kernel_size": module.kernel_size, "stride": module.stride}

    def call_attrs(self, args: tuple, kwargs: Mapping[str, Any]) -> dict[str, Any]:
        bound = bind(self.arguments, args, kwargs)
        kernel = bound.get("kernel_size", 1)
        return {"kernel_size": kernel, "stride": bound.get("stride") or kernel}

    def eager_saved(self, layer: Layer, state: GradState) -> list[SavedTensor]:
        return [saved_input(layer)] if state.needs_input_grad else []

    def keeps_input(self, layer: Layer, opts: LayerOptions | None) -> bool:
        return True

    def calibration(self, layer: Layer, option: LayerOptions | None) -> str | None:
        return self.kind


class MaxPoolSpec(PoolSpec):
    kind = "max_pool2d"
    summary = "max pooling (keeps its input and int64 indices)"
    modules = (nn.MaxPool2d,)
    functions = (F.max_pool2d,)

    def eager_saved(self, layer: Layer, state: GradState) -> list[SavedTensor]:
        return _input_and_indices(layer, state)


class AvgPoolSpec(PoolSpec):
    kind = "avg_pool2d"
    summary = "average pooling"
    modules = (nn.AvgPool2d,)
    functions = (F.avg_pool2d,)


class AdaptiveAvgPoolSpec(PoolSpec):
    kind = "adaptive_avg_pool2d"
    summary = "adaptive average pooling (to 1×1 a mean, which keeps nothing)"
    modules = (nn.AdaptiveAvgPool2d,)
    functions = (F.adaptive_avg_pool2d,)

    def module_attrs(self, module: nn.Module) -> dict[str, Any]:
        return {}

    def call_attrs(self, args: tuple, kwargs: Mapping[str, Any]) -> dict[str, Any]:
        return {}

    def eager_saved(self, layer: Layer, state: GradState) -> list[SavedTensor]:
        # to 1×1 PyTorch computes a mean, which keeps only sizes
        if not state.needs_input_grad or all(d == 1 for d in layer.output_shape[2:]):
            return []
        return [saved_input(layer)]

    def keeps_input(self, layer: Layer, opts: LayerOptions | None) -> bool:
        return False


class AdaptiveMaxPoolSpec(AdaptiveAvgPoolSpec):
    kind = "adaptive_max_pool2d"
    summary = "adaptive max pooling (keeps its input and int64 indices)"
    modules = (nn.AdaptiveMaxPool2d,)
    functions = (F.adaptive_max_pool2d,)

    def eager_saved(self, layer: Layer, state: GradState) -> list[SavedTensor]:
        return _input_and_indices(layer, state)

    def calibration(self, layer: Layer, option: LayerOptions | None) -> str | None:
        return None


def _input_and_indices(layer: Layer, state: GradState) -> list[SavedTensor]:
    """Max pooling keeps its input and the int64 index of each output's maximum."""
    if not state.needs_input_grad:
        return []
    return [saved_input(layer), SavedTensor("indices", private_bytes=layer.output_numel * 8)]
