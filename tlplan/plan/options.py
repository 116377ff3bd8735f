"""How one layer is trained: the update options the memory model costs and the runtime executes."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, Mapping

from ..errors import BadInputError

NORM_MODES = ("frozen", "shift", "affine")
WEIGHT_RATIOS = (0.125, 0.25, 0.5, 1.0)
#: the gradient-filter patch sizes the solver offers (where the conv's output map is at least that
#: big): a small fixed set, so its search space stays small. Plans and schemes take any r >= 2 up to
#: the conv's output height and width (``filter_size_problem``).
FILTER_SIZES = (2, 4, 7)
SELECTIONS = ("first", "magnitude")
# Which op kinds take which options is said by each op's spec (``tlplan.ops``), not here.


@dataclass(frozen=True)
class LayerOptions:
    """Options of one layer; the defaults mean "frozen, exact backward"."""

    weight: float = 0.0  # trained fraction of the input channels: 0 (frozen) or one of WEIGHT_RATIOS
    select: str = "first"  # which input channels a partial weight trains: first-k or largest-magnitude
    bias: bool = False  # the bias is trained
    norm: str = "frozen"  # norm layers: frozen (eval statistics), shift (β only), affine (γ, β, batch statistics)
    grad_filter: int = 0  # gradient filtering patch size r (>= 2, at most the conv's output map); 0 = exact
    mask: bool = False  # activation backward from a 1-bit mask

    def to_dict(self) -> dict[str, Any]:
        """Only the fields that differ from the defaults."""
        default = LayerOptions()
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) != getattr(default, f.name)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str) -> "LayerOptions":
        known = {f.name: f.type for f in fields(cls)}
        unknown = set(data) - set(known)
        if unknown:
            raise BadInputError(f"{where}: unknown option(s) {', '.join(sorted(unknown))}; known: {', '.join(known)}")
        values: dict[str, Any] = {}
        for key, value in data.items():
            default = getattr(cls(), key)
            if isinstance(default, bool):
                if not isinstance(value, bool):
                    raise BadInputError(f"{where}.{key}: expected true or false, got {value!r}")
            elif isinstance(default, float):
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise BadInputError(f"{where}.{key}: expected a number, got {value!r}")
                value = float(value)
            elif isinstance(default, int):
                if isinstance(value, bool) or not isinstance(value, int):
                    raise BadInputError(f"{where}.{key}: expected a whole number, got {value!r}")
            elif not isinstance(value, str):
                raise BadInputError(f"{where}.{key}: expected text, got {value!r}")
            values[key] = value
        options = replace(cls(), **values)
        options.validate(where)
        return options

    def validate(self, where: str) -> None:
        if not (0.0 <= self.weight <= 1.0):
            raise BadInputError(f"{where}.weight: ratio {self.weight} is outside (0, 1]; use 0 (frozen) or one of {WEIGHT_RATIOS}")
        if self.select not in SELECTIONS:
            raise BadInputError(f"{where}.select: {self.select!r}; use one of {', '.join(SELECTIONS)}")
        if self.norm not in NORM_MODES:
            raise BadInputError(f"{where}.norm: {self.norm!r}; use one of {', '.join(NORM_MODES)}")
        if self.grad_filter < 0 or self.grad_filter == 1:
            raise BadInputError(
                f"{where}.grad_filter: {self.grad_filter}; use 0 (exact) or a patch size of 2 or more, at most "
                "the conv's output height and width"
            )
        if self.grad_filter and self.weight not in (0.0, 1.0):
            raise BadInputError(f"{where}: gradient filtering trains the whole weight; set weight to 1")


FROZEN = LayerOptions()


def filter_size_problem(out_hw: tuple[int, int], r: int) -> str | None:
    """Why patch size ``r`` cannot filter a conv whose output map is ``out_hw`` (None: it can).

    An ``r`` that does not divide the map is taken as the gradient-filter paper's code takes it:
    the patch grid is rounded up and centred, and an edge patch averages the cells it covers. A
    patch larger than the map is refused: it would average one patch of a map it does not fit."""
    h, w = (int(v) for v in out_hw)
    if r <= h and r <= w:
        return None
    return (f"grad_filter {r} is larger than this conv's {h}×{w} output map; use a patch size up to {min(h, w)} "
            "or 0 (exact)") if min(h, w) >= 2 else (f"this conv's output map is {h}×{w}: too small for a patch of 2 "
                                                   "or more; train it exactly (grad_filter 0)")
