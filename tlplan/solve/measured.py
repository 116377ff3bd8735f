"""Importance measured on the user's data: the first-order gain of training each option.

One SGD step on the parameters ``θ`` an option trains lowers the loss by about ``lr·‖∂L/∂θ‖²``
(a first-order Taylor estimate). tlplan averages ``‖∂L/∂θ‖²`` over a few batches for each layer
and option — a partial weight counts the input channels it would train (chosen as the runtime
chooses them), a gradient filter is discounted as the prior does — and scales the table so its
largest entry is 1.
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..data import Data
from ..runtime.functional import channel_index
from ..trace import LayerGraph
from .importance import FILTER_DISCOUNT, option_key
from .space import _options_for


def gradient_importance(model: nn.Module, graph: LayerGraph, data: Data, *, batch: int = 8, batches: int = 4,
                        runtime: str = "tlplan") -> dict[tuple[str, str], float]:
    model = copy.deepcopy(model)
    model.train()
    for p in model.parameters():
        p.requires_grad_(True)
    sq: dict[str, torch.Tensor] = {}
    n = min(len(data.labels), batch * batches)
    for start in range(0, n, batch):
        x, y = data.images[start : start + batch], data.labels[start : start + batch]
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        for name, p in model.named_parameters():
            if p.grad is not None:
                sq[name] = sq.get(name, 0) + p.grad.detach() ** 2
    params = dict(model.named_parameters())
    classifier = graph.classifier
    table: dict[tuple[str, str], float] = {}
    for layer in graph.layers:
        if layer.module is not None and layer.module == classifier:
            continue  # always trained: not a choice
        for opts in _options_for(layer, runtime):
            value = 0.0
            w, b = layer.param("weight"), layer.param("bias")
            if opts.weight and w is not None and w.name in sq:
                g2 = sq[w.name]
                index = channel_index(params[w.name], opts.weight, opts.select, layer.attrs.get("groups", 1))
                if index is not None:
                    g2 = g2.index_select(0 if layer.attrs.get("groups", 1) > 1 else 1, index)
                value += float(g2.sum()) * FILTER_DISCOUNT[opts.grad_filter]
            if (opts.bias or opts.norm in ("shift", "affine")) and b is not None and b.name in sq:
                value += float(sq[b.name].sum())
            if opts.norm == "affine" and w is not None and w.name in sq:
                value += float(sq[w.name].sum())
            table[(layer.name, option_key(opts))] = value
    top = max(table.values(), default=0.0) or 1.0
    return {k: v / top for k, v in table.items()}
