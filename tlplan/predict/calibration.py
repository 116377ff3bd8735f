"""``tlplan calibrate``: time layer configurations and whole training steps on this machine.

Run on the target device itself. Writes ``<profiles>/<name>/`` with ``measurements.csv`` (one
row per pass of each timed configuration), ``steps.csv`` (whole training steps of the zoo
networks, which fit the per-step overhead) and ``device.json``.

* **Where the time goes.** Whole steps first (a fixed list, needed for the overhead fit: every
  step once per round, each round in a new order, so that a slow spell of the machine lands on a
  few timings of many steps rather than on every timing of one network), then
  layer configurations until the budget is spent, in rounds: round 0 samples from the shape prior
  (``tlplan.predict.sampling``); each later round fits the models so far, cross-validates them,
  and spends more samples on the ops whose predictions are worst, near the configurations
  predicted worst (nn-Meter's adaptive sampling).
* **The fastest runs.** Every timing is summed up by ``Settings.statistic``: by default the
  fastest run (of a configuration's runs; of a step's runs over all its rounds), which on a shared
  machine repeats far better than the median (docs/devices.md, "Accuracy"). A profile records it
  (``statistic`` in ``device.json``; older profiles: the median), and what is later timed against
  it (``--add``, ``--evaluate``) is timed the same way, with the same framework threads.
* **Only quiet timings.** Configurations are timed in chunks of about a second; a chunk during
  which other processes took more than ``threshold`` of the CPUs is thrown away and timed again
  once the machine is quiet.
* **A bounded run.** The budget bounds this run's wall-clock time, waiting included: whole steps
  get at most ``step_share`` of it, layer configurations the rest; past it only one whole step and
  every op once (what any profile needs) are still timed.
* **Resumable, never half-written.** Rows are appended to ``<profiles>/.<name>.partial/`` as they
  are measured; an interrupted run picks up from there. The profile folder appears only when
  complete (written beside it, then renamed into place).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Sequence, TypeVar

import numpy as np

from ..errors import BadInputError
from ..fileio import exclusive, write_atomic
from ..measure.accelerator import CPU, Accelerator, for_profile, select_accelerator
from ..measure.allocator import keep_freed_memory
from ..measure.latency import STATISTICS, framework_threads, summary
from ..measure.load import LoadWindow, quiet, wait_until_quiet
from ..measure.microbench import CALIBRATION_OPS, Config, time_config
from ..measure.runtime_ops import RUNTIME_OPS
from . import drift, sampling
from .devices import Device, cpu_name, load_device, profiles_dir
from .features import macs
from .store import (
    LAYER_COLUMNS, MEASUREMENTS, STEP_COLUMNS, STEPS, LayerRow, StepRow, header_line, read_layer_rows,
    read_step_rows, render, row_line,
)

#: whole steps measured for the overhead fit: every zoo network under these schemes and batches
STEP_SCHEMES = ("full", "last", "bias", "norm+last", "blocks:3")
STEP_BATCHES = (1, 4, 8)
#: and run by the tlplan runtime (its kernels swapped in), where its ops are calibrated: they fit
#: the overhead's term for the runtime's layers (each a Python autograd Function)
RUNTIME_STEP_SCHEMES = ("full", "bias", "mobiletl:3", "gradfilter:2:2")
RUNTIME_STEP_BATCHES = (1, 8)
#: the share of a run's budget whole steps may take (layer configurations get the rest)
STEP_SHARE = 0.5
#: when each adaptive round starts, as a share of the layer budget
ROUND_STARTS = (0.0, 0.4, 0.6, 0.8)
RANDOM_SHARE = 0.15  # of round-0 samples drawn uniformly from a box instead of near a network
NAME_OK = set("abcdefghijklmnopqrstuvwxyz0123456789-_.")

if TYPE_CHECKING:
    from ..costs.annotate import CostTable


CaseKey = tuple[str, str, int, int, str]  # a whole step: network, scheme, batch, resolution, runtime


def step_cases(networks: Sequence[str], schemes: Sequence[str], batches: Sequence[int],
               runtime_schemes: Sequence[str] = (), runtime_batches: Sequence[int] = (),
               resolution: int | None = None) -> list[CaseKey]:
    """Whole steps: every network under ``schemes`` × ``batches`` run by plain PyTorch, then under
    ``runtime_schemes`` × ``runtime_batches`` run by the tlplan runtime (``resolution`` None:
    ``step_resolution``)."""
    def res(network: str) -> int:
        return resolution or step_resolution(network)

    return ([(n, s, b, res(n), "eager") for n in networks for s in schemes for b in batches]
            + [(n, s, b, res(n), "tlplan") for n in networks for s in runtime_schemes for b in runtime_batches])


def case_label(case: CaseKey) -> str:
    network, scheme, batch, _, runtime = case
    return f"{network} {scheme} batch {batch}" + ("" if runtime == "eager" else f" ({runtime} runtime)")


def step_resolution(network: str) -> int:
    """Resolution for whole-step timings: the MCU models' own 128; 160 for the ImageNet models."""
    from ..zoo import default_resolution

    res = default_resolution(network) or 224
    return res if res <= 128 else 160


