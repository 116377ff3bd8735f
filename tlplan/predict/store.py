"""A measured profile's data files: layer microbenchmarks and whole training steps, as CSV.

Both are plain CSV with a fixed header, read strictly: an unknown or missing column, a row with
the wrong number of fields, a value that is not a finite number where one is needed, an unknown
op or pass — each is a ``BadInputError`` naming the file, the line and the problem. Nothing here
ever unpickles anything.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from ..errors import BadInputError
from ..fileio import read_text
from ..measure.microbench import CALIBRATION_OPS, PASSES, Config

MEASUREMENTS = "measurements.csv"
STEPS = "steps.csv"

CONFIG_COLUMNS = Config.field_names()
LAYER_COLUMNS = ("op", "pass", *CONFIG_COLUMNS, "origin", "round", "ms", "foreign_cpu")
STEP_COLUMNS = ("network", "scheme", "batch", "resolution", "ms", "foreign_cpu", "runtime")
#: columns added later, with the value every row of an older file means (profiles calibrated
#: before the tlplan runtime's ops were timed have no plan options, all channels and no filter,
#: and timed plain PyTorch steps only)
OPTIONAL_COLUMNS = {"weight_per_mille": "1000", "grad_filter": "0", "runtime": "eager"}
#: what runs a timed whole step: plain PyTorch autograd, or the tlplan runtime's kernels
STEP_RUNTIMES = ("eager", "tlplan")


@dataclass(frozen=True)
class LayerRow:
    """One pass of one configuration, timed alone on the device (ms: the profile's statistic of its runs)."""

    op: str
    pass_: str
    config: Config
    origin: str  # the network whose layer the configuration was sampled near, or "random"
    round: int  # 0: sampled from the shape prior; 1+: adaptive rounds (near badly predicted rows)
    ms: float
    foreign_cpu: float | None  # other processes' CPU share while it was timed, when known

    def cells(self) -> list[str]:
        share = "" if self.foreign_cpu is None else f"{self.foreign_cpu:.3f}"
        return [self.op, self.pass_, *(str(v) for v in self.config.as_dict().values()), self.origin,
                str(self.round), f"{self.ms:.6g}", share]


@dataclass(frozen=True)
class StepRow:
    """One whole training step (forward, cross-entropy, backward) of a network, run by plain
    PyTorch or by the tlplan runtime (its kernels swapped in), in ms."""

    network: str
    scheme: str
    batch: int
    resolution: int
    ms: float
    foreign_cpu: float | None
    runtime: str = "eager"

    def cells(self) -> list[str]:
        share = "" if self.foreign_cpu is None else f"{self.foreign_cpu:.3f}"
        return [self.network, self.scheme, str(self.batch), str(self.resolution), f"{self.ms:.6g}", share, self.runtime]

    @property
    def key(self) -> tuple[str, str, int, int, str]:
        return (self.network, self.scheme, self.batch, self.resolution, self.runtime)


def header_line(columns: Sequence[str]) -> str:
    return ",".join(columns) + "\n"


def row_line(cells: Sequence[str]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(cells)
    return out.getvalue()


def render(columns: Sequence[str], rows: Iterable[LayerRow | StepRow]) -> str:
    return header_line(columns) + "".join(row_line(r.cells()) for r in rows)


def sha256_of(*paths: Path) -> str:
    """One digest over the files' bytes (and names), in order."""
    h = hashlib.sha256()
    for path in paths:
        h.update(path.name.encode() + b"\0")
        h.update(path.read_bytes())
        h.update(b"\0")
    return h.hexdigest()


# ---- strict reading --------------------------------------------------------------------------------


def _read_rows(path: Path, columns: Sequence[str], *, allow_truncated_tail: bool) -> list[tuple[int, dict[str, str]]]:
    if not path.exists():
        raise BadInputError(f"profile data {path}: the file is missing; run `tlplan calibrate` again")
    text = read_text(path, "profile data", limit=256 * 1024 * 1024)
    if allow_truncated_tail and text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]  # a row cut short by an interruption: measured again
    elif text and not text.endswith("\n"):
        raise BadInputError(f"profile data {path}: the last line is cut short (truncated file?)")
    lines = list(csv.reader(io.StringIO(text)))
    if not lines:
        raise BadInputError(f"profile data {path}: the file is empty (expected a header: {','.join(columns)})")
    header = lines[0]
    unknown = [c for c in header if c not in columns]
    if unknown:
        raise BadInputError(f"profile data {path}: unknown column(s) {', '.join(map(repr, unknown))}")
    missing = [c for c in columns if c not in header and c not in OPTIONAL_COLUMNS]
    if missing:
        raise BadInputError(f"profile data {path}: missing column(s) {', '.join(missing)}")
    defaults = {c: OPTIONAL_COLUMNS[c] for c in columns if c not in header}
    rows = []
    for number, cells in enumerate(lines[1:], start=2):
        if not cells:
            continue
        if len(cells) != len(header):
            raise BadInputError(f"profile data {path}, line {number}: {len(cells)} fields, expected {len(header)}")
        rows.append((number, {**defaults, **dict(zip(header, cells))}))
    return rows


def _number(path: Path, line: int, column: str, text: str, *, integer: bool = False, positive: bool = True) -> float:
    try:
        value = int(text) if integer else float(text)
    except ValueError:
        kind = "a whole number" if integer else "a number"
        raise BadInputError(f"profile data {path}, line {line}: {column} = {text!r} is not {kind}") from None
    if not math.isfinite(value):
        raise BadInputError(f"profile data {path}, line {line}: {column} = {text!r} is not a finite number")
    if positive and value <= 0:
        raise BadInputError(f"profile data {path}, line {line}: {column} = {text!r} must be positive")
    return value


def _share(path: Path, line: int, text: str) -> float | None:
    if text == "":
        return None
    value = _number(path, line, "foreign_cpu", text, positive=False)
    if not 0 <= value <= 1:
        raise BadInputError(f"profile data {path}, line {line}: foreign_cpu = {text!r} must be between 0 and 1")
    return value


def read_layer_rows(path: Path, *, allow_truncated_tail: bool = False) -> list[LayerRow]:
    rows = []
    for line, d in _read_rows(path, LAYER_COLUMNS, allow_truncated_tail=allow_truncated_tail):
        if d["op"] not in CALIBRATION_OPS:
            raise BadInputError(f"profile data {path}, line {line}: unknown op {d['op']!r}")
        if d["pass"] not in PASSES:
            raise BadInputError(f"profile data {path}, line {line}: unknown pass {d['pass']!r} (one of {', '.join(PASSES)})")
        config = Config(**{c: int(_number(path, line, c, d[c], integer=True,
                                          positive=c not in ("bias", "inplace", "grad_filter")))
                           for c in CONFIG_COLUMNS})
        if config.bias not in (0, 1) or config.inplace not in (0, 1):
            raise BadInputError(f"profile data {path}, line {line}: bias and inplace must be 0 or 1")
        if config.weight_per_mille > 1000 or config.grad_filter < 0:
            raise BadInputError(f"profile data {path}, line {line}: weight_per_mille must be 1 to 1000 and grad_filter "
                                "0 or more")
        rows.append(LayerRow(
            op=d["op"], pass_=d["pass"], config=config, origin=d["origin"] or "random",
            round=int(_number(path, line, "round", d["round"], integer=True, positive=False)),
            ms=_number(path, line, "ms", d["ms"]), foreign_cpu=_share(path, line, d["foreign_cpu"]),
        ))
    return rows


def read_step_rows(path: Path, *, allow_truncated_tail: bool = False) -> list[StepRow]:
    rows = []
    for line, d in _read_rows(path, STEP_COLUMNS, allow_truncated_tail=allow_truncated_tail):
        if not d["network"] or not d["scheme"]:
            raise BadInputError(f"profile data {path}, line {line}: network and scheme must not be empty")
        if d["runtime"] not in STEP_RUNTIMES:
            raise BadInputError(f"profile data {path}, line {line}: unknown runtime {d['runtime']!r} (one of "
                                f"{', '.join(STEP_RUNTIMES)})")
        rows.append(StepRow(
            network=d["network"], scheme=d["scheme"],
            batch=int(_number(path, line, "batch", d["batch"], integer=True)),
            resolution=int(_number(path, line, "resolution", d["resolution"], integer=True)),
            ms=_number(path, line, "ms", d["ms"]), foreign_cpu=_share(path, line, d["foreign_cpu"]), runtime=d["runtime"],
        ))
    return rows
