"""Device profiles: ``profiles/<name>/device.json`` files, validated on load (JSON, never pickles)."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

from ..errors import BadInputError, TlplanError, UnknownDeviceError
from ..fileio import read_text
from ..measure.accelerator import cpu_name  # noqa: F401 - this module's callers ask it here

SOURCES = ("measured", "datasheet")
ACCELERATORS = ("cpu", "cuda")  # where a measured profile may have been timed
_NUMBER = (int, float)
_REQUIRED = {"name": str, "description": str, "source": str, "ram_bytes": int}
_OPTIONAL = {
    "runtime_overhead_bytes": int,
    "peak_flops_fp32": _NUMBER,
    "peak_flops_fp16": _NUMBER,
    "memory_bandwidth_bytes_per_s": _NUMBER,
    "date": str,
    "notes": str,
    "references": str,
    # the machine a measured profile was calibrated on
    "cpu": str,
    "cores": int,
    "threads": int,
    # where a measured profile was timed: "cpu" (absent: cpu) or "cuda", and the GPU's name
    "accelerator": str,
    "gpu": str,
    "compute_capability": str,  # the GPU's, "MAJOR.MINOR" (e.g. "8.7"): sizes cuBLAS's workspaces
    "statistic": str,  # how a timing's runs were summed up: "min" or "median" (absent: median)
    "framework": dict,  # {"python": "3.11.9", "torch": "2.13.0", ...}
    "allocator": dict,  # how malloc was set while timing (tlplan.measure.allocator)
    # a measured profile's data files (in the profile's folder) and how they were gathered
    "measurements": str,
    "steps": str,
    "calibration": dict,
    # leave-one-network-out accuracy written by `tlplan calibrate --evaluate`
    "accuracy": dict,
    # the datasheet roofline (see tlplan.predict.roofline)
    "bytes_per_element": int,
    "efficiency_compute": dict,
    "efficiency_memory": dict,
    "layer_overhead_s": _NUMBER,
    "anchors": list,
    # ops timed into the profile later (`tlplan calibrate --name NAME --add`), one entry a run
    "additions": list,
    # the reference workload's ms at calibration (tlplan.predict.drift): predictions on this machine
    # are scaled by how much slower or faster it runs now
    "speed_index": dict,
    # a profile adapted from another one (`tlplan calibrate --quick --from BASE`): the base, the
    # adaptation set, its size and the correction fitted on it (tlplan.predict.adapt)
    "adapted": dict,
}
#: the keys each nested object may have, and their types
_NESTED = {
    "framework": (None, str),
    "allocator": (None, (str, int)),
    "calibration": ({"budget_s", "elapsed_s", "configs", "rows", "steps", "seed", "threshold_foreign_cpu", "rounds",
                     "step_rounds", "speed_change"}, _NUMBER),
    "efficiency_compute": (None, _NUMBER),
    "efficiency_memory": (None, _NUMBER),
}
_ACCURACY_NUMBERS = {"mape", "within_10", "cases", "networks_evaluated", "seconds", "noise_mape", "noise_within_10"}
_ACCURACY_TEXT = {"date", "method", "networks"}
_ADAPTED_TEXT = {"from", "method", "networks", "date", "base_date"}
_ADAPTED_NUMBERS = {"configs", "rows", "steps", "budget_s", "elapsed_s", "default_scale", "prepare_s", "speed_indices",
                    "step_scale"}
_ANCHOR_KEYS = {"model": str, "published_ms": _NUMBER, "predicted_ms": _NUMBER, "role": str, "assumption": str}
_ADDITION_KEYS = {"ops": str, "date": str, "budget_s": _NUMBER, "elapsed_s": _NUMBER, "configs": _NUMBER,
                  "rows": _NUMBER, "time_vs_profile": _NUMBER, "rechecked_configs": _NUMBER}
#: the list fields of device.json: what one entry is called in errors, and its keys' types
_LISTS = {"anchors": ("an anchor", _ANCHOR_KEYS), "additions": ("an addition", _ADDITION_KEYS)}


@dataclass(frozen=True)
class Device:
    name: str
    description: str
    source: str  # "measured" on the device, or "datasheet" figures
    ram_bytes: int
    runtime_overhead_bytes: int = 0  # resident before any tensor (framework, CUDA context)
    peak_flops_fp32: float | None = None
    peak_flops_fp16: float | None = None
    memory_bandwidth_bytes_per_s: float | None = None
    date: str | None = None
    notes: str | None = None
    references: str | None = None
    cpu: str | None = None
    cores: int | None = None
    threads: int | None = None
    statistic: str = "median"  # of a timing's runs (tlplan.measure.latency.STATISTICS)
    accelerator: str = "cpu"  # where a measured profile was timed: "cpu" or "cuda" (tlplan.measure.accelerator)
    gpu: str | None = None  # the GPU it was timed on (accelerator cuda)
    compute_capability: str | None = None  # the GPU's (a Jetson's, a calibrated GPU's), e.g. "8.7"
    framework: Mapping[str, str] | None = None
    allocator: Mapping[str, Any] | None = None
    measurements: str | None = None  # file name of the layer measurements CSV, in ``folder``
    steps: str | None = None  # file name of the whole-step measurements CSV, in ``folder``
    calibration: Mapping[str, float] | None = None
    accuracy: Mapping[str, Any] | None = None
    bytes_per_element: int | None = None
    efficiency_compute: Mapping[str, float] | None = None
    efficiency_memory: Mapping[str, float] | None = None
    layer_overhead_s: float | None = None
    anchors: tuple[Mapping[str, Any], ...] | None = None
    additions: tuple[Mapping[str, Any], ...] | None = None
    speed_index: Mapping[str, Any] | None = None
    adapted: Mapping[str, Any] | None = None
    folder: Path | None = field(default=None, compare=False)  # where device.json was read from
    origin: str = field(default="", compare=False)  # shipped, user, TLPLAN_PROFILES: which root it came from

    @property
    def usable_ram_bytes(self) -> int:
        return self.ram_bytes - self.runtime_overhead_bytes

    @property
    def predicts(self) -> bool:
        """Whether the profile has what latency prediction needs (measurements, or a datasheet peak)."""
        if self.source == "measured":
            return self.measurements is not None
        return self.peak_flops_fp32 is not None


def shipped_profiles_dir() -> Path:
    """The profiles that ship inside the package (datasheet figures, and machines measured for it)."""
    from importlib.resources import files

    return Path(str(files("tlplan") / "profiles"))


def user_profiles_dir() -> Path:
    """The user's own profiles (``tlplan calibrate`` writes there): the platform's user data folder."""
    import platformdirs

    return platformdirs.user_data_path("tlplan") / "profiles"


def profiles_dir() -> Path:
    """Where new profiles are written: ``$TLPLAN_PROFILES``, else the user's folder."""
    env = os.environ.get("TLPLAN_PROFILES")
    if env:
        return Path(env)
    return user_profiles_dir()


