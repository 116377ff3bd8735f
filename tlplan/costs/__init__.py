"""Per-layer training costs from rule tables."""

from .annotate import CostTable, LayerCost, annotate
from .rules import EAGER_SAVED, MACS_FWD, GradState, SavedTensor

__all__ = ["CostTable", "LayerCost", "annotate", "EAGER_SAVED", "MACS_FWD", "GradState", "SavedTensor"]
