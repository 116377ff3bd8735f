"""The op registry: op kind → spec, and lookup by what a module or a call computes."""

from __future__ import annotations

from typing import Any, Callable, Iterator

import torch.nn as nn

from .spec import OpSpec

#: the op kind of a layer no spec recognises: reported by name, costed as zero with a warning
UNSUPPORTED = "unsupported"


class OpRegistry:
    """Specs by op kind; a duplicate kind, module class, function or method is refused.

    Users register a spec for their own op with ``tlplan.ops.register(MySpec())``, as fvcore lets
    a caller ``set_op_handle``.
    """

    def __init__(self) -> None:
        self._specs: dict[str, OpSpec] = {}
        self._modules: dict[type, OpSpec] = {}
        self._functions: dict[Callable[..., Any], OpSpec] = {}
        self._methods: dict[str, OpSpec] = {}
        #: bumped at every register / unregister: what a trace recognised may have changed
        #: (the trace cache keys on it)
        self.generation = 0

    def register(self, spec: OpSpec) -> OpSpec:
        if not spec.kind or spec.kind == UNSUPPORTED:
            raise ValueError(f"an op spec needs a kind other than {UNSUPPORTED!r}")
        if spec.kind in self._specs:
            raise ValueError(f"an op spec for {spec.kind!r} is already registered")
        for table, keys, what in ((self._modules, spec.modules, "module class"),
                                  (self._functions, spec.functions, "function"),
                                  (self._methods, spec.methods, "method")):
            for key in keys:
                if key in table:
                    name = getattr(key, "__name__", key)
                    raise ValueError(f"{what} {name} is already recognised as {table[key].kind!r}")
        self._specs[spec.kind] = spec
        self._modules.update(dict.fromkeys(spec.modules, spec))
        self._functions.update(dict.fromkeys(spec.functions, spec))
        self._methods.update(dict.fromkeys(spec.methods, spec))
        self.generation += 1
        return spec

    def unregister(self, kind: str) -> None:
        """Remove a spec (tests and user extensions that replace one of their own)."""
        spec = self._specs.pop(kind)
        for table in (self._modules, self._functions, self._methods):
            for key in [k for k, v in table.items() if v is spec]:
                del table[key]
        self.generation += 1

    def __getitem__(self, kind: str) -> OpSpec:
        return self._specs[kind]

    def get(self, kind: str) -> OpSpec | None:
        return self._specs.get(kind)

    def __contains__(self, kind: object) -> bool:
        return kind in self._specs

    def __iter__(self) -> Iterator[OpSpec]:
        return iter(self._specs.values())

    @property
    def kinds(self) -> frozenset[str]:
        return frozenset(self._specs)

    def for_module(self, module: nn.Module) -> OpSpec | None:
        """The spec of a module: its class or the nearest registered base class (MRO order)."""
        for cls in type(module).__mro__:
            spec = self._modules.get(cls)
            if spec is not None:
                return spec
        return None

    def for_function(self, fn: Callable[..., Any]) -> OpSpec | None:
        return self._functions.get(fn)

    def for_method(self, name: str) -> OpSpec | None:
        return self._methods.get(name)

    def kinds_where(self, test: Callable[[OpSpec], bool]) -> frozenset[str]:
        return frozenset(kind for kind, spec in self._specs.items() if test(spec))


REGISTRY = OpRegistry()


def register(spec: OpSpec) -> OpSpec:
    """Register a spec for an op kind tlplan does not know (see docs/development.md)."""
    return REGISTRY.register(spec)
