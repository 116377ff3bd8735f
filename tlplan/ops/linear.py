"""Fully connected layers: ``nn.Linear`` and ``F.linear`` (a weight over the last dimension)."""

from __future__ import annotations

from typing import Any, Mapping

import torch.nn as nn
import torch.nn.functional as F

from ..plan.options import LayerOptions
from ..runtime.modules import PlannedLinearModule
from ..trace.graph import Layer, _numel
from .spec import GradState, SavedTensor, TensorShape, bind
from .weighted import WeightOpSpec


class LinearSpec(WeightOpSpec):
    kind = "linear"
    family = "linear"
    summary = "fully connected layer over the last dimension"
    modules = (nn.Linear,)
    functions = (F.linear,)
    arguments = ("input", "weight", "bias")
    planned_class = PlannedLinearModule
    channel_dim = -1

    def module_attrs(self, module: nn.Module) -> dict[str, Any]:
        return dict(in_features=module.in_features, out_features=module.out_features, weight_shape=tuple(module.weight.shape))

    def call_attrs(self, args: tuple, kwargs: Mapping[str, Any]) -> dict[str, Any]:
        w = bind(self.arguments, args, kwargs).get("weight")
        if not isinstance(w, TensorShape):
            return {}
        return dict(in_features=w[1], out_features=w[0], weight_shape=tuple(w))

    def macs_fwd(self, layer: Layer) -> int:
        return _numel(layer.output_shape) * layer.input_shapes[0][-1]

    def eager_saved(self, layer: Layer, state: GradState) -> list[SavedTensor]:
        # addmm/mm keep mat1 (the input) only to compute the weight's gradient; an input of more
        # than two dimensions is flattened first, which copies a non-contiguous one (a transposed view)
        if "weight" not in state.trained:
            return []
        x = layer.input_shapes[0]
        if len(x) > 2 and layer.attrs.get("input_contiguous") is False:
            return [SavedTensor("input copy", private_bytes=_numel(x) * layer.output_dtype_bytes)]
        return [SavedTensor("input", value=layer.inputs[0])]

    def keeps_input(self, layer: Layer, opts: LayerOptions | None) -> bool:
        return opts is not None and opts.weight == 1.0

    def calibration(self, layer: Layer, option: LayerOptions | None) -> str | None:
        return "linear.tl" if option is not None else "linear"
