"""Model → LayerGraph: torch.fx symbolic trace plus shape propagation, or module hooks as a fallback."""

from __future__ import annotations

import operator
from collections import OrderedDict
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any

import torch
import torch.fx
import torch.nn as nn

from ..errors import BadInputError, TraceError, arg
from ..ops import REGISTRY, TensorShape, classifier_layer
from . import ops
from .graph import INPUT, Layer, LayerGraph, ParamInfo


def trace_model(model: nn.Module, input_shape: tuple[int, ...], model_name: str = "model") -> LayerGraph:
    """Trace ``model`` on an input of ``input_shape`` (batch first) into a LayerGraph.

    Args:
        model: any ``nn.Module``; it is not modified (shapes come from forwards at batch 1 and 2
            in eval mode without grad; its training flags are restored).
        input_shape: e.g. ``(8, 3, 224, 224)``.
        model_name: the name reports show.

    Returns:
        A frozen LayerGraph. Models that torch.fx cannot trace are traced with module hooks
        instead; the graph's ``warnings`` say what that loses.
        A model of a structure and input shape traced before in this process gets that
        graph again (see ``structure_key``).

    Example:
        >>> from tlplan.zoo import load_model
        >>> g = trace_model(load_model("resnet18"), (1, 3, 224, 224), "resnet18")
        >>> g.layers[0].name, g.layers[0].op
        ('conv1', 'conv2d')
    """
    if len(input_shape) < 2 or any(int(d) <= 0 for d in input_shape):
        raise BadInputError(f"input shape {tuple(input_shape)} is not valid: give a positive batch, channels and size")
    input_shape = tuple(int(d) for d in input_shape)
    key = (structure_key(model), input_shape, model_name, REGISTRY.generation)
    graph = _TRACES.get(key)
    if graph is None:
        graph = _trace(model, input_shape, model_name)
        _TRACES[key] = graph
        while len(_TRACES) > _TRACES_KEPT:
            _TRACES.popitem(last=False)
    else:
        _TRACES.move_to_end(key)
    return graph


# Traces of this process by (model structure, input shape, name, op registry's generation): a notebook or a script that
# profiles, compares and solves one model traces it once, not at every call (the trace runs the
# model forward). A LayerGraph is frozen data without references to the model, so one graph
# serves every model of the same structure. Least recently used first out.
_TRACES: OrderedDict[tuple, LayerGraph] = OrderedDict()
_TRACES_KEPT = 32


def structure_key(model: nn.Module) -> tuple:
    """What a trace of ``model`` depends on: every module's class (its forward's code included,
    so a class redefined in a notebook is a new structure), its plain attributes (stride,
    padding, flags, training mode), its hooks, and every parameter's and buffer's name, shape,
    dtype and device. Weights' values are not part of it: shapes do not depend on them."""
    parts: list[tuple] = []
    for name, module in model.named_modules():
        cls = type(module)
        forward = getattr(cls.forward, "__code__", None)
        parts.append((name, cls.__module__, cls.__qualname__, id(cls),
                      None if forward is None else (forward.co_code, forward.co_consts, forward.co_names)))
        for attr, value in vars(module).items():
            if attr == "_modules":  # the children themselves come in their own turn
                parts.append((attr, tuple(value)))
            elif attr in ("_parameters", "_buffers"):
                for tensor_name, tensor in value.items():
                    parts.append((attr, tensor_name, None if tensor is None else
                                  (tuple(tensor.shape), tensor.dtype, tensor.device.type)))
            elif attr in _FORWARD_HOOKS:
                if value:  # which functions, in which order (a hook may reshape an output)
                    parts.append((attr, tuple(map(id, value.values()))))
            elif attr.startswith("_") and isinstance(value, (dict, set)):
                continue  # torch's bookkeeping: state-dict and backward hooks, buffer sets; no shape depends on them
            else:
                parts.append((attr, _attribute_key(value)))
    return tuple(parts)


_FORWARD_HOOKS = frozenset({"_forward_hooks", "_forward_pre_hooks"})


def _attribute_key(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str, torch.dtype, torch.device)):
        return value
    if isinstance(value, (tuple, list)):
        return (type(value).__name__, tuple(_attribute_key(v) for v in value))
    if isinstance(value, (set, frozenset)):
        return ("set", tuple(sorted(repr(_attribute_key(v)) for v in value)))
    if isinstance(value, torch.Tensor):
        return ("tensor", tuple(value.shape), value.dtype)
    if isinstance(value, dict):  # hooks and their kwargs flags: which functions, in which order
        return ("dict", tuple((k if isinstance(k, (int, str)) else id(k), _attribute_key(v)) for k, v in value.items()))
    return (type(value).__qualname__, id(value))  # functions, hook handles, anything else: by identity


