"""How fast this machine runs now against when its profile was measured: the speed index.

A machine's speed moves from day to day and hour to hour (thermal state, neighbours on a shared
host, frequency governors): a profile measured on another day predicts every step too fast or too
slow by the same few percent. So every profile calibrated here carries a **speed index**: a short,
fixed reference workload (``REFERENCE``: a handful of layer configurations calibration already
knows how to time, run with the profile's framework threads, about 2 s) and the ms each of its
passes took at calibration. When a prediction is made with that profile on the machine it was
measured on (same CPU and core count), the workload is timed again and every predicted time is
multiplied by the ratio now / then (the median over the passes: one pass hit by a neighbour does
not move it) where that ratio is beyond the correction's tolerance. Outputs say what was done
(``Drift.note``).

Three things make the index worth trusting on a shared machine, where speed flips within seconds:
it is timed by the fastest run (``INDEX_STATISTIC``: on a 2-core VM, 30 back-to-back indices
spread by 6.6 % timed so, 14.5 % by the median); a profile stores the median of several indices
taken through its run (``combined``), not one taken at a moment that may have been slow or fast;
and a ratio within the tolerance — the index's own noise (``NOISE``), or the machine's variation
during its calibration run (``SpeedIndex.variation``), the larger — is not applied: the machine
showed that much within minutes of its own calibration, so it is no evidence of a change, and
scaling by it would add noise to every prediction.

The measurement is cached for the process and, for ``CACHE_TTL_S``, on disk in the user cache
folder: a command run twice in a minute times the workload once. Correction is switched off with
``set_enabled(False)`` (the CLI's ``--no-drift-correction``) or ``TLPLAN_DRIFT_CORRECTION=0``.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import statistics
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from ..measure.microbench import CALIBRATION_OPS, Config

if TYPE_CHECKING:
    from .devices import Device

#: the reference workload: common op kinds at shapes of the zoo's middle layers, each well under a
#: second to time; every pass the op has is timed
REFERENCE: tuple[tuple[str, Config], ...] = (
    ("conv2d", Config(4, 32, 28, 28, 32, 28, 28, k=3)),
    ("conv2d.pw", Config(4, 64, 28, 28, 128, 28, 28, k=1)),
    ("conv2d.dw", Config(4, 96, 28, 28, 96, 28, 28, k=3, groups=96)),
    ("linear", Config(8, 512, 1, 1, 256, 1, 1)),
    ("batch_norm", Config(4, 64, 28, 28, 64, 28, 28)),
    ("relu6", Config(4, 64, 28, 28, 64, 28, 28)),
)
#: each configuration timed this many times, in interleaved rounds (its statistic over the rounds)
ROUNDS = 5
#: how indices are timed: the fastest run repeats best (see the module docstring); indices stored
#: before this carry the profile's statistic and are timed again with it
INDEX_STATISTIC = "min"
#: a speed ratio r with max(r, 1/r) - 1 below this is the index's own noise (two indices of an
#: unchanged machine) and is not applied
NOISE = 0.05
#: the same for an index stored without a ``variation`` (before it existed), by its statistic: a
#: median-timed index spreads 14.5 % on a shared 2-core VM
NOISE_WITHOUT_VARIATION = {"median": 0.15}
#: the run's variation is this many robust standard deviations of its indices' log ratios to their
#: median (1.4826 × the median absolute deviation): one index in a slow spell does not set it
VARIATION_SDS = 2.0
#: how long a measurement of this machine's speed stays valid in the disk cache
CACHE_TTL_S = 600.0
#: a ratio within this of 1 reads "as fast as at calibration" (the workload's own repeatability)
SAME_SPEED = 0.02
ENV = "TLPLAN_DRIFT_CORRECTION"

#: times one configuration: (op, config, statistic) → ms of each pass. Tests inject a fake one.
Timer = Callable[[str, Config, str], Mapping[str, float]]


@dataclass(frozen=True)
class IndexEntry:
    op: str
    pass_: str
    config: Config
    ms: float

    @property
    def key(self) -> tuple[str, str, Config]:
        return (self.op, self.pass_, self.config)


@dataclass(frozen=True)
class SpeedIndex:
    """The reference workload's ms, pass by pass, and when and how it was timed."""

    entries: tuple[IndexEntry, ...]
    date: str  # ISO date-time (UTC) of the measurement
    threads: int | None
    statistic: str
    seconds: float  # wall-clock time the measurement took
    #: how far the indices timed through the run strayed from their median, as a share
    #: (``VARIATION_SDS`` robust standard deviations): the machine's own short-term speed
    #: variation. None: one index, or stored before it existed
    variation: float | None = None

    @property
    def tolerance(self) -> float:
        """A speed ratio this close to 1, measured against this index, is no evidence of a change
        (see ``Drift.within``): the index's own noise, or the run's variation, the larger."""
        return tolerance(self.variation, self.statistic)

    @property
    def total_ms(self) -> float:
        return float(sum(e.ms for e in self.entries))

    def ratio_to(self, then: "SpeedIndex") -> float | None:
        """ms now / ms then, the median over the passes both timed (None: none in common)."""
        before = {e.key: e.ms for e in then.entries}
        ratios = [e.ms / before[e.key] for e in self.entries if e.key in before and before[e.key] > 0 and e.ms > 0]
        return float(statistics.median(ratios)) if ratios else None

    def to_json(self) -> dict[str, Any]:
        """What ``device.json`` keeps under ``speed_index``."""
        return {
            "date": self.date, "total_ms": round(self.total_ms, 4), "threads": self.threads, "statistic": self.statistic,
            "seconds": round(self.seconds, 2),
            **({} if self.variation is None else {"variation": round(self.variation, 4)}),
            "entries": [{"op": e.op, "pass": e.pass_, **e.config.as_dict(), "ms": round(e.ms, 5)} for e in self.entries],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "SpeedIndex":
        fields = set(Config.field_names())
        entries = tuple(
            IndexEntry(e["op"], e["pass"], Config(**{k: int(v) for k, v in e.items() if k in fields}), float(e["ms"]))
            for e in data.get("entries", ())
        )
        threads = data.get("threads")
        variation = data.get("variation")
        return cls(entries, str(data.get("date", "")), int(threads) if threads else None,
                   str(data.get("statistic", "median")), float(data.get("seconds", 0.0)),
                   None if variation is None else float(variation))


def check_index_field(value: Mapping[str, Any]) -> str | None:
    """What is wrong with a ``speed_index`` object of ``device.json`` (None: nothing)."""
    known = {"date", "total_ms", "threads", "statistic", "seconds", "entries", "variation"}
    unknown = set(value) - known
    if unknown:
        return f"unknown key {sorted(unknown)[0]!r}"
    if not isinstance(value.get("entries"), list) or not value["entries"]:
        return "'entries' must be a non-empty list"
    fields = set(Config.field_names())
    for entry in value["entries"]:
        if not isinstance(entry, dict) or not {"op", "pass", "ms"} <= set(entry):
            return "each entry needs op, pass and ms"
        if set(entry) - fields - {"op", "pass", "ms"}:
            return f"unknown key in an entry: {sorted(set(entry) - fields - {'op', 'pass', 'ms'})[0]!r}"
        if not isinstance(entry["op"], str) or not isinstance(entry["pass"], str):
            return "op and pass must be text"
        ms = entry["ms"]
        if isinstance(ms, bool) or not isinstance(ms, (int, float)) or not math.isfinite(ms) or ms <= 0:
            return "each entry's ms must be a positive number"
        for k in fields & set(entry):
            if isinstance(entry[k], bool) or not isinstance(entry[k], int) or not 0 <= entry[k] < 1 << 31:
                return f"an entry's {k} must be a whole number"
    for k in ("total_ms", "seconds", "variation"):
        v = value.get(k, 0.0)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            return f"{k!r} must be a finite number"
    if value.get("variation", 0.0) < 0:
        return "'variation' must be 0 or more"
    if value.get("statistic", "median") not in ("median", "min"):
        return "'statistic' must be median or min"
    return None


def _time_one(op: str, config: Config, statistic: str) -> Mapping[str, float]:
    from ..measure.microbench import time_config

    return time_config(CALIBRATION_OPS[op], CALIBRATION_OPS[op].conform(config), statistic=statistic).ms


def measure_index(threads: int | None, statistic: str, *, timer: Timer | None = None,
                  reference: Sequence[tuple[str, Config]] = REFERENCE, rounds: int = ROUNDS) -> SpeedIndex:
    """Time the reference workload now, with ``threads`` framework threads, each pass summed up by
    ``statistic`` over ``rounds`` interleaved rounds (a few seconds on a small CPU)."""
    from ..measure.latency import framework_threads, summary

    timer = timer or _time_one
    samples: dict[tuple[str, str, Config], list[float]] = {}
    t0 = time.perf_counter()
    with framework_threads(threads) as used:
        for _ in range(rounds):
            for op, config in reference:
                config = CALIBRATION_OPS[op].conform(config)
                for pass_, ms in timer(op, config, statistic).items():
                    samples.setdefault((op, pass_, config), []).append(float(ms))
    entries = tuple(IndexEntry(op, p, c, summary(v, statistic)) for (op, p, c), v in samples.items())
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    return SpeedIndex(entries, now, threads if threads is not None else used, statistic, time.perf_counter() - t0)


def tolerance(variation: float | None, statistic: str) -> float:
    """The index's own noise, or the run's ``variation``, the larger (an index stored without a
    variation: its statistic's noise)."""
    if variation is None:
        return NOISE_WITHOUT_VARIATION.get(statistic, NOISE)
    return max(NOISE, variation)


def combined(indices: Sequence[SpeedIndex]) -> SpeedIndex:
    """The index a run's rows are compared with later: each pass's median over the indices timed
    through the run (in logs, so two give their geometric mean), dated and timed as the first,
    with the run's ``variation``: how far its indices strayed from that median."""
    first = indices[0]
    values: dict[tuple[str, str, Config], list[float]] = {}
    for index in indices:
        for e in index.entries:
            values.setdefault(e.key, []).append(math.log(e.ms))
    entries = tuple(replace(e, ms=math.exp(statistics.median(values[e.key]))) for e in first.entries)
    stored = replace(first, entries=entries)
    if len(indices) < 2:
        return stored
    logs = [math.log(i.ratio_to(stored) or 1.0) for i in indices]
    mad = statistics.median(abs(v - statistics.median(logs)) for v in logs)
    return replace(stored, variation=math.expm1(VARIATION_SDS * 1.4826 * mad))


# ---- what a prediction is scaled by --------------------------------------------------------------------


@dataclass(frozen=True)
class Drift:
    """The correction applied to predictions made with ``device`` on this machine."""

    device: str
    measured_ratio: float  # ms of the reference workload now / at calibration
    reference_date: str  # when the profile's index was timed
    measured_at: str  # when it was timed again (ISO, UTC)
    #: the machine's own speed variation during calibration (the profile index's ``variation``)
    variation: float | None = None
    #: how the profile's index was timed (an index without ``variation`` takes that statistic's noise)
    statistic: str = INDEX_STATISTIC

    @property
    def tolerance(self) -> float:
        """A ratio this close to 1 is no evidence that the machine changed speed: the index's own
        noise, or the variation the machine showed within its calibration run, the larger."""
        return tolerance(self.variation, self.statistic)

    @property
    def within(self) -> bool:
        """Whether max(r, 1/r) - 1 is below the tolerance (a change as large either way; the
        boundary itself is a change)."""
        return abs(math.log(self.measured_ratio)) < math.log1p(self.tolerance) - 1e-9

    @property
    def ratio(self) -> float:
        """What predicted times are multiplied by: the measured ratio, or 1 within ``tolerance``."""
        return 1.0 if self.within else self.measured_ratio

    @property
    def note(self) -> str:
        change = self.measured_ratio - 1
        if abs(change) < SAME_SPEED:
            return "machine as fast as at calibration; times not scaled"
        speed = f"machine {100 * abs(change):.0f} % {'slower' if change > 0 else 'faster'} than at calibration"
        if not self.within:
            return f"{speed}; times scaled by {self.ratio:.2f}"
        if self.variation is not None and self.variation > NOISE:
            return (f"{speed}, within its own variation during calibration ({100 * self.tolerance:.0f} %); "
                    "times not scaled")
        return f"{speed}, within the speed index's own noise ({100 * self.tolerance:.0f} %); times not scaled"

    def to_json(self) -> dict[str, Any]:
        return {"ratio": round(self.ratio, 4), "measured_ratio": round(self.measured_ratio, 4),
                "tolerance": round(self.tolerance, 4), "note": self.note, "reference_date": self.reference_date,
                "measured_at": self.measured_at}


_enabled: bool | None = None  # None: as the environment says
_MEASURED: dict[str, tuple[float, SpeedIndex]] = {}  # cache key → (time.time() when measured, index)


def set_enabled(enabled: bool | None) -> None:
    """Switch drift correction on or off for this process (None: back to ``$TLPLAN_DRIFT_CORRECTION``, default on)."""
    global _enabled
    _enabled = enabled


def enabled() -> bool:
    if _enabled is not None:
        return _enabled
    return os.environ.get(ENV, "1").strip().lower() not in ("0", "off", "no", "false")


def same_machine(device: "Device") -> bool:
    """Whether ``device`` was measured on a machine like this one: the CPU and core count it records."""
    from .devices import cpu_name

    return device.source == "measured" and device.cpu == cpu_name() and device.cores == (os.cpu_count() or 1)


def reference_of(device: "Device") -> SpeedIndex | None:
    return SpeedIndex.from_json(device.speed_index) if device.speed_index else None


def _cache_key(device: "Device", then: SpeedIndex) -> str:
    import hashlib

    text = json.dumps([device.name, str(device.folder), then.date, then.threads, then.statistic,
                       sorted((e.op, e.pass_, repr(e.config.as_dict())) for e in then.entries)])
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _disk_path(key: str):
    from .cache import cache_dir

    return cache_dir() / "speed" / f"{key}.json"


def _from_disk(key: str, now_s: float) -> tuple[float, SpeedIndex] | None:
    try:
        data = json.loads(_disk_path(key).read_text())
        at = float(data["measured_s"])
        if not 0 <= now_s - at <= CACHE_TTL_S:
            return None
        return at, SpeedIndex.from_json(data["index"])
    except (OSError, ValueError, KeyError, TypeError):
        return None  # the cache is a speed-up: unreadable is as good as absent


def _to_disk(key: str, at: float, index: SpeedIndex) -> None:
    from ..errors import BadInputError
    from ..fileio import write_atomic

    path = _disk_path(key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps({"measured_s": at, "index": index.to_json()}))
    except (OSError, BadInputError):
        pass


def current_index(device: "Device", then: SpeedIndex, *, timer: Timer | None = None,
                  clock: Callable[[], float] = time.time, fresh: bool = False) -> SpeedIndex:
    """The reference workload timed now (or within ``CACHE_TTL_S``, from this process or the disk
    cache), as the profile's was: its threads and statistic. ``fresh``: time it again regardless."""
    key = _cache_key(device, then)
    now_s = clock()
    if not fresh:
        hit = _MEASURED.get(key)
        if hit is not None and 0 <= now_s - hit[0] <= CACHE_TTL_S:
            return hit[1]
        disk = _from_disk(key, now_s)
        if disk is not None:
            _MEASURED[key] = disk
            return disk[1]
    index = measure_index(then.threads, then.statistic, timer=timer,
                          reference=tuple((e.op, e.config) for e in _configs(then)))
    _MEASURED[key] = (now_s, index)
    _to_disk(key, now_s, index)
    return index


def _configs(index: SpeedIndex) -> list[IndexEntry]:
    """One entry per configuration of ``index`` (its passes are timed together)."""
    seen: dict[tuple[str, Config], IndexEntry] = {}
    for e in index.entries:
        seen.setdefault((e.op, e.config), e)
    return list(seen.values())


def drift_for(device: "Device", *, timer: Timer | None = None, fresh: bool = False) -> Drift | None:
    """The correction for predictions made with ``device`` now: None where correction is off, the
    profile has no speed index (calibrated before it existed) or was measured on another machine."""
    if not enabled() or not device.speed_index or not same_machine(device):
        return None
    then = reference_of(device)
    assert then is not None
    now = current_index(device, then, timer=timer, fresh=fresh)
    ratio = now.ratio_to(then)
    if ratio is None:
        return None
    return Drift(device.name, ratio, then.date, now.date, then.variation, then.statistic)


def clear_cache() -> None:
    """Forget this process's measurements (the disk cache expires on its own)."""
    _MEASURED.clear()
