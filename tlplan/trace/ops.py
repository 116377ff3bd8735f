"""Recognising what a traced node does: module types and functions mapped to op kinds.

Dispatch is on the module class (through its MRO) or the function object the trace recorded,
never on name substrings. Unknown modules and functions become op ``"unsupported"`` and are
reported, never silently costed at zero.
"""

from __future__ import annotations

import operator
from typing import Any, Callable

import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F

UNSUPPORTED = "unsupported"


class LeafModule:
    """Marker: trace a module of this class as one layer (as torch.nn's own modules are)."""


class LeafTracer(torch.fx.Tracer):
    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, LeafModule) or super().is_leaf_module(m, module_qualified_name)


def symbolic_trace(model: nn.Module) -> torch.fx.GraphModule:
    """``torch.fx.symbolic_trace`` that keeps tlplan's runtime modules whole."""
    graph = LeafTracer().trace(model)
    return torch.fx.GraphModule(model, graph, type(model).__name__)

MODULE_OPS: dict[type, str] = {
    nn.Conv2d: "conv2d",
    nn.Linear: "linear",
    nn.BatchNorm2d: "batch_norm",
    nn.BatchNorm1d: "batch_norm",
    nn.GroupNorm: "group_norm",
    nn.LayerNorm: "layer_norm",
    nn.ReLU: "relu",
    nn.ReLU6: "relu6",  # a Hardtanh(0, 6) subclass: found first in the MRO
    nn.Hardtanh: "hardtanh",
    nn.Hardswish: "hardswish",
    nn.Hardsigmoid: "hardsigmoid",
    nn.Sigmoid: "sigmoid",
    nn.SiLU: "silu",
    nn.GELU: "gelu",
    nn.MaxPool2d: "max_pool2d",
    nn.AvgPool2d: "avg_pool2d",
    nn.AdaptiveAvgPool2d: "adaptive_avg_pool2d",
    nn.Flatten: "flatten",
    nn.Dropout: "dropout",
    nn.Identity: "identity",
    nn.Upsample: "interpolate",
}

FUNCTION_OPS: dict[Callable[..., Any], str] = {
    F.conv2d: "conv2d",
    F.linear: "linear",
    F.relu: "relu",
    torch.relu: "relu",
    F.relu6: "relu6",
    F.hardtanh: "hardtanh",
    F.hardswish: "hardswish",
    F.hardsigmoid: "hardsigmoid",
    torch.sigmoid: "sigmoid",
    F.sigmoid: "sigmoid",
    F.silu: "silu",
    F.gelu: "gelu",
    F.max_pool2d: "max_pool2d",
    F.avg_pool2d: "avg_pool2d",
    F.adaptive_avg_pool2d: "adaptive_avg_pool2d",
    F.dropout: "dropout",
    F.interpolate: "interpolate",
    torch.flatten: "flatten",
    torch.reshape: "view",
    operator.add: "add",
    torch.add: "add",
    operator.iadd: "add",
    operator.sub: "sub",
    torch.sub: "sub",
    operator.mul: "mul",
    torch.mul: "mul",
    operator.imul: "mul",
    torch.cat: "cat",
    torch.mean: "mean",
}

METHOD_OPS: dict[str, str] = {
    "relu": "relu",
    "relu_": "relu",
    "sigmoid": "sigmoid",
    "add": "add",
    "add_": "add",
    "mul": "mul",
    "mul_": "mul",
    "sub": "sub",
    "mean": "mean",
    "flatten": "flatten",
    "view": "view",
    "reshape": "view",
    "squeeze": "view",
    "unsqueeze": "view",
    "contiguous": "view",
    "permute": "view",
    "transpose": "view",
}

#: ops whose output is a view of their first input: same storage, no new bytes.
VIEW_OPS = frozenset({"flatten", "view", "identity"})


def module_op(module: nn.Module) -> str:
    for cls in type(module).__mro__:
        op = MODULE_OPS.get(cls)
        if op is not None:
            return op
    return UNSUPPORTED


def function_op(fn: Callable[..., Any]) -> str:
    return FUNCTION_OPS.get(fn, UNSUPPORTED)


def method_op(name: str) -> str:
    return METHOD_OPS.get(name, UNSUPPORTED)


def module_attrs(module: nn.Module, op: str) -> dict[str, Any]:
    """The hyper-parameters cost rules need, read from the module (shapes come from the trace)."""
    attrs: dict[str, Any] = {}
    if op == "conv2d":
        attrs.update(
            in_channels=module.in_channels,
            out_channels=module.out_channels,
            kernel_size=tuple(module.kernel_size),
            stride=tuple(module.stride),
            padding=module.padding if isinstance(module.padding, str) else tuple(module.padding),
            dilation=tuple(module.dilation),
            groups=module.groups,
        )
    elif op == "linear":
        attrs.update(in_features=module.in_features, out_features=module.out_features)
    elif op == "dropout":
        attrs.update(p=float(module.p))
    elif op in ("max_pool2d", "avg_pool2d"):
        attrs.update(kernel_size=module.kernel_size, stride=module.stride)
    if getattr(module, "inplace", False):
        attrs["inplace"] = True
    return attrs
