"""Importance by contribution analysis (the 256KB paper's): a short fine-tune per option.

For every layer and update option, fine-tune a copy of the model for a few steps training only
that option (and the classifier, always trained), and compare its held-out loss with fine-tuning
the classifier alone for the same steps, from the same weights, on the same batches. An option's
contribution is how much lower its held-out loss ends (in nats; 0 where it ends no lower); the
table is scaled so its largest entry is 1, like the gradient table. The paper measures the gain in
accuracy after full fine-tunes; with the few steps a planner can afford, loss is the steadier
signal. Summing contributions over layers assumes they add up, as the paper does.

The options are run with the tlplan runtime (``apply_plan``): the same gradients the plan will
compute, partial channels and gradient filters included. Options of the ``mcu`` runtime are run
in fp32 here (the int8 engine does not run in PyTorch).
"""

from __future__ import annotations

import copy
from types import MappingProxyType
from typing import Callable, Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..data import Data
from ..errors import BadInputError
from ..measure.peak import make_optimizer
from ..plan.options import LayerOptions
from ..plan.plan import Optimizer, Plan
from ..plan.validate import shapes_of
from ..runtime import apply_plan
from ..trace import LayerGraph
from .importance import option_key
from .space import _options_for, base_options

Progress = Callable[[int, int], None]  # (options done, options in all)


def _split(data: Data, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    order = torch.randperm(len(data.labels), generator=torch.Generator().manual_seed(seed))
    n_val = max(len(order) // 4, 1)
    if len(order) - n_val < 1:
        raise BadInputError(f"data {data.source}: {len(order)} images are too few to hold some out; give at least 2")
    return order[n_val:], order[:n_val]


def _held_out_loss(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch: int) -> float:
    model.eval()
    total = 0.0
    with torch.no_grad():
        for i in range(0, len(labels), batch):
            total += float(F.cross_entropy(model(images[i : i + batch]), labels[i : i + batch], reduction="sum"))
    return total / len(labels)


def contribution_importance(
    model: nn.Module,
    graph: LayerGraph,
    data: Data,
    *,
    batch: int = 8,
    steps: int = 20,
    optimizer: Optimizer = Optimizer("sgd", 0.05, 0.9),
    runtime: str = "tlplan",
    seed: int = 0,
    progress: Progress | None = None,
) -> dict[tuple[str, str], float]:
    """Contribution of each layer's options (see the module docstring), as ``{(layer, option): value}``."""
    if runtime not in ("tlplan", "mcu", "eager"):
        raise BadInputError(f"unknown runtime {runtime!r}; use tlplan, mcu or eager")
    train_idx, val_idx = _split(data, seed)
    order = train_idx[torch.randint(len(train_idx), (steps * batch,), generator=torch.Generator().manual_seed(seed))]
    base = base_options(graph)
    classifier = {name for name, opts in base.items() if opts.weight}
    runs = [(layer.name, opts) for layer in graph.layers if layer.name not in classifier
            for opts in _options_for(layer, runtime)]

    def fine_tuned_loss(options: Mapping[str, LayerOptions]) -> float:
        plan = Plan(model=graph.model_name, input_shape=graph.input_shape, layers=MappingProxyType(dict(options)),
                    runtime="eager" if runtime == "eager" else "tlplan", precision="fp32", optimizer=optimizer,
                    scheme="contribution", shapes=MappingProxyType(shapes_of(graph, options)))
        net = copy.deepcopy(model)
        apply_plan(net, plan, graph=graph)  # a copy of the model traced: no need to trace it again
        net.train()
        opt = make_optimizer([p for p in net.parameters() if p.requires_grad], optimizer)
        with torch.random.fork_rng():  # the same dropout draws in every run, the caller's RNG untouched
            torch.manual_seed(seed)
            for i in range(steps):
                idx = order[i * batch : (i + 1) * batch]
                F.cross_entropy(net(data.images[idx]), data.labels[idx]).backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
        return _held_out_loss(net, data.images[val_idx], data.labels[val_idx], batch)

    baseline = fine_tuned_loss(base)
    table: dict[tuple[str, str], float] = {}
    for i, (layer, opts) in enumerate(runs):
        if progress:
            progress(i, len(runs))
        loss = fine_tuned_loss({**base, layer: opts})
        table[(layer, option_key(opts))] = max(0.0, baseline - loss) if loss == loss else 0.0  # NaN: diverged
    if progress:
        progress(len(runs), len(runs))
    top = max(table.values(), default=0.0) or 1.0
    return {k: v / top for k, v in table.items()}
