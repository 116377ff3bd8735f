"""Timing one layer configuration alone: forward, backward-input, backward-weight, backward-bias.

The calibration op registry lives here. Each ``CalibrationOp`` says, for one kind of kernel:

* how a layer it prices becomes a ``Config`` (``config_of``) — the prediction side;
* how to build the op for a ``Config`` on random tensors (``build``) — the measuring side;
* which passes it has (the backward groups are derived from what ``build`` returns).

Which calibration op prices a layer is the layer's op spec's to say (``OpSpec.calibration``, in
``tlplan.ops``): this module only times. Adding an op is one ``register_op`` call with those
functions, named as the spec names it. The tlplan runtime's autograd Functions are registered
that way in ``runtime_ops``. See ``docs/devices.md``.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Callable, Iterator

import torch
import torch.nn as nn

from ..ops import spec_of
from ..trace.graph import Layer
from .accelerator import CPU, Accelerator, placed
from .latency import Prepared, time_passes
from .load import LoadWindow

#: The passes a layer's time splits into. ``fwd`` runs with autograd recording (something in or
#: below the layer is trained); ``fwd_nograd`` without (a frozen layer below every trained one,
#: which autograd does not record: measurably faster for norms and activations). ``bwd_weight`` is
#: the gradient of the weight together with the bias (training a weight trains its bias in every
#: scheme); ``bwd_bias`` the bias alone. A layer that needs its input gradient *and* its weight (or
#: bias) gradient gets both from one backward call in a training step; summing the two parts timed
#: apart counts twice what they share (the call, reading the output gradient: 20-50 % of a small
#: layer's backward, measured), so those combinations are timed as well.
BACKWARD_GROUPS = {
    "bwd_input": ("input",),
    "bwd_weight": ("weight",),
    "bwd_bias": ("bias",),
    "bwd_input_weight": ("input", "weight"),
    "bwd_input_bias": ("input", "bias"),
}
PASSES = ("fwd", "fwd_nograd", *BACKWARD_GROUPS)


@dataclass(frozen=True)
class Config:
    """One layer configuration: input ``batch×c_in×h×w`` to output ``batch×c_out×h_out×w_out``.

    Fields that do not apply to an op hold neutral values (``k=1, stride=1, groups=1`` for an
    elementwise op; ``h=w=1`` for a linear layer), so every CSV row has every column.
    """

    batch: int
    c_in: int
    h: int
    w: int
    c_out: int
    h_out: int
    w_out: int
    k: int = 1
    stride: int = 1
    groups: int = 1
    bias: int = 0
    inplace: int = 0
    #: the tlplan runtime's conv / linear options: the share of input channels whose weight
    #: gradient is computed (per mille, 1000 = all) and the gradient filter's patch size (0: none)
    weight_per_mille: int = 1000
    grad_filter: int = 0

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    @property
    def numel_in(self) -> int:
        return self.batch * self.c_in * self.h * self.w

    @property
    def numel_out(self) -> int:
        return self.batch * self.c_out * self.h_out * self.w_out


@dataclass
class Bench:
    """An op ready to time: ``fn(*inputs)`` with autograd; the tensors each backward group asks for."""

    fn: Callable[..., torch.Tensor]
    inputs: list[torch.Tensor]  # templates: each run differentiates fresh copies
    weight: list[torch.Tensor] = field(default_factory=list)  # weight (and bias) for bwd_weight
    bias: list[torch.Tensor] = field(default_factory=list)  # the bias alone, for bwd_bias
    grad_inputs: bool = True  # whether the op has an input gradient
    #: a custom autograd Function decides at forward time which gradients its backward computes
    #: (``ctx.needs_input_grad``), so each backward pass is timed on a graph of its own, built
    #: with only that pass's tensors requiring grad (built-in ops see what ``autograd.grad`` asks)
    graph_per_pass: bool = False

    def backward_groups(self, leaves: list[torch.Tensor]) -> dict[str, list[torch.Tensor]]:
        """The tensors each backward pass differentiates for, in ``PASSES`` order."""
        parts = {"input": leaves if self.grad_inputs else [], "weight": self.weight, "bias": self.bias}
        return {name: [t for part in needs for t in parts[part]] for name, needs in BACKWARD_GROUPS.items()
                if all(parts[part] for part in needs)}


@dataclass(frozen=True)
class CalibrationOp:
    """One kind of kernel tlplan times on a device and fits a predictor for."""

    name: str  # the ``op`` column of a profile's measurements CSV, e.g. "conv2d.dw"
    config_of: Callable[[Layer], Config]
    build: Callable[[Config], Bench]
    #: a sampled configuration made consistent: output sizes (and groups) from input sizes
    conform: Callable[[Config], Config]
    #: the plan's options of the layer written into its configuration (the tlplan runtime's ops)
    with_options: Callable[[Config, Any], Config] | None = None
    #: ops whose shape prior this op samples from (an op no plain network layer maps to)
    prior_from: tuple[str, ...] = ()
    #: a sampled configuration given random option fields (``weight_per_mille``, ``grad_filter``)
    vary: Callable[[Config, Any], Config] | None = None

    def config_for(self, layer: Layer, option: Any = None) -> Config:
        """The configuration a layer runs under the plan's ``option`` (None: no plan)."""
        config = self.config_of(layer)
        if self.with_options is not None and option is not None:
            config = self.with_options(config, option)
        return config


