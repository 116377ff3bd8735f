"""Accuracy of a measured profile on networks it never saw, beside the noise floor of measuring.

A network the profile has data of (a zoo network it was calibrated on) is held out by fitting
the layer models again without the configurations sampled near it (rows whose ``origin`` is it)
and the per-step overhead without its whole steps (leave-one-network-out); any other network (one
of the user's own, ``package.module:factory``) is predicted by the profile as it is. Its training
step is predicted under several schemes and batch sizes and compared with the step measured now.
Reported: MAPE (mean absolute percentage error) and the share of cases within ±10 %, overall, per
network and per runtime — nn-Meter's figures of merit. The cases are the steps calibration times:
plain PyTorch and, where the profile has the tlplan runtime's ops, the tlplan runtime.

Fair on a shared machine: each case is predicted right before its first timing (with drift
correction, the machine's speed is timed again every few minutes for the predictions that
follow), and every case is timed in interleaved rounds (every case once, then every case again,
in a new order), only while the CPU is quiet. The first two timings of a step, minutes apart, say
how well two measurements of the same step agree: the **noise floor**, reported beside the
accuracy (no predictor can be judged more precisely than its measurements repeat). A case whose
rounds disagree by more than 10 % is timed once more. Steps are timed as the profile's were:
summed up by its ``statistic``, with its framework threads. The reference workload is timed at
the start and the end: a machine that changed speed mid-run is reported.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from ..errors import BadInputError
from ..measure.accelerator import CPU, Accelerator, for_profile
from ..measure.latency import framework_threads, summary
from ..measure.runtime_ops import RUNTIME_OPS
from .calibration import (
    RUNTIME_STEP_BATCHES, RUNTIME_STEP_SCHEMES, STEP_BATCHES, STEP_SCHEMES, CaseKey, Progress, ProgressFn, case_label,
    interleaved_rounds, step_cases, time_step,
)
from .devices import Device, load_device
from .drift import Drift
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
    #: each timing of the step, in the order taken (rounds minutes apart): the first two say how
    #: well two measurements of the same step agree (the noise floor)
    timings_ms: tuple[float, ...] = ()

    @property
    def error(self) -> float:
        return (self.predicted_ms - self.measured_ms) / self.measured_ms

    @property
    def repeat_error(self) -> float | None:
        """(second timing − first) / first: how much the step moved between two measurements."""
        if len(self.timings_ms) < 2:
            return None
        return (self.timings_ms[1] - self.timings_ms[0]) / self.timings_ms[0]


@dataclass(frozen=True)
class Evaluation:
    device: str
    cases: tuple[Case, ...]
    seconds: float
    #: how the profile was held out: "leave-one-network-out" (networks in its fit) and/or
    #: "networks outside the fit" (predicted by the whole profile)
    held_out: tuple[str, ...] = ("leave-one-network-out",)
    #: the drift correction each time the machine's speed was measured (empty: none measured)
    drifts: tuple[Drift, ...] = ()
    #: the reference workload's ms at the end of the evaluation / at its start (None: not timed)
    speed_change: float | None = None
    #: cases left out because their scheme does not apply to the network (``blocks:3`` of a net without blocks)
    skipped: tuple[str, ...] = ()

    @property
    def drift_ratios(self) -> tuple[float, ...]:
        """What predictions were scaled by each time (1 where the measured ratio was within the tolerance)."""
        return tuple(d.ratio for d in self.drifts)

    @property
    def drift_measured(self) -> tuple[float, ...]:
        """The reference workload's ms now / at calibration, each time measured."""
        return tuple(d.measured_ratio for d in self.drifts)

    @property
    def drift_tolerance(self) -> float | None:
        """What counted as no change (the profile's; the same every time)."""
        return self.drifts[-1].tolerance if self.drifts else None

    @staticmethod
    def figures(cases: Sequence[Case]) -> dict[str, float]:
        errors = np.array([abs(c.error) for c in cases])
        return {"mape": float(100 * errors.mean()), "within_10": float(100 * (errors <= 0.10).mean()), "cases": len(cases)}

    @property
    def overall(self) -> dict[str, float]:
        return self.figures(self.cases)

    @property
    def noise(self) -> dict[str, float] | None:
        """The noise floor: the first timing of each step taken as the prediction of its second,
        MAPE and share within ±10 % (None where steps were timed once)."""
        errors = np.array([abs(c.repeat_error) for c in self.cases if c.repeat_error is not None])
        if errors.size == 0:
            return None
        return {"mape": float(100 * errors.mean()), "within_10": float(100 * (errors <= 0.10).mean()),
                "cases": int(errors.size)}

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

        how = {"leave-one-network-out": "predicted without the held-out network's samples and steps",
               "networks outside the fit": "networks outside the profile's fit predicted by the whole profile"}
        applied = [r for r in self.drift_ratios if r != 1.0]
        drift = (f"; predictions drift-corrected (times scaled by {min(applied):.2f}-{max(applied):.2f}"
                 f"{', elsewhere not: within the tolerance' if len(applied) < len(self.drift_ratios) else ''})"
                 if applied else "")
        field = {
            "method": f"{' and '.join(self.held_out)}: whole training step (forward, cross-entropy, backward) "
                      f"under {'; '.join(described(r) for r in self.per_runtime)}, "
                      f"{'; '.join(how[h] for h in self.held_out)}, compared with its step measured here, each step "
                      f"timed in interleaved rounds{drift}",
            "mape": round(overall["mape"], 2),
            "within_10": round(overall["within_10"], 1),
            "cases": overall["cases"],
            "networks_evaluated": len(self.per_network),
            "networks": ",".join(self.per_network),
            "per_network": {n: {"mape": round(f["mape"], 2), "within_10": round(f["within_10"], 1), "cases": f["cases"]}
                            for n, f in self.per_network.items()},
            "per_runtime": {r: {"mape": round(f["mape"], 2), "within_10": round(f["within_10"], 1), "cases": f["cases"]}
                            for r, f in self.per_runtime.items()},
            "date": _dt.date.today().isoformat(),
            "seconds": round(self.seconds, 1),
        }
        noise = self.noise
        if noise is not None:
            field["noise_mape"] = round(noise["mape"], 2)
            field["noise_within_10"] = round(noise["within_10"], 1)
        return field

    def to_csv(self) -> str:
        lines = ["network,scheme,batch,resolution,runtime,measured_ms,predicted_ms,error_percent,first_ms,second_ms\n"]
        for c in self.cases:
            first, second = (list(c.timings_ms[:2]) + [None, None])[:2]
            cells = "".join(f",{v:.4f}" if v is not None else "," for v in (first, second))
            lines.append(f"{c.network},{c.scheme},{c.batch},{c.resolution},{c.runtime},{c.measured_ms:.4f},"
                         f"{c.predicted_ms:.4f},{100 * c.error:.2f}{cells}\n")
        return "".join(lines)


