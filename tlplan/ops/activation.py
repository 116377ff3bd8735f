"""Activations. ReLU and ReLU6 back-propagate exactly from a 1-bit mask on the tlplan runtime,
h-swish by MobileTL's sign surrogate; the others keep what PyTorch keeps."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..plan.options import LayerOptions
from ..runtime.modules import PlannedHardswish, PlannedReLU, PlannedReLU6
from ..trace.graph import Layer, _numel
from .spec import GradState, OpSpec, SavedTensor, _not_default, mask_bytes, planned, saved_input, saved_output


class ActivationSpec(OpSpec):
    family = "activation"

    def mcu_in_place(self, layer) -> bool:
        # the engine fuses activations into the producing conv's requantisation: no buffer of their own
        return True
    #: what PyTorch's backward reads: "output" (ReLU, sigmoid, tanh) or "input" (the others)
    keeps: ClassVar[str] = "input"
    #: calibrated under this name (None: no calibration op times it)
    calibrated: ClassVar[bool] = False
    #: what an in-place call keeps, where PyTorch's out-of-place one keeps the input: a copy of the
    #: input it overwrites ("copy": ReLU6, h-swish), or its own output ("output": leaky ReLU)
    inplace_keeps: ClassVar[str] = "copy"

    def eager_saved(self, layer: Layer, state: GradState) -> list[SavedTensor]:
        if not state.needs_input_grad:
            return []
        if self.keeps == "output":
            return [saved_output(layer)]
        if layer.attrs.get("inplace") and self.inplace_keeps == "output":
            return [saved_output(layer)]
        if layer.attrs.get("inplace"):
            # the in-place op overwrites the input its backward needs, so autograd keeps a clone of
            # the original: in-place ReLU6 / h-swish keep one tensor more than out-of-place, not less
            return [SavedTensor("input copy", private_bytes=_numel(layer.input_shapes[0]) * layer.output_dtype_bytes)]
        return [saved_input(layer)]

    def planned_saved(self, layer: Layer, state: GradState, element_bytes: int) -> list[SavedTensor]:
        if state.options.mask:
            return [SavedTensor("mask", private_bytes=mask_bytes(layer.output_numel))] if state.needs_input_grad else []
        return self.eager_saved(layer, state)

    def option_problem(self, layer: Layer, opts: LayerOptions, runtime: str | None) -> str | None:
        problem = _not_default(self.kind, opts, ("mask",) if self.mask else ())
        if problem is None and opts.mask and runtime == "tlplan" and not planned(layer):
            why = layer.attrs.get("not_planned", "the runtime does not swap it")
            problem = f"the tlplan runtime cannot keep a 1-bit mask for this {self.kind} ({why}); set mask to false"
        return problem

    def _masked(self, layer: Layer, cost: Any, run: Any) -> bool:
        return run.runtime == "tlplan" and planned(layer) and cost.state.options.mask

    def forward_workspace(self, layer: Layer, cost: Any, run: Any) -> int:
        if not self._masked(layer, cost, run) or not cost.state.needs_input_grad:
            return 0
        return (2 if self.kind == "relu6" else 1) * layer.output_numel  # bool comparisons before packing

    def backward_workspace(self, layer: Layer, cost: Any, run: Any) -> int:
        # unpacked bits then bools (one byte each); the bools outlive the bits, next to the input gradient
        return layer.output_numel if self._masked(layer, cost, run) else 0

    def calibration(self, layer: Layer, option: LayerOptions | None) -> str | None:
        if option is not None and option.mask:
            return f"{self.kind}.mask"
        return self.kind if self.calibrated else None


class ReLUSpec(ActivationSpec):
    kind = "relu"
    summary = "ReLU (1-bit mask: exact)"
    modules = (nn.ReLU,)
    functions = (F.relu, torch.relu, torch.relu_, F.relu_)
    methods = ("relu", "relu_")
    keeps = "output"
    mask = "exact"
    calibrated = True
    planned_class = PlannedReLU

    def mcu_saved(self, layer: Layer, state: GradState) -> list[SavedTensor]:
        return []  # fused into the conv's requantisation: its clamp mask is the conv's


class ReLU6Spec(ReLUSpec):
    kind = "relu6"
    summary = "ReLU6 (1-bit mask: exact)"
    modules = (nn.ReLU6,)  # a Hardtanh(0, 6) subclass: found first in the MRO
    functions = (F.relu6,)
    methods = ()
    keeps = "input"
    planned_class = PlannedReLU6


class HardtanhSpec(ActivationSpec):
    kind = "hardtanh"
    summary = "hard tanh (clamp)"
    modules = (nn.Hardtanh,)
    functions = (F.hardtanh,)

    def mcu_saved(self, layer: Layer, state: GradState) -> list[SavedTensor]:
        return []  # a clamp, fused into the conv's requantisation


class HardswishSpec(HardtanhSpec):
    kind = "hardswish"
    summary = "h-swish (1-bit mask: MobileTL's sign surrogate)"
    modules = (nn.Hardswish,)
    functions = (F.hardswish,)
    mask = "surrogate"
    calibrated = True
    planned_class = PlannedHardswish


def _simple(kind: str, summary: str, modules: tuple, functions: tuple, methods: tuple = (), keeps: str = "input",
            calibrated: bool = False) -> ActivationSpec:
    """An activation with PyTorch's kernels only (a small factory, as fvcore's elementwise handles)."""
    cls = type(f"{kind.title().replace('_', '')}Spec", (ActivationSpec,), dict(
        kind=kind, summary=summary, modules=modules, functions=functions, methods=methods, keeps=keeps,
        calibrated=calibrated,
    ))
    return cls()


SIMPLE = (
    _simple("hardsigmoid", "h-sigmoid", (nn.Hardsigmoid,), (F.hardsigmoid,), calibrated=True),
    _simple("sigmoid", "sigmoid", (nn.Sigmoid,), (torch.sigmoid, F.sigmoid, torch.sigmoid_), ("sigmoid", "sigmoid_"),
            keeps="output", calibrated=True),
    _simple("silu", "SiLU / swish", (nn.SiLU,), (F.silu,), calibrated=True),
    _simple("gelu", "GELU", (nn.GELU,), (F.gelu,)),
    _simple("tanh", "tanh", (nn.Tanh,), (torch.tanh, F.tanh), ("tanh",), keeps="output"),
)


class LeakyReLUSpec(ActivationSpec):
    kind = "leaky_relu"
    summary = "leaky ReLU (in place, it keeps its output)"
    modules = (nn.LeakyReLU,)
    functions = (F.leaky_relu,)
    inplace_keeps = "output"
