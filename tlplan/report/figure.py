"""Shared by the picture reporters: matplotlib without a display, pictures written atomically."""

from __future__ import annotations

import io
from pathlib import Path

from ..fileio import write_atomic_bytes


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


#: what a file name's suffix asks for (anything else: PNG)
FORMATS = {".png": "png", ".svg": "svg", ".pdf": "pdf", ".jpg": "jpg", ".jpeg": "jpg"}


def save_png(fig, path: Path) -> None:
    """Write ``fig`` in the format its name asks for (``x.svg`` is SVG; PNG unless the suffix says)."""
    buf = io.BytesIO()
    fig.savefig(buf, format=FORMATS.get(Path(path).suffix.lower(), "png"))
    pyplot().close(fig)
    write_atomic_bytes(Path(path), buf.getvalue())
