"""TinyTL's activation accounting (Cai et al., NeurIPS 2020), the arithmetic its tables come from.

TinyTL does not measure training memory: it computes it, one sample at a time, walking the forward
in order and keeping three running sums (its released ``memory_cost_profiler.py`` does this with
forward hooks; here the same rules run over tlplan's layer graph and a plan's cost table):

- *kept*: what backward will need, added after each layer runs. A conv or linear layer whose weight
  is trained keeps its input (4 bytes an element); a norm whose scale is trained keeps its input; a
  ReLU-family activation keeps 1 bit an element, a smooth one (sigmoid, h-swish, SiLU, ...) 4 bytes,
  where backward runs at all. Nothing else keeps anything (a bias needs nothing).
- *residual*: while a block with a skip connection runs, its input (4 bytes an element), which the
  join at the block's end still needs.
- *transient*: what the running layer itself touches. A conv: its input plus its output divided by
  its groups (integer bytes: TinyTL's code divides the output's bytes by ``groups``, so a depthwise
  conv's output counts almost nothing); a linear layer: input plus output; a norm or an activation:
  its input. Pooling, joins, reshapes and interpolation count nothing.

The peak activation is the largest ``transient + kept so far + residual`` over the layers (before
the layer's own kept bytes are added), at batch 1, times the batch. Everything is 32-bit, whatever
precision the runtime keeps. TinyTL's training memory is that peak plus the model: trained
parameters at 32 bits, frozen ones at 8 (k-means quantised).

Where the rules need a choice TinyTL's code does not make, this module decides so:
- a block has a skip connection when its input is read by two or more of its layers (a lite
  residual branch's layers aside): an identity shortcut, a downsampling shortcut, or an Inception
  module's parallel branches (TinyTL's code recognises only its own residual block classes);
- activations keep their mask or input as TinyTL's script decides it: every one of them, once
  anything beyond the classifier trains (its ``require_backward``), none otherwise, even those
  below the lowest trained layer, which no gradient reaches (for TinyTL-L on ProxylessNAS-Mobile
  at 224 that is 0.1 MB a sample; tlplan's own timeline keeps only the masks backward uses);
- a conv or linear layer trained at a channel ratio or through a gradient filter counts its whole
  input, as a fully trained one (TinyTL has no such option).

Derived, never measured; it is for setting tlplan beside TinyTL's tables, not what any runtime
allocates (``simulate_peak`` gives that).
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import ops
from ..costs.annotate import CostTable
from ..plan.schemes import LITE_CHILD, classifier_layers

#: bytes of one activation element in TinyTL's accounting (fp32)
ELEMENT = 4
#: activations TinyTL counts at 1 bit an element: the ReLU family (tlplan's exact-mask ops) and,
#: as TinyTL's code lists it with them, leaky ReLU
ONE_BIT = ("leaky_relu",)


@dataclass(frozen=True)
class TinyTLActivation:
    """TinyTL's peak activation for one plan, at the graph's batch (bytes)."""

    peak_bytes: int
    peak_at: str  # the layer at which the peak falls ("" for an empty graph)
    kept_bytes: int  # what the arithmetic keeps for backward by the end of the forward


def _per_sample(numel: int, batch: int) -> int:
    return numel // batch if batch else numel


def _rule(layer, cost, batch: int, backward: bool) -> tuple[float, float]:
    """(transient bytes, kept bytes) of one layer, for one sample; ``backward``: anything beyond
    the classifier trains."""
    spec = ops.spec_of(layer)
    n_in = _per_sample(_numel(layer.input_shapes[0]), batch) if layer.input_shapes else 0
    n_out = _per_sample(layer.output_numel, batch)
    weight_trained = "weight" in cost.state.trained
    if spec.family == "conv":
        groups = int(layer.attrs.get("groups", 1) or 1)
        return ELEMENT * n_in + (ELEMENT * n_out) // groups, (ELEMENT * n_in if weight_trained else 0)
    if spec.family == "linear":
        return ELEMENT * (n_in + n_out), (ELEMENT * n_in if weight_trained else 0)
    if spec.family == "norm":
        return ELEMENT * n_in, (ELEMENT * n_in if weight_trained else 0)
    if spec.family == "activation":
        if spec.mask == "exact" or layer.op in ONE_BIT:
            return ELEMENT * n_in, (n_in / 8 if backward else 0)
        return ELEMENT * n_in, (ELEMENT * n_in if backward else 0)
    return 0, 0


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _in_branch(layer) -> bool:
    return bool(layer.block and layer.module and layer.module.startswith(f"{layer.block}.{LITE_CHILD}."))


def _skip_inputs(graph) -> dict[str, int]:
    """Per block with a skip connection, the elements (one sample) of the input it holds to the end."""
    batch = graph.input_shape[0] if graph.input_shape else 1
    producer = {layer.name: layer for layer in graph.layers}
    readers: dict[str, dict[str, int]] = {}
    for layer in graph.layers:
        if not layer.block or _in_branch(layer):
            continue
        for src in layer.inputs:
            made_by = producer.get(src)
            if made_by is None or made_by.block != layer.block:
                readers.setdefault(layer.block, {})
                readers[layer.block][src] = readers[layer.block].get(src, 0) + 1
    skips = {}
    for block, sources in readers.items():
        for src, count in sources.items():
            if count >= 2:
                shape = producer[src].output_shape if src in producer else graph.input_shape
                skips[block] = _per_sample(_numel(shape), batch)
                break
    return skips


def tinytl_activation(costs: CostTable) -> TinyTLActivation:
    """TinyTL's peak activation of the plan ``costs`` describes (module docstring: the rules)."""
    graph = costs.graph
    batch = graph.input_shape[0] if graph.input_shape else 1
    skips = _skip_inputs(graph)
    heads = {layer.name for layer in classifier_layers(graph)}
    backward = any(cost.state.trained for layer, cost in zip(graph.layers, costs.layers) if layer.name not in heads)
    kept = 0.0
    peak, peak_at = 0.0, ""
    for layer, cost in zip(graph.layers, costs.layers):
        transient, keeps = _rule(layer, cost, batch, backward)
        residual = ELEMENT * skips.get(layer.block, 0) if layer.block else 0
        now = transient + kept + residual
        if now > peak:
            peak, peak_at = now, layer.name
        kept += keeps
    return TinyTLActivation(peak_bytes=round(peak * batch), peak_at=peak_at, kept_bytes=round(kept * batch))
