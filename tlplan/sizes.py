"""Memory sizes as people write them, and as tlplan writes them back: ``256KB``, ``256KiB``, ``0.5MB``, ``1GiB``, plain bytes.

KB, MB and GB are 1024-based here, as on MCU datasheets (KiB, MiB, GiB too).
"""

from __future__ import annotations

import re

from .errors import BadInputError

_UNITS = {"": 1, "B": 1, "K": 1024, "KB": 1024, "KIB": 1024, "M": 1024**2, "MB": 1024**2, "MIB": 1024**2,
          "G": 1024**3, "GB": 1024**3, "GIB": 1024**3}
#: the largest size tlplan takes (2**60 bytes: an exabyte)
MAX_BYTES = 2**60
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([A-Za-z]*)\s*$")


def parse_size(text: str) -> int:
    """Bytes in ``text``; a one-line BadInputError for anything else (``256XB``, ``-1KB``, empty)."""
    shown = text if len(text or "") <= 40 else text[:37] + "..."
    match = _PATTERN.match(text or "")
    unit = match.group(2).upper() if match else None
    if not match or unit not in _UNITS:
        raise BadInputError(
            f"size {shown!r} is not understood; write e.g. 256KB, 0.5MB, 1GiB or a number of bytes (KB = 1024 bytes)"
        )
    value = float(match.group(1)) * _UNITS[unit]
    if not value < MAX_BYTES:  # a 400-digit number is inf as a float
        raise BadInputError(f"size {shown!r} is larger than any device's memory (at most {MAX_BYTES // 1024**5} PB)")
    if value < 1:
        raise BadInputError(f"size {shown!r} must be at least one byte")
    return int(value)


def human_bytes(n: int | float) -> str:
    """1536 → '1.5 KB'; units of 1024."""
    value = float(n)
    for unit in ("B", "KB", "MB"):
        # compare the value as printed, so 1048575 B reads 1.00 MB and not 1,024.00 KB
        if abs(round(value, 0 if unit == "B" else 2)) < 1024:
            return f"{value:,.0f} {unit}" if unit == "B" else f"{value:,.2f} {unit}"
        value /= 1024
    return f"{value:,.2f} GB"
