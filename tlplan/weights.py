"""Loading a backbone's weights as users have them: a ``state_dict`` file, checked before use.

A file that loads nothing, tensors of other shapes, NaN weights or keys the model does not have
are refused with one line: the user would otherwise fine-tune a random backbone believing it
pretrained. A classifier of another size is expected (a new task's head) and left as it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from .errors import BadInputError, arg


@dataclass(frozen=True)
class WeightsLoaded:
    loaded: int  # tensors taken from the file
    total: int  # tensors of the model's state_dict
    left: tuple[str, ...]  # the model's tensors left as they were (random): the new head, and more with partial


def load_weights(model: nn.Module, path: str | Path, *, head: str | None = None, partial: bool = False) -> WeightsLoaded:
    """Load ``path`` into ``model``; ``head`` (a module name) may differ in shape; with ``partial``,
    missing or differently shaped tensors elsewhere are left as they are, and said."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt files and non-tensor pickles raise many kinds
        raise BadInputError(
            f"weights {path}: cannot read a state_dict ({type(exc).__name__}); save one with torch.save(model.state_dict(), FILE)"
        ) from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]  # a training checkpoint's usual nesting
    if not isinstance(state, dict) or not state:
        raise BadInputError(f"weights {path}: expected a state_dict (a mapping of names to tensors) with at least one tensor")
    not_tensors = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise BadInputError(f"weights {path}: {len(not_tensors)} entry(ies) are not tensors, e.g. {str(not_tensors[0])!r}")
    own = model.state_dict()
    unknown = [k for k in state if k not in own]
    if unknown:
        raise BadInputError(
            f"weights {path}: {len(unknown)} key(s) the model does not have, e.g. {unknown[0]!r}; is it this model's state_dict?"
        )
    broken = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if broken:
        raise BadInputError(f"weights {path}: {len(broken)} tensor(s) hold NaN or infinite values, e.g. {broken[0]!r}")

    def in_head(key: str) -> bool:
        # the new task's head may differ; BN's step counters are often not saved and matter for nothing
        return (head is not None and (key == head or key.startswith(head + "."))) or key.endswith("num_batches_tracked")

    usable = {k: v for k, v in state.items() if tuple(v.shape) == tuple(own[k].shape)}
    reshaped = [k for k in state if k not in usable and not in_head(k)]
    missing = [k for k in own if k not in state and not in_head(k)]
    if not usable:
        raise BadInputError(f"weights {path}: no tensor of the file fits the model (shapes differ); is it this model's state_dict?")
    if (reshaped or missing) and not partial:
        example = (reshaped or missing)[0]
        why = f"{len(reshaped)} tensor(s) of another shape" if reshaped else f"{len(missing)} of the model's tensors missing"
        raise BadInputError(
            f"weights {path}: {why}, e.g. {example!r}; give {arg('weights_partial')} to train from them anyway "
            "(the rest stays random)"
        )
    model.load_state_dict(usable, strict=False)
    return WeightsLoaded(len(usable), len(own), tuple(k for k in own if k not in usable and not k.endswith("num_batches_tracked")))
