"""Schemes: named presets of what to train (``full``, ``last``, ``bias``, ``norm+last``, ``blocks:K``)."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import SchemeError
from ..trace.graph import LayerGraph

NORM_OPS = frozenset({"batch_norm", "group_norm", "layer_norm"})

SCHEME_HELP = (
    "full (everything), last (classifier only), bias (all biases + classifier), "
    "norm+last (norm layers + classifier), blocks:K (last K blocks + classifier)"
)
#: presets that need the tlplan runtime's own ops; parsed, but not available in this version
_LATER = ("mobiletl", "gradfilter", "sparse")


@dataclass(frozen=True)
class Scheme:
    kind: str  # "full", "last", "bias", "norm+last", "blocks"
    k: int | None = None

    @property
    def text(self) -> str:
        return f"{self.kind}:{self.k}" if self.k is not None else self.kind


def parse_scheme(text: str) -> Scheme:
    """Parse a scheme name; a bad one is a one-line SchemeError listing the valid forms."""
    raw = (text or "").strip()
    head, _, rest = raw.partition(":")
    head = head.lower()
    if head in ("full", "last", "bias", "norm+last") and not rest:
        return Scheme(head)
    if head == "blocks":
        try:
            k = int(rest)
        except ValueError:
            raise SchemeError(f"scheme {raw!r}: blocks:K needs a whole number of blocks, e.g. blocks:4") from None
        if k < 0:
            raise SchemeError(f"scheme {raw!r}: K must be 0 or more")
        return Scheme("blocks", k)
    if head in _LATER:
        raise SchemeError(f"scheme {raw!r} needs the tlplan runtime, which this version does not have yet; use {SCHEME_HELP}")
    raise SchemeError(f"unknown scheme {raw!r}; use {SCHEME_HELP}")


def trainable_params(graph: LayerGraph, scheme: Scheme) -> frozenset[str]:
    """Qualified names of the parameters the scheme trains on this graph."""
    all_params = [(layer, p) for layer in graph.layers for p in layer.params]
    classifier = frozenset(
        p.name for layer, p in all_params if graph.classifier is not None and layer.module == graph.classifier
    )
    if scheme.kind != "full" and not classifier:
        raise SchemeError(f"scheme {scheme.text!r}: {graph.model_name} has no Linear classifier to train")
    if scheme.kind == "full":
        return frozenset(p.name for _, p in all_params)
    if scheme.kind == "last":
        return classifier
    if scheme.kind == "bias":
        return classifier | {p.name for _, p in all_params if p.role == "bias"}
    if scheme.kind == "norm+last":
        return classifier | {p.name for layer, p in all_params if layer.op in NORM_OPS}
    assert scheme.kind == "blocks" and scheme.k is not None
    if scheme.k > len(graph.blocks):
        raise SchemeError(
            f"scheme {scheme.text!r}: {graph.model_name} has {len(graph.blocks)} blocks; choose K from 0 to {len(graph.blocks)}"
        )
    top = set(graph.blocks[len(graph.blocks) - scheme.k :]) if scheme.k else set()
    return classifier | {p.name for layer, p in all_params if layer.block in top}