@dataclass(frozen=True)
class Settings:
    name: str
    budget_s: float
    ops: tuple[str, ...] | None = None  # calibration ops to time (None: all registered)
    networks: tuple[str, ...] | None = None  # shape prior and whole steps (None: the zoo)
    step_schemes: tuple[str, ...] = STEP_SCHEMES
    step_batches: tuple[int, ...] = STEP_BATCHES
    runtime_step_schemes: tuple[str, ...] = RUNTIME_STEP_SCHEMES  # timed where the runtime's ops are calibrated
    runtime_step_batches: tuple[int, ...] = RUNTIME_STEP_BATCHES
    step_resolution: int | None = None  # None: ``step_resolution(network)``
    seed: int = 0
    #: largest share of the CPUs other processes may take during a timing: with one framework thread
    #: per core, a neighbour on one core stalls every parallel region, so even a little is too much
    threshold: float = 0.05
    chunk_s: float = 1.0
    step_rounds: int = 3  # timings of each whole step, in interleaved rounds
    #: the share of the budget whole steps may take before the rest of their list is left out
    #: (None: every step of the list, whatever the budget)
    step_share: float | None = STEP_SHARE
    #: how a timing's runs are summed up (a key of ``tlplan.measure.latency.STATISTICS``)
    statistic: str = "min"
    threads: int | None = None  # framework (intra-op) threads while timing; None: as set (torch's default)
    #: where layers and steps are timed: ``cpu`` or ``cuda`` (CUDA events; the profile records it)
    accelerator: str = "cpu"

    def __post_init__(self) -> None:
        if self.accelerator not in ("cpu", "cuda"):
            raise BadInputError(f"unknown accelerator {self.accelerator!r}; use cpu or cuda")
        if self.statistic not in STATISTICS:
            raise BadInputError(f"unknown timing statistic {self.statistic!r}; use one of {', '.join(STATISTICS)}")
        if self.threads is not None and not 1 <= self.threads <= 4 * (os.cpu_count() or 1):
            raise BadInputError(f"--threads must be between 1 and {4 * (os.cpu_count() or 1)}, not {self.threads}")


@dataclass(frozen=True)
class Progress:
    phase: str  # "steps", "layers", "fitting", "writing"
    done: int
    total: int | None
    detail: str = ""


ProgressFn = Callable[[Progress], None]
T = TypeVar("T")


def check_name(name: str) -> str:
    if not name or not set(name) <= NAME_OK or name.startswith("."):
        raise BadInputError(f"profile name {name!r}: use lower-case letters, digits, '-', '_' and '.' (e.g. host-x86-2c)")
    return name


# ---- the machine ----------------------------------------------------------------------------------