def measure_cases(cases: Sequence[CaseKey], *, rounds: int = 3, threshold: float = 0.05,
                  seed: int = 0, progress: ProgressFn | None = None,
                  traced: StepCases | None = None, statistic: str = "median",
                  before_first: Callable[[CaseKey], None] | None = None,
                  between: Callable[[], None] | None = None,
                  accelerator: Accelerator = CPU) -> dict[CaseKey, list[float]]:
    """Every timing of every case over interleaved rounds (each timing's runs summed up by
    ``statistic``); disagreeing cases timed once more. ``before_first(case)`` is called right
    before a case's first timing (to predict it in the same time window), ``between()`` before
    every timing (to re-time the machine's speed now and then).

    Each timing builds its case's model afresh, as calibration does: keeping every case's model
    alive in one process (5.8 GB for the zoo) measured the small networks 9–14 % slower than
    calibration had (the process's memory state, we believe, not the networks)."""
    samples: dict[CaseKey, list[float]] = {c: [] for c in cases}
    traced = traced or StepCases()  # what each scheme trains: traced once per network and batch

    def timed(case: CaseKey) -> float:
        if between is not None:
            between()
        return time_step(*case[:4], threshold=threshold, costs=traced.costs(*case), statistic=statistic,
                         accelerator=accelerator)[0]

    total = len(cases) * rounds
    for done, (_, case) in enumerate(interleaved_rounds(cases, rounds, seed)):
        if progress:
            progress(Progress("measuring", done, total, case_label(case)))
        if not samples[case] and before_first is not None:
            before_first(case)
        samples[case].append(timed(case))
    for case, values in samples.items():
        if len(values) >= 2 and max(values) > 1.10 * min(values):
            samples[case].append(timed(case))
    return samples


#: how often an evaluation times the machine's speed again, for the predictions that follow
DRIFT_REFRESH_S = 120.0


