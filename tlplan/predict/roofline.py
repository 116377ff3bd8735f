"""The datasheet roofline: a layer pass's time from a device's peak compute and memory bandwidth.

For a device nobody here could measure::

    ms = max(FLOPs / (peak × efficiency_compute[op]), bytes / (bandwidth × efficiency_memory[op]))
         + layer_overhead

per pass (forward, backward-input, backward-weight, backward-bias), with the efficiency factors
and the per-layer overhead read from the profile's ``device.json`` (``default`` where an op has no
entry of its own). A profile without a bandwidth (an MCU's on-chip SRAM) is compute bound. Every
number this gives is *derived from a datasheet*, and says so.
"""

from __future__ import annotations

from ..measure.microbench import Config
from .features import macs, weight_numel
from .devices import Device

#: arithmetic per output element of ops that are not multiply-accumulates (forward; backward
#: passes count the same again for each gradient they compute)
FLOPS_PER_ELEMENT = {
    "batch_norm": 6.0,  # mean, variance, normalise, scale, shift
    "relu": 1.0, "relu6": 2.0, "hardswish": 4.0, "hardsigmoid": 3.0, "sigmoid": 4.0, "silu": 5.0,
    "dropout": 2.0, "add": 1.0, "mul": 1.0, "mul.bcast": 1.0, "view": 0.0,
    # the tlplan runtime: a norm on running statistics is one multiply-add; a masked activation
    # also compares and packs its 1-bit mask
    "batch_norm.tl": 2.0, "relu.mask": 3.0, "relu6.mask": 4.0, "hardswish.mask": 6.0,
}
DEFAULT = "default"


def pass_work(op: str, pass_: str, c: Config, bytes_per_element: int, weight_ratio: float = 1.0) -> tuple[float, float]:
    """(FLOPs, bytes moved) of one pass of one configuration.

    Linear maps (conv, linear): 2 FLOPs per MAC in every pass; the input gradient reads the output
    gradient and the weights and writes the input gradient; the weight gradient reads the input
    (only the kept channels, ``weight_ratio``) and the output gradient and writes the weight
    gradient; the bias gradient sums the output gradient. A gradient filter of patch size r
    (``Config.grad_filter``) divides both gradients' MACs and the kept input by r². Pooling does
    one operation per window element. Other ops: ``FLOPS_PER_ELEMENT`` per element, input and output read or written once.
    """
    e = bytes_per_element
    x, y = c.numel_in * e, c.numel_out * e
    if op in ("add", "mul", "mul.bcast") and pass_ == "fwd":
        x *= 2
    w = weight_numel(op, c) * e
    m = macs(op, c)
    if m:
        if pass_ == "fwd":
            return 2.0 * m, x + y + w
        kept = x
        if c.grad_filter:  # gradients from r×r patch averages: r² fewer positions, patch sums kept (Yang et al.)
            m /= c.grad_filter**2
            kept = x / c.grad_filter**2
        if pass_ == "bwd_input":
            return 2.0 * m, y + x + w
        if pass_ == "bwd_weight":
            return 2.0 * m * weight_ratio, kept * weight_ratio + y + w * weight_ratio
        return float(c.numel_out), y + c.c_out * e  # bwd_bias
    if op in ("max_pool2d", "avg_pool2d"):
        flops = float(c.numel_out * c.k * c.k)
    elif op == "adaptive_avg_pool2d":
        flops = float(c.numel_in)
    else:
        flops = FLOPS_PER_ELEMENT.get(op, 1.0) * c.numel_out
    if pass_ == "fwd":
        return flops, x + y + w
    if pass_ == "bwd_input":
        return flops, x + 2 * y + w  # reads the saved tensor and the output gradient
    return float(c.numel_out), y + w  # weight / bias of a norm: reductions over the output gradient


def _factor(table: dict[str, float] | None, op: str) -> float:
    if not table:
        return 1.0
    if op in table:
        return table[op]
    family = op.split(".")[0]
    return table.get(family, table.get(DEFAULT, 1.0))


#: a backward call computing several gradients does the work of each
PARTS = {"bwd_input_weight": ("bwd_input", "bwd_weight"), "bwd_input_bias": ("bwd_input", "bwd_bias"),
         "fwd_nograd": ("fwd",), "accumulate": ("fwd",)}  # a forward without autograd; summing two gradients


def roofline_ms(device: Device, op: str, pass_: str, c: Config, weight_ratio: float = 1.0) -> float:
    """Predicted ms of one pass on ``device`` from its datasheet figures (see the module docstring)."""
    assert device.peak_flops_fp32, "a datasheet profile needs peak_flops_fp32"
    seconds = 0.0
    for part in PARTS.get(pass_, (pass_,)):
        flops, moved = pass_work(op, part, c, device.bytes_per_element or 4, weight_ratio)
        compute_s = flops / (device.peak_flops_fp32 * _factor(device.efficiency_compute, op))
        memory_s = 0.0
        if device.memory_bandwidth_bytes_per_s:
            memory_s = moved / (device.memory_bandwidth_bytes_per_s * _factor(device.efficiency_memory, op))
        seconds += max(compute_s, memory_s)
    return (seconds + (device.layer_overhead_s or 0.0)) * 1e3