class CalibrationRegistry:
    """Calibration ops by name; a layer is priced by the one its op spec names."""

    def __init__(self) -> None:
        self._ops: dict[str, CalibrationOp] = {}

    def register(self, entry: CalibrationOp) -> CalibrationOp:
        if entry.name in self._ops:
            raise ValueError(f"calibration op {entry.name!r} is already registered")
        self._ops[entry.name] = entry
        return entry

    def __getitem__(self, name: str) -> CalibrationOp:
        return self._ops[name]

    def __contains__(self, name: object) -> bool:
        return name in self._ops

    def __iter__(self) -> Iterator[CalibrationOp]:
        return iter(self._ops.values())

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._ops)

    def for_layer(self, layer: Layer, option: Any = None) -> CalibrationOp | None:
        """The entry pricing ``layer``; ``option``: what the tlplan runtime runs (None: PyTorch's kernels)."""
        name = spec_of(layer).calibration(layer, option)
        return self._ops.get(name) if name is not None else None


CALIBRATION_OPS = CalibrationRegistry()


# ---- layers → configurations ---------------------------------------------------------------------


def _nchw(shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """Batch, channels and a 2-d spatial size of any tensor shape (1×1 where there is none)."""
    if len(shape) == 4:
        return shape[0], shape[1], shape[2], shape[3]
    if len(shape) == 3:
        return shape[0], shape[1], shape[2], 1
    if len(shape) == 2:
        return shape[0], shape[1], 1, 1
    if len(shape) == 1:
        return 1, shape[0], 1, 1
    return 1, 1, 1, 1


def _pair(value: Any, default: int = 1) -> int:
    if value is None:
        return default
    if isinstance(value, (tuple, list)):
        return int(value[0])
    return int(value)


def _has_bias(layer: Layer) -> int:
    return int(layer.param("bias") is not None)


def conv_config(layer: Layer) -> Config:
    b, c, h, w = _nchw(layer.input_shapes[0])
    _, co, ho, wo = _nchw(layer.output_shape)
    a = layer.attrs
    kernel = a.get("kernel_size") or (layer.params[0].shape[2:4] if layer.params else (1, 1))
    return Config(b, c, h, w, co, ho, wo, k=_pair(kernel), stride=_pair(a.get("stride")), groups=int(a.get("groups", 1)),
                  bias=_has_bias(layer))


def elementwise_config(layer: Layer) -> Config:
    b, c, h, w = _nchw(layer.input_shapes[0])
    return Config(b, c, h, w, c, h, w, inplace=int(bool(layer.attrs.get("inplace"))))


def linear_config(layer: Layer) -> Config:
    shape = layer.input_shapes[0]
    rows = math.prod(shape[:-1]) if len(shape) > 1 else 1
    return Config(rows, shape[-1], 1, 1, layer.output_shape[-1], 1, 1, bias=_has_bias(layer))


def norm_config(layer: Layer) -> Config:
    b, c, h, w = _nchw(layer.input_shapes[0])
    return Config(b, c, h, w, c, h, w, bias=_has_bias(layer))


def _pool_config(layer: Layer) -> Config:
    b, c, h, w = _nchw(layer.input_shapes[0])
    _, _, ho, wo = _nchw(layer.output_shape)
    a = layer.attrs
    k = _pair(a.get("kernel_size"), default=max(1, h // max(ho, 1)))
    return Config(b, c, h, w, c, ho, wo, k=k, stride=_pair(a.get("stride"), default=k))


def _binary_config(layer: Layer) -> Config:
    # the larger operand is the layer's shape; the other is the same or broadcast (1×1 spatial)
    b, c, h, w = _nchw(layer.output_shape)
    return Config(b, c, h, w, c, h, w)


# ---- sampled configurations made consistent -----------------------------------------------------


def same_size(c: Config) -> Config:
    return replace(c, c_out=c.c_in, h_out=c.h, w_out=c.w)


def _windowed(c: Config) -> Config:
    """Conv / pool output size with PyTorch's usual ``(k - 1) // 2`` padding."""
    pad = (c.k - 1) // 2
    h_out = max(1, (c.h + 2 * pad - c.k) // c.stride + 1)
    w_out = max(1, (c.w + 2 * pad - c.k) // c.stride + 1)
    return replace(c, h_out=h_out, w_out=w_out)


def conform_conv(c: Config) -> Config:
    return _windowed(c)


def conform_depthwise(c: Config) -> Config:
    return _windowed(replace(c, c_out=c.c_in, groups=c.c_in))


def _conform_pool(c: Config) -> Config:
    return _windowed(replace(c, c_out=c.c_in))


def _conform_adaptive(c: Config) -> Config:
    return replace(c, c_out=c.c_in, h_out=min(c.h_out, c.h), w_out=min(c.w_out, c.w))


def conform_linear(c: Config) -> Config:
    return replace(c, h=1, w=1, h_out=1, w_out=1)


# ---- configurations → ops on random tensors ------------------------------------------------------


def random_tensor(*shape: int) -> torch.Tensor:
    return torch.randn(*shape)


def _module_bench(module: nn.Module, *inputs: torch.Tensor) -> Bench:
    module.train()
    weight = [p for p in (getattr(module, "weight", None), getattr(module, "bias", None)) if p is not None]
    bias = [module.bias] if getattr(module, "bias", None) is not None else []
    return Bench(fn=module, inputs=list(inputs), weight=weight, bias=bias)


def _build_conv(c: Config) -> Bench:
    pad = padding_for(c.h, c.h_out, c.k, c.stride)
    conv = nn.Conv2d(c.c_in, c.c_out, c.k, stride=c.stride, padding=pad, groups=c.groups, bias=bool(c.bias))
    return _module_bench(conv, random_tensor(c.batch, c.c_in, c.h, c.w))


def padding_for(size: int, out: int, k: int, stride: int) -> int:
    """The symmetric padding that turns ``size`` into ``out`` (``k // 2`` when none does)."""
    for pad in range(k // 2 + 1):
        if (size + 2 * pad - k) // stride + 1 == out:
            return pad
    return k // 2


def _build_linear(c: Config) -> Bench:
    return _module_bench(nn.Linear(c.c_in, c.c_out, bias=bool(c.bias)), random_tensor(c.batch, c.c_in))


def _build_batch_norm(c: Config) -> Bench:
    return _module_bench(nn.BatchNorm2d(c.c_in), random_tensor(c.batch, c.c_in, c.h, c.w))


def _elementwise(module_type: Callable[..., nn.Module], takes_inplace: bool = True) -> Callable[[Config], Bench]:
    def build(c: Config) -> Bench:
        module = module_type(inplace=bool(c.inplace)) if takes_inplace else module_type()
        return Bench(fn=module, inputs=[random_tensor(c.batch, c.c_in, c.h, c.w)])

    return build


def _build_max_pool(c: Config) -> Bench:
    pad = padding_for(c.h, c.h_out, c.k, c.stride)
    return Bench(fn=nn.MaxPool2d(c.k, c.stride, pad), inputs=[random_tensor(c.batch, c.c_in, c.h, c.w)])


def _build_avg_pool(c: Config) -> Bench:
    pad = padding_for(c.h, c.h_out, c.k, c.stride)
    return Bench(fn=nn.AvgPool2d(c.k, c.stride, pad), inputs=[random_tensor(c.batch, c.c_in, c.h, c.w)])


def _build_adaptive_pool(c: Config) -> Bench:
    return Bench(fn=nn.AdaptiveAvgPool2d((c.h_out, c.w_out)), inputs=[random_tensor(c.batch, c.c_in, c.h, c.w)])


def _build_add(c: Config) -> Bench:
    return Bench(fn=torch.add, inputs=[random_tensor(c.batch, c.c_in, c.h, c.w), random_tensor(c.batch, c.c_in, c.h, c.w)])


def _build_mul(c: Config) -> Bench:
    return Bench(fn=torch.mul, inputs=[random_tensor(c.batch, c.c_in, c.h, c.w), random_tensor(c.batch, c.c_in, c.h, c.w)])


def _build_mul_broadcast(c: Config) -> Bench:
    # squeeze-and-excitation: per-channel scales times the feature map
    return Bench(fn=torch.mul, inputs=[random_tensor(c.batch, c.c_in, 1, 1), random_tensor(c.batch, c.c_in, c.h, c.w)])


def _build_dropout(c: Config) -> Bench:
    return Bench(fn=nn.Dropout(0.2, inplace=bool(c.inplace)), inputs=[random_tensor(c.batch, c.c_in, c.h, c.w)])


def _build_view(c: Config) -> Bench:
    return Bench(fn=lambda x: torch.flatten(x, 1), inputs=[random_tensor(c.batch, c.c_in, c.h, c.w)])


# ---- the registry --------------------------------------------------------------------------------


def register_op(name: str, config_of: Callable[[Layer], Config], build: Callable[[Config], Bench],
                conform: Callable[[Config], Config] = same_size, **extra: Any) -> None:
    """Register a calibration op (``extra``: ``with_options``, ``prior_from``, ``vary``)."""
    CALIBRATION_OPS.register(CalibrationOp(name, config_of, build, conform, **extra))


# The op specs (``tlplan.ops``) name these; ``conv2d`` stands for dense k×k and grouped convs.
register_op("conv2d", conv_config, _build_conv, conform_conv)
register_op("conv2d.dw", conv_config, _build_conv, conform_depthwise)
register_op("conv2d.pw", conv_config, _build_conv, conform_conv)
register_op("linear", linear_config, _build_linear, conform_linear)
register_op("batch_norm", norm_config, _build_batch_norm)
for _name, _module in (("relu", nn.ReLU), ("relu6", nn.ReLU6), ("hardswish", nn.Hardswish),
                       ("hardsigmoid", nn.Hardsigmoid), ("silu", nn.SiLU)):
    register_op(_name, elementwise_config, _elementwise(_module))
register_op("sigmoid", elementwise_config, _elementwise(nn.Sigmoid, takes_inplace=False))
register_op("max_pool2d", _pool_config, _build_max_pool, _conform_pool)
register_op("avg_pool2d", _pool_config, _build_avg_pool, _conform_pool)
register_op("adaptive_avg_pool2d", _pool_config, _build_adaptive_pool, _conform_adaptive)
register_op("add", _binary_config, _build_add)
register_op("mul", _binary_config, _build_mul)
register_op("mul.bcast", _binary_config, _build_mul_broadcast)
register_op("dropout", elementwise_config, _build_dropout)
register_op("view", elementwise_config, _build_view)


# ---- timing ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Measurement:
    """Ms per pass of one configuration (median or fastest run), and the other processes' CPU share meanwhile."""

    ms: dict[str, float]
    foreign_cpu: float | None


def time_config(entry: CalibrationOp, config: Config, *, target_s: float = 0.08, max_repeats: int = 25,
                min_repeats: int = 3, statistic: str = "median", accelerator: Accelerator = CPU) -> Measurement:
    """Time ``config`` of ``entry``: every pass its op has, on one graph per run (see ``time_passes``).

    The number of runs adapts to the op's speed: enough to fill about ``target_s`` seconds, between
    ``min_repeats`` and ``max_repeats``, after one warm-up run that also sizes it; each pass's runs
    summed up by ``statistic`` (``tlplan.measure.latency.STATISTICS``). The op is built on
    ``accelerator``'s device (its tensors and parameters created there) and timed by its stopwatch.
    """
    torch.manual_seed(0)
    with placed(accelerator):
        bench = entry.build(config)
    if bench.graph_per_pass:
        return _time_per_pass(bench, target_s, max_repeats, min_repeats, statistic, accelerator)
    backward = list(bench.backward_groups(bench.inputs))

    def prepare() -> Prepared:
        leaves = [t.clone().requires_grad_(bench.grad_inputs) for t in bench.inputs]
        args = [leaf.clone() for leaf in leaves]  # non-leaf copies: in-place ops may write them
        return (lambda: bench.fn(*args)), list(bench.backward_groups(leaves).values())

    def prepare_nograd() -> Prepared:
        args = [t.clone() for t in bench.inputs]

        def forward() -> torch.Tensor:
            with torch.no_grad():
                return bench.fn(*args)

        return forward, []

    t0 = time.perf_counter()
    time_passes(prepare, warmup=0, repeats=1, accelerator=accelerator)
    once = time.perf_counter() - t0
    repeats = int(min(max_repeats, max(min_repeats, target_s / max(once, 1e-6))))
    with LoadWindow() as window:
        fwd, bwd = time_passes(prepare, warmup=1, repeats=repeats, statistic=statistic, accelerator=accelerator)
        fwd_nograd, _ = time_passes(prepare_nograd, warmup=1, repeats=repeats, statistic=statistic, accelerator=accelerator)
    ms = {"fwd": fwd, "fwd_nograd": fwd_nograd, **dict(zip(backward, bwd))}
    return Measurement(ms=ms, foreign_cpu=window.share)


def _requiring(bench: Bench, needs: tuple[str, ...]) -> list[torch.Tensor]:
    """Fresh input leaves, with ``requires_grad`` set on exactly the parts in ``needs``."""
    for t in bench.weight + bench.bias:
        t.requires_grad_(False)
    for part in needs:
        for t in {"weight": bench.weight, "bias": bench.bias}.get(part, []):
            t.requires_grad_(True)
    return [t.clone().requires_grad_(bench.grad_inputs and "input" in needs) for t in bench.inputs]


def _time_per_pass(bench: Bench, target_s: float, max_repeats: int, min_repeats: int, statistic: str,
                   accelerator: Accelerator = CPU) -> Measurement:
    """``time_config`` for a custom autograd Function (``Bench.graph_per_pass``).

    ``fwd``: recorded with every tensor requiring grad (the forward keeps what a trained weight
    needs); each backward pass: on a graph recorded with only its own tensors requiring grad."""
    every = tuple(part for part in ("input", "weight", "bias") if part != "input" or bench.grad_inputs)
    passes = list(bench.backward_groups(bench.inputs))  # the backward passes this op has

    def prepare_for(needs: tuple[str, ...], backward: str | None = None) -> Callable[[], Prepared]:
        """Record with ``needs`` requiring grad; then differentiate for pass ``backward`` (if any)."""
        def prepare() -> Prepared:
            leaves = _requiring(bench, needs)
            args = [leaf.clone() if leaf.requires_grad else leaf for leaf in leaves]
            return (lambda: bench.fn(*args)), ([bench.backward_groups(leaves)[backward]] if backward else [])
        return prepare

    def prepare_nograd() -> Prepared:
        # nothing requires grad: a Function still sees a parameter's requires_grad under no_grad
        # and would keep what a trained weight needs, which a frozen layer never does
        args = _requiring(bench, ())

        def forward() -> torch.Tensor:
            with torch.no_grad():
                return bench.fn(*args)

        return forward, []

    t0 = time.perf_counter()
    time_passes(prepare_for(every), warmup=0, repeats=1, accelerator=accelerator)
    once = time.perf_counter() - t0
    repeats = int(min(max_repeats, max(min_repeats, target_s / max(once, 1e-6) / (1 + len(passes)))))
    try:
        with LoadWindow() as window:
            timed = functools.partial(time_passes, warmup=1, repeats=repeats, statistic=statistic, accelerator=accelerator)
            ms = {"fwd": timed(prepare_for(every))[0], "fwd_nograd": timed(prepare_nograd)[0]}
            for name in passes:
                ms[name] = timed(prepare_for(BACKWARD_GROUPS[name], name))[1][0]
    finally:
        for t in bench.weight + bench.bias:
            t.requires_grad_(True)
    return Measurement(ms=ms, foreign_cpu=window.share)
