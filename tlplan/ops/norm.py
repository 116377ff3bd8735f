"""Normalisation layers: batch norm (the runtime's frozen-statistics version where it can swap
it), group norm, layer norm, instance norm. Options: ``norm`` frozen / shift (β only) / affine."""

from __future__ import annotations

import math
from typing import Any, Mapping

import torch.nn as nn
import torch.nn.functional as F

from ..plan.options import LayerOptions
from ..runtime.modules import PlannedBatchNorm2d
from ..trace.graph import Layer, _numel
from .spec import GradState, OpSpec, SavedTensor, TensorShape, _not_default, bind, planned

FLOAT = 4  # the statistics are float32


class NormSpec(OpSpec):
    """A norm with optional affine parameters γ (``weight``) and β (``bias``)."""

    family = "norm"

    def trained_roles(self, layer: Layer, opts: LayerOptions) -> frozenset[str]:
        if opts.norm == "shift":
            return frozenset(r for r in _roles(layer) if r == "bias" or r.endswith(".bias"))
        if opts.norm == "affine":
            return _roles(layer)
        return frozenset()

    def option_problem(self, layer: Layer, opts: LayerOptions, runtime: str | None) -> str | None:
        problem = _not_default(self.kind, opts, ("norm",))
        if problem:
            return problem
        if opts.norm == "shift" and layer.param("bias") is None:
            return f"this {self.kind} has no shift (β) to train"
        if opts.norm == "affine" and not layer.all_params:
            return f"this {self.kind} has no affine parameters to train"
        return None

    def choices(self, layer: Layer, runtime: str) -> list[LayerOptions]:
        if not layer.all_params:
            return []
        return ([LayerOptions(norm="shift")] if layer.param("bias") is not None else []) + [LayerOptions(norm="affine")]

    def train_all(self, layer: Layer) -> LayerOptions | None:
        return LayerOptions(norm="affine") if layer.all_params else None

    def train_bias(self, layer: Layer) -> LayerOptions | None:
        return LayerOptions(norm="shift") if layer.param("bias") is not None else None

    def eager_saved(self, layer: Layer, state: GradState) -> list[SavedTensor]:
        if not state.recorded:
            return []
        stats = self.stats_bytes(layer)
        return [SavedTensor("input", value=layer.inputs[0])] + ([SavedTensor("stats", private_bytes=stats)] if stats else [])

    def stats_bytes(self, layer: Layer) -> int:
        """The statistics the backward keeps: a mean and an inverse std per normalised group."""
        return 0

    def keeps_input(self, layer: Layer, opts: LayerOptions | None) -> bool:
        return True  # whenever autograd records it


def _roles(layer: Layer) -> frozenset[str]:
    return frozenset(p.role for p in layer.all_params)


class BatchNormSpec(NormSpec):
    kind = "batch_norm"
    summary = "batch norm (1-d, 2-d, 3-d); on the tlplan runtime frozen / shift run on running statistics"
    modules = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
    functions = (F.batch_norm,)
    arguments = ("input", "running_mean", "running_var", "weight", "bias", "training")

    def call_attrs(self, args: tuple, kwargs: Mapping[str, Any]) -> dict[str, Any]:
        training = bind(self.arguments, args, kwargs).get("training", False)
        return {"training": training} if isinstance(training, bool) else {}
    planned_class = PlannedBatchNorm2d

    def swappable(self, module: nn.Module) -> bool:
        # the runtime's norm is a BatchNorm2d (its statistics per channel of NCHW inputs)
        return isinstance(module, PlannedBatchNorm2d) or (isinstance(module, nn.BatchNorm2d) and self.standard(module)
                                                          and module.track_running_stats)

    def stats_bytes(self, layer: Layer) -> int:
        if layer.attrs.get("training") is False:  # F.batch_norm(training=False): running statistics
            return 0
        return 2 * layer.output_shape[1] * FLOAT  # the batch mean and inverse std

    def keeps_input(self, layer: Layer, opts: LayerOptions | None) -> bool:
        # the runtime's frozen / shift norm keeps nothing; PyTorch's keeps its input when recorded
        return not planned(layer) or (opts is not None and opts.norm == "affine")

    def planned_saved(self, layer: Layer, state: GradState, element_bytes: int) -> list[SavedTensor]:
        # affine: PyTorch's batch-statistics op; frozen / shift: running statistics, nothing kept
        return self.eager_saved(layer, state) if state.options.norm == "affine" else []

    def mcu_saved(self, layer: Layer, state: GradState) -> list[SavedTensor]:
        return self.eager_saved(layer, state) if state.options.norm == "affine" else []

    def calibration(self, layer: Layer, option: LayerOptions | None) -> str | None:
        return "batch_norm.tl" if option is not None and option.norm != "affine" else "batch_norm"


class GroupNormSpec(NormSpec):
    kind = "group_norm"
    summary = "group norm (statistics per sample and group)"
    modules = (nn.GroupNorm,)
    functions = (F.group_norm,)
    arguments = ("input", "num_groups", "weight", "bias")

    def module_attrs(self, module: nn.Module) -> dict[str, Any]:
        return {"num_groups": module.num_groups}

    def call_attrs(self, args: tuple, kwargs: Mapping[str, Any]) -> dict[str, Any]:
        return {"num_groups": int(bind(self.arguments, args, kwargs).get("num_groups", 1))}

    def stats_bytes(self, layer: Layer) -> int:
        return 2 * layer.output_shape[0] * int(layer.attrs.get("num_groups", 1)) * FLOAT


class LayerNormSpec(NormSpec):
    kind = "layer_norm"
    summary = "layer norm over the trailing dimensions"
    modules = (nn.LayerNorm,)
    functions = (F.layer_norm,)
    arguments = ("input", "normalized_shape", "weight", "bias")

    def module_attrs(self, module: nn.Module) -> dict[str, Any]:
        return {"normalized_shape": tuple(module.normalized_shape)}

    def call_attrs(self, args: tuple, kwargs: Mapping[str, Any]) -> dict[str, Any]:
        shape = bind(self.arguments, args, kwargs).get("normalized_shape", ())
        return {"normalized_shape": tuple(shape) if isinstance(shape, (tuple, list)) else (int(shape),)}

    def stats_bytes(self, layer: Layer) -> int:
        normalised = math.prod(layer.attrs.get("normalized_shape", ()) or (1,))
        return 2 * (_numel(layer.output_shape) // normalised) * FLOAT


class InstanceNormSpec(NormSpec):
    kind = "instance_norm"
    summary = "instance norm (PyTorch runs it as a batch norm over N·C channels)"
    modules = (nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)
    functions = (F.instance_norm,)
    arguments = ("input", "running_mean", "running_var", "weight", "bias")

    def module_attrs(self, module: nn.Module) -> dict[str, Any]:
        return {"affine": bool(module.affine), "track_running_stats": bool(module.track_running_stats)}

    def call_attrs(self, args: tuple, kwargs: Mapping[str, Any]) -> dict[str, Any]:
        bound = bind(self.arguments, args, kwargs)
        return {"affine": isinstance(bound.get("weight"), TensorShape),
                "track_running_stats": isinstance(bound.get("running_mean"), TensorShape)}

    def stats_bytes(self, layer: Layer) -> int:
        # per sample and channel: the mean and inverse std, γ repeated N times, and the running
        # statistics repeated N times (batch_norm's backward keeps each of those copies)
        copies = 2 + int(bool(layer.attrs.get("affine"))) + 2 * int(bool(layer.attrs.get("track_running_stats")))
        return copies * layer.output_shape[0] * layer.output_shape[1] * FLOAT
