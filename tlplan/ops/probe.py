"""Measuring what a module with its own forward keeps for backward.

A subclass of a known module that overrides ``forward`` (weight standardisation, "same" padding
computed at run time, a reflect-padded conv) computes something the op's rules do not describe:
it may keep a standardised weight, a padded copy of its input, statistics of its own. Such a
module is run once per way it can be trained, at batch 1 and 2, under saved-tensor hooks, when
the model is traced; the bytes it keeps are then known exactly at any batch (they grow linearly
with it). Its own parameters and buffers are never counted, as everywhere in tlplan.
"""

from __future__ import annotations

import copy
import itertools
from typing import Mapping

import torch
import torch.nn as nn

from ..trace.graph import Layer
from .spec import GradState, SavedTensor

#: (input requires grad, trained parameter names) → (keeps its input, private bytes at batch 1, at batch 2)
ProbeTable = Mapping[tuple[bool, tuple[str, ...]], tuple[bool, int, int]]


def probe_module(module: nn.Module, input_shape: tuple[int, ...], dtype: torch.dtype) -> ProbeTable:
    """What ``module`` keeps for each combination of what requires grad (``input_shape`` at any batch)."""
    probe = copy.deepcopy(module).train()
    roles = [name for name, _ in probe.named_parameters()]  # its parts' too (a parametrized weight)
    resident = {t.untyped_storage().data_ptr() for t in [*probe.parameters(), *probe.buffers()]}
    table: dict[tuple[bool, tuple[str, ...]], tuple[bool, int, int]] = {}
    subsets = [tuple(c) for n in range(len(roles) + 1) for c in itertools.combinations(roles, n)]
    for needs_input, trained in itertools.product((False, True), subsets):
        if not needs_input and not trained:
            continue
        for name, p in probe.named_parameters():
            p.requires_grad_(name in trained)
        measured = [_kept(probe, (batch, *input_shape[1:]), dtype, needs_input, resident) for batch in (1, 2)]
        table[(needs_input, trained)] = (measured[0][0] or measured[1][0], measured[0][1], measured[1][1])
    return table


def _kept(module: nn.Module, shape: tuple[int, ...], dtype: torch.dtype, needs_input: bool, resident: set[int]) -> tuple[bool, int]:
    x = torch.randn(shape, dtype=dtype, requires_grad=needs_input)
    x_ptr = x.untyped_storage().data_ptr()
    private: dict[int, int] = {}
    keeps_input = False

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal keeps_input
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr == x_ptr:
            keeps_input = True
        elif ptr and ptr not in resident:
            private[ptr] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        module(x)
    return keeps_input, sum(private.values())


def probed_saved(layer: Layer, state: GradState) -> list[SavedTensor]:
    """What a probed module keeps in ``state`` at the layer's batch."""
    if not state.recorded:
        return []
    table: ProbeTable = layer.attrs["probe"]
    # the roles in the module's own order, as the table's keys have them
    key = (state.needs_input_grad, tuple(p.role for p in layer.all_params if p.role in state.trained))
    keeps_input, at_one, at_two = table[key]
    batch = layer.input_shapes[0][0] if layer.input_shapes and layer.input_shapes[0] else 1
    kept = [SavedTensor("input", value=layer.inputs[0])] if keeps_input else []
    private = at_one + (at_two - at_one) * (batch - 1)
    if private:
        kept.append(SavedTensor("module's own tensors", private_bytes=private))
    return kept