def profile_roots() -> list[tuple[Path, str]]:
    """The folders profiles are read from, first wins on a name, each with what it is: only
    ``$TLPLAN_PROFILES`` where it is set, else the user's folder, then the shipped ones."""
    env = os.environ.get("TLPLAN_PROFILES")
    if env:
        return [(Path(env), "TLPLAN_PROFILES")]
    return [(user_profiles_dir(), "user"), (shipped_profiles_dir(), "shipped")]


def load_device(path: Path) -> Device:
    try:
        data = json.loads(read_text(path, "device profile", limit=1024 * 1024))
    except (json.JSONDecodeError, RecursionError) as exc:
        raise BadInputError(f"device profile {path}: not valid JSON ({str(exc).splitlines()[0][:80]}); fix or remove the file") from None
    if not isinstance(data, dict):
        raise BadInputError(f"device profile {path}: expected a JSON object")
    fields: dict[str, Any] = {}
    for key, value in data.items():
        kind = _REQUIRED.get(key) or _OPTIONAL.get(key)
        if kind is None:
            raise BadInputError(f"device profile {path}: unknown field {key!r}")
        if not isinstance(value, kind) or isinstance(value, bool):
            raise BadInputError(f"device profile {path}: field {key!r} has the wrong type ({type(value).__name__})")
        fields[key] = _checked_nested(path, key, value)
    missing = [k for k in _REQUIRED if k not in fields]
    if missing:
        raise BadInputError(f"device profile {path}: missing field(s) {', '.join(missing)}")
    if fields["source"] not in SOURCES:
        raise BadInputError(f"device profile {path}: source must be one of {', '.join(SOURCES)}")
    if fields["ram_bytes"] <= 0:
        raise BadInputError(f"device profile {path}: ram_bytes must be positive")
    if fields.get("statistic", "median") not in ("median", "min"):
        raise BadInputError(f"device profile {path}: statistic must be median or min, not {fields['statistic']!r}")
    if fields.get("accelerator", "cpu") not in ACCELERATORS:
        raise BadInputError(f"device profile {path}: accelerator must be one of {', '.join(ACCELERATORS)}, "
                            f"not {fields['accelerator']!r}")
    if "compute_capability" in fields:
        from ..memory.cuda import parse_capability

        try:
            parse_capability(fields["compute_capability"])
        except ValueError:
            raise BadInputError(f"device profile {path}: compute_capability must be MAJOR.MINOR (e.g. \"8.7\"), "
                                f"not {fields['compute_capability']!r}") from None
    if fields.get("threads", 1) < 1:
        raise BadInputError(f"device profile {path}: threads must be at least 1")
    for key in ("peak_flops_fp32", "peak_flops_fp16", "memory_bandwidth_bytes_per_s", "bytes_per_element", "cores"):
        if key in fields and not fields[key] > 0:  # a rate of 0 divides a roofline by zero
            raise BadInputError(f"device profile {path}: {key} must be positive, not {fields[key]!r}")
    for key in ("layer_overhead_s", "runtime_overhead_bytes"):
        if key in fields and not fields[key] >= 0:  # a negative overhead predicts negative times
            raise BadInputError(f"device profile {path}: {key} must be 0 or more, not {fields[key]!r}")
    if fields.get("runtime_overhead_bytes", 0) >= fields["ram_bytes"]:
        raise BadInputError(f"device profile {path}: runtime_overhead_bytes must be less than ram_bytes")
    if fields["source"] == "measured" and ("measurements" in fields) != ("steps" in fields):
        raise BadInputError(f"device profile {path}: a measured profile names both its measurements and its steps file, or neither")
    for key in ("measurements", "steps"):
        name = fields.get(key)
        if name is not None and (Path(name).name != name or name.startswith(".")):
            raise BadInputError(f"device profile {path}: {key} must be a file name in the profile's folder, not {name!r}")
    return Device(**fields, folder=path.parent)