def _trace(model: nn.Module, input_shape: tuple[int, ...], model_name: str) -> LayerGraph:
    try:
        graph = ops.LeafTracer().trace(model)  # run on the model itself: no GraphModule (its code) to build
    except Exception as exc:  # fx raises many kinds on dynamic control flow
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        from .hooks import trace_with_hooks

        return trace_with_hooks(model, input_shape, model_name, reason)
    metas = _propagate_shapes(model, graph, input_shape)
    return _graph_from_fx(model, graph, metas, input_shape, model_name)


@dataclass(frozen=True)
class _Meta:
    shape: tuple[int, ...]
    dtype: torch.dtype
    contiguous: bool = True  # a permuted / transposed view is not: some ops then copy it


def _record_shapes(module: nn.Module, graph: torch.fx.Graph, inputs: list[torch.Tensor]) -> list[dict[str, _Meta]]:
    """Runs the graph on each of ``inputs`` and records each tensor-valued node's shape. (torch's
    ShapeProp imports sympy; fx's Interpreter costs a few context managers and lookups per node,
    a tenth of a first profile: this loop does what it does for the node kinds a symbolic trace
    makes.)"""
    modules = dict(module.named_modules())
    last_use: dict[torch.fx.Node, list[torch.fx.Node]] = {}  # node -> the values it is the last to read
    seen: set[torch.fx.Node] = set()
    for node in reversed(graph.nodes):
        for source in node.all_input_nodes:
            if source not in seen:
                seen.add(source)
                last_use.setdefault(node, []).append(source)
    # a conv's stand-in has its shape, not its values: only where no later shape reads values
    shortcut = not _value_dependent(graph) and not _modes_active()
    return [_run_once(module, graph, x, modules, last_use, shortcut) for x in inputs]


def _run_once(module: nn.Module, graph: torch.fx.Graph, x: torch.Tensor, modules: dict[str, nn.Module],
              last_use: dict[torch.fx.Node, list[torch.fx.Node]], shortcut: bool) -> dict[str, _Meta]:
    metas: dict[str, _Meta] = {}
    env: dict[torch.fx.Node, Any] = {}
    inputs = iter((x,))
    load = env.__getitem__
    for node in graph.nodes:
        op = node.op
        if op == "output":
            break
        args = torch.fx.node.map_arg(node.args, load)
        kwargs = torch.fx.node.map_arg(node.kwargs, load)
        if op == "placeholder":
            value = next(inputs, _MISSING)
            if value is _MISSING:
                if not args:
                    raise RuntimeError(f"the forward's argument {node.target} has no default and one input was given")
                value = args[0]
        elif op == "get_attr":
            value = operator.attrgetter(node.target)(module)
        elif op == "call_function":
            value = node.target(*args, **kwargs)
        elif op == "call_method":
            value = getattr(args[0], node.target)(*args[1:], **kwargs)
        else:  # call_module
            value = _call_module(modules[node.target], args, kwargs, shortcut)
        env[node] = value
        if isinstance(value, torch.Tensor):
            metas[node.name] = _Meta(tuple(value.shape), value.dtype, value.is_contiguous())
        for source in last_use.get(node, ()):
            del env[source]
    return metas


_MISSING = object()


#: ops whose output shape depends on their input's values (and so on a conv's real output)
_VALUE_SHAPED = frozenset({"nonzero", "argwhere", "masked_select", "unique", "unique_consecutive", "bincount",
                           "repeat_interleave", "nonzero_static", "masked_scatter", "where"})


def _value_dependent(graph: torch.fx.Graph) -> bool:
    """Whether some op's output shape may depend on values: one of ``_VALUE_SHAPED``, or indexing
    by a computed tensor (a boolean mask selects as many elements as are set)."""
    for node in graph.nodes:
        if node.op not in ("call_function", "call_method"):
            continue
        name = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", "")
        if name in _VALUE_SHAPED:
            return True
        if node.target is operator.getitem and _indexes_by_node(node.args[1:]):
            return True
    return False


def _indexes_by_node(index: Any) -> bool:
    found = False

    def visit(a: Any) -> Any:
        nonlocal found
        found = found or isinstance(a, torch.fx.Node)
        return a

    torch.fx.node.map_aggregate(index, visit)
    return found


