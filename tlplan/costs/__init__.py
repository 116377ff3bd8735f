"""Per-layer training costs: one walk over the layer graph, asking each layer's op spec."""

from ..ops import GradState, SavedTensor
from .annotate import CostTable, LayerCost, annotate

__all__ = ["CostTable", "LayerCost", "annotate", "GradState", "SavedTensor"]
