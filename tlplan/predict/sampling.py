"""Which layer configurations to time: near the shapes real networks use, more where the fit is worst.

nn-Meter's lesson: a predictor fitted on uniformly random configurations wastes most samples on
shapes no network has. The **shape prior** here is the set of layer configurations of the zoo
networks (traced at batch 1 and a reference resolution); a sample takes one of them and moves it
a little — another batch size, another input resolution, channels scaled by up to ±41 % — and
keeps the network it came from as its ``origin`` (so that a leave-one-network-out evaluation can
drop everything sampled near the held-out network). A share of samples is uniformly random within
a box, for coverage. Adaptive rounds sample near the configurations the current fit predicts worst.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace
from typing import Iterable, Sequence

from ..measure.microbench import CALIBRATION_OPS, CalibrationOp, Config

#: batch sizes a fine-tuning step uses on a small device, with how often to sample each
BATCHES = (1, 2, 4, 8, 16)
BATCH_WEIGHTS = (0.25, 0.15, 0.25, 0.25, 0.10)
#: input resolutions relative to the one the prior was traced at
RESOLUTIONS = (96, 112, 128, 144, 160, 192, 224)
PRIOR_RESOLUTION = 128
#: the largest tensor (elements) and the most multiply-accumulates a sample may have: keeps one
#: configuration's timing under a second or so on a small CPU
MAX_NUMEL = 16 * 2**20
MAX_MACS = 4 * 10**9


@dataclass(frozen=True)
class Sample:
    op: str
    config: Config
    origin: str  # the network the configuration came from, or "random"


#: the networks calibration times and evaluation holds out, unless --networks says otherwise: the
#: zoo's ten CNNs the shipped profiles were measured on (Inception v3 and MobileNetV2-1.4 came later;
#: calibrating them too would lengthen every calibration for two more of the same op kinds)
CALIBRATION_NETWORKS = ("resnet18", "resnet34", "resnet50", "mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small",
                        "proxylessnas_mobile", "mcunet-5fps", "mbv2-w0.35", "proxyless-w0.3")


def shape_prior(networks: Iterable[str] | None = None) -> list[Sample]:
    """Every layer of the calibration networks (or those named) as a configuration at batch 1, 128×128."""
    from ..trace import trace_model
    from ..zoo import load_model

    samples = []
    for name in networks if networks is not None else CALIBRATION_NETWORKS:
        graph = trace_model(load_model(name), (1, 3, PRIOR_RESOLUTION, PRIOR_RESOLUTION), name)
        for layer in graph.layers:
            entry = CALIBRATION_OPS.for_layer(layer)
            if entry is not None:
                samples.append(Sample(entry.name, entry.config_of(layer), name))
    return samples


def priors_by_op(ops: Sequence[str], samples: Sequence[Sample]) -> dict[str, list[Sample]]:
    """The shape prior of each op in ``ops``: its own layers' configurations, or, for an op no
    plain layer maps to (the tlplan runtime's), those of the ops it stands in for (``prior_from``)."""
    by_op: dict[str, list[Sample]] = {}
    for s in samples:
        by_op.setdefault(s.op, []).append(s)
    prior: dict[str, list[Sample]] = {}
    for op in ops:
        entry = CALIBRATION_OPS[op]
        if entry.prior_from:
            borrowed = [s for source in entry.prior_from for s in by_op.get(source, [])]
            if borrowed:
                prior[op] = [Sample(op, entry.conform(s.config), s.origin) for s in borrowed]
        elif op in by_op:
            prior[op] = by_op[op]
    return prior


def with_random_options(sample: Sample, rng: random.Random) -> Sample:
    """``sample`` with option fields drawn for its op (unchanged for an op without plan options)."""
    entry = CALIBRATION_OPS[sample.op]
    if entry.vary is None:
        return sample
    return Sample(sample.op, entry.conform(entry.vary(sample.config, rng)), sample.origin)


def _round_channels(c: float) -> int:
    return max(1, int(round(c / 8)) * 8) if c >= 12 else max(1, int(round(c)))


def _scale_spatial(size: int, factor: float) -> int:
    return max(1, int(round(size * factor))) if size > 1 else size


def perturb(sample: Sample, rng: random.Random, *, strength: float = 1.0) -> Sample:
    """A configuration near ``sample``: another batch and resolution, channels scaled a little."""
    entry = CALIBRATION_OPS[sample.op]
    c = sample.config
    base_batch = c.batch if c.batch > 1 else 1
    batch = rng.choices(BATCHES, BATCH_WEIGHTS)[0] if strength >= 1 else max(1, base_batch * rng.choice((1, 1, 2)) // rng.choice((1, 2)))
    factor = rng.choice(RESOLUTIONS) / PRIOR_RESOLUTION if strength >= 1 else 2 ** rng.uniform(-0.25, 0.25)
    h, w = _scale_spatial(c.h, factor), _scale_spatial(c.w, factor)
    c_in, c_out = c.c_in, c.c_out
    if rng.random() < 0.5:
        c_in = _round_channels(c.c_in * 2 ** rng.uniform(-0.5 * strength, 0.5 * strength))
    if rng.random() < 0.5:
        c_out = _round_channels(c.c_out * 2 ** rng.uniform(-0.5 * strength, 0.5 * strength))
    # the first conv reads the image: its 3 input channels stay 3
    if c.c_in <= 4:
        c_in = c.c_in
    moved = replace(c, batch=batch, c_in=c_in, c_out=c_out, h=h, w=w, h_out=_scale_spatial(c.h_out, factor),
                    w_out=_scale_spatial(c.w_out, factor))
    return Sample(sample.op, entry.conform(moved), sample.origin)


def random_config(entry: CalibrationOp, rng: random.Random) -> Config:
    """A configuration drawn log-uniformly from a box around what CNNs use."""

    def log_uniform(lo: float, hi: float) -> float:
        return math.exp(rng.uniform(math.log(lo), math.log(hi)))

    batch = rng.choices(BATCHES, BATCH_WEIGHTS)[0]
    c_in = _round_channels(log_uniform(8, 1024))
    c_out = _round_channels(log_uniform(8, 1024))
    size = int(round(log_uniform(2, 112)))
    k = rng.choice((1, 3, 3, 5, 7))
    stride = rng.choice((1, 1, 2))
    config = Config(batch, c_in, size, size, c_out, size, size, k=k, stride=stride,
                    bias=rng.choice((0, 1)), inplace=rng.choice((0, 1)))
    if entry.name == "adaptive_avg_pool2d":
        config = replace(config, h_out=1, w_out=1)
    if entry.name == "conv2d.pw":
        config = replace(config, k=1)
    if entry.name == "conv2d" and k == 1:
        config = replace(config, k=3)
    if entry.name in ("max_pool2d", "avg_pool2d"):
        config = replace(config, k=rng.choice((2, 3)), stride=2)
    return entry.conform(config)


def affordable(config: Config, macs: int) -> bool:
    return max(config.numel_in, config.numel_out) <= MAX_NUMEL and macs <= MAX_MACS


def prior_weights(prior: Sequence[Sample]) -> dict[str, float]:
    """How much of the budget each op gets at first: the square root of how often networks use it."""
    counts: dict[str, int] = {}
    for s in prior:
        counts[s.op] = counts.get(s.op, 0) + 1
    return {op: math.sqrt(n) for op, n in counts.items()}
