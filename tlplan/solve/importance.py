"""Importance: the value the solver maximises, per layer and update option.

The default prior follows the published findings: later layers matter more (weight ∝ position²,
position = the layer's place among trainable layers, 1 at the classifier); biases are cheap and
useful (0.3 of the layer's weight value); the first 1×1 conv of an inverted-residual block matters
most (×1.5, the 256KB paper's searches pick it); gains shrink as the channel ratio grows (√ratio);
filtered gradients are worth a little less than exact ones (×0.9, ×0.8, ×0.7 for r = 2, 4, 7);
norm layers: shift 0.2, scale+shift 0.4. A user's table (``--importance FILE``: CSV with columns
``layer,option,importance``) replaces the prior for the rows it gives.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Mapping

from ..errors import BadInputError
from ..fileio import read_text
from ..ops import is_conv
from ..ops.conv import is_depthwise
from ..plan.options import LayerOptions
from ..trace.graph import Layer, LayerGraph

FILTER_DISCOUNT = {0: 1.0, 2: 0.9, 4: 0.8, 7: 0.7}


def option_key(opts: LayerOptions) -> str:
    """A stable short name of an option, as used in importance tables: ``w0.25+b``, ``f2+b``, ``shift``."""
    parts = []
    if opts.weight:
        parts.append(f"f{opts.grad_filter}" if opts.grad_filter else f"w{opts.weight:g}")
    if opts.bias:
        parts.append("b")
    if opts.norm != "frozen":
        parts.append(opts.norm)
    return "+".join(parts) or "frozen"


def _first_pointwise_of_block(graph: LayerGraph, layer: Layer) -> bool:
    if not is_conv(layer) or layer.block is None or layer.attrs.get("kernel_size") != (1, 1):
        return False
    convs = [l for l in graph.layers_in_block(layer.block) if is_conv(l)]
    depthwise = any(is_depthwise(l) for l in convs)
    return depthwise and convs[0].name == layer.name and len(convs) >= 3


def prior(graph: LayerGraph, layer: Layer, position: float, opts: LayerOptions) -> float:
    """The default importance of training ``layer`` with ``opts`` (0 for frozen)."""
    w = position**2
    value = 0.0
    if opts.weight:
        boost = 1.5 if _first_pointwise_of_block(graph, layer) else 1.0
        value += w * boost * math.sqrt(opts.weight) * FILTER_DISCOUNT[opts.grad_filter]
    if opts.bias:
        value += 0.3 * w
    if opts.norm == "shift":
        value += 0.2 * w
    elif opts.norm == "affine":
        value += 0.4 * w
    return value


def load_importance(path: str | Path) -> dict[tuple[str, str], float]:
    """A user's contribution table: CSV ``layer,option,importance`` (option as ``option_key`` names it)."""
    path = Path(path)
    text = read_text(path, "importance table")  # a BOM (spreadsheets write one) is dropped
    rows = list(csv.DictReader(text.splitlines()))
    if not rows or set(rows[0]) != {"layer", "option", "importance"}:
        raise BadInputError(f"importance table {path}: expected a CSV with the columns layer,option,importance")
    table = {}
    for i, row in enumerate(rows, start=2):
        try:
            value = float(row["importance"])
        except (TypeError, ValueError):
            raise BadInputError(f"importance table {path}, line {i}: importance {row['importance']!r} is not a number") from None
        if not math.isfinite(value):
            raise BadInputError(f"importance table {path}, line {i}: importance must be finite")
        table[(row["layer"], row["option"])] = value
    return table


def importance_of(
    graph: LayerGraph, layer: Layer, position: float, opts: LayerOptions, table: Mapping[tuple[str, str], float] | None
) -> float:
    if table is not None:
        key = (layer.name, option_key(opts))
        if key in table:
            return table[key]
    return prior(graph, layer, position, opts)
