"""Quantization-aware scaling (QAS), the optimizer of the 256KB paper (Lin et al., NeurIPS 2022).

An int8 graph holds a tensor as ``W = s · W̄`` (``W̄`` the quantized values, ``s`` its scale). The
gradient it computes for the quantized values is ``G_W̄ = s · G_W``: the ratio of weight to
gradient norm is off by ``s⁻²`` against the fp32 graph, and SGD on ``W̄`` barely moves. QAS scales
each tensor's gradient by the inverse square of its scale, ``G̃ = G_W̄ · s⁻²``, and steps plain
SGD without momentum: ``W̄ ← W̄ − lr · (G̃ + weight_decay · W̄)``. Then ``s · W̄`` moves exactly as
fp32 SGD moves ``W`` (the paper's claim, ``tests/test_qas.py``). Its state is the per-tensor scale,
part of the quantized model, not per element: nothing counts beyond the gradient.

Parameters held in real units (an fp32 model, as ``tlplan train`` runs a plan on the PyTorch
runtimes) have scale 1, where QAS is SGD without momentum — the update QAS exists to recover.
Parameters holding quantized values (``W̄`` in fp32, as the paper's training code simulates the
int8 graph) take their scale from ``scales``.
"""

from __future__ import annotations

from typing import Iterable, Mapping

import torch

from ..errors import BadInputError


class QAS(torch.optim.Optimizer):
    """SGD without momentum on quantized-domain tensors, each gradient scaled by ``scale⁻²``.

    ``scales``: a tensor's per-tensor quantization scale, by the parameter itself (``id`` is not
    kept: pass the ``nn.Parameter`` objects); parameters not in it have scale 1 (real units).
    """

    def __init__(self, params: Iterable[torch.nn.Parameter] | Iterable[dict], lr: float = 0.01,
                 weight_decay: float = 0.0, scales: Mapping[torch.Tensor, float] | None = None) -> None:
        if not lr > 0:
            raise BadInputError(f"qas: lr must be above 0, not {lr!r}")
        if not weight_decay >= 0:
            raise BadInputError(f"qas: weight_decay must be at least 0, not {weight_decay!r}")
        super().__init__(params, {"lr": lr, "weight_decay": weight_decay})
        given = {id(p): float(s) for p, s in (scales or {}).items()}
        for group in self.param_groups:
            for p in group["params"]:
                scale = given.pop(id(p), 1.0)
                if not scale > 0 or scale != scale or scale == float("inf"):
                    raise BadInputError(f"qas: a tensor's scale must be a positive finite number, not {scale!r}")
                self.state[p]["scale"] = torch.tensor(scale, dtype=torch.float64)
        if given:
            raise BadInputError(f"qas: {len(given)} scale(s) given for tensors that are not among the parameters")

    def _scale(self, p: torch.Tensor) -> float:
        # parameters of a group added later (add_param_group) hold real units: scale 1
        return float(self.state[p].get("scale", 1.0))

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001 - torch's signature
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, decay = group["lr"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                scale = self._scale(p)
                # W̄ ← W̄·(1 − lr·wd) − (lr·s⁻²)·G_W̄, in place: no temporary beside the gradient
                if decay:
                    p.mul_(1.0 - lr * decay)
                p.add_(p.grad, alpha=-lr / (scale * scale))
        return loss


def make_optimizer(params: list[torch.nn.Parameter], spec) -> torch.optim.Optimizer:  # noqa: ANN001 - a plan's Optimizer
    """The torch optimizer of a plan's ``Optimizer`` (what training runs and measuring measures):
    QAS, Adam, or SGD (with the plan's momentum)."""
    if spec.name == "qas":
        return QAS(params, lr=spec.lr, weight_decay=spec.weight_decay)
    if spec.name == "adam":
        return torch.optim.Adam(params, lr=spec.lr, weight_decay=spec.weight_decay)
    return torch.optim.SGD(params, lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay)


__all__ = ["QAS", "make_optimizer"]
