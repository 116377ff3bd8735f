"""Checking a plan against the model it names: every layer exists and takes the options given."""

from __future__ import annotations

import difflib
from typing import Mapping

from ..errors import BadInputError
from ..trace.graph import LayerGraph
from ..ops import option_problem
from .options import LayerOptions


def shapes_of(graph: LayerGraph, names) -> dict[str, tuple[int, ...]]:
    return {name: graph.by_name[name].output_shape for name in names if name in graph.by_name}


def validate_shapes(graph: LayerGraph, shapes: Mapping[str, tuple[int, ...]], where: str = "plan") -> None:
    """One-line BadInputError naming the first layer whose shape differs from the plan's."""
    for name, shape in shapes.items():
        layer = graph.by_name.get(name)
        if layer is None:
            raise BadInputError(f"{where}: layer {name!r} is not in {graph.model_name}; the plan was made for another model")
        if tuple(layer.output_shape) != tuple(shape):
            raise BadInputError(
                f"{where}: layer {name!r} outputs {list(layer.output_shape)} here but {list(shape)} in the plan; "
                "the plan was made for another model or input"
            )


def validate_options(graph: LayerGraph, options: Mapping[str, LayerOptions], where: str = "plan",
                     runtime: str | None = None) -> None:
    """One-line BadInputError naming the first layer whose options do not fit the model (and, with
    ``runtime``, what that runtime can run); the layer's op spec says what it takes."""
    by_name = graph.by_name
    for name, opts in options.items():
        layer = by_name.get(name)
        if layer is None:
            close = difflib.get_close_matches(name, list(by_name), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise BadInputError(f"{where}: layer {name!r} is not in {graph.model_name}{hint}")
        at = f"{where}: layers.{name}"
        opts.validate(at)
        problem = option_problem(layer, opts, runtime)
        if problem:
            raise BadInputError(f"{at}: {problem}")
