"""Quick adaptation: a measured profile brought to another machine in minutes, not an hour.

``tlplan calibrate --quick --from BASE --name NAME`` keeps BASE's fitted models and times, on this
machine, a small set of layer configurations chosen to matter for the networks the user names
(those that take most of their predicted training step, at batch 1 and 8, plain PyTorch and the
tlplan runtime), plus a few whole steps. On them it fits a correction of BASE's models:

* **a residual model per (op, pass)** with ``MIN_RESIDUAL_ROWS`` rows or more: extremely
  randomised trees on the layer features predicting ``log(measured / BASE's prediction)`` — how
  this machine differs from BASE's, shape by shape (a thread count or a cache size changes small
  and large layers differently);
* **a scale factor** for the other models: the log ratio averaged per model, shrunk toward the
  median over all rows (a model with two rows moves little; one with none takes the median);
* **on the whole steps timed here**: one factor on every corrected layer time (layers timed alone
  and inside a step need not change alike between machines) and the per-step overhead (framework
  calls between layers: per step, per layer, per layer with a backward, per tlplan-runtime layer),
  least squares on relative error, held toward 1 and BASE's terms by a ridge.

Why residual models rather than scale factors alone: on held-out networks they generalised
better (``benchmarks/quick_adaptation.py``; docs/devices.md, "Quick adaptation").

The factors and the overhead are kept in ``device.json`` (``adapted``); the residual models are fitted again on
load from the rows kept beside it (``adaptation.csv``; a second or two, then cached like any fit,
and deterministic: a fixed seed). ``adaptation-steps.csv`` keeps the whole steps the overhead's
factor was fitted on. BASE's data files are copied (the same bytes: BASE's cached fit is reused).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Callable, Mapping, Sequence

import numpy as np

from ..errors import BadInputError
from ..measure.latency import framework_threads
from ..measure.load import LoadWindow, quiet, wait_until_quiet
from ..measure.microbench import CALIBRATION_OPS, Config
from .calibration import Progress, ProgressFn, case_label, check_name, framework_versions, step_resolution, time_step
from .devices import Device, cpu_name, load_device, profiles_dir, resolve_device
from .drift import INDEX_STATISTIC, SpeedIndex, combined, measure_index
from .store import LAYER_COLUMNS, STEP_COLUMNS, LayerRow, StepRow, read_layer_rows, render

ADAPTATION = "adaptation.csv"
ADAPTATION_STEPS = "adaptation-steps.csv"
METHOD = ("residual trees per op and pass (scale factors shrunk toward the median where rows are few); per-step "
          "overhead refitted on whole steps")
#: how strongly an (op, pass) factor is pulled toward the median over all rows: as many rows' weight
SHRINK_ROWS = 2.0
#: the fewest rows an (op, pass) residual model is fitted on (fewer: its scale factor)
MIN_RESIDUAL_ROWS = 8
RESIDUAL_TREES = 60
#: bump when the residual models change: cached adapted fits of another version are not used
ADAPT_VERSION = 1
#: batches the adaptation set's configurations are taken at (a fine-tuning step's smallest and largest)
BATCHES = (1, 8)
#: whole steps: per network, in this order, as long as the step share of the budget lasts
STEP_CASES = (("full", 4, "eager"), ("last", 1, "eager"), ("bias", 8, "tlplan"), ("full", 1, "tlplan"))
STEP_SHARE = 0.3
#: the per-step overhead's terms (``Plan.overhead_terms``), as ``device.json`` names them
OVERHEAD_TERMS = ("per_step", "per_layer", "per_backward_layer", "per_runtime_layer")
#: how strongly the refitted overhead is held to BASE's (a share of what the steps say of each term)
OVERHEAD_RIDGE = 0.1
#: the layers' step factor is kept within these bounds (a handful of odd steps must not run away)
STEP_SCALE_BOUNDS = (0.5, 2.0)
#: the run is cut in slices of about this many seconds, each with its speed index, steps and layers
SLICE_S = 60.0
#: seconds of the budget kept for fitting the correction and writing the profile (about 4 s for
#: 4,000 rows on a 2-core x86) and for starting the process before the clock starts (about 3 s);
#: a fifth of a smaller budget, which times fewer rows (a 30 s budget: 30.6 s wall with a tenth)
FINISH_RESERVE_S = 12.0


@dataclass(frozen=True)
class QuickSettings:
    name: str
    base: str
    budget_s: float = 300.0
    networks: tuple[str, ...] | None = None  # None: the calibration networks of the zoo
    threshold: float = 0.05
    step_share: float = STEP_SHARE
    batches: tuple[int, ...] = BATCHES


@dataclass(frozen=True)
class Correction:
    """What adaptation fitted: factors per (op, pass), the default one, the overhead's, and the
    residual models (not kept in ``device.json``: fitted again from ``adaptation.csv``)."""

    scales: Mapping[tuple[str, str], float]
    default_scale: float
    #: the per-step overhead's coefficients (``OVERHEAD_TERMS``), refitted on the steps timed here
    #: (None: BASE's × ``default_scale``)
    overhead_ms: tuple[float, ...] | None
    residuals: Mapping[tuple[str, str], object] = field(default_factory=dict)
    #: every layer time × this, fitted on the whole steps with the overhead (1: no steps)
    step_scale: float = 1.0

    def to_json(self) -> dict:
        data: dict = {"scales": {f"{op}/{p}": round(v, 5) for (op, p), v in sorted(self.scales.items())},
                      "default_scale": round(self.default_scale, 5), "step_scale": round(self.step_scale, 5)}
        if self.overhead_ms is not None:
            data["overhead_ms"] = {name: round(float(v), 6) for name, v in zip(OVERHEAD_TERMS, self.overhead_ms)}
        return data

    @classmethod
    def from_json(cls, adapted: Mapping) -> "Correction":
        scales = {}
        for key, value in (adapted.get("scales") or {}).items():
            op, _, pass_ = key.rpartition("/")
            scales[(op, pass_)] = float(value)
        overhead = adapted.get("overhead_ms")
        return cls(scales, float(adapted.get("default_scale", 1.0)),
                   None if overhead is None else tuple(float(overhead.get(name, 0.0)) for name in OVERHEAD_TERMS),
                   step_scale=float(adapted.get("step_scale", 1.0)))


def data_files(device: Device) -> tuple[Path, ...]:
    folder = device.folder or Path(".")
    return (folder / ADAPTATION, folder / ADAPTATION_STEPS)


def apply(base, correction: Correction, digest: str | None = None):
    """BASE's fit with the correction applied (a ``FittedProfile``)."""
    from .predictor import FittedProfile

    overhead = (np.asarray(base.overhead) * correction.default_scale if correction.overhead_ms is None
                else np.array(correction.overhead_ms))
    return FittedProfile(base.models, overhead,
                         base.digest if digest is None else digest, MappingProxyType(dict(correction.scales)),
                         correction.default_scale, MappingProxyType(dict(correction.residuals)), correction.step_scale)