def _modes_active() -> bool:
    """Autocast or a torch function / dispatch mode changes what a conv returns: then convs run."""
    from torch.overrides import _get_current_function_mode_stack
    from torch.utils._python_dispatch import _get_current_dispatch_mode_stack

    return (torch.is_autocast_enabled("cpu") or torch.is_autocast_enabled("cuda")
            or bool(_get_current_function_mode_stack()) or bool(_get_current_dispatch_mode_stack()))


def _call_module(module: nn.Module, args: tuple, kwargs: dict[str, Any], shortcut: bool = True) -> Any:
    if shortcut and not kwargs and len(args) == 1:
        shape = _plain_conv_output_shape(module, args[0])
        if shape is not None:
            # What the conv computes on this input is not needed, only its shape: a plain torch.nn
            # conv's is arithmetic. Its output on an all-zero input, the bias, stands in (most of
            # a first profile's forward is convs: ~60 ms of resnet50's).
            out = torch.zeros(shape, dtype=args[0].dtype)
            if module.bias is not None:
                out += module.bias.reshape(-1, *([1] * (len(shape) - 2)))
            return out
    return module(*args, **kwargs)


_PLAIN_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _plain_conv_output_shape(module: nn.Module, x: Any) -> tuple[int, ...] | None:
    """The output shape of a torch.nn conv, by its arithmetic, where nothing but its own forward
    runs on ``x`` (its class exactly torch's, no hooks, no forward of the instance's own) and the
    input is one it takes; else None, and the conv runs (and raises its own error on bad input)."""
    if type(module) not in _PLAIN_CONVS or not isinstance(x, torch.Tensor):
        return None
    if "forward" in vars(module) or "_conv_forward" in vars(module) or not _torch_forward(type(module)):
        return None  # a forward patched on the instance or on torch's class
    if module._forward_hooks or module._forward_pre_hooks or _global_hooks():
        return None
    dims = len(module.kernel_size)
    if x.dim() != dims + 2 or x.shape[1] != module.in_channels or not x.is_contiguous():
        return None
    weight, bias = module.weight, module.bias
    # a channels_last weight makes a channels_last output; mismatched dtypes make the conv raise
    if not weight.is_contiguous() or x.dtype != weight.dtype or x.device != weight.device:
        return None
    if bias is not None and (bias.dtype != weight.dtype or bias.device != weight.device):
        return None
    if module.padding_mode != "zeros" and any(
            p >= size for p, size in zip(module._reversed_padding_repeated_twice[::-2], x.shape[2:])):
        return None  # reflect / circular padding as wide as the input: the conv's own error
    if module.padding == "same":
        spatial = tuple(x.shape[2:])
    else:
        padding = (0,) * dims if module.padding == "valid" else module.padding
        spatial = tuple(
            (size + 2 * p - d * (k - 1) - 1) // s + 1
            for size, p, d, k, s in zip(x.shape[2:], padding, module.dilation, module.kernel_size, module.stride)
        )
    if x.shape[0] < 1 or any(size < 1 for size in spatial):
        return None
    return (x.shape[0], module.out_channels, *spatial)


_TORCH_FORWARDS = {cls: (cls.forward, cls._conv_forward) for cls in _PLAIN_CONVS}


def _torch_forward(cls: type) -> bool:
    return (cls.forward, cls._conv_forward) == _TORCH_FORWARDS[cls]


def _global_hooks() -> bool:
    from torch.nn.modules import module as torch_module

    return bool(torch_module._global_forward_hooks or torch_module._global_forward_pre_hooks)


def _propagate_shapes(module: nn.Module, graph: torch.fx.Graph, input_shape: tuple[int, ...]) -> dict[str, _Meta]:
    """Every tensor-valued node's output shape at batch ``input_shape[0]``.

    Real forwards at batch 1 (and 2), in eval mode without grad so the caller's BN statistics stay
    untouched; then each dimension is extrapolated linearly in the batch size: exact for anything
    whose size is proportional to the batch (flattened views too), and the cost does not grow
    with the batch.
    """
    batch, rest = input_shape[0], input_shape[1:]
    dtype = next((p.dtype for p in module.parameters() if p.is_floating_point()), torch.float32)
    flags = {m: m.training for m in module.modules()}
    try:
        module.eval()
        with torch.no_grad():
            sizes = (1,) if batch == 1 else (1, 2)
            runs = _record_shapes(module, graph, [torch.zeros((n, *rest), dtype=dtype) for n in sizes])
            if batch == 1:
                return runs[0]
            at_one, at_two = runs
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise TraceError(
            f"the model does not run on input {input_shape}: {first} (check {arg('input_shape')} and the model's expected input)"
        ) from None
    finally:
        for m, flag in flags.items():
            # each module's own flag: m.train(flag) would also reset every child, n² over the tree
            m.training = flag
    metas = {}
    for name, two in at_two.items():
        one = at_one.get(name)
        if one is not None and len(one.shape) == len(two.shape):
            shape = tuple(a + (b - a) * (batch - 1) for a, b in zip(one.shape, two.shape))
            metas[name] = _Meta(shape, two.dtype, two.contiguous)
    return metas


