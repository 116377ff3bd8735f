"""The tlplan runtime: PyTorch ops that keep for backward only what a plan needs.

``apply_plan`` is loaded on first use: the op specs (``tlplan.ops``) name this package's module
classes, and ``apply_plan`` asks the specs, so importing it eagerly would loop.
"""

from __future__ import annotations

from typing import Any

__all__ = ["apply_plan"]


def __getattr__(name: str) -> Any:
    if name == "apply_plan":
        from .apply import apply_plan

        return apply_plan
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
