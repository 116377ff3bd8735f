"""Device profiles: ``profiles/<name>/device.json`` files, validated on load (JSON, never pickles)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import BadInputError, UnknownDeviceError

SOURCES = ("measured", "datasheet")
_REQUIRED = {"name": str, "description": str, "source": str, "ram_bytes": int}
_OPTIONAL = {
    "runtime_overhead_bytes": int,
    "peak_flops_fp32": (int, float),
    "peak_flops_fp16": (int, float),
    "memory_bandwidth_bytes_per_s": (int, float),
    "date": str,
    "notes": str,
    "references": str,
}


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

    @property
    def usable_ram_bytes(self) -> int:
        return self.ram_bytes - self.runtime_overhead_bytes


def profiles_dir() -> Path:
    """``$TLPLAN_PROFILES``, else the ``profiles/`` folder shipped beside the package."""
    env = os.environ.get("TLPLAN_PROFILES")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "profiles"


def load_device(path: Path) -> Device:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise BadInputError(f"device profile {path}: cannot read it ({exc}); fix or remove the file") from None
    if not isinstance(data, dict):
        raise BadInputError(f"device profile {path}: expected a JSON object")
    fields: dict[str, Any] = {}
    for key, value in data.items():
        kind = _REQUIRED.get(key) or _OPTIONAL.get(key)
        if kind is None:
            raise BadInputError(f"device profile {path}: unknown field {key!r}")
        if not isinstance(value, kind) or isinstance(value, bool):
            raise BadInputError(f"device profile {path}: field {key!r} has the wrong type ({type(value).__name__})")
        fields[key] = value
    missing = [k for k in _REQUIRED if k not in fields]
    if missing:
        raise BadInputError(f"device profile {path}: missing field(s) {', '.join(missing)}")
    if fields["source"] not in SOURCES:
        raise BadInputError(f"device profile {path}: source must be one of {', '.join(SOURCES)}")
    if fields["ram_bytes"] <= 0:
        raise BadInputError(f"device profile {path}: ram_bytes must be positive")
    return Device(**fields)


def list_devices(root: Path | None = None) -> list[Device]:
    root = root or profiles_dir()
    if not root.is_dir():
        return []
    return [load_device(p) for p in sorted(root.glob("*/device.json"))]


#: names people use for a family, resolved to the profile a new user most likely has
ALIASES = {"jetson": "jetson-orin-nano"}


def resolve_device(name: str, root: Path | None = None) -> Device:
    """A device by exact name, family alias (``jetson``) or unique prefix (case-insensitive).

    Anything else is a one-line UnknownDeviceError listing the known (or the matching) names.
    """
    devices = list_devices(root)
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
