"""TinyTL's lite residual branches (Cai et al., NeurIPS 2020), added to a model's blocks in place.

For a block with input ``x`` (C_in channels) and output ``y`` (C_out channels), the branch is::

    AvgPool2d(2, 2) → Conv2d(C_in, C_mid, k, stride=s, padding=k//2, groups=2, bias=False) → norm → ReLU
    → Conv2d(C_mid, C_out, 1, bias=False) → norm (weight 0: the branch starts as a no-op)
    → bilinear interpolation to y's size, added to y

with C_mid = C_in × expand rounded to a multiple of 8, s the block's stride, and k = 5 reduced by 2
while larger than the pooled map. Where the pooled map would be 1×1 the branch pools globally and
k = 1, as TinyTL's code does. Norms are GroupNorm (8 channels a group) or BatchNorm; conv1 has 2
groups, or 1 where 2 does not divide its channels.

The branch is the block's child ``lite_residual``; its parameters' state_dict keys are
``<block>.lite_residual.conv1.weight``, ``.norm1.weight``, ``.norm1.bias``, ``.conv2.weight``,
``.norm2.weight``, ``.norm2.bias`` (BatchNorm adds its ``running_mean``, ``running_var``,
``num_batches_tracked`` buffers). The model's own keys do not change.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import BadInputError
from ..plan.lite import LiteConfig
from ..plan.schemes import LITE_CHILD
from ..trace import LayerGraph

__all__ = ["LiteResidual", "insert_lite", "lite_of", "lite_problems", "make_divisible", "with_lite"]


def make_divisible(value: float, divisor: int = 8) -> int:
    """``value`` rounded to a multiple of ``divisor``, not below it nor 10% below ``value`` (MobileNet's rule)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    groups = max(1, channels // 8)  # 8 channels a group, or the nearest grouping that divides them
    while channels % groups:
        groups -= 1
    return nn.GroupNorm(groups, channels)


class LiteResidual(nn.Module):
    """A lite residual branch: ``forward(x, size)`` is the branch's output at ``size`` (the block's output map)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, config: LiteConfig = LiteConfig(),
                 global_pool: bool = False) -> None:
        super().__init__()
        self.config = config
        mid = make_divisible(in_channels * config.expand)
        if in_channels % config.groups or mid % config.groups:
            raise BadInputError(f"lite branch: {config.groups} groups do not divide {in_channels} and {mid} channels")
        self.pool = nn.AdaptiveAvgPool2d(1) if global_pool else nn.AvgPool2d(2, 2)
        k = config.kernel
        self.conv1 = nn.Conv2d(in_channels, mid, k, stride, k // 2, groups=config.groups, bias=False)
        self.norm1 = _norm(config.norm, mid)
        self.act = nn.ReLU()
        self.conv2 = nn.Conv2d(mid, out_channels, 1, bias=False)
        self.norm2 = _norm(config.norm, out_channels)
        for conv in (self.conv1, self.conv2):
            nn.init.kaiming_normal_(conv.weight, mode="fan_out")
        nn.init.zeros_(self.norm2.weight)  # the branch adds 0 until it is trained

    def forward(self, x: torch.Tensor, size: Any) -> torch.Tensor:
        y = self.norm2(self.conv2(self.act(self.norm1(self.conv1(self.pool(x))))))
        return F.interpolate(y, size=size, mode="bilinear", align_corners=False)


_CLASSES: dict[type, type] = {}


def _with_branch(base: type) -> type:
    """``base`` whose forward adds its ``lite_residual`` branch (one subclass per class)."""
    cls = _CLASSES.get(base)
    if cls is None:
        sequential = base.forward is nn.Sequential.forward  # it would call every child: the branch too

        def forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
            if sequential:
                y = x
                for name, module in self._modules.items():
                    if name != LITE_CHILD:
                        y = module(y)
            else:
                y = super(cls, self).forward(x)  # noqa: F821 (cls: the class made below)
            return y + self.lite_residual(x, y.shape[-2:])

        cls = type(f"{base.__name__}WithLite", (base,), {"forward": forward, "__module__": base.__module__,
                                                         "_tlplan_lite_base": base})
        _CLASSES[base] = cls
    return cls


def _shapes(model: nn.Module, input_shape: tuple[int, ...], blocks: list[str]) -> tuple[dict[str, tuple], dict[str, str]]:
    """(input shape, output shape) of each block's first call, at batch 1, and why each block that
    cannot take a branch cannot (called with other than one tensor, returning other than one 4-D
    tensor, or not called at all)."""
    seen: dict[str, tuple] = {}
    problems: dict[str, str] = {}
    handles = []
    for name in blocks:
        module = model.get_submodule(name)

        def pre(m: nn.Module, args: tuple, kwargs: dict, name: str = name) -> None:
            if name in seen or name in problems:
                return
            if kwargs or len(args) != 1 or not isinstance(args[0], torch.Tensor) or args[0].dim() != 4:
                problems[name] = "it is not called with one 4-D tensor"
            else:
                seen[name] = (tuple(args[0].shape),)

        def post(m: nn.Module, args: tuple, output: Any, name: str = name) -> None:
            if name in seen and len(seen[name]) == 1:
                if not isinstance(output, torch.Tensor) or output.dim() != 4:
                    problems[name] = "it does not return one 4-D tensor"
                else:
                    seen[name] = (seen[name][0], tuple(output.shape))

        handles += [module.register_forward_pre_hook(pre, with_kwargs=True), module.register_forward_hook(post)]
    flags = {m: m.training for m in model.modules()}
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros((1, *input_shape[1:]), dtype=dtype))
    finally:
        for h in handles:
            h.remove()
        for m, flag in flags.items():
            m.train(flag)
    for name in blocks:
        if name not in problems and (name not in seen or len(seen[name]) != 2):
            problems[name] = "the model's forward does not call it"
    return seen, problems


def _static_problem(modules: Mapping[str, nn.Module], name: str) -> str | None:
    """Why the block ``name`` cannot take a branch, as far as its module says (None: it may)."""
    from ..trace.ops import is_layer_module

    if name not in modules or not name:
        return "it is not a module of the model; a lite residual branch needs a block module"
    if is_layer_module(modules[name]):
        return f"it is a single layer ({type(modules[name]).__name__}); a lite residual branch goes on a block of layers"
    if type(modules[name]).forward is nn.Module.forward:
        return "it has no forward of its own to add a lite residual branch to"
    return None


def lite_problems(model: nn.Module, graph: LayerGraph | tuple[int, ...], blocks: Iterable[str]) -> dict[str, str]:
    """Why each of ``blocks`` cannot take a lite residual branch; the blocks that can are not in it."""
    input_shape = graph.input_shape if isinstance(graph, LayerGraph) else tuple(graph)
    modules = dict(model.named_modules())
    problems = {}
    for name in blocks:
        found = _static_problem(modules, name)
        if found is not None:
            problems[name] = found
    rest = [b for b in blocks if b not in problems and not has_branch(modules[b])]
    if rest:
        problems.update(_shapes(model, input_shape, rest)[1])
    return problems


def resolved(config: LiteConfig, x: tuple[int, ...], y: tuple[int, ...]) -> tuple[LiteConfig, int, bool]:
    """The config for a block with input ``x`` and output ``y`` (N, C, H, W): the kernel reduced
    to the pooled map (1 where that map is 1×1: global pooling), 2 groups only where they divide;
    with the branch's stride and whether it pools globally."""
    pooled = min(x[2] // 2, x[3] // 2)
    global_pool = pooled <= 1
    kernel = config.kernel
    if global_pool:
        kernel = 1
    else:
        while kernel > pooled and kernel > 1:
            kernel -= 2
    mid = make_divisible(x[1] * config.expand)
    groups = config.groups if x[1] % config.groups == 0 and mid % config.groups == 0 else 1
    stride = max(1, round(x[2] / y[2])) if y[2] else 1
    return LiteConfig(kernel, groups, config.expand, config.norm), stride, global_pool


def has_branch(module: nn.Module) -> bool:
    return isinstance(getattr(module, LITE_CHILD, None), LiteResidual)


def insert_lite(model: nn.Module, graph: LayerGraph | tuple[int, ...], blocks: Iterable[str],
                config: LiteConfig | Mapping[str, LiteConfig] = LiteConfig()) -> nn.Module:
    """Add a lite residual branch to each named block of ``model``, in place; returns ``model``.

    ``graph``: the model's LayerGraph (or just its input shape): the blocks' shapes at that input
    set each branch's stride, kernel and width. ``config``: one for every block (its kernel the
    largest, reduced to the block's resolution), or one per block (a plan's ``lite``). A block that
    already has a branch is left as it is; one that is not called with one tensor, or does not
    return one 4-D tensor, is a BadInputError naming it. Existing parameters keep their names; the
    branch is the block's child ``lite_residual`` (module docstring: its state_dict keys).
    """
    input_shape = graph.input_shape if isinstance(graph, LayerGraph) else tuple(graph)
    modules = dict(model.named_modules())
    todo = []
    for name in blocks:
        if name not in modules or not name:
            raise BadInputError(f"block {name!r} is not a module of the model; a lite residual branch needs a block module")
        if not has_branch(modules[name]):
            todo.append(name)
    if not todo:
        return model
    for name in todo:
        found = _static_problem(modules, name)
        if found is not None:
            raise BadInputError(f"block {name} cannot take a lite residual branch: {found}")
    shapes, problems = _shapes(model, input_shape, todo)
    for name in todo:
        if name in problems:
            raise BadInputError(f"block {name} cannot take a lite residual branch: {problems[name]}")
    for name in todo:
        block = modules[name]
        wanted = config.get(name, LiteConfig()) if isinstance(config, Mapping) else config
        x, y = shapes[name]
        cfg, stride, global_pool = resolved(wanted, x, y)
        param = next(block.parameters(), None)
        branch = LiteResidual(x[1], y[1], stride, cfg, global_pool)
        if param is not None:
            branch.to(device=param.device, dtype=param.dtype)
        block.add_module(LITE_CHILD, branch)
        block.__class__ = _with_branch(type(block))
    return model


def lite_of(model: nn.Module) -> dict[str, LiteConfig]:
    """The branches ``model`` has, by block (what a plan records)."""
    return {name: getattr(m, LITE_CHILD).config for name, m in model.named_modules() if has_branch(m)}


def with_lite(model: nn.Module, input_shape: tuple[int, ...], lite: Mapping[str, LiteConfig], *,
              copy: bool = False) -> nn.Module:
    """``model`` with the branches a plan names: as it is where it has them all, else with them
    inserted (into a deep copy with ``copy``, so the caller's model stays as it was)."""
    if not lite:
        return model
    modules = dict(model.named_modules())
    missing = [b for b in lite if b not in modules or not has_branch(modules[b])]
    if not missing:
        return model
    if copy:
        import copy as copying

        model = copying.deepcopy(model)
    return insert_lite(model, tuple(input_shape), list(lite), lite)


def for_scheme(model: nn.Module, input_shape: tuple[int, ...], scheme: Any, model_name: str,
               graph: LayerGraph | None = None) -> tuple[nn.Module, LayerGraph, dict[str, LiteConfig]]:
    """The model a parsed scheme runs on, its graph and its lite branches: for ``lite`` schemes
    (and plan files with ``lite``) a deep copy with the branches, else ``model`` itself. ``graph``:
    ``model``'s trace, where the caller has it."""
    from ..plan.plan import load_plan
    from ..plan.schemes import LITE_SCHEMES, lite_blocks
    from ..trace import trace_model

    input_shape = tuple(input_shape)
    if graph is None:
        graph = trace_model(model, input_shape, model_name)
    if scheme.kind in LITE_SCHEMES:
        blocks = lite_blocks(graph, scheme)
        config: LiteConfig | Mapping[str, LiteConfig] = LiteConfig()
    elif scheme.kind == "plan":
        config = load_plan(scheme.path).lite
        blocks = list(config)
    else:
        return model, graph, {}
    if not blocks:
        return model, graph, {}
    modules = dict(model.named_modules())
    if all(b in modules and has_branch(modules[b]) for b in blocks):
        lite_model = model  # the caller's model has them: nothing to change
    else:
        import copy

        lite_model = insert_lite(copy.deepcopy(model), graph, blocks, config)
    mine = lite_of(lite_model)
    return lite_model, trace_model(lite_model, input_shape, model_name), {b: mine[b] for b in blocks}
