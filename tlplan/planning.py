"""Making plans: from a named scheme (the solver comes later), with their predicted costs."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

import torch.nn as nn

from .costs.annotate import CostTable, annotate
from .memory.timeline import simulate_peak
from .plan.plan import Optimizer, Plan
from .errors import SchemeError
from .plan.schemes import LITE_SCHEMES, parse_scheme, scheme_options
from .plan.validate import shapes_of
from .trace import LayerGraph, trace_model


def predicted_costs(costs: CostTable, optimizer: Optimizer | None = None) -> dict[str, Any]:
    """The numbers a plan file records about itself (all derived or predicted, none measured)."""
    memory = simulate_peak(costs, optimizer or Optimizer())
    t = costs.totals
    return {
        "saved_bytes": t["saved_bytes"],
        "peak_bytes": memory.peak_bytes,
        "param_bytes": memory.param_bytes,
        "trainable_params": t["trainable_params"],
        "trainable_param_bytes": t["trainable_param_bytes"],
        "grad_bytes": memory.grad_bytes,
        "optimizer_bytes": memory.optimizer_bytes,
        "macs_fwd": t["macs_fwd"],
        "macs_bwd": t["macs_bwd"],
    }


def plan_from_scheme(
    model: nn.Module | LayerGraph,
    input_shape: tuple[int, ...],
    scheme: str,
    runtime: str = "tlplan",
    precision: str = "fp32",
    *,
    model_name: str | None = None,
    optimizer: Optimizer | None = None,
    num_classes: int = 1000,
    frozen_bits: int | None = None,
) -> Plan:
    """The plan of a named scheme (``full``, ``bias``, ``mobiletl:5``, ``sparse:FILE`` ...).

    Example:
        >>> import tlplan
        >>> model = tlplan.load_model("mobilenet_v2")
        >>> plan = tlplan.plan_from_scheme(model, (8, 3, 224, 224), "mobiletl:5", model_name="mobilenet_v2")
        >>> plan.save("plan.yaml")  # doctest: +SKIP
    """
    parsed = parse_scheme(scheme)
    lite = {}
    if isinstance(model, LayerGraph):
        graph = model
        if parsed.kind in LITE_SCHEMES:
            raise SchemeError(f"scheme {parsed.text!r} adds lite residual branches to the model: give the model, not its graph")
    else:
        from .runtime.lite import for_scheme

        # lite schemes (and plans with lite branches) run on a copy with the branches
        _, graph, lite = for_scheme(model, tuple(input_shape), parsed, model_name or type(model).__name__)
    options = scheme_options(graph, parsed)
    optimizer = optimizer or Optimizer()
    costs = annotate(graph, options, runtime, precision, frozen_bits)
    precision = costs.precision  # int8 on the mcu runtime
    return Plan(
        model=model_name or graph.model_name,
        input_shape=tuple(input_shape),
        layers=MappingProxyType(dict(options)),
        runtime=runtime,
        precision=precision,
        optimizer=optimizer,
        scheme=parsed.text,
        num_classes=num_classes,
        predicted=MappingProxyType(predicted_costs(costs, optimizer)),
        shapes=MappingProxyType(shapes_of(graph, options)),
        lite=MappingProxyType(dict(lite)),
        frozen_bits=costs.frozen_bits,
    )
