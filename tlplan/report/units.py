"""Number formatting shared by the text reporters. KB = 1024 bytes, as on MCU datasheets."""

from __future__ import annotations

KB = 1024
MB = 1024 * 1024


def kb(n: int | float) -> str:
    return f"{n / KB:,.1f}"


def human_bytes(n: int | float) -> str:
    """1536 → '1.5 KB'; units of 1024."""
    value = float(n)
    for unit in ("B", "KB", "MB"):
        # compare the value as printed, so 1048575 B reads 1.00 MB and not 1,024.00 KB
        if abs(round(value, 0 if unit == "B" else 2)) < 1024:
            return f"{value:,.0f} {unit}" if unit == "B" else f"{value:,.2f} {unit}"
        value /= 1024
    return f"{value:,.2f} GB"


def mmacs(n: int) -> str:
    return f"{n / 1e6:,.2f}"


def count(n: int) -> str:
    return f"{n:,}"


def ms(v: float | None) -> str:
    return "-" if v is None else f"{v:,.3f}"


def shape(s: tuple[int, ...] | list[int]) -> str:
    return "×".join(str(d) for d in s)