def _innermost_module(node: torch.fx.Node) -> str | None:
    stack = node.meta.get("nn_module_stack")
    if not stack:
        return None
    return list(stack.values())[-1][0]


def _graph_from_fx(
    model: nn.Module, fx_graph: torch.fx.Graph, metas: dict[str, _Meta], input_shape: tuple[int, ...], model_name: str
) -> LayerGraph:
    modules = dict(model.named_modules())
    param_names = {id(p): n for n, p in model.named_parameters()}
    seen_params: set[str] = set()
    blocks, classifier = _blocks_of(model)
    values: dict[str, str] = {}  # fx node name -> layer name producing that tensor
    call_count: dict[str, int] = {}
    layers: list[Layer] = []
    unsupported: list[str] = []
    placeholders = 0
    view_ops = ops.view_ops()

    for node in fx_graph.nodes:
        if node.op == "placeholder":
            placeholders += 1
            if placeholders > 1:
                raise TraceError("the model's forward takes more than one input; tlplan profiles single-input models")
            values[node.name] = INPUT
            continue
        if node.op in ("output", "get_attr"):
            continue
        meta = metas.get(node.name)
        if meta is None:  # sizes, tuples: not a tensor value, not a layer
            continue

        params: list[ParamInfo] = []
        shared: list[ParamInfo] = []
        attrs: dict[str, Any] = {}
        module_name: str | None = None
        buffer_bytes = 0
        first_input = next((metas[a.name] for a in node.all_input_nodes if a.name in values and a.name in metas), None)
        if node.op == "call_module":
            module_name = str(node.target)
            module = modules[module_name]
            target = type(module).__name__
            shape = first_input.shape if first_input is not None else None
            op, attrs = ops.recognise_module(module, shape, first_input.dtype if first_input is not None else meta.dtype)
            for pname, p in module.named_parameters():  # a layer's module may hold parts (a parametrized weight)
                qual = f"{module_name}.{pname}"
                info = ParamInfo(qual, pname, tuple(p.shape), p.numel(), p.element_size())
                if qual not in seen_params:  # a module called twice owns its parameters once
                    seen_params.add(qual)
                    params.append(info)
                else:
                    shared.append(info)
            count = call_count.get(module_name, 0)
            call_count[module_name] = count + 1
            name = module_name if count == 0 else f"{module_name}_{count}"
            scope = module_name
            if count == 0:
                buffer_bytes = sum(b.numel() * b.element_size() for _, b in module.named_buffers())
        else:
            if node.op == "call_function":
                target = getattr(node.target, "__name__", str(node.target))
                call_target: Any = node.target
            else:  # call_method
                target = f"Tensor.{node.target}"
                call_target = str(node.target)
            as_shapes = lambda a: TensorShape(metas[a.name].shape) if isinstance(a, torch.fx.Node) and a.name in metas else a  # noqa: E731
            args = tuple(torch.fx.node.map_aggregate(a, as_shapes) for a in node.args)
            kwargs = {k: torch.fx.node.map_aggregate(v, as_shapes) for k, v in node.kwargs.items()}
            op, attrs = ops.recognise_call(call_target, args, kwargs)
            scope = _innermost_module(node)
            name = f"{scope}.{node.name}" if scope else node.name
            # parameters used functionally (get_attr nodes) belong to their first consumer
            for arg in node.all_input_nodes:
                if arg.op == "get_attr":
                    try:
                        p = model.get_parameter(str(arg.target))
                    except AttributeError:
                        continue
                    qual = param_names.get(id(p), str(arg.target))
                    role = _role(node, arg, qual)
                    info = ParamInfo(qual, role, tuple(p.shape), p.numel(), p.element_size())
                    if qual not in seen_params:
                        seen_params.add(qual)
                        params.append(info)
                    else:
                        shared.append(info)

        inputs = []
        input_shapes = []
        for arg in node.all_input_nodes:
            if arg.name in values:
                inputs.append(values[arg.name])
                input_shapes.append(metas[arg.name].shape if arg.op != "placeholder" else input_shape)
        if first_input is not None and not first_input.contiguous:
            attrs["input_contiguous"] = False
        alias_of = None
        if inputs and (op in view_ops or attrs.get("inplace")):
            alias_of = inputs[0]
        if op == ops.UNSUPPORTED:
            unsupported.append(f"{name} ({target})")
        layer = Layer(
            name=name,
            op=op,
            target=target,
            module=module_name,
            block=_block_for(scope, blocks),
            inputs=tuple(inputs),
            input_shapes=tuple(input_shapes),
            output_shape=tuple(meta.shape),
            output_dtype_bytes=torch.empty((), dtype=meta.dtype).element_size(),
            params=tuple(params),
            attrs=MappingProxyType(attrs),
            alias_of=alias_of,
            fx_node=node.name,
            buffer_bytes=buffer_bytes,
            shared_params=tuple(shared),
        )
        values[node.name] = name
        layers.append(layer)

    if not layers:
        raise TraceError(
            f"{model_name} has no layers tlplan can see (its forward computes nothing from its input); "
            "give a model that does"
        )
    notes = []
    if unsupported:
        notes.append(
            f"{len(unsupported)} op(s) have no cost rule and are counted as zero: "
            + ", ".join(unsupported[:5])
            + (" ..." if len(unsupported) > 5 else "")
        )
    graph = LayerGraph(
        model_name=model_name,
        input_shape=input_shape,
        layers=tuple(layers),
        blocks=blocks,
        classifier=classifier,
        traced_by="fx",
        warnings=tuple(notes),
        input_dtype_bytes=metas[next(iter(metas))].dtype.itemsize if metas else 4,
    )
    return with_classifier(graph, classifier)