def load_adapted(device: Device, base):
    """An adapted profile's fit: BASE's (``base``) with the factors kept in its ``device.json`` and
    the residual models fitted on its ``adaptation.csv`` (cached, keyed on both)."""
    from . import cache
    from .fit import FIT_VERSION
    from .predictor import cached_fit
    from .store import sha256_of

    correction = Correction.from_json(device.adapted or {})
    layers = data_files(device)[0]
    if not layers.is_file():  # factors only (a profile written by hand, or its rows removed)
        return apply(base, correction)
    import hashlib

    digest = hashlib.sha256("\0".join([base.digest, sha256_of(layers), json.dumps(correction.to_json(), sort_keys=True),
                                       f"adapt-v{ADAPT_VERSION}"]).encode()).hexdigest()
    path = cache.fit_path(digest, FIT_VERSION)
    fitted = cached_fit(path, digest)
    if fitted is not None:
        return fitted
    residuals = fit_residuals(base, read_layer_rows(layers))
    fitted = apply(base, replace(correction, residuals=residuals), digest)
    cache.save_arrays(path, fitted.arrays())
    return fitted


# ---- fitting the correction ----------------------------------------------------------------------------


def fit_scales(base, rows: Sequence[LayerRow]) -> tuple[dict[tuple[str, str], float], float]:
    """Per (op, pass) factors (see the module docstring) and the median one."""
    from .predictor import Item

    logs: dict[tuple[str, str], list[float]] = {}
    items = [Item("", r.op, r.pass_, r.config) for r in rows]
    predicted = base.price(items) if items else np.zeros(0)
    for row, item, p in zip(rows, items, predicted):
        if np.isfinite(p) and p > 0 and row.ms > 0:
            logs.setdefault(base.model_key(item), []).append(math.log(row.ms / p))
    every = [v for values in logs.values() for v in values]
    if not every:
        return {}, 1.0
    centre = float(np.median(every))
    scales = {key: math.exp((sum(v) + SHRINK_ROWS * centre) / (len(v) + SHRINK_ROWS)) for key, v in logs.items()}
    return scales, math.exp(centre)


