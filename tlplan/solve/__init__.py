"""Choosing what to train under a memory budget: search space, importance, exact solver, baseline."""

from __future__ import annotations

import sys
import types
from types import MappingProxyType
from typing import Any, Mapping

import torch.nn as nn

from ..errors import BadInputError, arg
from ..plan.plan import Optimizer, Plan
from ..plan.validate import shapes_of
from ..trace import LayerGraph, trace_model
from .importance import load_importance
from .solver import SolveResult, Solution, solve_space
from .space import SearchSpace, build_space

__all__ = ["SearchSpace", "SolveResult", "Solution", "build_space", "solve", "solve_space", "plan_of"]


def plan_of(result: SolveResult, space: SearchSpace, model_name: str, num_classes: int = 1000, device: str | None = None) -> Plan:
    """The solved plan as a Plan file, with its predicted costs and the budget."""
    from ..costs.annotate import annotate
    from ..planning import predicted_costs

    best = result.best
    graph, options, lite = space.graph, dict(best.options), {}
    if space.lite is not None:
        # the model the plan runs on: the caller's with the branches the plan trains, traced afresh
        from .lite import plan_graph

        graph, lite = plan_graph(space.lite, options, space.graph.input_shape, model_name)
        options = {name: opts for name, opts in options.items() if name in graph.by_name}
    costs = annotate(graph, options, space.runtime, space.precision)
    predicted = predicted_costs(costs, space.optimizer)
    predicted["importance"] = round(best.importance, 6)
    predicted["solver_model_bytes"] = best.model_bytes
    if best.step_ms is not None and result.time is not None:
        predicted["step_ms"] = round(best.step_ms, 3)
        predicted["step_ms_source"] = str(result.time.on)
        if result.max_step_ms is not None:
            predicted["max_step_ms"] = result.max_step_ms
    return Plan(
        model=model_name, input_shape=graph.input_shape, layers=MappingProxyType(options),
        runtime=space.runtime, precision=space.precision, optimizer=space.optimizer, scheme="solved",
        num_classes=num_classes, budget_bytes=result.budget_bytes, device=device,
        predicted=MappingProxyType(predicted),
        shapes=MappingProxyType(shapes_of(graph, options)), lite=MappingProxyType(lite),
    )


def solve(
    model: nn.Module | LayerGraph,
    input_shape: tuple[int, ...],
    ram_bytes: int,
    device: str | None = None,
    runtime: str = "tlplan",
    *,
    precision: str = "fp32",
    optimizer: Optimizer = Optimizer(),
    importance: str | Mapping[tuple[str, str], float] | None = None,
    model_name: str | None = None,
    num_classes: int = 1000,
    max_step_ms: float | None = None,
    lite: bool = False,
) -> Plan:
    """The plan of most importance whose predicted peak fits ``ram_bytes``.

    With ``device``, the plan's step time is predicted on it (``plan.predicted["step_ms"]``); with
    ``max_step_ms`` too, only plans predicted to take at most that long are considered. With
    ``lite``, the solver may also add TinyTL's lite residual branch to any block and train it
    (``plan.lite`` then names the blocks; ``tlplan train`` and ``apply_plan`` insert them).
    Raises ``CheckFailed`` (exit 1) when even the cheapest plan (classifier only) does not fit.

    Example:
        >>> import tlplan
        >>> plan = tlplan.solve(tlplan.load_model("mcunet-5fps", num_classes=10), (1, 3, 128, 128),
        ...                     256 * 1024, runtime="mcu", model_name="mcunet-5fps", num_classes=10)
        >>> plan.predicted["peak_bytes"] <= 256 * 1024
        True
    """
    name = model_name or (model.model_name if isinstance(model, LayerGraph) else type(model).__name__)
    branches = None
    if lite:
        from .lite import candidate_branches, check_lite

        check_lite(runtime, device=device, max_step_ms=max_step_ms)
        graph, branches = candidate_branches(model, tuple(input_shape), name)
    else:
        graph = model if isinstance(model, LayerGraph) else trace_model(model, tuple(input_shape), name)
    table = load_importance(importance) if isinstance(importance, str) else importance
    space = build_space(graph, runtime, precision, optimizer, table, lite=branches)
    time = device_time(space, device, max_step_ms)
    result = solve_space(space, ram_bytes, time=time, max_step_ms=max_step_ms)
    return plan_of(result, space, model_name or graph.model_name, num_classes, time.device if time else device)


def device_time(space: SearchSpace, device, max_step_ms: float | None = None):
    """The time model of ``space`` on ``device`` (a name or a ``Device``), or None where there is
    no device or it has no latency model (then a plan just records the device's name). With
    ``max_step_ms``, the per-depth times a limit needs; a limit without a latency model is an error."""
    time = None
    if device is not None:
        from ..predict.devices import resolve_device
        from .timing import time_model

        found = resolve_device(device)
        if found.predicts:
            time = time_model(space, found, per_depth=max_step_ms is not None)
    if max_step_ms is not None and time is None:
        raise BadInputError(f"{arg('max_step_ms')} needs {arg('device')} naming a profile with a latency model (see `tlplan devices`)")
    return time


class _CallableSolvePackage(types.ModuleType):
    """``tlplan.solve`` is this subpackage (``tlplan.solve.space`` and the rest import as usual)
    and, called, the ``solve`` function: the contract's ``tlplan.solve(model, input_shape, ram_bytes)``."""

    def __call__(self, *args: Any, **kwargs: Any) -> Plan:
        return solve(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableSolvePackage
