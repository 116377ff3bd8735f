"""A project's own settings: ``[tool.tlplan]`` in ``pyproject.toml``, or ``tlplan.yaml``.

Looked for in the working directory and its parents (the nearest file wins; in one folder,
``pyproject.toml`` before ``tlplan.yaml``). Command-line options override them.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import BadInputError
from .fileio import load_yaml, read_text

#: key -> (type, what it sets)
KEYS: dict[str, tuple[type | tuple[type, ...], str]] = {
    "model": (str, "zoo name or package.module:factory"),
    "resolution": (int, "input height and width"),
    "batch": (int, "batch size"),
    "num_classes": (int, "classes of the task"),
    "runtime": (str, "tlplan, eager or mcu"),
    "precision": (str, "fp32 or fp16"),
    "device": (str, "device profile"),
    "ram": ((str, int), "default budget, e.g. 256KB"),
    "scheme": (str, "default scheme of profile"),
    "optimizer": (str, "sgd, momentum, adam or qas"),
}


@dataclass(frozen=True)
class Settings:
    values: dict[str, Any]
    source: Path | None  # the file they came from

    def get(self, key: str) -> Any:
        return self.values.get(key)


def find_settings(start: Path | None = None) -> Settings:
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        pyproject = folder / "pyproject.toml"
        if pyproject.is_file():
            try:
                data = tomllib.loads(read_text(pyproject, "project file"))
            except (tomllib.TOMLDecodeError, ValueError) as exc:  # ValueError: a 5000-digit number
                raise BadInputError(f"{pyproject}: not valid TOML ({exc}); fix the file") from None
            table = data.get("tool", {}).get("tlplan")
            if table is not None:
                return Settings(_checked(table, f"{pyproject} [tool.tlplan]"), pyproject)
        own = folder / "tlplan.yaml"
        if own.is_file():
            table = load_yaml(read_text(own, "settings file"), str(own)) or {}
            return Settings(_checked(table, str(own)), own)
    return Settings({}, None)


def _checked(table: Any, where: str) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise BadInputError(f"{where}: expected a table of settings")
    for key, value in table.items():
        if key not in KEYS:
            raise BadInputError(f"{where}: unknown key {key!r}; known keys: {', '.join(KEYS)}")
        kind, what = KEYS[key]
        if isinstance(value, bool) or not isinstance(value, kind):
            names = " or ".join(t.__name__ for t in (kind if isinstance(kind, tuple) else (kind,)))
            raise BadInputError(f"{where}: key {key!r} must be {names} ({what}), not {value!r}")
    return dict(table)