def fit_steps(base, corrected, steps: Sequence[tuple["object", float]]) -> tuple[float, tuple[float, ...] | None]:
    """A factor on every corrected layer time and the per-step overhead's coefficients, fitted on
    ``steps`` ((Plan, measured ms) pairs): least squares on relative error, as calibration fits the
    overhead, with a ridge toward 1 and BASE's coefficients × the layers' median factor (a few
    steps must not move a term they say nothing of). (1, None) without steps.

    Why a factor on the layers: on this machine, layers timed alone slowed from BASE's timings far
    more than whole steps did (a median factor of 1.4 against 1.1: caches and thread pools
    warm inside a step); the steps are what predictions are judged on."""
    if not steps:
        return 1.0, None
    prior = np.concatenate([[1.0], np.asarray(base.overhead, dtype=np.float64) * corrected.default_scale])
    A = np.array([np.concatenate([[float(np.nansum(corrected.price(plan.items)))], plan.overhead_terms]) / ms
                  for plan, ms in steps])
    b = np.ones(len(steps))
    # Marquardt's ridge: each term held to the prior in proportion to how much the steps say of it
    ridge = OVERHEAD_RIDGE * np.diag(np.diag(A.T @ A)) + 1e-12 * np.eye(A.shape[1])
    delta = np.linalg.solve(A.T @ A + ridge, A.T @ (b - A @ prior))
    fitted = prior + delta
    scale = float(min(max(fitted[0], STEP_SCALE_BOUNDS[0]), STEP_SCALE_BOUNDS[1]))
    return scale, tuple(float(v) for v in fitted[1:])


def fit_residuals(base, rows: Sequence[LayerRow], seed: int = 0) -> dict[tuple[str, str], object]:
    """Per (op, pass) with ``MIN_RESIDUAL_ROWS`` rows or more: trees predicting log(measured / BASE)."""
    from sklearn.ensemble import ExtraTreesRegressor

    from .features import feature_matrix
    from .fit import MIN_SAMPLES_LEAF, TreeEnsemble
    from .predictor import Item

    groups: dict[tuple[str, str], list[LayerRow]] = {}
    for row in rows:
        groups.setdefault(base.model_key(Item("", row.op, row.pass_, row.config)), []).append(row)
    out = {}
    for key, group in sorted(groups.items()):
        model = base.models.get(key)
        if model is None or len(group) < MIN_RESIDUAL_ROWS:
            continue
        configs = [r.config for r in group]
        y = np.log(np.array([r.ms for r in group]) / np.maximum(model.predict(configs), 1e-9))
        forest = ExtraTreesRegressor(n_estimators=RESIDUAL_TREES, min_samples_leaf=MIN_SAMPLES_LEAF, random_state=seed,
                                     n_jobs=1)
        forest.fit(feature_matrix(model.op, configs), y)
        out[key] = TreeEnsemble.from_sklearn(forest)
    return out


