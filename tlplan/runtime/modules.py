"""Drop-in module classes that run a layer with its plan options (same parameters, same names)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..plan.options import LayerOptions
from .functional import FrozenNorm, MaskedActivation, PlannedConv2d, PlannedLinear, channel_index

#: dtype of the activations the runtime keeps (None: as computed, e.g. fp32 or a float64 test model)
DTYPES = {"fp32": None, "fp16": torch.float16}


class LeafModule:
    """Marker: trace a module of this class as one layer (as torch.nn's own modules are)."""


class PlannedModule(LeafModule):
    """The runtime's module classes (traced as one layer each, like torch.nn's own)."""

    options: LayerOptions
    store_dtype: torch.dtype | None


def _index_on(module: nn.Module, device: torch.device) -> torch.Tensor | None:
    """The module's trained channels (None: all), on ``device``: the index is a plain attribute, which
    ``module.to(...)`` leaves where it was made, so it follows the weight here (once)."""
    index = module.channel_index if module.options.weight > 0 else None
    if index is not None and index.device != device:
        index = module.channel_index = index.to(device)
    return index


class PlannedConv2dModule(nn.Conv2d, PlannedModule):
    #: the padding as symmetric numbers ("same" and "valid" resolved when the module is swapped)
    numeric_padding: tuple[int, int]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        index = _index_on(self, self.weight.device)
        return PlannedConv2d.apply(
            x, self.weight, self.bias, self.stride, self.numeric_padding, self.dilation, self.groups,
            index, self.options.grad_filter, self.store_dtype,
        )


class PlannedLinearModule(nn.Linear, PlannedModule):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        index = _index_on(self, self.weight.device)
        return PlannedLinear.apply(x, self.weight, self.bias, index, self.store_dtype)


class PlannedBatchNorm2d(nn.BatchNorm2d, PlannedModule):
    """``affine``: standard batch-statistics training; ``frozen`` / ``shift``: running statistics."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.options.norm == "affine":
            return super().forward(x)
        return FrozenNorm.apply(x, self.weight, self.bias, self.running_mean, self.running_var, self.eps)


class _MaskedActivationMixin(PlannedModule):
    kind: str
    #: keep the output a later layer keeps anyway, not a 1-bit mask (``apply_plan`` sets it where
    #: the memory model's ``LayerCost.mask_from_output`` says so for every call of the module)
    mask_from_output: bool = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inplace = bool(getattr(self, "inplace", False))
        if self.options.mask:
            return MaskedActivation.apply(x, self.kind, inplace, self.mask_from_output)
        return {"relu": F.relu, "relu6": F.relu6, "hardswish": F.hardswish}[self.kind](x, inplace=inplace)


class PlannedReLU(_MaskedActivationMixin, nn.ReLU):
    kind = "relu"


class PlannedReLU6(_MaskedActivationMixin, nn.ReLU6):
    kind = "relu6"


class PlannedHardswish(_MaskedActivationMixin, nn.Hardswish):
    kind = "hardswish"


def make_planned(module: nn.Module, cls: type[nn.Module], options: LayerOptions, precision: str,
                 numeric_padding: tuple[int, int] | None = None) -> nn.Module:
    """The module, re-classed to ``cls`` (the runtime's version of what it computes) to run with
    ``options``; its parameters and buffers are the very same objects (optimizers, state_dict)."""
    new = module.__new__(cls)
    new.__dict__ = module.__dict__.copy()
    new._parameters = module._parameters
    new._buffers = module._buffers
    new.options = options
    new.store_dtype = DTYPES[precision]
    if numeric_padding is not None:
        new.numeric_padding = numeric_padding
    if cls in (PlannedConv2dModule, PlannedLinearModule):
        new.channel_index = (
            channel_index(module.weight, options.weight, options.select, getattr(module, "groups", 1))
            if options.weight > 0 else None
        )
    return new
