"""Analytic features of a layer configuration: MACs, bytes in / out / weights, shape numbers.

The same function serves the measured rows of a profile and the layers of a network to predict,
so a fit never sees features computed one way and predicts from features computed another.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..measure.microbench import CALIBRATION_OPS, Config

#: fp32 everywhere on the measured side (the framework's own tensors)
BYTES_PER_ELEMENT = 4

FEATURES = (
    "batch", "c_in", "c_out", "hw_in", "hw_out", "k", "stride", "groups", "bias", "inplace",
    "macs", "bytes_in", "bytes_out", "bytes_weight",
)


#: what the tlplan runtime's ops add: the plan's options of conv and linear layers
OPTION_FEATURES = ("weight_per_mille", "grad_filter")


def family(op: str) -> str:
    """The PyTorch op a calibration op is a kind of: ``conv2d.tl.part`` → ``conv2d``."""
    return op.split(".")[0]


def _conv_like(op: str) -> bool:
    return family(op) == "conv2d"


def has_option_features(op: str) -> bool:
    """Whether ``op``'s configurations carry plan options (only the runtime's conv and linear ops:
    the others' features, and so their fits, stay exactly as they were)."""
    return op in CALIBRATION_OPS and CALIBRATION_OPS[op].with_options is not None


def feature_names(op: str) -> tuple[str, ...]:
    return FEATURES + OPTION_FEATURES if has_option_features(op) else FEATURES


def weight_numel(op: str, c: Config) -> int:
    if _conv_like(op):
        return c.c_out * (c.c_in // max(c.groups, 1)) * c.k * c.k + (c.c_out if c.bias else 0)
    if family(op) == "linear":
        return c.c_in * c.c_out + (c.c_out if c.bias else 0)
    if family(op) == "batch_norm":
        return 2 * c.c_in
    return 0


def macs(op: str, c: Config) -> int:
    """Multiply-accumulates of the forward: conv and linear only, as tlplan counts them everywhere."""
    if _conv_like(op):
        return c.numel_out * (c.c_in // max(c.groups, 1)) * c.k * c.k
    if family(op) == "linear":
        return c.batch * c.c_in * c.c_out
    return 0


def bytes_in(op: str, c: Config) -> int:
    n = c.numel_in
    if op in ("add", "mul"):
        n *= 2
    elif op == "mul.bcast":
        n += c.batch * c.c_in
    return n * BYTES_PER_ELEMENT


def raw_features(op: str, c: Config, options: bool | None = None) -> tuple[float, ...]:
    """``feature_names(op)`` of ``c``; ``options``: ``has_option_features(op)``, when known."""
    base = (
        c.batch, c.c_in, c.c_out, c.h * c.w, c.h_out * c.w_out, c.k, c.stride, c.groups, c.bias, c.inplace,
        macs(op, c), bytes_in(op, c), c.numel_out * BYTES_PER_ELEMENT, weight_numel(op, c) * BYTES_PER_ELEMENT,
    )
    if options is None:
        options = has_option_features(op)
    return base + (c.weight_per_mille, c.grad_filter) if options else base


def feature_matrix(op: str, configs: Sequence[Config]) -> np.ndarray:
    """``log1p`` of the raw features, one row per configuration (what the regressors see)."""
    options = has_option_features(op)
    width = len(FEATURES) + (len(OPTION_FEATURES) if options else 0)
    raw = np.array([raw_features(op, c, options) for c in configs], dtype=np.float64).reshape(len(configs), width)
    return np.log1p(raw)