def evaluate(device: Device, *, networks: Sequence[str] | None = None, schemes: Sequence[str] = SCHEMES,
             batches: Sequence[int] = BATCHES, runtime_schemes: Sequence[str] = RUNTIME_STEP_SCHEMES,
             runtime_batches: Sequence[int] = RUNTIME_STEP_BATCHES, rounds: int = 2, threshold: float = 0.05,
             progress: ProgressFn | None = None, measured: dict[CaseKey, float] | None = None,
             runtime_cases: bool | None = None, speed_index: bool = True,
             clock: Callable[[], float] = time.monotonic) -> Evaluation:
    """Accuracy of a measured profile on networks held out of its fit (see the module docstring).

    A network the profile has data of (layer rows sampled near it, or its whole steps) is held
    out by fitting again without them (leave-one-network-out; not possible for an adapted
    profile, whose correction was fitted near it); any other network (one of the user's own) is
    predicted by the profile as it is. Each case is predicted right before its first timing, in
    the same time window; with drift correction on and a speed index in the profile, the
    machine's speed is timed again every ``DRIFT_REFRESH_S`` for the predictions that follow.

    Cases: every network under ``schemes`` × ``batches`` with plain PyTorch (what calibration's
    steps run) and under ``runtime_schemes`` × ``runtime_batches`` with the tlplan runtime
    (``runtime_cases``; by default, where the profile has the runtime's ops). ``measured``: step
    times already measured (by ``measure_cases``), to evaluate several profiles on the same ones.
    ``speed_index``: time the reference workload at the start and the end (``speed_change``)."""
    from . import drift as drift_mod
    from .predictor import Pricer, load_fitted
    from .sampling import CALIBRATION_NETWORKS

    if device.source != "measured" or not device.measurements or device.folder is None:
        raise BadInputError(f"device profile {device.name} is not a measured profile: only measured profiles can be "
                            "evaluated against measurements (run `tlplan calibrate` on the device)")
    t_start = time.perf_counter()
    layer_rows: list[LayerRow] = read_layer_rows(device.folder / device.measurements)
    step_rows: list[StepRow] = read_step_rows(device.folder / str(device.steps))
    in_fit = {r.origin for r in layer_rows} | {r.network for r in step_rows}
    if device.adapted:
        from .adapt import adaptation_rows

        extra_layers, extra_steps = adaptation_rows(device)
        in_fit |= {r.origin for r in extra_layers} | {r.network for r in extra_steps}
    networks = list(networks or CALIBRATION_NETWORKS)
    if device.adapted:
        inside = [n for n in networks if n in in_fit]
        if inside:
            raise BadInputError(f"{device.name} is adapted from {device.adapted['from']} with data of "
                                f"{', '.join(inside)}: evaluate it on networks outside its fit (--networks)")
    if runtime_cases is None:
        runtime_cases = bool({r.op for r in layer_rows} & set(RUNTIME_OPS))
    cases = step_cases(networks, schemes, batches, runtime_schemes if runtime_cases else (), runtime_batches)
    traced = StepCases()
    skipped: list[str] = []
    for case in list(cases):  # a user's network may have no blocks for ``blocks:3``: leave that case out
        try:
            traced.costs(*case)
        except BadInputError as exc:
            skipped.append(f"{case_label(case)}: {exc}")
            cases.remove(case)
    if not cases:
        raise BadInputError("no case to evaluate: " + (skipped[0] if skipped else "no networks"))
    whole = load_fitted(device)
    fits: dict[str, object] = {}

    def fit_for(network: str):
        if network not in in_fit:
            return whole
        if network not in fits:
            if progress:
                progress(Progress("fitting", 0, 1, f"without {network}"))
            fits[network] = fit_profile([r for r in layer_rows if r.origin != network],
                                        [r for r in step_rows if r.network != network], cases=traced)
        return fits[network]

    correcting = speed_index and drift_mod.enabled() and bool(device.speed_index) and drift_mod.same_machine(device)
    state: dict = {"drift": None, "at": -math.inf, "drifts": []}

    def refresh() -> None:
        if correcting and clock() - state["at"] >= DRIFT_REFRESH_S:
            state["drift"] = drift_mod.drift_for(device, fresh=True)
            state["at"] = clock()
            if state["drift"] is not None:
                state["drifts"].append(state["drift"])

    predicted: dict[CaseKey, float] = {}

    def predict(case: CaseKey) -> None:
        refresh()
        costs = traced.costs(*case)
        pricer = Pricer(device, fit_for(case[0]), state["drift"])
        predicted[case] = predict_latency(costs.graph, costs, pricer).step_ms

    start_index = None
    if speed_index and measured is None:
        start_index = drift_mod.measure_index(device.threads, drift_mod.INDEX_STATISTIC)
    if measured is None:
        with framework_threads(device.threads):
            timings = measure_cases(cases, rounds=rounds, threshold=threshold, progress=progress, traced=traced,
                                    statistic=device.statistic, before_first=predict,
                                    accelerator=for_profile(device))  # where it was calibrated
        values = {case: summary(v, device.statistic) for case, v in timings.items()}
    else:
        timings = {case: [] for case in cases}
        values = dict(measured)
    for case in cases:
        if case not in predicted:
            predict(case)
    change = None
    if start_index is not None:
        change = drift_mod.measure_index(device.threads, drift_mod.INDEX_STATISTIC).ratio_to(start_index)
    results = [Case(*case[:4], measured_ms=values[case], predicted_ms=predicted[case], runtime=case[4],
                    timings_ms=tuple(timings.get(case, ()))) for case in cases]
    if progress:
        progress(Progress("fitting", 1, 1))
    held_out = tuple(how for how, any_ in (("leave-one-network-out", any(n in in_fit for n in networks)),
                                           ("networks outside the fit", any(n not in in_fit for n in networks))) if any_)
    return Evaluation(device.name, tuple(results), time.perf_counter() - t_start, held_out,
                      drifts=tuple(state["drifts"]), speed_change=change, skipped=tuple(skipped))


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