def fit_correction(base, rows: Sequence[LayerRow], steps: Sequence[tuple["object", float]], *,
                   residual: bool = True) -> Correction:
    """Scales, residual models (``residual``) and, given both, the overhead's factor."""
    scales, default = fit_scales(base, rows)
    residuals = fit_residuals(base, rows) if residual else {}
    layers = apply(base, Correction(scales, default, None, residuals))
    step_scale, overhead = fit_steps(base, layers, steps)
    return Correction(scales, default, overhead, residuals, step_scale)


# ---- what to time ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    op: str
    config: Config
    origin: str
    share: float  # of its network's predicted step (BASE), where it was found


def informative_configs(networks: Sequence[str], pricer, batches: Sequence[int] = BATCHES,
                        runtimes: Sequence[str] = ("eager", "tlplan"), cases=None) -> list[Candidate]:
    """Layer configurations of ``networks``' full training steps, most time first, taken in turn
    from each (network, batch, runtime): the ones that make up most of the steps to predict."""
    from .predictor import StepCases, plan_items

    cases = cases or StepCases()
    queues: list[list[Candidate]] = []
    for network in networks:
        for batch in batches:
            for runtime in runtimes:
                costs = cases.costs(network, "full", batch, step_resolution(network), runtime)
                plan = plan_items(costs.graph, costs)
                ms = np.nan_to_num(pricer.price(plan.items))
                total = float(ms.sum()) or 1.0
                by_config: dict[tuple[str, Config], float] = {}
                for item, value in zip(plan.items, ms):
                    if item.pass_ == "accumulate":
                        continue
                    by_config[(item.op, item.config)] = by_config.get((item.op, item.config), 0.0) + float(value)
                ranked = sorted(by_config.items(), key=lambda kv: -kv[1])
                queues.append([Candidate(op, config, network, value / total) for (op, config), value in ranked])
    seen: set[tuple[str, Config]] = set()
    out: list[Candidate] = []
    while any(queues):
        for queue in queues:
            while queue:
                c = queue.pop(0)
                if (c.op, c.config) not in seen:
                    seen.add((c.op, c.config))
                    out.append(c)
                    break
    return out


# ---- the run ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QuickResult:
    device: Device
    record: Mapping  # what device.json keeps under ``adapted``
    speed_change: float | None  # the reference workload's ms at the end / at the start of the run


