"""Leave-one-network-out accuracy of a measured profile: how well it predicts networks it never saw.

For each zoo network X: fit the layer models without the configurations sampled near X (rows
whose ``origin`` is X) and the per-step overhead without X's whole steps, then predict X's
training step under several schemes and batch sizes and compare with X's step measured now.
Reported: MAPE (mean absolute percentage error) and the share of cases within ±10 %, overall, per
network and per runtime — nn-Meter's figures of merit, on networks never seen in fitting. The
cases are the steps calibration times: plain PyTorch and, where the profile has the tlplan
runtime's ops, the tlplan runtime (its kernels swapped in). Profiles calibrated before
calibration timed runtime steps have none of them in their fit.

Measurements are taken in interleaved rounds (every case once, then every case again, in a new
order) and only while the CPU is quiet; a case whose rounds disagree by more than 10 % is timed
again. They are timed as the profile's steps were: summed up by its ``statistic`` (the fastest run
of all rounds, or the median of the rounds' medians for older profiles), with its framework threads.
"""

from __future__ import annotations

import datetime as _dt
import json
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..errors import BadInputError
from ..measure.latency import framework_threads, summary
from ..measure.runtime_ops import RUNTIME_OPS
from .calibration import (
    RUNTIME_STEP_BATCHES, RUNTIME_STEP_SCHEMES, STEP_BATCHES, STEP_SCHEMES, CaseKey, Progress, ProgressFn, case_label,
    interleaved_rounds, step_cases, time_step,
)
from .devices import Device, load_device
from .predictor import StepCases, fit_profile, predict_latency
from .store import LayerRow, StepRow, read_layer_rows, read_step_rows

SCHEMES, BATCHES = STEP_SCHEMES, STEP_BATCHES  # the cases calibration measured, held out one network at a time
EVALUATION_CSV = "evaluation.csv"



@dataclass(frozen=True)
class Case:
    network: str
    scheme: str
    batch: int
    resolution: int
    measured_ms: float
    predicted_ms: float
    runtime: str = "eager"

    @property
    def error(self) -> float:
        return (self.predicted_ms - self.measured_ms) / self.measured_ms


@dataclass(frozen=True)
class Evaluation:
    device: str
    cases: tuple[Case, ...]
    seconds: float

    @staticmethod
    def figures(cases: Sequence[Case]) -> dict[str, float]:
        errors = np.array([abs(c.error) for c in cases])
        return {"mape": float(100 * errors.mean()), "within_10": float(100 * (errors <= 0.10).mean()), "cases": len(cases)}

    @property
    def overall(self) -> dict[str, float]:
        return self.figures(self.cases)

    @property
    def per_network(self) -> dict[str, dict[str, float]]:
        nets = dict.fromkeys(c.network for c in self.cases)
        return {n: self.figures([c for c in self.cases if c.network == n]) for n in nets}

    @property
    def per_runtime(self) -> dict[str, dict[str, float]]:
        runtimes = dict.fromkeys(c.runtime for c in self.cases)
        return {r: self.figures([c for c in self.cases if c.runtime == r]) for r in runtimes}

    def accuracy_field(self) -> dict:
        """What ``device.json`` keeps under ``accuracy``."""
        overall = self.overall

        def described(runtime: str) -> str:
            cases = [c for c in self.cases if c.runtime == runtime]
            return (f"{runtime}: schemes {', '.join(sorted({c.scheme for c in cases}))}, batches "
                    f"{', '.join(str(b) for b in sorted({c.batch for c in cases}))}")

        return {
            "method": "leave-one-network-out over the zoo: whole training step (forward, cross-entropy, backward) "
                      f"under {'; '.join(described(r) for r in self.per_runtime)}, predicted without the "
                      "held-out network's samples and steps, compared with its step measured here",
            "mape": round(overall["mape"], 2),
            "within_10": round(overall["within_10"], 1),
            "cases": overall["cases"],
            "networks_evaluated": len(self.per_network),
            "per_network": {n: {"mape": round(f["mape"], 2), "within_10": round(f["within_10"], 1), "cases": f["cases"]}
                            for n, f in self.per_network.items()},
            "per_runtime": {r: {"mape": round(f["mape"], 2), "within_10": round(f["within_10"], 1), "cases": f["cases"]}
                            for r, f in self.per_runtime.items()},
            "date": _dt.date.today().isoformat(),
            "seconds": round(self.seconds, 1),
        }

    def to_csv(self) -> str:
        lines = ["network,scheme,batch,resolution,runtime,measured_ms,predicted_ms,error_percent\n"]
        for c in self.cases:
            lines.append(f"{c.network},{c.scheme},{c.batch},{c.resolution},{c.runtime},{c.measured_ms:.4f},"
                         f"{c.predicted_ms:.4f},{100 * c.error:.2f}\n")
        return "".join(lines)


