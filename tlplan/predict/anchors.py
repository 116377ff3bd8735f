"""Published end-to-end anchors for the MCU datasheet profiles (the 256KB paper, STM32F746).

Sparse-update training per image at 128×128, batch 1, int8, on their engine: MCUNet-5fps 546 ms,
MobileNetV2-w0.35 373 ms, ProxylessNAS-w0.3 443 ms. The STM32 profiles' single compute
efficiency is calibrated on the MCUNet-5fps figure alone; the other two are then *predicted*,
not fitted, and reported beside the published numbers.

What "sparse update" trains is an assumption (the paper's exact per-model schemes are not in its
text): the example backward configs of the tiny-training repository ("sparse update, 50KB
scheme"), below. Conv indices count convolutions in forward order from 0 (the classifier, a
Linear here, is not counted and is trained); the last ``n_bias_update`` convs train their bias;
each listed conv with ratio r > 0 trains its weight on a share r of its input channels (weight-
gradient work × r).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from ..costs.annotate import CostTable, annotate
from ..plan.schemes import conv_layers
from ..trace.graph import LayerGraph
from .devices import Device
from .predictor import predict_latency

#: ms per image, sparse update, STM32F746, 128×128, batch 1, int8 (Lin et al., NeurIPS 2022)
PUBLISHED_MS = {"mcunet-5fps": 546.0, "mbv2-w0.35": 373.0, "proxyless-w0.3": 443.0}
FITTED_ON = "mcunet-5fps"
RESOLUTION = 128


@dataclass(frozen=True)
class SparseUpdate:
    """A tiny-training ``backward_config``: bias of the last n convs, weights of some at ratios."""

    n_bias_update: int
    weight_idx: tuple[int, ...]
    weight_ratio: tuple[float, ...]


SPARSE_CONFIGS = {
    "mcunet-5fps": SparseUpdate(20, (23, 24, 27, 30, 33, 39), (0, 0.25, 0.5, 0.5, 0, 0)),
    "mbv2-w0.35": SparseUpdate(16, (36, 39, 40, 41, 42, 45, 48, 49), (1, 1, 0, 0.25, 0.125, 0.125, 0.125, 0.125)),
    "proxyless-w0.3": SparseUpdate(21, (39, 42, 44, 45, 50, 51, 54, 57), (0.25, 1, 0, 1, 0, 0.125, 0.25, 0.25)),
}

ASSUMPTION = ("sparse update as in tiny-training's example backward configs (50KB schemes): bias of the last n convs, "
              "weights of listed convs on a share r of input channels, classifier trained; int8, batch 1, 128x128; "
              "forward of the whole network + backward down to the lowest updated conv")


def sparse_costs(graph: LayerGraph, config: SparseUpdate) -> tuple[CostTable, dict[str, float]]:
    """Costs of ``graph`` under a sparse update, and the weight-gradient ratio of each weight-trained conv."""
    convs = conv_layers(graph)
    trainable: set[str] = set()
    for layer in convs[len(convs) - config.n_bias_update:]:
        trainable |= {p.name for p in layer.params if p.role == "bias"}
    ratios: dict[str, float] = {}
    for idx, ratio in zip(config.weight_idx, config.weight_ratio):
        if ratio > 0:
            trainable |= {p.name for p in convs[idx].params}
            ratios[convs[idx].name] = ratio
    if graph.classifier is not None:
        trainable |= {p.name for layer in graph.layers if layer.module == graph.classifier for p in layer.params}
    from ..plan.schemes import options_for_params

    return annotate(graph, options_for_params(graph, trainable), "eager"), ratios


@lru_cache(maxsize=None)
def _anchor_case(model: str):
    """The anchor's traced model, its sparse-update costs and channel ratios: the same on every device."""
    from ..trace import trace_model
    from ..zoo import load_model

    graph = trace_model(load_model(model), (1, 3, RESOLUTION, RESOLUTION), model)
    return (graph, *sparse_costs(graph, SPARSE_CONFIGS[model]))


def anchor_ms(device: Device, model: str) -> float:
    """Predicted ms per image of sparse-update training of ``model`` on ``device`` (its roofline)."""
    graph, costs, ratios = _anchor_case(model)
    return predict_latency(graph, costs, device, weight_ratios=ratios).step_ms


def calibrated_efficiency(device: Device) -> float:
    """The single compute efficiency that makes the roofline give 546 ms for MCUNet-5fps.

    A compute-bound roofline with no per-layer overhead is ``FLOPs / (peak × e)``: the time at
    ``e = 1`` divided by the published time is ``e``.
    """
    from dataclasses import replace

    at_peak = replace(device, efficiency_compute={"default": 1.0}, efficiency_memory=None,
                      memory_bandwidth_bytes_per_s=None, layer_overhead_s=0.0)
    return anchor_ms(at_peak, FITTED_ON) / PUBLISHED_MS[FITTED_ON]


def anchor_table(device: Device) -> list[dict]:
    """Published and predicted ms of each anchor, and whether it was used to fit (``role``)."""
    return [
        {"model": model, "published_ms": published, "predicted_ms": round(anchor_ms(device, model), 1),
         "role": "fitted" if model == FITTED_ON else "predicted", "assumption": ASSUMPTION}
        for model, published in PUBLISHED_MS.items()
    ]
