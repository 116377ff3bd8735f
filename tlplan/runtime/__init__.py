"""The tlplan runtime: PyTorch ops that keep for backward only what a plan needs."""

from .apply import apply_plan

__all__ = ["apply_plan"]
