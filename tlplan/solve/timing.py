"""Step time in the solver (``--max-step-ms``): what each option adds to a step on a device.

The same additive form as memory: for each backward depth, a fixed time (the predicted step of
the cheapest plan that reaches that depth, less that option's own share) plus, per layer above
the depth, what its option adds over being frozen on the backward path (the layer then runs a
forward and a backward call for its input's gradient; training its weight or bias changes that
call). A plan the solver picks is then predicted whole (``predict_latency``); if it exceeds the
limit, the depth's time capacity shrinks by the excess and it is solved again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from ..costs.annotate import annotate
from ..plan.options import LayerOptions
from ..predict.devices import Device
from ..ops import GradState, trained_roles
from ..predict.predictor import Item, PredictedOn, Pricer, layer_items, passes_of, predict_latency
from ..trace.graph import Layer
from .space import SearchSpace


def _passes(layer: Layer, opts: LayerOptions) -> list[str]:
    """The calls a layer on the backward path (its input's gradient needed) runs under ``opts``."""
    roles = trained_roles(layer, opts)
    return passes_of(GradState((True,), roles, opts))


def _items(layer: Layer, opts: LayerOptions, runtime: str) -> list[Item]:
    return layer_items(layer, opts, runtime, _passes(layer, opts), opts.weight or 1.0) or []


@dataclass(frozen=True, eq=False)
class TimeModel:
    pricer: Pricer
    deltas: tuple[np.ndarray, ...]  # per choice: ms each candidate adds over being frozen on the path
    fixed_ms: Mapping[int, float]  # per depth: predicted ms of what no choice above it changes
    minimum_ms: float  # the cheapest plan (classifier only)

    @property
    def device(self) -> str:
        return self.pricer.device.name

    @property
    def source(self) -> str:
        return self.pricer.source

    @property
    def on(self) -> PredictedOn:
        return self.pricer.on

    def step_ms(self, space: SearchSpace, options: Mapping[str, LayerOptions]) -> float:
        costs = annotate(space.graph, options, space.runtime, space.precision)
        return predict_latency(space.graph, costs, self.pricer).step_ms


def time_model(space: SearchSpace, device: Device | str | Pricer, *, per_depth: bool = True) -> TimeModel:
    """Per-candidate time deltas and per-depth fixed times of ``space`` on ``device``.

    ``per_depth=False`` skips the fixed times (a step prediction per depth): enough to predict
    plans, not to limit them."""
    pricer = Pricer.of(device)
    frozen = LayerOptions()
    items: list[Item] = []
    spans: list[list[tuple[int, int]]] = []  # per choice, per candidate: its items' range
    for choice in space.choices:
        layer = space.graph.by_name[choice.layer]
        ranges = []
        for cand in [frozen, *(c.options for c in choice.candidates)]:
            start = len(items)
            items.extend(_items(layer, cand, space.runtime))
            ranges.append((start, len(items)))
        spans.append(ranges)
    ms = np.nan_to_num(pricer.price(items)) if items else np.zeros(0)
    deltas = []
    for ranges in spans:
        totals = np.array([ms[a:b].sum() for a, b in ranges])
        deltas.append(totals[1:] - totals[0])
    model = TimeModel(pricer, tuple(deltas), {}, 0.0)
    fixed: dict[int, float] = {}
    for depth in space.depths if per_depth else ():
        choice, k = space.choices[depth], space.cheapest(depth)
        options = dict(space.base_options)
        options[choice.layer] = choice.candidates[k].options
        fixed[depth] = model.step_ms(space, options) - float(deltas[depth][k])
    minimum = model.step_ms(space, dict(space.base_options))
    return TimeModel(pricer, tuple(deltas), fixed, minimum)