def _finite(v: Any) -> bool:
    """A finite number; a whole one of at most 63 bits (a 300-digit count is no device's)."""
    if isinstance(v, bool) or not isinstance(v, _NUMBER):
        return False
    return abs(v) < 1 << 63 if isinstance(v, int) else math.isfinite(v)


def _checked_nested(path: Path, key: str, value: Any) -> Any:
    """Nested objects are as strict as the top level: known keys, right types, finite numbers."""

    def fail(problem: str) -> BadInputError:
        return BadInputError(f"device profile {path}: field {key!r}: {problem}")

    def number(k: str, v: Any) -> float:
        if not _finite(v):
            raise fail(f"{k!r} must be a finite number, not {v!r}")
        return v

    def scalar(k: str, v: Any, numbers: set[str], texts: set[str]) -> bool:
        """Checks ``k`` if it is one of the object's number or text keys; False when it is neither."""
        if k in numbers:
            number(k, v)
        elif k in texts:
            if not isinstance(v, str):
                raise fail(f"{k!r} must be text")
        else:
            return False
        return True

    if isinstance(value, (int, float)) and not isinstance(value, bool) and not _finite(value):
        raise fail("not a finite number")
    if key in _NESTED:
        allowed, kind = _NESTED[key]
        for k, v in value.items():
            if allowed is not None and k not in allowed:
                raise fail(f"unknown key {k!r}")
            if kind is _NUMBER:
                number(k, v)
            elif not isinstance(v, kind) or isinstance(v, bool):
                raise fail(f"{k!r} must be text" if kind is str else f"{k!r} must be text or a whole number")
        if key.startswith("efficiency_") and not all(0 < v <= 1 for v in value.values()):
            raise fail("efficiencies must be in (0, 1]")
        return dict(value)
    if key == "accuracy":
        for k, v in value.items():
            if scalar(k, v, _ACCURACY_NUMBERS, _ACCURACY_TEXT):
                continue
            if k in ("per_network", "per_runtime"):
                if not isinstance(v, dict) or not all(isinstance(n, dict) for n in v.values()):
                    raise fail(f"{k!r} must map names to objects")
                for figures in v.values():
                    for fk, fv in figures.items():
                        if fk not in ("mape", "within_10", "cases"):
                            raise fail(f"unknown key {fk!r} in {k!r}")
                        number(fk, fv)
            else:
                raise fail(f"unknown key {k!r}")
        return dict(value)
    if key == "speed_index":
        from .drift import check_index_field

        problem = check_index_field(value)
        if problem:
            raise fail(problem)
        return dict(value)
    if key == "adapted":
        for k, v in value.items():
            if scalar(k, v, _ADAPTED_NUMBERS, _ADAPTED_TEXT):
                continue
            if k == "scales":
                if not isinstance(v, dict):
                    raise fail("'scales' must map op/pass to a factor")
                for sk, sv in v.items():
                    if not number(sk, sv) > 0:
                        raise fail(f"scale {sk!r} must be positive")
            elif k == "overhead_ms":
                terms = ("per_step", "per_layer", "per_backward_layer", "per_runtime_layer")
                if not isinstance(v, dict) or set(v) - set(terms):
                    raise fail(f"'overhead_ms' must map {', '.join(terms)} to ms")
                for sk, sv in v.items():
                    number(sk, sv)
            else:
                raise fail(f"unknown key {k!r}")
        if not isinstance(value.get("from"), str):
            raise fail("'from' (the base profile) is required")
        return dict(value)
    if key in _LISTS:
        what, keys = _LISTS[key]
        entries = []
        for item in value:
            if not isinstance(item, dict):
                raise fail(f"each entry must be an object ({what})")
            for k, v in item.items():
                kind = keys.get(k)
                if kind is None:
                    raise fail(f"unknown key {k!r} in {what}")
                if kind is str and not isinstance(v, str):
                    raise fail(f"{k!r} must be text")
                if kind is _NUMBER:
                    number(k, v)
            entries.append(dict(item))
        return tuple(entries)
    return value