def quick(settings: QuickSettings, *, root: Path | None = None, progress: ProgressFn | None = None,
          clock: Callable[[], float] = time.monotonic) -> QuickResult:
    """Adapt profile ``settings.base`` to this machine into ``<root>/<name>/`` (module docstring).

    The budget bounds the run's wall-clock time, all but loading BASE's models (from the cache, or
    fitted once where it has no fit of them): tracing the networks, measuring (in slices of about
    ``SLICE_S``, whole steps at ``step_share`` of each), the closing speed index, fitting and
    writing (``FINISH_RESERVE_S``). ``prepare_s`` in the record: loading and tracing."""
    from .calibration import _check_networks
    from .predictor import Pricer, StepCases, load_fitted, plan_items
    from .sampling import CALIBRATION_NETWORKS

    name = check_name(settings.name)
    root = root or profiles_dir()
    base = resolve_device(settings.base)
    if base.source != "measured" or not base.measurements or base.folder is None:
        raise BadInputError(f"--from {settings.base}: {base.name} is not a measured profile; adapt a profile "
                            "calibrated on a machine (see `tlplan devices`)")
    if base.adapted:
        raise BadInputError(f"--from {base.name}: it is itself adapted from {base.adapted['from']}; adapt that one")
    if base.name == name and base.folder.parent == root:
        raise BadInputError(f"--name {name} would overwrite the profile it adapts; give another name")
    if not (settings.budget_s > 0 and math.isfinite(settings.budget_s)):
        raise BadInputError(f"--budget-s must be positive and finite, not {settings.budget_s:g}")
    networks = tuple(settings.networks or CALIBRATION_NETWORKS)
    _check_networks(networks)
    report = progress or (lambda p: None)
    prepare_start = clock()
    # BASE's models: from the cache, or fitted once (minutes for a large profile; not measuring,
    # so not in the budget, but reported)
    report(Progress("fitting", 0, 1, f"{base.name}'s models (once; cached after)"))
    fitted = load_fitted(base)
    load_s = clock() - prepare_start  # BASE's models: outside the budget
    report(Progress("fitting", 1, 1))
    base_pricer = Pricer(base, fitted)  # BASE as it was: no drift correction (another machine's index)
    from ..measure.runtime_ops import RUNTIME_OPS

    # the tlplan runtime's steps and kernels only where BASE has its ops (else they are priced as PyTorch's)
    runtimes = ("eager", "tlplan") if set(RUNTIME_OPS) <= {op for op, _ in fitted.models} else ("eager",)
    cases = StepCases()
    report(Progress("choosing", 0, len(networks), "tracing the networks"))
    candidates = informative_configs(networks, base_pricer, settings.batches, runtimes, cases)
    report(Progress("choosing", len(networks), len(networks)))
    prepare_s = clock() - prepare_start
    # the budget: everything from the command's start but loading BASE's models (seconds from the
    # cache; minutes the first time), fitting and writing included
    deadline = prepare_start + load_s + settings.budget_s - min(FINISH_RESERVE_S, 0.2 * settings.budget_s)
    start = clock()

    def index(label: str) -> None:
        report(Progress("speed index", len(indices), slices + 1, f"reference workload, {label}"))
        indices.append(measure_index(base.threads, INDEX_STATISTIC))

    # the run in slices, each timing the speed index, then whole steps, then layer configurations:
    # a machine whose speed moves within minutes then moves steps and layers alike (at a run's
    # start the steps alone, as before, once fitted a step factor of 0.81 to a fast spell)
    slices = max(1, round(settings.budget_s / SLICE_S))
    indices: list[SpeedIndex] = []
    step_rows: list[StepRow] = []
    step_plans: list[tuple[object, float]] = []
    layer_rows: list[LayerRow] = []
    configs = 0
    step_queue = [(n, s, b, step_resolution(n), r) for s, b, r in STEP_CASES for n in networks if r in runtimes]
    step_total = len(step_queue)
    queue = list(candidates)
    with framework_threads(base.threads):
        index("at the start")
        # reserved for the closing index: as long as the opening one took
        reserve_s = clock() - start
        end = deadline - reserve_s
        for k in range(slices):
            slice_end = start + (k + 1) * (end - start) / slices
            if clock() >= end or not (queue or step_queue):
                break  # the budget or the work ran out: no more indices back to back
            if k:
                index(f"slice {k + 1} of {slices}")
            step_end = clock() + settings.step_share * max(slice_end - clock(), 0.0)
            # the steps spread over the slices: each takes its share of those left
            for _ in range(math.ceil(len(step_queue) / (slices - k))):
                if clock() >= step_end:
                    break
                case = step_queue.pop(0)
                report(Progress("steps", len(step_rows), step_total, case_label(case)))
                costs = cases.costs(*case)
                ms, share, _ = time_step(*case[:4], threshold=settings.threshold, costs=costs,
                                         statistic=base.statistic, retries=2,
                                         max_wait_s=max(min(step_end - clock(), 30.0), 0.0))
                step_rows.append(StepRow(*case[:4], ms, share, case[4]))
                step_plans.append((plan_items(costs.graph, costs), ms))
            while queue and clock() < slice_end:
                candidate = queue.pop(0)
                report(Progress("layers", configs, configs + len(queue),
                                f"{configs} configurations, {candidate.op} of {candidate.origin}"))
                rows, _ = _time_candidate(candidate, base.statistic, settings.threshold,
                                          max_wait_s=min(max(slice_end - clock(), 0.0), 30.0))
                layer_rows += rows
                configs += 1
        index("at the end")
        elapsed_s = clock() - start
        report(Progress("speed index", len(indices), len(indices)))
    if not layer_rows:
        raise BadInputError(f"the budget of {settings.budget_s:g} s ran out before any layer was timed; give a larger "
                            "--budget-s")
    report(Progress("fitting", 0, 1))
    correction = fit_correction(fitted, layer_rows, step_plans)
    report(Progress("fitting", 1, 1))
    change = indices[-1].ratio_to(indices[0])
    record = {
        "from": base.name, "base_date": base.date or "", "method": METHOD, "networks": ",".join(networks),
        "configs": configs, "rows": len(layer_rows), "steps": len(step_rows),
        "budget_s": round(settings.budget_s, 1), "elapsed_s": round(elapsed_s, 1),
        "prepare_s": round(prepare_s, 1), "speed_indices": len(indices),
        "date": _dt.date.today().isoformat(), **correction.to_json(),
    }
    report(Progress("writing", 0, 1))
    device = _write(root, name, base, record, layer_rows, step_rows, combined(indices))
    report(Progress("writing", 1, 1))
    return QuickResult(device, record, change)


