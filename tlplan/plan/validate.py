"""Checking a plan against the model it names: every layer exists and takes the options given."""

from __future__ import annotations

import difflib
from typing import Mapping

from ..errors import BadInputError
from ..trace.graph import LayerGraph
from .options import MASK_OPS, NORM_OPS, WEIGHT_OPS, LayerOptions


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


def validate_options(graph: LayerGraph, options: Mapping[str, LayerOptions], where: str = "plan") -> None:
    """One-line BadInputError naming the first layer whose options do not fit the model."""
    by_name = graph.by_name
    for name, opts in options.items():
        layer = by_name.get(name)
        if layer is None:
            close = difflib.get_close_matches(name, list(by_name), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise BadInputError(f"{where}: layer {name!r} is not in {graph.model_name}{hint}")
        at = f"{where}: layers.{name}"
        opts.validate(at)
        if (opts.weight or opts.bias or opts.grad_filter) and layer.op not in WEIGHT_OPS:
            raise BadInputError(f"{at}: a {layer.op} layer has no weight or bias to train")
        if opts.bias and layer.param("bias") is None:
            raise BadInputError(f"{at}: this {layer.op} has no bias")
        if opts.norm != "frozen" and layer.op not in NORM_OPS:
            raise BadInputError(f"{at}: norm options apply to norm layers, not {layer.op}")
        if opts.mask and layer.op not in MASK_OPS:
            raise BadInputError(f"{at}: 1-bit masks apply to relu, relu6 and hardswish, not {layer.op}")
        if layer.op == "conv2d":
            groups, c_in = layer.attrs.get("groups", 1), layer.input_shapes[0][1]
            if groups not in (1, c_in) and (opts.grad_filter or 0 < opts.weight < 1):
                raise BadInputError(f"{at}: partial weights and gradient filtering need a dense or depthwise conv")
        if opts.grad_filter and layer.op != "conv2d":
            raise BadInputError(f"{at}: gradient filtering applies to convolutions")