def list_devices(root: Path | None = None, broken: list[str] | None = None) -> list[Device]:
    """Every profile under ``root`` (None: every root of ``profile_roots``, a name found in an
    earlier root hiding a later one's, whatever its case), each saying where it came from.

    With ``broken`` (a list), a profile that does not load is left out and its error appended
    there, so one damaged folder does not stop every command; without it, it is an error."""
    roots = [(root, "given")] if root is not None else profile_roots()
    found: dict[str, Device] = {}
    for folder, origin in roots:
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob("*/device.json")):
            try:
                device = replace(load_device(path), origin=origin)
            except BadInputError as exc:
                if broken is None:
                    raise
                broken.append(str(exc))
                continue
            found.setdefault(device.name.lower(), device)
    return sorted(found.values(), key=lambda d: d.folder.name if d.folder else d.name)


def this_machine(root: Path | None = None, accelerator: Any = None) -> Device | None:
    """A measured profile of the machine tlplan runs on, if one exists: timed on the CPU with the same
    CPU, cores and framework threads; or, where ``accelerator`` is a GPU (``tlplan.measure.accelerator``),
    timed on a GPU of the same name."""
    import torch

    cpu, cores, threads = cpu_name(), os.cpu_count(), torch.get_num_threads()
    kind = getattr(accelerator, "kind", "cpu")
    try:
        devices = list_devices(root)
    except TlplanError:  # a damaged profile elsewhere is not this call's business
        return None
    for device in devices:
        if device.source != "measured" or not device.predicts or device.accelerator != kind:
            continue
        if kind == "cuda" and device.gpu == accelerator.name:
            return device
        if kind == "cpu" and (device.cpu, device.cores, device.threads) == (cpu, cores, threads):
            return device
    return None


#: names people use for a family, resolved to the profile a new user most likely has
ALIASES = {"jetson": "jetson-orin-nano"}


def resolve_device(name: "str | Device", root: Path | None = None) -> Device:
    """A device by exact name, family alias (``jetson``) or unique prefix (case-insensitive); a
    ``Device`` is returned as it is (resolved once, passed on).

    Anything else is a one-line UnknownDeviceError listing the known (or the matching) names.
    """
    if isinstance(name, Device):
        return name
    broken: list[str] = []
    devices = list_devices(root, broken)  # a damaged profile elsewhere does not stop this lookup
    if broken and not any(d.name.lower() == name.strip().lower() for d in devices):
        for problem in broken:  # ... unless it may be the one asked for
            if f"/{name.strip()}/" in problem:
                raise BadInputError(problem)
    wanted = name.strip().lower()
    by_name = {d.name.lower(): d for d in devices}
    if wanted in by_name:
        return by_name[wanted]
    alias = ALIASES.get(wanted)
    if alias in by_name:
        return by_name[alias]
    matches = [d for key, d in by_name.items() if key.startswith(wanted)] if wanted else []
    if len(matches) == 1:
        return matches[0]
    known = ", ".join(d.name for d in devices) or "none installed"
    if len(matches) > 1:
        raise UnknownDeviceError(f"device {name!r} is ambiguous: {', '.join(d.name for d in matches)}; give more of the name")
    raise UnknownDeviceError(f"unknown device {name!r}; known devices: {known} (see `tlplan devices`)")


def resolution_note(name: str, device: Device) -> str | None:
    """One line saying which profile a short or family name resolved to (None for an exact name)."""
    if name.strip().lower() == device.name.lower():
        return None
    why = "the default Jetson profile" if name.strip().lower() in ALIASES else "unique prefix"
    return f"device {name!r} is {device.name} ({why}, {device.source})"