def measure_cases(cases: Sequence[CaseKey], *, rounds: int = 3, threshold: float = 0.05,
                  seed: int = 0, progress: ProgressFn | None = None,
                  traced: StepCases | None = None, statistic: str = "median") -> dict[CaseKey, float]:
    """Step ms of every case over interleaved rounds (each round's runs and then the rounds summed
    up by ``statistic``); disagreeing cases timed once more.

    Each timing builds its case's model afresh, as calibration does: keeping every case's model
    alive in one process (5.8 GB for the zoo) measured the small networks 9–14 % slower than
    calibration had (the process's memory state, we believe, not the networks)."""
    samples: dict[CaseKey, list[float]] = {c: [] for c in cases}
    traced = traced or StepCases()  # what each scheme trains: traced once per network and batch

    def timed(case: CaseKey) -> float:
        return time_step(*case[:4], threshold=threshold, costs=traced.costs(*case), statistic=statistic)[0]

    total = len(cases) * rounds
    for done, (_, case) in enumerate(interleaved_rounds(cases, rounds, seed)):
        if progress:
            progress(Progress("measuring", done, total, case_label(case)))
        samples[case].append(timed(case))
    for case, values in samples.items():
        if len(values) >= 2 and max(values) > 1.10 * min(values):
            samples[case].append(timed(case))
    return {case: summary(v, statistic) for case, v in samples.items()}


def evaluate(device: Device, *, networks: Sequence[str] | None = None, schemes: Sequence[str] = SCHEMES,
             batches: Sequence[int] = BATCHES, runtime_schemes: Sequence[str] = RUNTIME_STEP_SCHEMES,
             runtime_batches: Sequence[int] = RUNTIME_STEP_BATCHES, rounds: int = 3, threshold: float = 0.05,
             progress: ProgressFn | None = None, measured: dict[CaseKey, float] | None = None,
             runtime_cases: bool | None = None) -> Evaluation:
    """Leave-one-network-out evaluation of a measured profile (see the module docstring).

    Cases: every network under ``schemes`` × ``batches`` with plain PyTorch (what calibration's
    steps run) and under ``runtime_schemes`` × ``runtime_batches`` with the tlplan runtime
    (``runtime_cases``; by default, where the profile has the runtime's ops). ``measured``: step
    times already measured (by ``measure_cases``), to evaluate several profiles on the same ones."""
    from .sampling import CALIBRATION_NETWORKS

    if device.source != "measured" or not device.measurements or device.folder is None:
        raise BadInputError(f"device profile {device.name} is not a measured profile: only measured profiles can be "
                            "evaluated against measurements (run `tlplan calibrate` on the device)")
    t_start = time.perf_counter()
    layer_rows: list[LayerRow] = read_layer_rows(device.folder / device.measurements)
    step_rows: list[StepRow] = read_step_rows(device.folder / str(device.steps))
    networks = list(networks or CALIBRATION_NETWORKS)
    if runtime_cases is None:
        runtime_cases = bool({r.op for r in layer_rows} & set(RUNTIME_OPS))
    cases = step_cases(networks, schemes, batches, runtime_schemes if runtime_cases else (), runtime_batches)
    traced = StepCases()
    if measured is None:
        with framework_threads(device.threads):
            measured = measure_cases(cases, rounds=rounds, threshold=threshold, progress=progress, traced=traced,
                                     statistic=device.statistic)
    results: list[Case] = []
    for i, held_out in enumerate(networks):
        if progress:
            progress(Progress("fitting", i, len(networks), f"without {held_out}"))
        fitted = fit_profile([r for r in layer_rows if r.origin != held_out],
                             [r for r in step_rows if r.network != held_out], cases=traced)
        for case in cases:
            if case[0] != held_out:
                continue
            costs = traced.costs(*case)
            prediction = predict_latency(costs.graph, costs, device, fitted=fitted)
            results.append(Case(*case[:4], measured_ms=measured[case], predicted_ms=prediction.step_ms, runtime=case[4]))
    if progress:
        progress(Progress("fitting", len(networks), len(networks)))
    return Evaluation(device.name, tuple(results), time.perf_counter() - t_start)


def write_accuracy(device: Device, evaluation: Evaluation) -> Device:
    """Store the figures in the profile's ``device.json`` (atomically) and the cases beside it."""
    from ..fileio import write_atomic

    assert device.folder is not None
    path = device.folder / "device.json"
    data = json.loads(path.read_text())
    data["accuracy"] = evaluation.accuracy_field()
    write_atomic(path, json.dumps(data, indent=2) + "\n")
    write_atomic(device.folder / EVALUATION_CSV, evaluation.to_csv())
    return load_device(path)
