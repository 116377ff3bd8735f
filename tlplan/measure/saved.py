"""Measured bytes kept for backward: what autograd really saves, seen through saved-tensor hooks."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Iterable

import torch
import torch.nn as nn


@dataclass(frozen=True)
class SavedMeasurement:
    saved_bytes: int  # distinct storages kept for backward, parameters and buffers excluded
    tensors: int  # distinct storages counted


def set_trainable(model: nn.Module, trainable: Iterable[str]) -> None:
    """Plain PyTorch: ``requires_grad`` on exactly the named parameters, nothing else."""
    names = set(trainable)
    for name, p in model.named_parameters():
        p.requires_grad_(name in names)


def measure_saved_bytes(
    model: nn.Module, input_shape: tuple[int, ...], trainable: Iterable[str] | None = None, *, copy_model: bool = True
) -> SavedMeasurement:
    """Run one training-mode forward and count the storages autograd keeps for backward.

    Each storage is counted once (a ReLU output that the next conv also keeps is one tensor), at its
    full size; storages of the model's parameters and buffers are not counted. The model is copied
    first unless ``copy_model`` is False, so the caller's BN statistics and flags are untouched.
    ``trainable`` sets ``requires_grad`` (None: as the model has it, e.g. after ``apply_plan``).
    """
    if copy_model:
        model = copy.deepcopy(model)
    if trainable is not None:
        set_trainable(model, trainable)
    model.train()
    state_ptrs = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
    storages: dict[int, int] = {}

    kept: list[torch.Tensor] = []  # alive until the forward ends, so no address is reused meanwhile

    def pack(t: torch.Tensor) -> int:
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr and ptr not in state_ptrs:
            storages[ptr] = storage.nbytes()
        kept.append(t)
        # the node gets the size, not the tensor: no backward runs, and a node holding its own output
        # would hold itself (output -> grad_fn -> output), a cycle that outlives the call
        return storage.nbytes()

    first = next(iter([*model.parameters(), *model.buffers()]), None)
    x = torch.randn(input_shape, device=first.device if first is not None else "cpu")  # where the model is (a GPU too)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda packed: packed):
        out = model(x)
    del out
    kept.clear()
    return SavedMeasurement(saved_bytes=sum(storages.values()), tensors=len(storages))


def graph_saved_bytes(output: torch.Tensor, model: nn.Module) -> SavedMeasurement:
    """The same count read off the autograd graph behind ``output`` (before its backward): every
    node's saved tensors (``_saved_*`` of PyTorch's nodes, ``saved_tensors`` of custom Functions),
    deduplicated by storage, ``model``'s parameters and buffers excluded. A second witness to
    ``measure_saved_bytes``, which sees the tensors as they are packed."""
    resident = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
    storages: dict[int, int] = {}
    # nodes by id, kept alive: some PyTorch releases hand out a new Python object for a node each
    # time it is reached, and a freed one's id can come back for another node
    seen: dict[int, object] = {}
    stack = [output.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen[id(node)] = node
        values: list[object] = []
        names = [n for n in dir(node) if n.startswith("_saved_")]
        if hasattr(node, "saved_tensors"):
            names.append("saved_tensors")
        for name in names:
            try:
                values.append(getattr(node, name))
            except RuntimeError:  # a value the node does not hold (an undefined optional tensor)
                continue
        for value in _tensors(values):
            storage = value.untyped_storage()
            ptr = storage.data_ptr()
            if ptr and ptr not in resident:
                storages[ptr] = storage.nbytes()
        stack.extend(f for f, _ in node.next_functions)
    return SavedMeasurement(saved_bytes=sum(storages.values()), tensors=len(storages))


def _tensors(values: Iterable[object]) -> Iterable[torch.Tensor]:
    for value in values:
        if isinstance(value, torch.Tensor):
            yield value
        elif isinstance(value, (list, tuple)):
            yield from _tensors(value)
