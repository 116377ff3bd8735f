"""Recognising what a traced node does, through the op registry (``tlplan.ops``).

Dispatch is on the module class (through its MRO) or the function object the trace recorded,
never on name substrings. Unknown modules and functions become op ``"unsupported"`` and are
reported, never silently costed at zero.
"""

from __future__ import annotations

from types import BuiltinFunctionType, FunctionType
from typing import Any, Callable

import torch
import torch.fx
import torch.nn as nn

from ..ops import REGISTRY, UNSUPPORTED
from ..ops.probe import probe_module
from ..runtime.modules import LeafModule

__all__ = ["UNSUPPORTED", "LeafTracer", "is_layer_module", "symbolic_trace", "recognise_module", "recognise_call", "view_ops"]


def is_layer_module(m: nn.Module) -> bool:
    """A module traced as one layer: tlplan's runtime modules, and every module an op spec
    recognises (subclasses of torch.nn's included: tracing into a weight-standardised conv would
    scatter it into ops on its weight) unless it holds modules of its own, which are traced into
    (a parametrized weight excepted: its parametrization is part of the conv)."""
    if isinstance(m, LeafModule):
        return True
    if REGISTRY.for_module(m) is None:
        return False
    from torch.nn.utils import parametrize

    return next(m.children(), None) is None or parametrize.is_parametrized(m)


class _Proxy(torch.fx.Proxy):
    """fx's Proxy, without the cost of asking whether a plain function is a Tensor method.

    fx answers that with ``torch.overrides.is_tensor_method_or_property``, which the first time
    builds torch's table of every overridable function: 20-25 ms, about a fifth of a first
    profile, spent on the first ``torch.flatten`` or ``F.adaptive_avg_pool2d`` of a trace. A
    Python function defined at module level (``F.relu``) or a builtin of torch's function
    namespaces (``torch.flatten``) is never a Tensor method, so it is recorded as fx records it,
    a ``call_function``; anything else (Tensor methods and properties, script methods,
    higher-order operators) takes fx's own path.
    """

    @classmethod
    def __torch_function__(cls, orig_method, types, args=None, kwargs=None):  # noqa: ANN001, ANN206 - fx's signature
        if not _plain_function(orig_method):
            return super().__torch_function__(orig_method, types, args, kwargs)
        args, kwargs = args or (), kwargs or {}
        tracers = {a.tracer for a in (*args, *kwargs.values()) if isinstance(a, torch.fx.Proxy)}
        if len(tracers) != 1:  # proxies inside containers, or several tracers: fx's own checks
            return super().__torch_function__(orig_method, types, args, kwargs)
        return next(iter(tracers)).create_proxy("call_function", orig_method, args, kwargs)


def _plain_function(fn: Any) -> bool:
    if isinstance(fn, FunctionType):
        return "." not in fn.__qualname__
    if isinstance(fn, BuiltinFunctionType):  # torch.flatten: bound to torch's function namespace, not to a tensor
        owner = fn.__self__
        return not isinstance(owner, torch.Tensor) and not (isinstance(owner, type) and issubclass(owner, torch._C.TensorBase))
    return False


class LeafTracer(torch.fx.Tracer):
    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return is_layer_module(m) or super().is_leaf_module(m, module_qualified_name)

    def proxy(self, node: torch.fx.Node) -> torch.fx.Proxy:
        return _Proxy(node, self)


def symbolic_trace(model: nn.Module) -> torch.fx.GraphModule:
    """``torch.fx.symbolic_trace`` that keeps recognised modules (and tlplan's runtime modules) whole."""
    graph = LeafTracer().trace(model)
    return torch.fx.GraphModule(model, graph, type(model).__name__)


def recognise_module(module: nn.Module, input_shape: tuple[int, ...] | None, dtype: torch.dtype) -> tuple[str, dict[str, Any]]:
    """The op kind and attributes of a module call; ``input_shape``: its (first) input's shape."""
    spec = REGISTRY.for_module(module)
    if spec is None:
        attrs: dict[str, Any] = {"has_params": True} if any(True for _ in module.parameters()) else {}
        return UNSUPPORTED, attrs
    attrs = spec.module_attrs(module)
    if getattr(module, "inplace", False):
        attrs["inplace"] = True
    if spec.swappable(module):
        attrs["planned"] = True
    elif not spec.standard(module) and not isinstance(module, LeafModule):
        attrs["not_planned"] = f"{type(module).__name__} runs a forward of its own"
        if input_shape is not None:
            attrs["probe"] = probe_module(module, input_shape, dtype)
    elif spec.planned_class is not None:
        attrs["not_planned"] = f"the runtime has no version of {type(module).__name__}"
    return spec.kind, attrs


def recognise_call(target: Callable[..., Any] | str, args: tuple, kwargs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The op kind and attributes of a function (or, by name, Tensor method) call; tensor
    arguments come as ``TensorShape``."""
    spec = REGISTRY.for_method(target) if isinstance(target, str) else REGISTRY.for_function(target)
    if spec is None:
        return UNSUPPORTED, {}
    attrs = spec.call_attrs(args, kwargs)
    name = target if isinstance(target, str) else getattr(target, "__name__", "")
    if kwargs.get("inplace") or name.endswith("_"):  # relu_, Tensor.add_, torch.sigmoid_
        attrs["inplace"] = True
    if spec.planned_class is not None:
        attrs["not_planned"] = "a functional call, which the runtime cannot swap"
    return spec.kind, attrs


def view_ops() -> frozenset[str]:
    """Ops whose output is a view of their first input: same storage, no new bytes."""
    return REGISTRY.kinds_where(lambda spec: spec.view)
