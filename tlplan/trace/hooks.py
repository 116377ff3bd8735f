"""Fallback tracer for models torch.fx cannot trace: forward hooks on leaf modules.

What it loses, and says so in the graph's warnings: functional ops between modules (residual adds,
concatenations, activations called as functions) are invisible, so their costs are missing and a
module fed by one of them is linked to the model input instead of its true producer.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

import torch
import torch.nn as nn

from ..errors import TraceError
from . import ops
from .graph import INPUT, Layer, LayerGraph, ParamInfo
from .tracer import _block_for, _blocks_of, with_classifier


def trace_with_hooks(model: nn.Module, input_shape: tuple[int, ...], model_name: str, reason: str) -> LayerGraph:
    blocks, classifier = _blocks_of(model)
    records: list[tuple[str, nn.Module, list[torch.Tensor], torch.Tensor]] = []
    handles = []

    def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        if isinstance(output, torch.Tensor):
            tensors = [a for a in args if isinstance(a, torch.Tensor)]
            records.append((names[module], module, tensors, output))

    names = {m: n for n, m in model.named_modules()}
    layer_modules = [n for n, m in model.named_modules() if ops.is_layer_module(m)]
    for name, module in model.named_modules():
        inside = any(name.startswith(outer + ".") for outer in layer_modules)
        # the layers the fx tracer would see whole, and the leaves outside them
        if not inside and (ops.is_layer_module(module) or next(module.children(), None) is None):
            handles.append(module.register_forward_hook(hook))
    flags = {m: m.training for m in model.modules()}
    x = torch.zeros(input_shape)
    try:
        model.eval()  # no BN statistics updates, no dropout randomness: only shapes are wanted
        with torch.no_grad():
            model(x)
    except Exception as exc:
        raise TraceError(f"the model does not run on input {input_shape}: {str(exc).splitlines()[0]}") from None
    finally:
        for h in handles:
            h.remove()
        for m, flag in flags.items():
            # each module's own flag: m.train(flag) would also reset every child, n² over the tree
            m.training = flag

    producers: dict[int, str] = {x.data_ptr(): INPUT}
    seen_params: set[str] = set()
    call_count: dict[str, int] = {}
    layers: list[Layer] = []
    view_ops = ops.view_ops()
    for module_name, module, tensors, output in records:
        op, attrs = ops.recognise_module(module, tuple(tensors[0].shape) if tensors else None,
                                         tensors[0].dtype if tensors else torch.float32)
        params, shared = [], []
        for pname, p in module.named_parameters(recurse=ops.is_layer_module(module)):
            qual = f"{module_name}.{pname}"
            info = ParamInfo(qual, pname, tuple(p.shape), p.numel(), p.element_size())
            if qual not in seen_params:
                seen_params.add(qual)
                params.append(info)
            else:
                shared.append(info)
        count = call_count.get(module_name, 0)
        call_count[module_name] = count + 1
        buffer_bytes = 0 if count else sum(b.numel() * b.element_size() for _, b in module.named_buffers(recurse=False))
        name = module_name if count == 0 else f"{module_name}_{count}"
        inputs = tuple(producers.get(t.data_ptr(), INPUT) for t in tensors)
        alias_of = inputs[0] if inputs and (op in view_ops or attrs.get("inplace")) else None
        layers.append(
            Layer(
                name=name,
                op=op,
                target=type(module).__name__,
                module=module_name,
                block=_block_for(module_name, blocks),
                inputs=inputs,
                input_shapes=tuple(tuple(t.shape) for t in tensors),
                output_shape=tuple(output.shape),
                output_dtype_bytes=output.element_size(),
                params=tuple(params),
                attrs=MappingProxyType(attrs),
                alias_of=alias_of,
                buffer_bytes=buffer_bytes,
                shared_params=tuple(shared),
            )
        )
        producers[output.data_ptr()] = name
    note = (
        f"torch.fx could not trace {model_name} ({reason}); traced with module hooks instead: "
        "functional ops between modules (residual adds, concats, functional activations) are not seen, "
        "so their costs and the bytes they keep are missing"
    )
    graph = LayerGraph(
        model_name=model_name,
        input_shape=tuple(input_shape),
        layers=tuple(layers),
        blocks=blocks,
        classifier=classifier,
        traced_by="hooks",
        warnings=(note,),
    )
    return with_classifier(graph, classifier)
