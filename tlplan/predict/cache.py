"""Where fitted profiles are cached: plain ``.npz`` arrays, keyed on the data's sha256, never pickles.

``$TLPLAN_CACHE``, else ``$XDG_CACHE_HOME/tlplan``, else ``~/.cache/tlplan``. A cache file that
cannot be read is ignored and rewritten: the cache is a speed-up, never a source of truth.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import numpy as np

from ..errors import BadInputError
from ..fileio import write_atomic_with


def cache_dir() -> Path:
    env = os.environ.get("TLPLAN_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "tlplan"


def fit_path(digest: str, version: int) -> Path:
    return cache_dir() / "fits" / f"{digest}-v{version}.npz"


def load_arrays(path: Path) -> dict[str, np.ndarray] | None:
    """The arrays of a cached fit, or None when there is none or it cannot be read."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError, KeyError):
        return None


def save_arrays(path: Path, arrays: Mapping[str, np.ndarray]) -> bool:
    """Write atomically (temp file + rename); False where the cache folder is not writable."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic_with(path, lambda f: np.savez(f, **arrays))
        return True
    except (OSError, BadInputError):
        return False
