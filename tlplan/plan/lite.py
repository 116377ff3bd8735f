"""TinyTL's lite residual branches, as a plan records them (the modules: ``tlplan.runtime.lite``).

A plan's ``lite`` field maps each block that has a branch to its settings::

    lite:
      features.3: {kernel: 3, groups: 2, expand: 1.0, norm: group}

``kernel`` and ``groups`` are as inserted (resolved from the block's resolution and channels), so
the same plan rebuilds the same branches.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..errors import BadInputError

#: the branch's norms: GroupNorm (8 channels a group, as TinyTL's released models) or BatchNorm
LITE_NORMS = ("group", "batch")
MAX_KERNEL = 5  # TinyTL's largest branch kernel, reduced by 2 while larger than the pooled map


@dataclass(frozen=True)
class LiteConfig:
    """One lite residual branch: conv1's kernel and groups, its width (``expand`` × the block's
    input channels, rounded to a multiple of 8), and the norms' kind."""

    kernel: int = MAX_KERNEL
    groups: int = 2
    expand: float = 1.0
    norm: str = "group"

    def to_dict(self) -> dict[str, Any]:
        return {"kernel": self.kernel, "groups": self.groups, "expand": self.expand, "norm": self.norm}

    @classmethod
    def from_dict(cls, data: Any, where: str) -> "LiteConfig":
        if not isinstance(data, dict):
            raise BadInputError(f"{where} must be a mapping of kernel, groups, expand, norm")
        unknown = set(data) - {"kernel", "groups", "expand", "norm"}
        if unknown:
            raise BadInputError(f"{where}: unknown field(s) {', '.join(sorted(map(str, unknown)))}; use kernel, groups, expand, norm")
        kernel = data.get("kernel", MAX_KERNEL)
        if not _whole(kernel, 1, 15) or kernel % 2 == 0:
            raise BadInputError(f"{where}: kernel must be an odd whole number from 1 to 15, not {kernel!r}")
        groups = data.get("groups", 2)
        if not _whole(groups, 1, 64):
            raise BadInputError(f"{where}: groups must be a whole number from 1 to 64, not {groups!r}")
        expand = data.get("expand", 1.0)
        if isinstance(expand, bool) or not isinstance(expand, (int, float)) or not math.isfinite(expand) or not 0 < expand <= 8:
            raise BadInputError(f"{where}: expand must be a number above 0 and at most 8, not {expand!r}")
        norm = data.get("norm", "group")
        if norm not in LITE_NORMS:
            raise BadInputError(f"{where}: norm {norm!r}; use one of {', '.join(LITE_NORMS)}")
        return cls(int(kernel), int(groups), float(expand), str(norm))


def _whole(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high
