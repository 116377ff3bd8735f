"""The layer graph: what every later stage reads. Frozen records, built once by a tracer."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType
from typing import Any, Mapping

import networkx as nx

#: Name of the pseudo-layer that stands for the model's input tensor.
INPUT = "input"


@dataclass(frozen=True)
class ParamInfo:
    """One parameter tensor a layer owns (counted once, at its first use)."""

    name: str  # qualified name, as in ``model.named_parameters()``
    role: str  # "weight", "bias", or the attribute name
    shape: tuple[int, ...]
    numel: int
    dtype_bytes: int = 4


@dataclass(frozen=True)
class Layer:
    """One node of the layer graph: a module call or a functional op, with shapes."""

    name: str
    op: str  # op kind, the key of every rule table ("conv2d", "batch_norm", "add", ...)
    target: str  # module type or function name, for display
    module: str | None  # qualified module name of a module call
    block: str | None  # the block (see ``LayerGraph.blocks``) the layer belongs to
    inputs: tuple[str, ...]  # producing layers (or INPUT), in argument order
    input_shapes: tuple[tuple[int, ...], ...]
    output_shape: tuple[int, ...]
    output_dtype_bytes: int = 4
    params: tuple[ParamInfo, ...] = ()
    attrs: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    #: the output shares storage with this input (an in-place op or a view)
    alias_of: str | None = None
    #: the torch.fx node this layer came from (a fresh symbolic trace names nodes the same way)
    fx_node: str | None = None
    buffer_bytes: int = 0  # running statistics and other buffers the layer's module holds
    #: parameters this call reads that an earlier call of the same module owns (a shared module)
    shared_params: tuple[ParamInfo, ...] = ()

    @property
    def output_numel(self) -> int:
        return _numel(self.output_shape)

    @property
    def param_count(self) -> int:
        return sum(p.numel for p in self.params)

    @property
    def all_params(self) -> tuple[ParamInfo, ...]:
        """Every parameter the call reads, owned here or by an earlier call of its module."""
        return self.params + self.shared_params

    def param(self, role: str) -> ParamInfo | None:
        for p in self.all_params:
            if p.role == role:
                return p
        return None


@dataclass(frozen=True)
class LayerGraph:
    """Layers in execution order plus the dataflow DiGraph between them."""

    model_name: str
    input_shape: tuple[int, ...]
    layers: tuple[Layer, ...]
    blocks: tuple[str, ...]  # block names in forward order
    classifier: str | None  # module name of the final classifier, trained by every scheme
    traced_by: str  # "fx" or "hooks"
    warnings: tuple[str, ...] = ()
    input_dtype_bytes: int = 4

    @cached_property
    def by_name(self) -> Mapping[str, Layer]:
        return MappingProxyType({layer.name: layer for layer in self.layers})

    @cached_property
    def memo(self) -> dict:
        """Facts later stages derive from the graph alone, computed once per graph (the solver
        costs hundreds of plans of one graph). Each stage keeps its own keys; a key that depends on
        the op registry carries its generation."""
        return {}

    @cached_property
    def digraph(self) -> nx.DiGraph:
        """Dataflow graph: an edge producer → consumer for each tensor argument."""
        g = nx.DiGraph()
        g.add_node(INPUT)
        for layer in self.layers:
            g.add_node(layer.name, op=layer.op, block=layer.block)
            for src in layer.inputs:
                g.add_edge(src, layer.name)
        return g

    def consumers(self, name: str) -> list[str]:
        return list(self.digraph.successors(name))

    def storage_root(self, name: str) -> str:
        """The value whose storage ``name``'s output lives in (follows in-place ops and views)."""
        # kept in ``memo``: the memory model asks it of every layer of every plan it costs
        roots = self.memo.setdefault("storage roots", {})
        root = roots.get(name)
        if root is None:
            root = name
            while root != INPUT:
                alias = self.by_name[root].alias_of
                if alias is None:
                    break
                root = alias
            roots[name] = root
        return root

    def value_numel(self, name: str) -> int:
        return _numel(self.input_shape) if name == INPUT else self.by_name[name].output_numel

    def value_bytes(self, name: str, element_bytes: int | None = None) -> int:
        """Bytes of a layer's output (or the input), at its dtype or at ``element_bytes`` each."""
        known = self.memo.setdefault("value bytes", {})  # as storage_root, asked of every plan
        found = known.get((name, element_bytes))
        if found is None:
            each = element_bytes
            if each is None:
                each = self.input_dtype_bytes if name == INPUT else self.by_name[name].output_dtype_bytes
            found = known[name, element_bytes] = self.value_numel(name) * each
        return found

    def layers_in_block(self, block: str) -> list[Layer]:
        return [layer for layer in self.layers if layer.block == block]

    @property
    def param_count(self) -> int:
        return sum(layer.param_count for layer in self.layers)


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n
