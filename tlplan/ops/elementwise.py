"""Elementwise arithmetic, joins, reductions, dropout, resizing and views."""

from __future__ import annotations

import operator
from typing import Any, Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..plan.options import LayerOptions
from ..trace.graph import Layer
from .spec import GradState, OpSpec, SavedTensor, bind, saved_input


class ElementwiseSpec(OpSpec):
    family = "elementwise"

    def calibration(self, layer: Layer, option: LayerOptions | None) -> str | None:
        return None


class AddSpec(ElementwiseSpec):
    kind = "add"
    summary = "addition (residual joins); keeps nothing"
    functions = (operator.add, torch.add, operator.iadd)
    methods = ("add", "add_")

    def mcu_in_place(self, layer) -> bool:
        # TinyEngine's add accumulates into one operand (the residual's dead input)
        return True

    def calibration(self, layer: Layer, option: LayerOptions | None) -> str | None:
        return "add"


class SubSpec(ElementwiseSpec):
    kind = "sub"
    summary = "subtraction; keeps nothing"
    functions = (operator.sub, torch.sub)
    methods = ("sub",)


class MulSpec(ElementwiseSpec):
    kind = "mul"
    summary = "multiplication (squeeze-and-excitation scales); each operand kept for the other's gradient"
    functions = (operator.mul, torch.mul, operator.imul)
    methods = ("mul", "mul_")

    def eager_saved(self, layer: Layer, state: GradState) -> list[SavedTensor]:
        # each operand is kept only to compute the other one's gradient
        if len(layer.inputs) < 2:
            return []
        a_rg, b_rg = state.inputs_require_grad[0], state.inputs_require_grad[1]
        saved = []
        if b_rg:
            saved.append(saved_input(layer, 0))
        if a_rg:
            saved.append(saved_input(layer, 1))
        return saved

    def backward_workspace(self, layer: Layer, cost: Any, run: Any) -> int:
        # the gradient of a broadcast operand (squeeze-excitation's scale) is a full product, then reduced
        return layer.output_numel * 4 if len(set(layer.input_shapes)) > 1 else 0

    def calibration(self, layer: Layer, option: LayerOptions | None) -> str | None:
        shapes = layer.input_shapes
        return "mul.bcast" if len(shapes) == 2 and shapes[0] != shapes[1] else "mul"


class CatSpec(ElementwiseSpec):
    kind = "cat"
    summary = "concatenation; keeps nothing"
    functions = (torch.cat, torch.concat)


class MeanSpec(ElementwiseSpec):
    kind = "mean"
    summary = "mean over dimensions; keeps nothing"
    functions = (torch.mean,)
    methods = ("mean",)


class DropoutSpec(ElementwiseSpec):
    kind = "dropout"
    summary = "dropout (on CPU it keeps a float noise tensor)"
    modules = (nn.Dropout,)
    functions = (F.dropout,)
    arguments = ("input", "p", "training", "inplace")

    def module_attrs(self, module: nn.Module) -> dict[str, Any]:
        return {"p": float(module.p), **({"inplace": True} if module.inplace else {})}

    def call_attrs(self, args: tuple, kwargs: Mapping[str, Any]) -> dict[str, Any]:
        bound = bind(self.arguments, args, kwargs)
        return {"p": float(bound.get("p", 0.5)), **({"inplace": True} if bound.get("inplace") else {})}

    def eager_saved(self, layer: Layer, state: GradState) -> list[SavedTensor]:
        # CPU dropout is ``input * noise``: the float noise tensor is kept
        if not state.needs_input_grad or layer.attrs.get("p", 0.5) <= 0:
            return []
        return [SavedTensor("mask", private_bytes=layer.output_numel * layer.output_dtype_bytes)]

    def calibration(self, layer: Layer, option: LayerOptions | None) -> str | None:
        return "dropout"


class InterpolateSpec(ElementwiseSpec):
    kind = "interpolate"
    summary = "resizing (nearest, bilinear); keeps nothing"
    modules = (nn.Upsample,)
    functions = (F.interpolate,)


class ViewSpec(ElementwiseSpec):
    """Ops whose output is a view of their input: same storage, no new bytes."""

    family = "view"
    view = True

    def calibration(self, layer: Layer, option: LayerOptions | None) -> str | None:
        return "view"


class FlattenSpec(ViewSpec):
    kind = "flatten"
    summary = "flatten (a view)"
    modules = (nn.Flatten,)
    functions = (torch.flatten,)
    methods = ("flatten",)


class ReshapeSpec(ViewSpec):
    kind = "view"
    summary = "view, reshape, squeeze, unsqueeze, permute, transpose (views)"
    functions = (torch.reshape,)
    methods = ("view", "reshape", "squeeze", "unsqueeze", "contiguous", "permute", "transpose")


class IdentitySpec(ViewSpec):
    kind = "identity"
    summary = "identity (the same tensor)"
    modules = (nn.Identity,)
