"""``apply_plan``: turn a model and a plan into a model whose training keeps what the plan predicts."""

from __future__ import annotations

import torch.nn as nn

from ..costs.annotate import annotate
from ..errors import BadInputError
from ..plan.options import LayerOptions
from ..plan.plan import Plan
from ..plan.schemes import trainable_params
from ..plan.validate import validate_options, validate_shapes
from ..trace import LayerGraph, trace_model
from ..ops import REGISTRY, planned


def apply_plan(model: nn.Module, plan: Plan, *, graph: LayerGraph | None = None) -> nn.Module:
    """Set up ``model`` (in place) to train as ``plan`` says; returns it.

    ``eager`` plans only set ``requires_grad``. ``tlplan`` plans also swap every module the op
    specs can run with the runtime's own ops (conv, linear, batch-norm, ReLU / ReLU6 / h-swish
    that compute what torch.nn's do, subclasses included) for the runtime's versions (same
    parameter objects, same state_dict keys), so a training step keeps exactly the bytes the
    ``tlplan`` runtime predicts. Other layers run as they are.

    Example:
        >>> import tlplan
        >>> model = tlplan.load_model("mcunet-5fps")
        >>> plan = tlplan.plan_from_scheme(model, (1, 3, 128, 128), "bias")
        >>> model = tlplan.apply_plan(model, plan)
    """
    if plan.runtime == "mcu":
        raise BadInputError(
            "the mcu runtime is the accounting of an int8 training engine and does not run in PyTorch; "
            "make the plan with --runtime tlplan to train it here"
        )
    if plan.lite:  # the plan's lite residual branches, where the model lacks them (then traced again)
        from .lite import with_lite

        with_lite(model, plan.input_shape, plan.lite)
        if graph is not None and not _branches_traced(graph, plan):
            graph = None
    if graph is None:  # else the caller's trace of this model (or of an identical copy)
        graph = trace_model(model, plan.input_shape, plan.model)
    validate_shapes(graph, plan.shapes, f"plan for {plan.model}")
    validate_options(graph, plan.layers, f"plan for {plan.model}", plan.runtime)
    trainable = trainable_params(graph, plan.layers)
    if plan.runtime == "tlplan":
        per_module: dict[str, LayerOptions] = {}
        modules = dict(model.named_modules())
        for layer in graph.layers:
            if layer.module is None or not planned(layer):
                continue
            opts = plan.options(layer.name)
            if layer.module in per_module and per_module[layer.module] != opts:
                raise BadInputError(
                    f"plan for {plan.model}: module {layer.module!r} runs more than once with different options; "
                    "give every call the same options"
                )
            per_module[layer.module] = opts
        # ReLU / ReLU6 modules whose mask the memory model drops for the output a later layer keeps
        from_output = {layer.module for layer, cost in zip(graph.layers, annotate(graph, plan.layers, "tlplan", plan.precision).layers)
                       if cost.mask_from_output}
        for name, opts in per_module.items():
            module = modules[name]
            new = REGISTRY.for_module(module).runtime_module(module, opts, plan.precision)
            if name in from_output:
                new.mask_from_output = True
            _replace(model, name, new)
    for name, p in model.named_parameters():
        p.requires_grad_(name in trainable)
    return model


def _branches_traced(graph: LayerGraph, plan: Plan) -> bool:
    from ..plan.schemes import LITE_CHILD

    traced = {layer.module.split(f".{LITE_CHILD}.")[0] for layer in graph.layers
              if layer.module is not None and f".{LITE_CHILD}." in layer.module}
    return set(plan.lite) <= traced


def _replace(model: nn.Module, qualified: str, new: nn.Module) -> None:
    parent_name, _, child = qualified.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)
