"""``tlplan.compare``: several schemes side by side, with their ratios to ``full``."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch.nn as nn

from .costs.annotate import annotate
from .display import Tabular, clip, shape_text, size
from .errors import BadInputError, arg
from .memory.timeline import simulate_peak
from .plan.schemes import parse_scheme, scheme_options
from .trace import trace_model

from .predict.predictor import PredictedOn, Pricer, predict_latency

if TYPE_CHECKING:
    from .predict.devices import Device


@dataclass(frozen=True)
class SchemeRow:
    scheme: str
    kept_eager_bytes: int  # what plain PyTorch keeps for backward (derived, exact)
    kept_tlplan_bytes: int  # what the tlplan runtime keeps (derived, exact)
    peak_bytes: int  # tlplan runtime, predicted
    trainable_params: int
    macs_bwd: int
    step_ms: float | None  # tlplan runtime, measured here
    step_ms_predicted: float | None = None  # on the report's device, predicted

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True, repr=False)  # repr: a line (Tabular's)
class CompareReport(Tabular):
    """Several schemes side by side. In a notebook, the CLI's table; ``to_dataframe()``: one row per scheme."""

    _reporter = "tlplan.report.compare"

    model: str
    input_shape: tuple[int, ...]
    rows: tuple[SchemeRow, ...]
    reference: str  # the row ratios are taken against ("full")
    measured: str | None  # where step times were measured
    predicted: PredictedOn | None = None  # where each scheme's step was predicted
    warnings: tuple[str, ...] = ()  # what a scheme could not do as asked (a conv it could not filter)
    frozen_bits: int = 32  # bits each frozen parameter is counted at in peak_bytes

    def ratio(self, row: SchemeRow, field: str) -> float | None:
        ref = next(r for r in self.rows if r.scheme == self.reference)
        a, b = getattr(row, field), getattr(ref, field)
        return None if a is None or not b else a / b

    def to_dict(self) -> dict[str, Any]:
        rows = []
        for row in self.rows:
            d = row.to_dict()
            d["ratio_to_full"] = {f: self.ratio(row, f) for f in ("kept_tlplan_bytes", "peak_bytes", "macs_bwd", "step_ms",
                                                                  "step_ms_predicted")}
            rows.append(d)
        return {"model": self.model, "input_shape": list(self.input_shape), "reference": self.reference,
                "measured": self.measured, "predicted": str(self.predicted) if self.predicted else None, "frozen_bits": self.frozen_bits, "schemes": rows,
                "warnings": list(self.warnings)}

    def _summary(self) -> str:
        names = clip(", ".join(r.scheme for r in self.rows), 60)
        text = f"{clip(self.model, 48)} · {shape_text(self.input_shape)}: {len(self.rows)} schemes ({names})"
        if self.rows:
            low, high = min(self.rows, key=lambda r: r.peak_bytes), max(self.rows, key=lambda r: r.peak_bytes)
            text += f", peak {size(low.peak_bytes)} ({clip(low.scheme, 20)}) to {size(high.peak_bytes)} ({clip(high.scheme, 20)})"
        if self.measured:
            text += ", steps measured here"
        if self.predicted:
            text += f", predicted for {clip(self.predicted.device, 24)}"
        return text

    def _frame(self) -> tuple[list[str], list[dict[str, Any]]]:
        # the CSV's fields, each as the report holds it
        columns = [f.name for f in fields(SchemeRow)] + ["predicted_for"]
        device = self.predicted.device if self.predicted else None
        return columns, [{**row.to_dict(), "predicted_for": device} for row in self.rows]


def compare(
    model: nn.Module,
    input_shape: tuple[int, ...],
    schemes: Sequence[str],
    *,
    model_name: str | None = None,
    measure: bool = True,
    repeats: int = 3,
    device: str | Device | None = None,
    progress: Callable[[int, int], None] | None = None,
    frozen_bits: int = 32,
) -> CompareReport:
    """One row per scheme: kept bytes (plain PyTorch and tlplan runtime), peak, params, MACs, ms
    measured here and, with ``device``, predicted on that device. ``frozen_bits`` (8 or 32): what
    the peak counts each frozen parameter at."""
    from .costs.annotate import check_frozen_bits

    frozen_bits = check_frozen_bits("tlplan", frozen_bits)
    if not schemes:
        raise BadInputError(f"give at least one scheme in {arg('schemes')}, e.g. full,bias,blocks:5")
    parsed = [parse_scheme(s) for s in schemes]
    names = [p.text for p in parsed]
    if "full" not in names:
        parsed.insert(0, parse_scheme("full"))  # the reference every ratio is taken against
    graph = trace_model(model, tuple(input_shape), model_name or type(model).__name__)
    pricer = None
    if device is not None:
        from .predict.devices import resolve_device

        found = resolve_device(device)
        pricer = Pricer.of(found) if found.predicts else None  # a profile without a latency model: memory only
    rows = []
    notes: list[str] = []
    from .runtime.lite import for_scheme

    base = graph
    for i, scheme in enumerate(parsed):
        # lite schemes: a copy of the model with the branches, and its graph
        net, graph, _ = for_scheme(model, base.input_shape, scheme, base.model_name, graph=base)
        options = scheme_options(graph, scheme, notes)
        eager = annotate(graph, options, "eager")
        costs = annotate(graph, options, "tlplan", frozen_bits=frozen_bits)
        step_ms = None
        if measure:
            from .measure.latency import prepared_copy, time_step

            step_ms = round(time_step(prepared_copy(net, costs), graph.input_shape, repeats=repeats), 3)
        rows.append(SchemeRow(
            scheme=scheme.text,
            kept_eager_bytes=eager.totals["saved_bytes"],
            kept_tlplan_bytes=costs.totals["saved_bytes"],
            peak_bytes=simulate_peak(costs).peak_bytes,
            trainable_params=costs.totals["trainable_params"],
            macs_bwd=costs.totals["macs_bwd"],
            step_ms=step_ms,
            step_ms_predicted=None if pricer is None else round(predict_latency(graph, costs, pricer).step_ms, 3),
        ))
        if progress:
            progress(i + 1, len(parsed))
    from .profiling import host_description

    predicted = None if pricer is None else pricer.on
    graph = base
    return CompareReport(graph.model_name, graph.input_shape, tuple(rows), "full", host_description() if measure else None,
                         predicted, tuple(notes), frozen_bits)

