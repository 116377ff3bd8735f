"""Tracing a model into a layer graph.

``trace_model`` is loaded on first use: the op specs (``tlplan.ops``) read the graph's records
(``trace.graph``), and the tracer asks the specs, so importing the tracer eagerly would loop.
"""

from __future__ import annotations

from typing import Any

from .graph import INPUT, Layer, LayerGraph, ParamInfo

__all__ = ["INPUT", "Layer", "LayerGraph", "ParamInfo", "trace_model"]


def __getattr__(name: str) -> Any:
    if name == "trace_model":
        from .tracer import trace_model

        return trace_model
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