def gpu_overhead_bytes(accelerator: Accelerator) -> int:
    """GPU memory a fresh Python takes by creating its CUDA context (and what else holds the GPU now),
    measured; where a fresh Python cannot be started, what is in use on the GPU from this one (its
    own context included: measured too, a little more than a fresh one's)."""
    index = getattr(accelerator, "index", 0)
    code = ("import torch, sys\n"
            f"torch.zeros(1, device='cuda:{index}')\n"
            f"free, total = torch.cuda.mem_get_info({index})\n"
            "print(total - free)\n")
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
        return int(out.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        import torch

        free, total = torch.cuda.mem_get_info(index)  # never a made-up 0: what this process sees in use
        return int(total - free)


def gpu_memory_bytes(accelerator: Accelerator) -> int:
    """The GPU's memory (on a Jetson: the memory it shares with the CPU)."""
    import torch

    return int(torch.cuda.get_device_properties(getattr(accelerator, "index", 0)).total_memory)


def framework_overhead_bytes() -> int:
    """Resident memory of a fresh Python that has imported torch and tlplan, before any tensor."""
    code = (
        "import torch, tlplan, resource, sys\n"
        "rss = 0\n"
        "try:\n"
        "    for line in open('/proc/self/status'):\n"
        "        if line.startswith('VmRSS:'): rss = int(line.split()[1]) * 1024\n"
        "except OSError:\n"
        "    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "    rss = r if sys.platform == 'darwin' else r * 1024\n"
        "print(rss)\n"
    )
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
        return int(out.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return 0


def ram_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def framework_versions() -> dict[str, str]:
    import scipy
    import sklearn
    import torch

    from .. import __version__

    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
            "scipy": scipy.__version__, "scikit-learn": sklearn.__version__, "tlplan": __version__}


# ---- whole steps ------------------------------------------------------------------------------------


def time_step(network: str, scheme: str, batch: int, resolution: int, *, threshold: float, window_s: float = 0.5,
              retries: int = 4, trainable: frozenset[str] | None = None,
              costs: "CostTable | None" = None, statistic: str = "median",
              max_wait_s: float = 600.0, accelerator: Accelerator = CPU) -> tuple[float, float | None, float]:
    """Ms of whole training steps (``step_samples_ms``, summed up by ``statistic``) of a freshly
    built model, redone while the CPU was busy.

    Returns the ms, the other processes' CPU share during the kept run, and the seconds spent
    timing (waiting for a quiet CPU not included). ``trainable``: the scheme's trained parameter
    names, where the caller has them (``StepCases``); else the model is traced to find them.
    ``costs``: the case's cost table, where the caller has it: a tlplan-runtime one times the
    model as the runtime runs it (its modules swapped for the runtime's); else plain PyTorch.

    As many steps as fill ``window_s`` (5 to 30; 3 to 30 for the fastest run): enough samples for a
    stable figure, and a window long enough for ``LoadWindow`` to see whether anything else ran
    meanwhile. ``accelerator``: where the step runs and how it is timed (CUDA events on a GPU).
    """
    import torch

    from ..measure.latency import step_samples_ms
    from ..measure.saved import set_trainable
    from ..zoo import load_model

    model = load_model(network)
    if costs is not None and costs.runtime != "eager":
        from ..measure.latency import prepared_copy

        model = prepared_copy(model, costs)
    else:
        if trainable is None and costs is not None:
            trainable = costs.trainable
        if trainable is None:
            from .predictor import StepCases

            trainable = StepCases().costs(network, scheme, batch, resolution).trainable
        set_trainable(model, trainable)
    model.to(accelerator.device)
    model.train()
    x = torch.randn(batch, 3, resolution, resolution, device=accelerator.device)
    once = max(step_samples_ms(model, x, warmup=1, repeats=1, accelerator=accelerator)[0], 1e-3)  # also the warm-up
    # the fastest of a few runs (over every round) repeats well; a median needs more runs
    fewest, warmup = (3, 0) if statistic == "min" else (5, 1)
    repeats = int(min(30, max(fewest, math.ceil(window_s * 1e3 / once))))
    share: float | None = None
    samples: list[float] = []
    spent = 0.0
    for _ in range(retries):
        wait_until_quiet(threshold, max_wait_s=max_wait_s)
        with LoadWindow() as window:
            samples = step_samples_ms(model, x, warmup=warmup, repeats=repeats, accelerator=accelerator)
        share = window.share
        spent += window.wall_s
        if quiet(share, threshold):
            break
    return summary(samples, statistic), share, spent


# ---- the partial folder -------------------------------------------------------------------------------


class _Partial:
    """``<profiles>/.<name>.partial/``: rows appended as measured, and the run's state."""

    def __init__(self, root: Path, name: str):
        self.dir = root / f".{name}.partial"
        self.layers_path = self.dir / MEASUREMENTS
        self.steps_path = self.dir / STEPS
        self.state_path = self.dir / "state.json"

    def open(self, settings: Settings) -> dict:
        self.dir.mkdir(parents=True, exist_ok=True)
        for path, columns in ((self.layers_path, LAYER_COLUMNS), (self.steps_path, STEP_COLUMNS)):
            if not path.exists() or path.stat().st_size == 0:
                path.write_text(header_line(columns))
            else:
                self._drop_cut_line(path)
        for path, columns in ((self.layers_path, LAYER_COLUMNS), (self.steps_path, STEP_COLUMNS)):
            self._upgrade_header(path, columns)
        if self.state_path.exists():
            try:
                state = json.loads(self.state_path.read_text())
            except (OSError, json.JSONDecodeError):
                state = {}
        else:
            state = {}
        state.setdefault("seed", settings.seed)
        state.setdefault("measured_s", 0.0)
        state.setdefault("started", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
        self.save_state(state)
        return state

    @staticmethod
    def _upgrade_header(path: Path, columns: Sequence[str]) -> None:
        """Rows appended by an older tlplan lack columns added since (``OPTIONAL_COLUMNS``):
        rewrite the file in today's columns, so that new rows can be appended to it."""
        with open(path, encoding="utf-8") as f:
            header = f.readline()
        if header == header_line(columns):
            return
        read = read_layer_rows if columns == LAYER_COLUMNS else read_step_rows
        rows = read(path, allow_truncated_tail=True)  # missing optional columns: their defaults
        write_atomic(path, render(columns, rows))

    @staticmethod
    def _drop_cut_line(path: Path) -> None:
        data = path.read_bytes()
        if data and not data.endswith(b"\n"):
            path.write_bytes(data[: data.rfind(b"\n") + 1])

    def save_state(self, state: dict) -> None:
        write_atomic(self.state_path, json.dumps(state, indent=1))

    def layer_rows(self) -> list[LayerRow]:
        return read_layer_rows(self.layers_path, allow_truncated_tail=True)

    def step_rows(self) -> list[StepRow]:
        return read_step_rows(self.steps_path, allow_truncated_tail=True)

    def append(self, path: Path, rows: Sequence[LayerRow | StepRow]) -> None:
        with open(path, "a", encoding="utf-8") as f:
            f.write("".join(row_line(r.cells()) for r in rows))
            f.flush()
            os.fsync(f.fileno())


# ---- layer sampling rounds ---------------------------------------------------------------------------


def _cv_errors(rows: Sequence[LayerRow], seed: int) -> dict[int, float]:
    """|log(predicted / measured)| of each row, from a 3-fold cross-validated fit per (op, pass)."""
    from .fit import fit_pass_model

    errors: dict[int, float] = {}
    grouped: dict[tuple[str, str], list[int]] = {}
    for i, row in enumerate(rows):
        grouped.setdefault((row.op, row.pass_), []).append(i)
    rng = np.random.default_rng(seed)
    for (op, pass_), idx in grouped.items():
        if len(idx) < 6:
            for i in idx:
                errors[i] = max(errors.get(i, 0.0), 1.0)  # too few to judge: treat as badly known
            continue
        folds = rng.permutation(len(idx)) % 3
        for k in range(3):
            train = [idx[j] for j in range(len(idx)) if folds[j] != k]
            test = [idx[j] for j in range(len(idx)) if folds[j] == k]
            model = fit_pass_model(op, pass_, [rows[i].config for i in train], [rows[i].ms for i in train], seed=seed)
            pred = model.predict([rows[i].config for i in test])
            for i, p in zip(test, pred):
                errors[i] = max(errors.get(i, 0.0), abs(math.log(p / rows[i].ms)))
    return errors


@dataclass
class _Sampler:
    """Draws the next configurations to time: from the prior in round 0, near the worst rows later."""

    ops: tuple[str, ...]
    prior: dict[str, list[sampling.Sample]]
    rng: random.Random
    op_weights: dict[str, float] = field(default_factory=dict)
    parents: dict[str, list[sampling.Sample]] = field(default_factory=dict)  # badly predicted rows, per op
    adaptive: bool = False

    def __post_init__(self) -> None:
        # round 0's share of each op, from how often networks use it: the same for every draw
        self.prior_weights = sampling.prior_weights([s for op in self.ops for s in self.prior.get(op, [])])

    def adapt(self, rows: Sequence[LayerRow], seed: int) -> None:
        errors = _cv_errors(rows, seed)
        per_op: dict[str, list[tuple[float, LayerRow]]] = {}
        for i, row in enumerate(rows):
            per_op.setdefault(row.op, []).append((errors.get(i, 0.0), row))
        base = self.prior_weights
        self.op_weights, self.parents = {}, {}
        for op in self.ops:
            scored = sorted(per_op.get(op, []), key=lambda e: -e[0])
            mean_error = float(np.mean([e for e, _ in scored])) if scored else 1.0
            self.op_weights[op] = base.get(op, 1.0) * max(mean_error, 0.02)
            worst = scored[: max(1, len(scored) // 4)]
            self.parents[op] = [sampling.Sample(op, r.config, r.origin) for _, r in worst]
        self.adaptive = True

    def draw(self) -> sampling.Sample:
        weights = self.op_weights or self.prior_weights
        ops = [op for op in self.ops if weights.get(op, 0) > 0 or op not in weights]
        while True:
            op = self.rng.choices(ops, [weights.get(o, 1.0) for o in ops])[0]
            entry = CALIBRATION_OPS[op]
            roll = self.rng.random()
            if self.adaptive and self.parents.get(op) and roll < 0.8:  # keeps the parent's options
                sample = sampling.perturb(self.rng.choice(self.parents[op]), self.rng, strength=0.5)
            elif self.prior.get(op) and roll < 1 - RANDOM_SHARE:
                sample = sampling.with_random_options(sampling.perturb(self.rng.choice(self.prior[op]), self.rng), self.rng)
            else:
                sample = sampling.with_random_options(
                    sampling.Sample(op, sampling.random_config(entry, self.rng), "random"), self.rng)
            if sampling.affordable(sample.config, macs(op, sample.config)):
                return sample


def _round_of(measured_layers_s: float, layer_budget_s: float) -> int:
    share = measured_layers_s / max(layer_budget_s, 1e-9)
    return max(i for i, start in enumerate(ROUND_STARTS) if share >= start)


# ---- the whole run ---------------------------------------------------------------------------------------


def calibrate(settings: Settings, *, root: Path | None = None, progress: ProgressFn | None = None) -> Device:
    """Measure this machine into ``<root>/<name>/`` (see the module docstring); returns the new profile.

    Interrupting it (Ctrl-C, a crash) leaves only ``<root>/.<name>.partial/``; calling it again
    with the same name resumes from there.
    """
    name = check_name(settings.name)
    root = root or profiles_dir()
    ops = settings.ops or CALIBRATION_OPS.names
    unknown = [op for op in ops if op not in CALIBRATION_OPS]
    if unknown:
        raise BadInputError(f"unknown calibration op(s) {', '.join(unknown)}; known: {', '.join(CALIBRATION_OPS.names)}")
    networks = settings.networks or sampling.CALIBRATION_NETWORKS
    _check_networks(networks)  # before anything is written: a bad name leaves no folder behind
    partial = _Partial(root, name)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BadInputError(f"cannot write the profile under {root}: {exc.strerror or exc}") from None
    with exclusive(root / f".{name}.lock", f"another tlplan calibrate is writing the profile {name} under {root}; "
                   "wait for it", remove=True):
        return _locked_calibrate(settings, root, name, ops, networks, partial, progress)


def _locked_calibrate(settings: Settings, root: Path, name: str, ops: Sequence[str], networks: Sequence[str],
                      partial: "_Partial", progress: ProgressFn | None) -> Device:
    try:
        state = partial.open(settings)
    except OSError as exc:
        raise BadInputError(f"cannot write the profile under {root}: {exc.strerror or exc}") from None
    report = progress or (lambda p: None)
    _keep_timing(state, settings, partial.dir)
    accelerator = select_accelerator(settings.accelerator)  # cuda where PyTorch has none: an error, before any timing
    if "runtime_overhead_bytes" not in state:
        state["runtime_overhead_bytes"] = (gpu_overhead_bytes(accelerator) if accelerator.kind == "cuda"
                                           else framework_overhead_bytes())
    partial.save_state(state)
    with framework_threads(state["threads"]):
        return _calibrate(settings, root, name, ops, networks, partial, state, report, accelerator)


def _check_networks(networks: Sequence[str]) -> None:
    """Every network names a zoo model or an importable ``package.module:factory``."""
    from ..zoo import _resolve_factory, _unknown_name, _zoo_entry

    for network in networks:
        if _zoo_entry(network) is None:
            if ":" not in network:
                raise _unknown_name(network)
            _resolve_factory(network.strip())


def _keep_timing(state: dict, settings: Settings, folder: Path) -> None:
    """The run's statistic and framework threads, kept in its state: a resumed run times as it began."""
    import torch

    if "statistic" not in state and state.get("measured_s", 0.0) > 0:
        state["statistic"] = "median"  # timed by a tlplan from before the option: the median
    if "accelerator" not in state and state.get("measured_s", 0.0) > 0:
        state["accelerator"] = "cpu"  # timed by a tlplan from before the option: the CPU
    wanted = {"statistic": settings.statistic, "threads": settings.threads or torch.get_num_threads(),
              "accelerator": settings.accelerator}
    for key, value in wanted.items():
        if state.setdefault(key, value) != value and (key != "threads" or settings.threads is not None):
            raise BadInputError(f"the interrupted run in {folder} timed with {key} {state[key]}, not {value}: run it "
                                f"again with --{key} {state[key]}, or remove that folder to start afresh")


def _calibrate(settings: Settings, root: Path, name: str, ops: Sequence[str], networks: Sequence[str],
               partial: "_Partial", state: dict, report: ProgressFn, accelerator: Accelerator = CPU) -> Device:
    # whole steps: a fixed list, timed once per round (each round in its own order); the partial
    # file has a row per timing, so an interrupted run knows how many rounds each step has
    timings = Counter(r.key for r in partial.step_rows())
    # runtime steps where all the runtime's ops are timed: one priced in part as PyTorch's would skew its term
    runtime_steps = set(RUNTIME_OPS) <= set(ops)
    cases = step_cases(networks, settings.step_schemes, settings.step_batches,
                       settings.runtime_step_schemes if runtime_steps else (), settings.runtime_step_batches,
                       settings.step_resolution)
    from .predictor import StepCases

    traced = StepCases()  # one trace per network and batch, shared by its schemes
    total = len(cases) * settings.step_rounds
    # the reference workload at the start; again at the end (``_finish``). A CPU workload: a GPU
    # profile has none (its predictions are not drift-corrected)
    if "speed_start" not in state and accelerator.kind == "cpu":
        report(Progress("speed index", 0, 2, "reference workload, at the start"))
        state["speed_start"] = drift.measure_index(state["threads"], drift.INDEX_STATISTIC).to_json()
        partial.save_state(state)

    def index_again() -> None:
        """The reference workload timed again between phases: the profile keeps the median of the
        run's indices, not a moment's (``drift.combined``)."""
        if accelerator.kind == "cpu":
            state.setdefault("speed_mid", []).append(
                drift.measure_index(state["threads"], drift.INDEX_STATISTIC).to_json())
            partial.save_state(state)

    # --budget-minutes bounds this run: whole steps get at most half of what is left, layer
    # configurations the rest. Past it, only what any profile needs is still timed: one whole step,
    # and every op once (seconds, not the minutes the whole step list would take)
    left = max(settings.budget_s - state["measured_s"], 0.0)
    start = time.monotonic()
    deadline = start + left
    for done, (rnd, case) in enumerate(interleaved_rounds(cases, settings.step_rounds, state["seed"] * 7919)):
        report(Progress("steps", done, total, f"round {rnd + 1}: {case_label(case)}"))
        if timings[case] > rnd:
            continue
        if settings.step_share is not None and time.monotonic() >= start + settings.step_share * left \
                and sum(timings.values()):
            break
        ms, share, spent = time_step(*case[:4], threshold=settings.threshold, costs=traced.costs(*case),
                                     statistic=state["statistic"], accelerator=accelerator)
        net, scheme, batch, res, runtime = case
        partial.append(partial.steps_path, [StepRow(net, scheme, batch, res, ms, share, runtime)])
        timings[case] += 1
        state["measured_s"] += spent
        partial.save_state(state)
    report(Progress("steps", total, total))
    index_again()

    # layer configurations, in adaptive rounds, until the budget is spent
    prior = sampling.priors_by_op(ops, sampling.shape_prior(networks))
    steps_s = state["measured_s"] - state.get("layers_s", 0.0)
    configs = _measure_layers(settings, tuple(ops), prior, partial, state, max(settings.budget_s - steps_s, 0.0), report,
                              deadline, accelerator, on_round=index_again)
    _enough(partial, ops, settings)

    report(Progress("writing", 0, 1))
    device = _finish(root, name, partial, state, settings, configs, accelerator)
    report(Progress("writing", 1, 1))
    return device


def _enough(partial: "_Partial", ops: Sequence[str], settings: Settings) -> None:
    """A profile needs every op timed once and a whole step; a budget that ran out first keeps the run."""
    timed = {r.op for r in partial.layer_rows()}
    missing = [op for op in ops if op not in timed]
    if missing or not partial.step_rows():
        what = f"{len(ops) - len(missing)} of {len(ops)} ops" + ("" if partial.step_rows() else " and no whole step")
        raise BadInputError(
            f"the budget of {settings.budget_s / 60:g} minutes ran out with {what} timed; the run is kept in "
            f"{partial.dir}: run the same command with a larger --budget-minutes to go on from there"
        )


def _measure_layers(settings: Settings, ops: tuple[str, ...], prior: dict[str, list[sampling.Sample]], partial: "_Partial",
                    state: dict, layer_budget: float, report: ProgressFn, deadline: float = math.inf,
                    accelerator: Accelerator = CPU, on_round: Callable[[], None] | None = None) -> int:
    """Time layer configurations of ``ops`` in adaptive rounds until ``layer_budget`` seconds of
    measuring are spent, or the ``deadline`` (``time.monotonic()``) passes, appending them to the
    partial folder; returns how many configurations it holds. ``on_round()`` is called as each
    round after the first begins."""
    rows = partial.layer_rows()
    sampler = _Sampler(tuple(ops), prior, random.Random(state["seed"] * 1_000_003 + len(rows)))
    current_round = -1
    configs = len({(r.op, r.config, r.round) for r in rows})
    discarded = 0
    while True:
        # every op at least once, first, so that even a tiny budget gives a model for each
        missing = [op for op in ops if not any(r.op == op for r in rows)]
        if not missing and (state.get("layers_s", 0.0) >= layer_budget or time.monotonic() >= deadline):
            break
        rnd = _round_of(state.get("layers_s", 0.0), layer_budget)
        if rnd != current_round:
            if rnd > 0 and rows:
                report(Progress("fitting", rnd, len(ROUND_STARTS) - 1, f"round {rnd}: finding the worst-predicted shapes"))
                sampler.adapt(rows, state["seed"] + rnd)
                if on_round is not None:
                    on_round()
            current_round = rnd
        chunk: list[sampling.Sample] = []
        chunk_rows: list[LayerRow] = []
        wait_until_quiet(settings.threshold)
        t0 = time.perf_counter()
        with LoadWindow() as window:
            while True:
                sample = sampling.Sample(missing[0], _smallest(missing.pop(0), prior), "random") if missing else sampler.draw()
                m = time_config(CALIBRATION_OPS[sample.op], sample.config, statistic=state["statistic"],
                                accelerator=accelerator)
                chunk.append(sample)
                chunk_rows += [LayerRow(sample.op, p, sample.config, sample.origin, current_round, ms, None)
                               for p, ms in m.ms.items()]
                spent = time.perf_counter() - t0
                if not missing and (spent >= settings.chunk_s or state.get("layers_s", 0.0) + spent >= layer_budget
                                    or time.monotonic() >= deadline):
                    break
        elapsed = time.perf_counter() - t0
        if not quiet(window.share, settings.threshold) and discarded < 3:
            discarded += 1
            continue  # someone else used the CPU meanwhile: drawn again, timed again when quiet
        discarded = 0
        chunk_rows = [replace(r, foreign_cpu=window.share) for r in chunk_rows]
        partial.append(partial.layers_path, chunk_rows)
        rows.extend(chunk_rows)
        configs += len(chunk)
        state["layers_s"] = state.get("layers_s", 0.0) + elapsed
        state["measured_s"] += elapsed
        state["rounds"] = current_round + 1
        partial.save_state(state)
        report(Progress("layers", int(min(state["layers_s"], layer_budget)), int(layer_budget),
                        f"round {current_round}, {configs} configurations"))

    return configs


def _smallest(op: str, prior: dict[str, list[sampling.Sample]]) -> Config:
    """A small, quick configuration of ``op`` (its smallest prior shape at batch 1), for first coverage."""
    entry = CALIBRATION_OPS[op]
    shapes = prior.get(op)
    if shapes:
        config = min(shapes, key=lambda s: s.config.numel_in + s.config.numel_out).config
    else:
        config = entry.conform(Config(1, 16, 8, 8, 16, 8, 8, k=3 if op == "conv2d" else 1))
    return sampling.with_random_options(sampling.Sample(op, config, "random"), random.Random(0)).config


def interleaved_rounds(cases: Sequence[T], rounds: int, seed: int) -> Iterator[tuple[int, T]]:
    """(round, case): every case once per round, each round in a new order (seeded, reproducible)."""
    order = list(cases)
    for rnd in range(rounds):
        random.Random(seed + rnd).shuffle(order)
        yield from ((rnd, case) for case in order)


def combine_steps(rows: Sequence[StepRow], statistic: str) -> list[StepRow]:
    """One row per step, in first-timed order: its timings summed up by ``statistic``, the largest
    foreign share."""
    grouped: dict[tuple, list[StepRow]] = {}
    for r in rows:
        grouped.setdefault(r.key, []).append(r)
    out = []
    for timed in grouped.values():
        shares = [r.foreign_cpu for r in timed if r.foreign_cpu is not None]
        out.append(replace(timed[0], ms=summary([r.ms for r in timed], statistic),
                           foreign_cpu=max(shares) if shares else None))
    return out


def _finish(root: Path, name: str, partial: _Partial, state: dict, settings: Settings, configs: int,
            accelerator: Accelerator = CPU) -> Device:
    """Write the complete profile beside its final place, then rename it into place."""
    layer_rows, step_rows = partial.layer_rows(), combine_steps(partial.step_rows(), state["statistic"])
    on_gpu = accelerator.kind == "cuda"
    speed_index, speed_change = closing_index(state) if not on_gpu else (None, None)
    cores = os.cpu_count() or 1
    threads = int(state["threads"])
    ram = gpu_memory_bytes(accelerator) if on_gpu else ram_bytes()
    host = f"{cpu_name()}, {cores} cores, {threads} framework thread{'s' if threads > 1 else ''}"
    data = {
        "name": name,
        "description": (f"{accelerator.name} (cuda), {ram / 2**30:.1f} GiB; host {host} (measured by tlplan calibrate)"
                        if on_gpu else f"{cpu_name()}, {cores} cores, {ram / 2**30:.1f} GiB RAM, {threads} framework "
                        f"thread{'s' if threads > 1 else ''} (measured by tlplan calibrate)"),
        "source": "measured",
        "ram_bytes": ram,
        "runtime_overhead_bytes": int(state.get("runtime_overhead_bytes", 0)),
        "cpu": cpu_name(),
        "cores": cores,
        "threads": threads,
        "statistic": state["statistic"],
        "accelerator": accelerator.kind,
        "framework": framework_versions(),
        "allocator": dict(keep_freed_memory()),
        "date": _dt.date.today().isoformat(),
        "measurements": MEASUREMENTS,
        "steps": STEPS,
        "calibration": {
            "budget_s": round(settings.budget_s, 1),
            "elapsed_s": round(float(state["measured_s"]), 1),
            "configs": configs,
            "rows": len(layer_rows),
            "steps": len(step_rows),
            "seed": state["seed"],
            "threshold_foreign_cpu": settings.threshold,
            "rounds": state.get("rounds", 1),
            "step_rounds": settings.step_rounds,
        },
        "notes": f"Layer configurations and whole training steps timed on this machine ({state['statistic']} of "
                 "runs, fp32, CPU); runtime_overhead_bytes is the resident memory of Python with torch imported, "
                 "before any tensor. Time spent waiting for a quiet CPU is not counted in elapsed_s.",
    }
    if on_gpu:
        data["gpu"] = accelerator.name
        capability = getattr(accelerator, "capability", None)  # sizes cuBLAS's workspaces in predicted peaks
        if capability is not None:
            data["compute_capability"] = f"{capability[0]}.{capability[1]}"
        data["framework"]["cuda"] = str(_torch_cuda_version())
        data["notes"] = (f"Layer configurations and whole training steps timed on the GPU {accelerator.name} with CUDA "
                         f"events after synchronisation ({state['statistic']} of runs, fp32); ram_bytes is the GPU's "
                         "memory, runtime_overhead_bytes the GPU memory in use once a fresh Python has made its CUDA "
                         "context. No speed index: drift correction is for CPU profiles. Time spent waiting for a "
                         "quiet CPU is not counted in elapsed_s.")
    else:
        data["speed_index"] = speed_index.to_json()
    if speed_change is not None:
        data["calibration"]["speed_change"] = round(speed_change, 4)
    files = {MEASUREMENTS: render(LAYER_COLUMNS, layer_rows), STEPS: render(STEP_COLUMNS, step_rows),
             "device.json": json.dumps(data, indent=2) + "\n"}
    device = _write_profile(root, name, files)
    shutil.rmtree(partial.dir, ignore_errors=True)
    return device


def _torch_cuda_version() -> str | None:
    import torch

    return torch.version.cuda


def closing_index(state: dict) -> tuple[drift.SpeedIndex, float | None]:
    """The reference workload timed again at the end of a run: the profile's speed index (each
    pass's median over the indices timed through the run, what the rows between were timed at)
    and the end's ratio to the start (a machine that changed speed mid-run)."""
    end = drift.measure_index(state["threads"], drift.INDEX_STATISTIC)
    if "speed_start" not in state:
        return end, None
    start = drift.SpeedIndex.from_json(state["speed_start"])
    # a run resumed across a change of the index's statistic: only indices timed like the last count
    run = [i for i in (start, *map(drift.SpeedIndex.from_json, state.get("speed_mid", ())), end)
           if i.statistic == end.statistic]
    return drift.combined(run), end.ratio_to(start) if start.statistic == end.statistic else None


#: a speed change within this share between a run's start and end is the index's own noise
SPEED_CHANGE_NOTED = 0.05


def speed_change_note(change: float | None) -> str | None:
    """A sentence where a run's machine changed speed mid-run (None where it did not)."""
    if change is None or abs(change - 1) < SPEED_CHANGE_NOTED:
        return None
    how = "slower" if change > 1 else "faster"
    return (f"the machine changed speed mid-run: the reference workload ran {100 * abs(change - 1):.0f} % {how} at "
            "the end than at the start (measured here); timings of this run are not all alike")


def _write_profile(root: Path, name: str, files: dict[str, str], keep_from: Path | None = None,
                   drop: Sequence[str] = ()) -> Device:
    """Write ``<root>/<name>/`` whole: beside it first, then renamed into place (an old one is
    replaced only once the new one is complete and loads). ``keep_from``: a folder whose other
    files (an evaluation's cases), but those in ``drop``, are copied along."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=root))
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; a profile is as readable as any folder
        if keep_from is not None:
            for path in keep_from.iterdir():
                if path.is_file() and path.name not in files and path.name not in drop:
                    shutil.copy2(path, tmp / path.name)
        for file_name, text in files.items():
            (tmp / file_name).write_text(text, encoding="utf-8")
        device = load_device(tmp / "device.json")  # what is written must load
        final = root / name
        old = None
        if final.exists():
            old = root / f".{name}.old-{os.getpid()}"
            os.replace(final, old)
        os.replace(tmp, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return replace(device, folder=root / name)


# ---- adding ops to a profile ------------------------------------------------------------------------

#: configurations of the profile timed again when ops are added: how fast the machine is now
RECHECK_CONFIGS = 24


def add_ops(settings: Settings, *, root: Path | None = None,
            progress: ProgressFn | None = None) -> tuple[Device, dict, bool]:
    """Time calibration ops into the existing measured profile ``settings.name``: those it has no
    measurements of (the tlplan runtime's, for a profile calibrated before them), or
    ``settings.ops``. Its other measurements and whole steps are kept, and its evaluation while
    no plain-PyTorch prediction changes: rows of an op it had are replaced, and adding a plain op
    (not one of the runtime's) drops the accuracy and the evaluation's cases.

    First a sample of the profile's own configurations is timed again: the median ratio of now to
    then (``time_vs_profile``) says whether the machine runs as it did at calibration, since the
    new rows are fitted beside rows measured then. Resumable like ``calibrate``. Returns the
    profile, the addition's record (also in ``device.json``, ``additions``) and whether an
    accuracy was dropped."""
    name = check_name(settings.name)
    root = root or profiles_dir()
    path = root / name / "device.json"
    if not path.is_file():
        raise BadInputError(f"no profile {name} under {root} to add to; run `tlplan calibrate --name {name}` first")
    device = load_device(path)
    if device.source != "measured" or not device.measurements or device.folder is None:
        raise BadInputError(f"device profile {name} is not a measured profile: ops can be added only to a profile "
                            "calibrated on the device")
    existing = read_layer_rows(device.folder / device.measurements)
    had = {r.op for r in existing}
    ops = tuple(settings.ops or [op for op in CALIBRATION_OPS.names if op not in had])
    unknown = [op for op in ops if op not in CALIBRATION_OPS]
    if unknown:
        raise BadInputError(f"unknown calibration op(s) {', '.join(unknown)}; known: {', '.join(CALIBRATION_OPS.names)}")
    if not ops:
        raise BadInputError(f"profile {name} already has measurements of every calibration op; name the ops to time "
                            "again with --ops")
    report = progress or (lambda p: None)
    partial = _Partial(root, f"{name}.add")
    try:
        state = partial.open(settings)
    except OSError as exc:
        raise BadInputError(f"cannot write under {root}: {exc.strerror or exc}") from None
    if state.get("ops") not in (None, list(ops)):
        raise BadInputError(f"an interrupted addition of {', '.join(state['ops'])} to {name} is in {partial.dir}: "
                            "run it again with those ops, or remove that folder")
    state["ops"] = list(ops)
    # timed as the profile was: its statistic, its framework threads
    state["statistic"], state["threads"] = device.statistic, device.threads
    accelerator = for_profile(device)  # where the profile was timed
    with framework_threads(device.threads):
        if "time_vs_profile" not in state:
            state["time_vs_profile"], state["rechecked_configs"] = _recheck(existing, ops, settings, device.statistic,
                                                                            report, accelerator)
            partial.save_state(state)
        prior = sampling.priors_by_op(ops, sampling.shape_prior(settings.networks or sampling.CALIBRATION_NETWORKS))
        configs = _measure_layers(settings, ops, prior, partial, state, settings.budget_s, report,
                                  time.monotonic() + max(settings.budget_s - state.get("layers_s", 0.0), 0.0), accelerator)

    report(Progress("writing", 0, 1))
    added = partial.layer_rows()
    layer_rows = [r for r in existing if r.op not in ops] + added
    data = json.loads(path.read_text())
    record = {"ops": ",".join(ops), "date": _dt.date.today().isoformat(), "budget_s": round(settings.budget_s, 1),
              "elapsed_s": round(float(state["measured_s"]), 1), "configs": configs, "rows": len(added),
              "rechecked_configs": state["rechecked_configs"]}
    if state["time_vs_profile"] is not None:
        record["time_vs_profile"] = round(state["time_vs_profile"], 3)
    data["additions"] = [*data.get("additions", []), record]
    # the accuracy stands while no plain-PyTorch prediction changes: runtime ops only, none replaced
    stale = bool(had & set(ops)) or any(op not in RUNTIME_OPS for op in ops)
    dropped = stale and "accuracy" in data
    if stale:
        data.pop("accuracy", None)
    files = {MEASUREMENTS: render(LAYER_COLUMNS, layer_rows), "device.json": json.dumps(data, indent=2) + "\n"}
    result = _write_profile(root, name, files, keep_from=device.folder, drop=("evaluation.csv",) if stale else ())
    shutil.rmtree(partial.dir, ignore_errors=True)
    report(Progress("writing", 1, 1))
    return result, record, dropped


def _recheck(existing: Sequence[LayerRow], ops: Sequence[str], settings: Settings, statistic: str,
             report: ProgressFn, accelerator: Accelerator = CPU) -> tuple[float | None, int]:
    """Median (ms now / ms in the profile) over a sample of the profile's configurations of other ops."""
    by_config: dict[tuple[str, Config], dict[str, float]] = {}
    for r in existing:
        if r.op not in ops:
            by_config.setdefault((r.op, r.config), {})[r.pass_] = r.ms
    keys = sorted(by_config, key=lambda k: (k[0], repr(k[1].as_dict())))
    random.Random(settings.seed).shuffle(keys)
    keys = [k for k in keys if sampling.affordable(k[1], macs(k[0], k[1]))][:RECHECK_CONFIGS]
    ratios = []
    for i, (op, config) in enumerate(keys):
        report(Progress("rechecking", i, len(keys), op))
        for _ in range(3):  # redone, as calibration's chunks are, while other processes use the CPU
            wait_until_quiet(settings.threshold)
            measured = time_config(CALIBRATION_OPS[op], config, statistic=statistic, accelerator=accelerator)
            if quiet(measured.foreign_cpu, settings.threshold):
                break
        now = measured.ms
        ratios += [now[p] / then for p, then in by_config[(op, config)].items() if p in now and then > 0]
    report(Progress("rechecking", len(keys), len(keys)))
    return (float(np.median(ratios)) if ratios else None), len(keys)