def _time_candidate(candidate: Candidate, statistic: str, threshold: float, *, max_wait_s: float,
                    retries: int = 2) -> tuple[list[LayerRow], float]:
    """Every pass of one configuration, redone while other processes used the CPU (at most ``retries``)."""
    from ..measure.microbench import time_config

    entry = CALIBRATION_OPS[candidate.op]
    spent = 0.0
    for attempt in range(retries + 1):
        wait_until_quiet(threshold, max_wait_s=max_wait_s)
        with LoadWindow() as window:
            measured = time_config(entry, candidate.config, statistic=statistic)
        spent += window.wall_s
        if quiet(window.share, threshold) or attempt == retries:
            return [LayerRow(candidate.op, p, candidate.config, candidate.origin, 0, ms, window.share)
                    for p, ms in measured.ms.items()], spent
    raise AssertionError("unreachable")


def _write(root: Path, name: str, base: Device, record: dict, layer_rows: Sequence[LayerRow],
           step_rows: Sequence[StepRow], index: SpeedIndex) -> Device:
    from .calibration import _write_profile, ram_bytes

    root.mkdir(parents=True, exist_ok=True)
    threads = base.threads or 1
    ram = ram_bytes() or base.ram_bytes
    data = {
        "name": name,
        "description": f"{cpu_name()}, {os.cpu_count() or 1} cores, {ram / 2**30:.1f} GiB RAM, {threads} framework "
                       f"thread{'s' if threads > 1 else ''} (adapted from {base.name} by tlplan calibrate --quick)",
        "source": "measured",
        "ram_bytes": ram,
        "runtime_overhead_bytes": min(base.runtime_overhead_bytes, ram - 1),
        "cpu": cpu_name(),
        "cores": os.cpu_count() or 1,
        "threads": threads,
        "statistic": base.statistic,
        "framework": framework_versions(),
        "date": _dt.date.today().isoformat(),
        "measurements": base.measurements,
        "steps": base.steps,
        "adapted": record,
        "speed_index": index.to_json(),
        "notes": f"{base.name}'s layer models, corrected on {record['configs']} layer configurations and "
                 f"{record['steps']} whole steps timed on this machine ({base.statistic} of runs, fp32, CPU) in "
                 f"{record['elapsed_s']:.0f} s; runtime_overhead_bytes is {base.name}'s.",
    }
    if base.allocator:
        data["allocator"] = dict(base.allocator)
    if base.calibration:
        data["calibration"] = dict(base.calibration)  # how the copied measurements were gathered
    assert base.folder is not None and base.measurements and base.steps
    files = {
        str(base.measurements): (base.folder / base.measurements).read_text(encoding="utf-8"),
        str(base.steps): (base.folder / base.steps).read_text(encoding="utf-8"),
        ADAPTATION: render(LAYER_COLUMNS, layer_rows),
        ADAPTATION_STEPS: render(STEP_COLUMNS, step_rows),
        "device.json": json.dumps(data, indent=2) + "\n",
    }
    return _write_profile(root, name, files)


def adaptation_rows(device: Device) -> tuple[list[LayerRow], list[StepRow]]:
    """The rows an adapted profile's correction was fitted on."""
    from .store import read_step_rows

    layers, steps = data_files(device)
    return read_layer_rows(layers), read_step_rows(steps)
