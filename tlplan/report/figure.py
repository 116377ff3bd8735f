"""Shared by the picture reporters: matplotlib without a display, PNGs written atomically."""

from __future__ import annotations

import io
from pathlib import Path

from ..fileio import write_atomic_bytes


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    pyplot().close(fig)
    write_atomic_bytes(Path(path), buf.getvalue())
