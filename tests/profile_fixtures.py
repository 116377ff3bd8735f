"""Synthetic measured profiles for tests: rows from a known formula, written like calibrate writes them."""

from __future__ import annotations

import json
import random
from pathlib import Path

from tlplan.measure.microbench import BACKWARD_GROUPS, CALIBRATION_OPS, Config
from tlplan.predict import sampling
from tlplan.predict.features import BYTES_PER_ELEMENT, bytes_in, macs, weight_numel
from tlplan.predict.store import LAYER_COLUMNS, STEP_COLUMNS, LayerRow, StepRow, render

#: the ops mcunet-5fps needs
MCU_OPS = ("conv2d", "conv2d.dw", "conv2d.pw", "relu6", "add", "adaptive_avg_pool2d", "view", "linear")


def passes_of(op: str, config: Config) -> list[str]:
    weighted = op.startswith("conv2d") or op in ("linear", "batch_norm")
    have = {"input": True, "weight": weighted, "bias": weighted and (bool(config.bias) or op == "batch_norm")}
    return ["fwd", "fwd_nograd", *(name for name, parts in BACKWARD_GROUPS.items() if all(have[p] for p in parts))]


def known_ms(op: str, pass_: str, c: Config) -> float:
    """The synthetic device: 20 µs a pass, 1 ns a MAC, 0.05 ns a byte moved (backward: 1.5× the
    work); a combined backward costs its parts less one pass's 20 µs."""
    parts = BACKWARD_GROUPS.get(pass_, ())
    if len(parts) > 1:
        return sum(known_ms(op, f"bwd_{p}", c) for p in parts) - 0.02 * (len(parts) - 1)
    moved = bytes_in(op, c) + (c.numel_out + weight_numel(op, c)) * BYTES_PER_ELEMENT
    factor = 1.0 if pass_.startswith("fwd") else 1.5
    return 0.02 + factor * (macs(op, c) * 1e-6 + moved * 5e-8)


def synthetic_rows(ops=MCU_OPS, per_op: int = 40, seed: int = 0, networks=("mcunet-5fps",)) -> list[LayerRow]:
    rng = random.Random(seed)
    prior: dict[str, list[sampling.Sample]] = {}
    for s in sampling.shape_prior(networks):
        prior.setdefault(s.op, []).append(s)
    rows = []
    for op in ops:
        for _ in range(per_op):
            if prior.get(op):
                sample = sampling.perturb(rng.choice(prior[op]), rng)
            else:
                sample = sampling.Sample(op, sampling.random_config(CALIBRATION_OPS[op], rng), "random")
            for p in passes_of(op, sample.config):
                rows.append(LayerRow(op, p, sample.config, sample.origin, 0, known_ms(op, p, sample.config), 0.0))
    return rows


def write_profile(root: Path, name: str = "synthetic", rows=None, steps=None) -> Path:
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    rows = synthetic_rows() if rows is None else rows
    steps = [StepRow("mcunet-5fps", "full", 1, 64, 20.0, 0.0), StepRow("mcunet-5fps", "last", 1, 64, 5.0, 0.0)] if steps is None else steps
    (folder / "measurements.csv").write_text(render(LAYER_COLUMNS, rows))
    (folder / "steps.csv").write_text(render(STEP_COLUMNS, steps))
    (folder / "device.json").write_text(json.dumps({
        "name": name, "description": "a synthetic device", "source": "measured", "ram_bytes": 2**30,
        "runtime_overhead_bytes": 2**20, "measurements": "measurements.csv", "steps": "steps.csv",
    }))
    return folder
