"""Lite residual branches as the solver's choice: which blocks get one, and what it trains.

The space is built on a copy of the model with a branch in every block (TinyTL's lite residual,
``tlplan.runtime.lite``): the branches' layers are choices like any other. A branch none of whose
layers is trained is not part of the plan at all, so every plan is costed on the graph without
the branches it leaves out (the same layers, the join with the block's output removed): what the
model built for the plan will run. Graphs per set of kept branches are made once per space.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Mapping

import torch.nn as nn

from .. import ops
from ..errors import BadInputError
from ..plan.lite import LiteConfig
from ..plan.options import LayerOptions
from ..trace.graph import LayerGraph


@dataclass(frozen=True, eq=False)
class LiteBranches:
    """The candidate branches of a space: per block, the names of its branch's layers and of the
    join that adds it to the block's output."""

    model: nn.Module  # the caller's model, without branches
    layers: Mapping[str, frozenset[str]]  # block -> its branch's layers
    joins: Mapping[str, tuple[str, str]]  # block -> (the join layer, the block output it adds the branch to)
    config: Mapping[str, LiteConfig]  # block -> the branch's shape (kernel, groups, ...)
    _graphs: dict = field(default_factory=dict, repr=False)  # kept blocks -> graph
    _traced: dict = field(default_factory=dict, repr=False)  # kept blocks -> (traced graph, their configs)

    def kept(self, options: Mapping[str, LayerOptions]) -> frozenset[str]:
        """The blocks whose branch trains something under ``options``."""
        graph = self._full
        out = set()
        for block, names in self.layers.items():
            for name in names:
                opts = options.get(name)
                if opts is not None and ops.trained_roles(graph.by_name[name], opts):
                    out.add(block)
                    break
        return frozenset(out)

    @property
    def _full(self) -> LayerGraph:
        return self._graphs[frozenset(self.layers)]

    def graph(self, options: Mapping[str, LayerOptions]) -> LayerGraph:
        """The graph of the plan ``options``: the branches it trains, none of the others."""
        keep = self.kept(options)
        found = self._graphs.get(keep)
        if found is None:
            found = self._graphs[keep] = _without(self._full, self, frozenset(self.layers) - keep)
        return found


def check_lite(runtime: str = "tlplan", *, export: str | None = None, device=None,  # noqa: ANN001 - a name or a Device
               max_step_ms: float | None = None, pareto: bool = False) -> None:
    """What lite residual branches on offer do not combine with, as one-line errors: the mcu
    runtime and the backward-config export (TinyTL trains them on the PyTorch runtimes), and
    (not yet) a device's time model and the frontier."""
    from ..errors import arg

    if runtime == "mcu" or export is not None:
        raise BadInputError(f"{arg('lite')}: lite residual branches are TinyTL's, trained on the PyTorch runtimes "
                            f"(tlplan, eager); drop {arg('lite')} for {arg('runtime')} mcu or a backward-config export")
    if device is not None or max_step_ms is not None:
        raise BadInputError(f"{arg('lite')} does not combine with {arg('device')} or {arg('max_step_ms')} yet: "
                            "solve with the branches, then predict the plan's step time with `tlplan profile MODEL "
                            "--scheme plan.yaml --device NAME`")
    if pareto:
        raise BadInputError(f"{arg('lite')} solves one budget; drop --pareto or {arg('lite')}")


def candidate_branches(model: nn.Module, input_shape: tuple[int, ...], model_name: str) -> tuple[LayerGraph, LiteBranches]:
    """The graph of ``model`` with a lite residual branch in every block (on a copy), and the branches."""
    from ..errors import arg
    from ..plan.schemes import LITE_CHILD
    from ..runtime.lite import insert_lite, lite_of, lite_problems
    from ..trace import trace_model

    if not isinstance(model, nn.Module):
        raise BadInputError(f"{arg('lite')}: lite residual branches are added to a model: give the model, not its graph")
    plain = trace_model(model, tuple(input_shape), model_name)
    if not plain.blocks:
        raise BadInputError(f"{arg('lite')}: {model_name} has no blocks to add lite residual branches to; solve without it")
    # every block that can take one is offered one; the others are left as they are
    problems = lite_problems(model, plain, plain.blocks)
    eligible = [b for b in plain.blocks if b not in problems]
    if not eligible:
        block, why = next(iter(problems.items()))
        raise BadInputError(f"{arg('lite')}: no block of {model_name} can take a lite residual branch (block {block}: {why}); "
                            "solve without it")
    with_branches = insert_lite(copy.deepcopy(model), plain, eligible)
    graph = trace_model(with_branches, tuple(input_shape), model_name)
    config = {b: c for b, c in lite_of(with_branches).items() if b in eligible}
    layers: dict[str, frozenset[str]] = {}
    joins: dict[str, tuple[str, str]] = {}
    for block in config:
        prefix = f"{block}.{LITE_CHILD}."
        mine = frozenset(layer.name for layer in graph.layers
                         if layer.name.startswith(prefix) or (layer.module or "").startswith(prefix))
        join = [layer for layer in graph.layers if layer.name not in mine and any(src in mine for src in layer.inputs)]
        if len(join) != 1 or len(join[0].inputs) != 2:
            continue  # not the shape insert_lite makes: this block is not offered a branch
        other = next(src for src in join[0].inputs if src not in mine)
        layers[block], joins[block] = mine, (join[0].name, other)
    branches = LiteBranches(model, MappingProxyType(layers), MappingProxyType(joins),
                            MappingProxyType({b: config[b] for b in layers}))
    branches._graphs[frozenset(layers)] = graph
    return graph, branches


def _without(graph: LayerGraph, branches: LiteBranches, drop: frozenset[str]) -> LayerGraph:
    """``graph`` without the branches of the blocks ``drop``: their layers removed, each join
    replaced by the block output it added to."""
    gone = set().union(*(branches.layers[b] for b in drop)) if drop else set()
    rename = {}
    for block in drop:
        join, other = branches.joins[block]
        gone.add(join)
        rename[join] = other

    def renamed(name: str | None) -> str | None:
        while name in rename:
            name = rename[name]
        return name

    kept = []
    for layer in graph.layers:
        if layer.name in gone:
            continue
        inputs = tuple(renamed(src) for src in layer.inputs)
        alias = renamed(layer.alias_of)
        kept.append(layer if inputs == layer.inputs and alias == layer.alias_of else replace(layer, inputs=inputs, alias_of=alias))
    return replace(graph, layers=tuple(kept))


def plan_graph(branches: LiteBranches, options: Mapping[str, LayerOptions], input_shape: tuple[int, ...],
               model_name: str) -> tuple[LayerGraph, dict[str, LiteConfig]]:
    """The traced graph of the model the plan ``options`` runs on (the caller's model with the
    branches it trains, on a copy) and those branches' shapes, as ``Plan.lite`` records them."""
    from ..runtime.lite import insert_lite
    from ..trace import trace_model

    kept = branches.kept(options)
    found = branches._traced.get(kept)
    if found is None:  # traced once per set of branches (the plan's figures and its report both ask)
        keep = [b for b in branches.layers if b in kept]
        config = {b: branches.config[b] for b in keep}
        model = insert_lite(copy.deepcopy(branches.model), tuple(input_shape), keep, config) if keep else branches.model
        found = branches._traced[kept] = (trace_model(model, tuple(input_shape), model_name), config)
    return found[0], dict(found[1])
