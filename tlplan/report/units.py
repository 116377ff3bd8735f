"""Number formatting shared by the text reporters. KB = 1024 bytes, as on MCU datasheets."""

from __future__ import annotations

from ..sizes import human_bytes  # noqa: F401  (the library's messages use it too)

KB = 1024
MB = 1024 * 1024


def kb(n: int | float) -> str:
    return f"{n / KB:,.1f}"


def mmacs(n: int) -> str:
    return f"{n / 1e6:,.2f}"


def count(n: int) -> str:
    return f"{n:,}"


def ms(v: float | None) -> str:
    return "-" if v is None else f"{v:,.3f}"


def shape(s: tuple[int, ...] | list[int]) -> str:
    return "×".join(str(d) for d in s)
