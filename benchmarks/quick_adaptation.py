"""Quick adaptation: which correction generalises to networks it never saw, scale factors or a residual model?

Offline, from stored measurements only (no timing, so no machine noise): the shipped profile
``host-x86-2c`` (2 threads, median) is the base; ``host-x86-2c-1t`` (1 thread, the fastest run,
calibrated the same day) stands for the "new machine", whose layer rows and whole steps are
known. An adaptation set is drawn as ``calibrate --quick`` would have timed it: ``--configs``
configurations sampled near half the zoo networks, and the quick run's whole steps of those
networks. Each correction is fitted on it and judged on the other half of the networks: their
layer rows, and their whole steps (plain PyTorch and the tlplan runtime), against the 1-thread
profile's measurements. Both halves take a turn.

    .venv/bin/python benchmarks/quick_adaptation.py [--configs 300] [--seed 0]

Corrections compared:

* ``none``: the base as it is;
* ``global``: one factor for every layer and the overhead (the median ratio);
* ``scale``: per (op, pass) factors shrunk toward the median, overhead factor fitted on the steps;
* ``residual``: per (op, pass) extremely randomised trees on the layer features predicting
  log(measured / base), where a model has 8 rows or more (else its scale), overhead factor fitted
  on the steps given them (what ``tlplan.predict.adapt`` ships).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from types import MappingProxyType

import numpy as np

from tlplan.predict import adapt
from tlplan.predict.devices import resolve_device
from tlplan.predict.predictor import FittedProfile, Item, StepCases, load_fitted
from tlplan.predict.sampling import CALIBRATION_NETWORKS
from tlplan.predict.store import read_layer_rows, read_step_rows

QUICK_STEPS = {(s, b, r) for s, b, r in adapt.STEP_CASES}


def figures(errors) -> tuple[float, float]:
    e = np.abs(np.array(errors))
    return float(100 * e.mean()), float(100 * (e <= 0.10).mean())


def run(configs: int, seed: int) -> None:
    base_device, target = resolve_device("host-x86-2c"), resolve_device("host-x86-2c-1t")
    t0 = time.perf_counter()
    base = load_fitted(base_device)
    print(f"base fit loaded in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    rows = read_layer_rows(target.folder / target.measurements)
    steps = read_step_rows(target.folder / target.steps)
    cases = StepCases(trust_code=False)
    networks = list(CALIBRATION_NETWORKS)
    random.Random(seed).shuffle(networks)
    halves = [networks[:5], networks[5:]]
    results: dict[str, dict[str, list[float]]] = {}
    for turn, (adapt_on, held) in enumerate(((halves[0], halves[1]), (halves[1], halves[0]))):
        rng = random.Random(seed + turn)
        by_config: dict[tuple, list] = {}
        for r in rows:
            if r.origin in adapt_on:
                by_config.setdefault((r.op, r.config), []).append(r)
        keys = sorted(by_config, key=repr)
        rng.shuffle(keys)
        adaptation = [r for k in keys[:configs] for r in by_config[k]]
        adapt_steps = [(cases.plan(*s.key), s.ms) for s in steps
                       if s.network in adapt_on and (s.scheme, s.batch, s.runtime) in QUICK_STEPS]
        scale = adapt.apply(base, adapt.fit_correction(base, adaptation, adapt_steps, residual=False))
        shipped = adapt.fit_correction(base, adaptation, adapt_steps)
        residual = adapt.apply(base, shipped)
        g = shipped.default_scale
        glob = FittedProfile(base.models, base.overhead * g, base.digest, MappingProxyType({}), g)
        methods = {"none": base, "global": glob, "scale": scale, "residual": residual}
        held_rows = [r for r in rows if r.origin in held]
        items = [Item("", r.op, r.pass_, r.config) for r in held_rows]
        measured = np.array([r.ms for r in held_rows])
        held_steps = [s for s in steps if s.network in held]
        print(f"turn {turn + 1}: adapted on {', '.join(adapt_on)} ({len({(r.op, r.config) for r in adaptation})} "
              f"configurations, {len(adaptation)} rows, {len(adapt_steps)} steps); judged on {', '.join(held)} "
              f"({len(held_rows)} layer rows, {len(held_steps)} steps)")
        for name, model in methods.items():
            layer_err = np.nan_to_num(model.price(items)) / measured - 1
            step_err = []
            for s in held_steps:
                plan = cases.plan(*s.key)
                predicted = float(np.nansum(model.price(plan.items))) + model.overhead_ms(plan)
                step_err.append(predicted / s.ms - 1)
            res = results.setdefault(name, {"layers": [], "steps": []})
            res["layers"] += list(layer_err)
            res["steps"] += step_err
            lm, lw = figures(layer_err)
            sm, sw = figures(step_err)
            print(f"  {name:9s} layers MAPE {lm:5.1f} %, {lw:3.0f} % within ±10 %;  steps MAPE {sm:5.1f} %, "
                  f"{sw:3.0f} % within ±10 %, mean error {100 * float(np.mean(step_err)):+.1f} %")
    print("both turns:")
    for name, res in results.items():
        lm, lw = figures(res["layers"])
        sm, sw = figures(res["steps"])
        print(f"  {name:9s} layers MAPE {lm:5.1f} %, {lw:3.0f} % within ±10 %;  steps MAPE {sm:5.1f} %, {sw:3.0f} % "
              f"within ±10 % ({len(res['steps'])} steps)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", type=int, default=300, help="configurations in the adaptation set")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    run(args.configs, args.seed)


if __name__ == "__main__":
    main()
