"""Tracing a model into a layer graph."""

from .graph import INPUT, Layer, LayerGraph, ParamInfo
from .tracer import trace_model

__all__ = ["INPUT", "Layer", "LayerGraph", "ParamInfo", "trace_model"]