def with_classifier(graph: LayerGraph, declared: str | None) -> LayerGraph:
    """The graph with its classifier: the one the model declares, else the last trainable linear
    map (a Linear, or a 1×1 conv as in SqueezeNet); a block made of the classifier alone is none."""
    classifier = declared
    if classifier is None:
        layer = classifier_layer(graph)
        classifier = None if layer is None else (layer.module or layer.name)
    blocks = tuple(b for b in graph.blocks if not _classifier_only(graph, b, classifier))
    return replace(graph, classifier=classifier, blocks=blocks)


def _classifier_only(graph: LayerGraph, block: str, classifier: str | None) -> bool:
    trained = [layer for layer in graph.layers_in_block(block) if layer.params]
    return bool(trained) and all((layer.module or layer.name) == classifier for layer in trained)


def _role(node: torch.fx.Node, arg: torch.fx.Node, qual: str) -> str:
    """A functionally used parameter's role: the argument it is passed as (``F.conv2d(x, w, b)``:
    weight, bias), else its attribute name."""
    spec = REGISTRY.for_function(node.target) if node.op == "call_function" else None
    names = spec.arguments if spec is not None else ()
    for i, a in enumerate(node.args):
        if a is arg and i < len(names) and names[i] in ("weight", "bias"):
            return names[i]
    for key in ("weight", "bias"):
        if node.kwargs.get(key) is arg:
            return key
    return qual.rsplit(".", 1)[-1]
def _blocks_of(model: nn.Module) -> tuple[tuple[str, ...], str | None]:
    """The model's blocks: declared by zoo models, inferred for others."""
    declared = getattr(model, "tlplan_blocks", None)
    classifier = getattr(model, "tlplan_classifier", None)
    if declared:
        return tuple(declared), classifier
    # Inferred: a top-level child holding parameters in sub-modules is a block, unless it is a
    # container of such children (``features`` of a MobileNet), whose children are the blocks.
    def composite(m: nn.Module) -> bool:
        return next(m.children(), None) is not None and any(True for _ in m.parameters())

    blocks: list[str] = []
    for name, child in model.named_children():
        if isinstance(child, (nn.Sequential, nn.ModuleList)) and any(composite(s) for s in child.children()):
            blocks.extend(f"{name}.{sub_name}" for sub_name, sub in child.named_children() if composite(sub))
        elif composite(child):
            blocks.append(name)
    return tuple(blocks), classifier


def _block_for(scope: str | None, blocks: tuple[str, ...]) -> str | None:
    if not scope:
        return None
    best = None
    for block in blocks:
        if scope == block or scope.startswith(block + "."):
            if best is None or len(block) > len(best):
                best = block
    return best
