"""The shared rules of linear maps through a weight (convolutions, linear layers).

Backward costs as much as forward, once for the input gradient and once for the weight gradient.
Options: the weight (whole, or a share of its input channels on runtimes that implement it), the
bias, and for convolutions a gradient filter.
"""

from __future__ import annotations

from typing import Any, ClassVar

from ..plan.options import FILTER_SIZES, WEIGHT_RATIOS, LayerOptions
from ..trace.graph import Layer, _numel
from .spec import GradState, OpSpec, SavedTensor, _not_default, honours_options, mask_bytes, planned


def has_bias(layer: Layer) -> bool:
    return layer.param("bias") is not None


class WeightOpSpec(OpSpec):
    """A linear map of its (first) input through a weight, plus an optional bias."""

    #: the input dimension whose channels a partial weight selects (1: NCHW channels, -1: features)
    channel_dim: ClassVar[int] = 1

    def input_channels(self, layer: Layer) -> int:
        return layer.input_shapes[0][self.channel_dim]

    def trained_channels(self, layer: Layer, ratio: float) -> int:
        """Input channels (features) a partial weight trains: round(ratio · C_in), at least 1."""
        c_in = self.input_channels(layer)
        return min(c_in, max(1, int(round(ratio * c_in))))

    def partial_ok(self, layer: Layer) -> str | None:
        """Why a share of the input channels cannot be trained (None: it can)."""
        return None

    def filter_ok(self, layer: Layer) -> str | None:
        """Why gradient filtering cannot apply (None: it can)."""
        return f"gradient filtering (grad_filter) applies to convolutions, not {self.kind}"

    def filter_size_problem(self, layer: Layer, r: int) -> str | None:
        """Why patch size ``r`` cannot filter this layer, where filtering applies (None: it can)."""
        return None

    def offered_filters(self, layer: Layer) -> tuple[int, ...]:
        """The patch sizes the solver offers: the ``FILTER_SIZES`` that fit the output map."""
        return tuple(r for r in FILTER_SIZES if self.filter_size_problem(layer, r) is None)

    def weight_fraction(self, layer: Layer, opts: LayerOptions, runtime: str) -> float:
        """The share of the weight whose gradient is computed (a partial weight on a runtime that runs it)."""
        if not honours_options(layer, runtime) or not 0 < opts.weight < 1:
            return 1.0
        return self.trained_channels(layer, opts.weight) / self.input_channels(layer)

    # ---- costs

    def macs_bwd(self, layer: Layer, state: GradState, runtime: str) -> tuple[int, int]:
        fwd = self.macs_fwd(layer)
        macs_x = fwd if state.needs_input_grad else 0
        macs_w = fwd if "weight" in state.trained else 0
        opts = state.options
        if honours_options(layer, runtime):
            if opts.grad_filter:
                patched = self.filtered_macs(layer, opts.grad_filter)
                return (patched if macs_x else 0), (patched if macs_w else 0)
            macs_w = round(macs_w * self.weight_fraction(layer, opts, runtime))
        return macs_x, macs_w

    def filtered_macs(self, layer: Layer, r: int) -> int:
        return 0

    def weight_input(self, layer: Layer, state: GradState, element_bytes: int) -> SavedTensor:
        """What a trained weight needs of the input: all of it, or a channel subset."""
        k = self.trained_channels(layer, state.options.weight)
        full = self.input_channels(layer)
        if k < full:
            return SavedTensor("input channels", private_bytes=_numel(layer.input_shapes[0]) // full * k * element_bytes)
        if element_bytes == layer.output_dtype_bytes:
            return SavedTensor("input", value=layer.inputs[0])
        return SavedTensor("input copy", private_bytes=_numel(layer.input_shapes[0]) * element_bytes)

    def planned_saved(self, layer: Layer, state: GradState, element_bytes: int) -> list[SavedTensor]:
        # the runtime's ops keep what the weight gradient needs, and nothing for the input gradient
        return [self.weight_input(layer, state, element_bytes)] if "weight" in state.trained else []

    def mcu_saved(self, layer: Layer, state: GradState) -> list[SavedTensor]:
        """The int8 engine: a clamp mask per output element, int8 inputs of the trained channels."""
        if not state.recorded:
            return []
        kept = [SavedTensor("mask", private_bytes=mask_bytes(layer.output_numel))]
        if "weight" in state.trained:
            kept.append(self.weight_input(layer, state, element_bytes=1))
        return kept

    # ---- options

    def trained_roles(self, layer: Layer, opts: LayerOptions) -> frozenset[str]:
        # a module with parts of its own (a parametrized weight, a LoRA adapter) trains them with
        # its weight, and every bias with its bias
        roles = set()
        for p in layer.all_params:
            is_bias = p.role == "bias" or p.role.endswith(".bias")
            if (opts.bias if is_bias else opts.weight > 0):
                roles.add(p.role)
        return frozenset(roles)

    def option_problem(self, layer: Layer, opts: LayerOptions, runtime: str | None) -> str | None:
        problem = _not_default(self.kind, opts, ("weight", "bias", "grad_filter"))
        if problem:
            return problem
        if opts.bias and not has_bias(layer):
            return f"this {self.kind} has no bias"
        if opts.grad_filter:
            problem = self.filter_ok(layer) or self.filter_size_problem(layer, opts.grad_filter)
        elif 0 < opts.weight < 1:
            problem = self.partial_ok(layer)
        if problem:
            return problem
        if runtime == "tlplan" and not planned(layer) and (opts.grad_filter or 0 < opts.weight < 1):
            why = layer.attrs.get("not_planned", "the runtime does not swap it")
            return (f"the tlplan runtime cannot train part of this {self.kind}'s weight or filter its gradient ({why}); "
                    "train the whole weight, its bias, or nothing")
        return None

    def choices(self, layer: Layer, runtime: str) -> list[LayerOptions]:
        biases = (False, True) if has_bias(layer) else (False,)
        runs_options = honours_options(layer, runtime)
        ratios = WEIGHT_RATIOS if runs_options and self.partial_ok(layer) is None else (1.0,)
        filters = self.offered_filters(layer) if runtime == "tlplan" and runs_options and self.filter_ok(layer) is None else ()
        out: list[LayerOptions] = []
        for bias in biases:
            if bias:
                out.append(LayerOptions(bias=True))
            out.extend(LayerOptions(weight=r, bias=bias, select="magnitude" if r < 1 else "first") for r in ratios)
            out.extend(LayerOptions(weight=1.0, bias=bias, grad_filter=f) for f in filters)
        return out

    def train_all(self, layer: Layer) -> LayerOptions | None:
        return LayerOptions(weight=1.0, bias=has_bias(layer)) if layer.all_params else None

    def train_bias(self, layer: Layer) -> LayerOptions | None:
        return LayerOptions(bias=True) if has_bias(layer) else None

    def keeps_input(self, layer: Layer, opts: Any) -> bool:
        """Trained with ``opts``, the layer keeps its whole input (so its producer's output is kept anyway)."""
        return opts is not None and opts.weight == 1.0 and not opts.grad_filter
