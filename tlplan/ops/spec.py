"""``OpSpec``: everything tlplan knows about one op kind, in one place.

A spec says how the op is recognised in a trace (module classes, functions, tensor methods) and
which hyper-parameters it reads (from the module, from the call's arguments, or from the weight's
shape); its forward and backward MACs; the tensors it keeps for backward on each runtime and for
each way it may be trained; its workspace; which options are legal for it and which of them the
tlplan runtime implements; the runtime module it is swapped for; and the calibration op that
prices it. Every later stage (costs, memory timeline, plan validation, schemes, the solver's
space, ``apply_plan``, the predictor) asks the spec; none keeps its own list of op kinds.

Rules see shapes, never tensors (as ``torch.utils.flop_counter``'s formulas do).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Mapping

import torch.nn as nn

from ..plan.options import LayerOptions
from ..runtime.modules import make_planned
from ..trace.graph import Layer, _numel

RUNTIMES = ("eager", "tlplan", "mcu")


@dataclass(frozen=True)
class GradState:
    """What autograd sees at one layer: which inputs require grad, which parameters are trained."""

    inputs_require_grad: tuple[bool, ...]
    trained: frozenset[str]  # roles ("weight", "bias") of the layer's parameters that are trained
    options: LayerOptions = field(default_factory=LayerOptions)

    @property
    def needs_input_grad(self) -> bool:
        return any(self.inputs_require_grad)

    @property
    def recorded(self) -> bool:
        """Autograd records the op (and saves anything) only if some input or parameter needs grad."""
        return bool(self.trained) or any(self.inputs_require_grad)


@dataclass(frozen=True)
class SavedTensor:
    """One tensor kept for backward: another layer's output (shared by storage) or a private one."""

    what: str  # "input", "output", "stats", "indices", "mask", ...
    value: str | None = None  # the layer (or INPUT) whose output is kept
    private_bytes: int = 0  # bytes of a tensor only this op holds


@dataclass(frozen=True)
class Setting:
    """What a workspace rule needs to know of the run: the runtime, the bytes of a kept activation."""

    runtime: str  # eager, tlplan, mcu
    store_bytes: int


class TensorShape(tuple):
    """The shape of a tensor argument of a functional call (``call_attrs`` sees shapes, not tensors)."""


