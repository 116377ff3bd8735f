"""What the tlplan runtime and the MCU engine keep for backward, per op kind.

``tlplan_saved`` states what ``tlplan.runtime``'s ops save (checked byte for byte against
saved-tensor hooks in ``tests/test_runtime_memory.py``); ops the runtime does not replace keep
what PyTorch keeps (``EAGER_SAVED``). ``mcu_saved`` is the analytic accounting of an int8 training
engine in the manner of the 256KB paper: int8 activations, a 1-bit clamp mask per output element
of a conv whose output gradient is needed, int8 inputs of the trained channels of a weight.
"""

from __future__ import annotations

import math

from ..trace.graph import Layer, _numel
from .rules import EAGER_SAVED, GradState, SavedTensor

#: module types the runtime replaces by its own (see ``tlplan.runtime.modules.REPLACEMENTS``)
REPLACED_TYPES = frozenset({"Conv2d", "Linear", "BatchNorm2d", "ReLU", "ReLU6", "Hardswish"})

def replaced(layer: Layer) -> bool:
    return layer.module is not None and layer.target in REPLACED_TYPES


def trained_channels(layer: Layer, ratio: float) -> int:
    """Input channels (features) a partial weight trains: round(ratio · C_in), at least 1."""
    c_in = layer.input_shapes[0][1] if layer.op == "conv2d" else layer.input_shapes[0][-1]
    return min(c_in, max(1, int(round(ratio * c_in))))


def mask_bytes(numel: int) -> int:
    return (numel + 7) // 8


def _weight_input(layer: Layer, state: GradState, element_bytes: int) -> SavedTensor:
    """What a trained weight needs of the input: all of it, a channel subset, or patch sums."""
    opts = state.options
    n, *rest = layer.input_shapes[0]
    if layer.op == "conv2d" and opts.grad_filter:
        r = opts.grad_filter
        ph, pw = math.ceil(layer.output_shape[2] / r), math.ceil(layer.output_shape[3] / r)
        return SavedTensor("patch sums", private_bytes=n * layer.input_shapes[0][1] * ph * pw * element_bytes)
    k = trained_channels(layer, opts.weight)
    full = layer.input_shapes[0][1] if layer.op == "conv2d" else layer.input_shapes[0][-1]
    if k < full:
        numel = _numel(layer.input_shapes[0]) // full * k
        return SavedTensor("input channels", private_bytes=numel * element_bytes)
    if element_bytes == layer.output_dtype_bytes:
        return SavedTensor("input", value=layer.inputs[0])
    return SavedTensor("input copy", private_bytes=_numel(layer.input_shapes[0]) * element_bytes)


def tlplan_saved(layer: Layer, state: GradState, element_bytes: int) -> list[SavedTensor]:
    """The tlplan runtime's rule for a layer (stored activations of ``element_bytes`` each)."""
    if not replaced(layer):
        return EAGER_SAVED.get(layer.op)(layer, state) if layer.op in EAGER_SAVED else []
    opts = state.options
    if layer.op in ("conv2d", "linear"):
        return [_weight_input(layer, state, element_bytes)] if "weight" in state.trained else []
    if layer.op == "batch_norm":
        # affine: PyTorch's batch-statistics op; frozen / shift: running statistics, nothing kept
        return EAGER_SAVED.get("batch_norm")(layer, state) if opts.norm == "affine" else []
    if opts.mask:  # relu, relu6, hardswish
        return [SavedTensor("mask", private_bytes=mask_bytes(layer.output_numel))] if state.needs_input_grad else []
    return EAGER_SAVED.get(layer.op)(layer, state)


def mcu_saved(layer: Layer, state: GradState) -> list[SavedTensor]:
    """The int8 engine: a clamp mask per conv/linear output element, int8 trained-channel inputs."""
    if layer.op in ("conv2d", "linear"):
        if not state.recorded:
            return []
        kept = [SavedTensor("mask", private_bytes=mask_bytes(layer.output_numel))]
        if "weight" in state.trained:
            kept.append(_weight_input(layer, state, element_bytes=1))
        return kept
    if layer.op in ("relu", "relu6", "hardtanh", "hardswish"):
        return []  # fused into the conv's requantisation: its clamp mask is the conv's
    if layer.op == "batch_norm":
        if state.options.norm != "affine" or not state.recorded:
            return []
        return [SavedTensor("input", value=layer.inputs[0]), SavedTensor("stats", private_bytes=2 * layer.output_shape[1] * 4)]
    return EAGER_SAVED.get(layer.op)(layer, state) if layer.op in EAGER_SAVED else []