def bind(names: tuple[str, ...], args: tuple, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """A call's arguments by parameter name (positional ones first)."""
    bound = dict(zip(names, args))
    bound.update(kwargs)
    return bound


def pair(value: Any) -> tuple[int, int]:
    if isinstance(value, (tuple, list)):
        return (int(value[0]), int(value[-1]))
    return (int(value), int(value))


def has_own_parts(module: nn.Module) -> bool:
    """A module whose weight is computed (``weight_norm``, ``spectral_norm`` parametrizations) or
    that holds modules of its own: what it computes is not the registered class's formula."""
    from torch.nn.utils import parametrize

    return parametrize.is_parametrized(module) or next(module.children(), None) is not None


def saved_input(layer: Layer, i: int = 0) -> SavedTensor:
    return SavedTensor("input", value=layer.inputs[i])


def saved_output(layer: Layer) -> SavedTensor:
    return SavedTensor("output", value=layer.name)


def mask_bytes(numel: int) -> int:
    """Bytes of a packed 1-bit mask of ``numel`` elements."""
    return (numel + 7) // 8


def tensor_bytes(shape: tuple[int, ...], element_bytes: int = 4) -> int:
    return _numel(shape) * element_bytes


def planned(layer: Layer) -> bool:
    """The tlplan runtime swaps this layer's module for its own (set at trace time by the spec)."""
    return bool(layer.attrs.get("planned"))


def honours_options(layer: Layer, runtime: str) -> bool:
    """Whether ``runtime`` runs the layer's options beyond ``requires_grad`` (partial weights,
    gradient filters, frozen-statistics norms, 1-bit masks): the MCU engine's accounting always;
    the tlplan runtime where it swaps the module; plain PyTorch never."""
    return runtime == "mcu" or (runtime == "tlplan" and planned(layer))


class OpSpec:
    """One op kind. Subclass it (one small class per op family), then ``REGISTRY.register(...)``.

    Class attributes say how the op is recognised; methods give its rules. The defaults describe
    an op with no parameters, no MACs, that keeps nothing and takes no options.
    """

    #: the op kind every table keys on ("conv2d", "batch_norm", ...)
    kind: ClassVar[str] = ""
    #: the family it belongs to, for documentation ("conv", "norm", "activation", ...)
    family: ClassVar[str] = ""
    #: what it computes, one line, for the documentation's list of supported ops
    summary: ClassVar[str] = ""
    #: module classes it stands for (subclasses too: see ``standard``)
    modules: ClassVar[tuple[type[nn.Module], ...]] = ()
    #: functions (``torch.*``, ``F.*``, ``operator.*``) and Tensor methods it stands for
    functions: ClassVar[tuple[Callable[..., Any], ...]] = ()
    methods: ClassVar[tuple[str, ...]] = ()
    #: the positional parameters of its functions (a parameter passed as "weight" or "bias" takes that role)
    arguments: ClassVar[tuple[str, ...]] = ("input",)
    #: its output is a view of its first input (same storage, no new bytes)
    view: ClassVar[bool] = False
    #: 1-bit masks: "exact" (the ReLU family), "surrogate" (MobileTL's h-swish), or "" (none)
    mask: ClassVar[str] = ""
    #: the runtime's module class it is swapped for (None: the runtime runs PyTorch's)
    planned_class: ClassVar[type[nn.Module] | None] = None

    # ---- the int8 engine (runtime mcu) ---------------------------------------------------------

    def mcu_in_place(self, layer: Any) -> bool:
        """The int8 training engine writes this op's output over its first input's buffer, where
        that input dies here (TinyEngine's in-place kernels). Default: no, a new buffer."""
        return False

    def mcu_scratch(self, layer: Any, phase: str) -> tuple[int, int]:
        """Bytes of the engine's two kernel buffers this op needs in ``phase`` (``forward``,
        ``input_grad``: its input's gradient, ``weight_grad``: its weight's): the im2col /
        runtime buffer and the 16-bit kernel copy. TinyEngine keeps one buffer of each, outside
        the tensor arena, as big as the most any op of the step asks (its ``get_sbuf_size`` and
        ``get_kbuf_size``). Default: none."""
        return 0, 0

    # ---- recognition -----------------------------------------------------------------------------

    def module_attrs(self, module: nn.Module) -> dict[str, Any]:
        """Hyper-parameters read from a module (shapes come from the trace)."""
        return {"inplace": True} if getattr(module, "inplace", False) else {}

    def call_attrs(self, args: tuple, kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """Hyper-parameters of a functional call: its arguments, tensors among them as their
        ``TensorShape`` (a weight's shape tells its kernel and groups), the rest as given."""
        return {"inplace": True} if kwargs.get("inplace") else {}

    def standard(self, module: nn.Module) -> bool:
        """The module computes what this spec's rules describe: its class runs the forward of the
        registered class it derives from (a subclass that only changes ``__init__`` does). A
        subclass with its own forward (weight standardisation, dynamic padding) is measured
        instead (``tlplan.ops.probe``)."""
        base = next((cls for cls in self.modules if isinstance(module, cls)), None)
        return base is not None and type(module).forward is base.forward and not has_own_parts(module)

    def swappable(self, module: nn.Module) -> bool:
        """The tlplan runtime can run this module with its own ops, computing the same thing."""
        return self.planned_class is not None and (isinstance(module, self.planned_class) or self.standard(module))

    def runtime_module(self, module: nn.Module, options: LayerOptions, precision: str) -> nn.Module:
        """The runtime's module standing in for ``module`` (same parameter objects), running ``options``."""
        return make_planned(module, self.planned_class, options, precision)

    # ---- costs -----------------------------------------------------------------------------------

    def macs_fwd(self, layer: Layer) -> int:
        return 0

    def macs_bwd(self, layer: Layer, state: GradState, runtime: str) -> tuple[int, int]:
        """(input-gradient MACs, weight-gradient MACs) of the layer's backward."""
        return 0, 0

    def eager_saved(self, layer: Layer, state: GradState) -> list[SavedTensor]:
        """What plain PyTorch autograd keeps (torch 2.13, CPU), given what requires grad."""
        return []

    def planned_saved(self, layer: Layer, state: GradState, element_bytes: int) -> list[SavedTensor]:
        """What the tlplan runtime's module keeps; only asked where the runtime swaps the layer."""
        return self.eager_saved(layer, state)

    def mcu_saved(self, layer: Layer, state: GradState) -> list[SavedTensor]:
        """The int8 engine's accounting (activations int8, masks packed)."""
        return self.eager_saved(layer, state)

    def forward_workspace(self, layer: Layer, cost: Any, run: Setting) -> int:
        """Bytes allocated for a moment beyond the output in the forward."""
        return 0

    def backward_workspace(self, layer: Layer, cost: Any, run: Setting) -> int:
        """Bytes allocated for a moment beyond the input gradients in the backward."""
        return 0

    # ---- options ---------------------------------------------------------------------------------

    def trained_roles(self, layer: Layer, opts: LayerOptions) -> frozenset[str]:
        """The parameters (by role) that ``opts`` train."""
        return frozenset()

    def option_problem(self, layer: Layer, opts: LayerOptions, runtime: str | None) -> str | None:
        """Why ``opts`` cannot apply to this layer (on ``runtime``; None: on any), or None."""
        return _not_default(self.kind, opts, ())

    def choices(self, layer: Layer, runtime: str) -> list[LayerOptions]:
        """The options the solver may pick for this layer on ``runtime`` (frozen excluded)."""
        return []

    def train_all(self, layer: Layer) -> LayerOptions | None:
        """The options training every parameter exactly (None: the layer has nothing to train)."""
        return None

    def train_bias(self, layer: Layer) -> LayerOptions | None:
        """The options training only what plays the part of a bias (TinyTL's bias-only)."""
        return None

    def masks(self, layer: Layer, surrogate: bool) -> bool:
        """Whether a scheme gives this layer a 1-bit mask (exact ones always, surrogates under MobileTL)."""
        return planned(layer) and (self.mask == "exact" or (surrogate and self.mask == "surrogate"))

    def keeps_input(self, layer: Layer, opts: LayerOptions | None) -> bool:
        """Trained with ``opts``, the layer keeps its whole first input on every runtime (so what
        produced that input costs nothing more to keep)."""
        return False

    def calibration(self, layer: Layer, option: LayerOptions | None) -> str | None:
        """The calibration op pricing this layer (``option``: what the tlplan runtime runs, None
        for PyTorch's kernels); None where no calibration op times it."""
        return None


#: why an option set does not apply to an op kind that does not take it
_REFUSALS = {
    "weight": "a {kind} layer has no weight or bias to train",
    "bias": "a {kind} layer has no weight or bias to train",
    "grad_filter": "gradient filtering applies to convolutions, not {kind}",
    "norm": "norm options apply to norm layers, not {kind}",
    "mask": "1-bit masks apply to relu, relu6 and hardswish, not {kind}",
}


def _not_default(kind: str, opts: LayerOptions, allowed: tuple[str, ...]) -> str | None:
    """A problem naming the first option set that ``kind`` does not take (None: all taken)."""
    default = LayerOptions()
    for name, refusal in _REFUSALS.items():
        if name not in allowed and getattr(opts, name) != getattr(default, name):
            return refusal.format(kind=kind)
    return None
