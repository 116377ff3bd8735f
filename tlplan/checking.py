"""``tlplan.check``: recompute a plan's costs for the model it names and hold it to a budget."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .costs.annotate import annotate
from .display import Displayed, clip, size
from .errors import BadInputError, arg
from .plan.plan import Plan
from .plan.validate import validate_options, validate_shapes
from .planning import predicted_costs
from .trace import trace_model

if TYPE_CHECKING:
    from .predict.devices import Device
    from .predict.predictor import PredictedOn

#: the stored predictions that must still hold for a plan not to be stale
CHECKED = ("saved_bytes", "peak_bytes", "trainable_param_bytes", "grad_bytes", "optimizer_bytes")


@dataclass(frozen=True, repr=False)  # repr: a line (Displayed's)
class CheckResult(Displayed):
    """A plan held to a budget. In a notebook, the CLI's table and its PASS / FAIL line."""

    _reporter = "tlplan.report.check"

    plan_path: str
    model: str
    runtime: str
    budget_bytes: int
    predicted: dict[str, Any]  # recomputed now
    stored: dict[str, Any]  # as the plan file says
    stale: tuple[str, ...]  # fields whose stored value no longer matches
    step_ms: float | None = None  # predicted now on the device, where there is one
    step_on: PredictedOn | None = None  # where step_ms was predicted
    max_step_ms: float | None = None  # the plan's time limit (solve --max-step-ms), on the plan's device
    notes: tuple[str, ...] = ()  # what could not be checked, and why
    budget_source: str = "the plan"  # where the budget in effect came from
    frozen_bits: int = 32  # bits each frozen parameter is counted at in ``predicted``
    reorder: bool | None = None  # mcu: whether ``predicted`` applies each gradient as computed (None: not mcu)

    @property
    def fits(self) -> bool:
        """Within budget (a plan whose model changed has no prediction now: its check fails as stale)."""
        return "peak_bytes" not in self.predicted or self.predicted["peak_bytes"] <= self.budget_bytes

    @property
    def fast_enough(self) -> bool:
        return self.step_ms is None or self.max_step_ms is None or self.step_ms <= self.max_step_ms

    @property
    def stored_step_ms(self) -> float | None:
        """The plan's own step prediction, where it was made on the same device and from the same source."""
        same = self.step_on is not None and self.stored.get("step_ms_source") == str(self.step_on)
        return self.stored.get("step_ms") if same else None

    @property
    def passed(self) -> bool:
        return self.fits and self.fast_enough and not self.stale

    def to_dict(self) -> dict[str, Any]:
        return {"plan": self.plan_path, "model": self.model, "runtime": self.runtime, "budget_bytes": self.budget_bytes,
                "budget_source": self.budget_source, "fits": self.fits if self.predicted else None, "fast_enough": self.fast_enough, "stale": list(self.stale), "passed": self.passed,
                "predicted": self.predicted, "stored": self.stored, "step_ms": self.step_ms,
                "step_ms_source": str(self.step_on) if self.step_on else None, "max_step_ms": self.max_step_ms, "notes": list(self.notes),
                "frozen_bits": self.frozen_bits, "reorder": self.reorder}

    def _summary(self) -> str:
        reasons = [why for why, failed in (("over budget", not self.fits), ("too slow", not self.fast_enough),
                                          ("stale: " + ", ".join(self.stale), bool(self.stale))) if failed]
        verdict = "PASS" if self.passed else "FAIL (" + "; ".join(reasons) + ")"
        peak = self.predicted.get("peak_bytes")
        text = (f"{verdict} {clip(self.plan_path, 40)} · {clip(self.model, 48)} · runtime {self.runtime}: "
                f"peak {size(peak)} of {size(self.budget_bytes)}")
        if self.step_ms is not None:
            text += f", step {self.step_ms:,.1f} ms" + ("" if self.max_step_ms is None else f" (limit {self.max_step_ms:g} ms)")
        return text


def check_plan(plan: Plan, plan_path: str, budget_bytes: int | None = None, model=None,
               device: str | Device | None = None, trust_model_code: bool = False,
               budget_source: str = "the caller", frozen_bits: int | None = None,
               reorder: bool | None = None) -> CheckResult:
    """Recompute ``plan``'s costs; the budget is ``budget_bytes`` or the one the plan was solved for.

    On ``device`` (else the plan's own, where it names one with a latency model) the step time is
    predicted too, and held to the plan's ``max_step_ms`` where it has one. A plan naming model code
    (``package.module:factory``) is built only with ``trust_model_code`` (or pass ``model``).
    ``frozen_bits`` (8 or 32) counts frozen parameters at other bits than the plan's ``frozen_bits``;
    the plan's recorded memory was for its own, so it is then not held against the recomputed one.
    ``reorder`` (mcu plans only) likewise overrides the plan's operator reordering: its recorded
    peak and gradient bytes are then not compared where the choice differs."""
    from dataclasses import replace

    from .costs.annotate import check_frozen_bits
    from .zoo import load_model

    bits = check_frozen_bits(plan.runtime, frozen_bits if frozen_bits is not None else plan.frozen_bits_in_effect)
    overridden = bits != plan.frozen_bits_in_effect
    if reorder is not None and plan.runtime != "mcu":
        raise BadInputError(f"{arg('reorder')} is for plans on the mcu runtime (this one is {plan.runtime}): "
                            "PyTorch keeps every gradient until the optimizer's step")
    optimizer = plan.optimizer if reorder is None else replace(plan.optimizer, reorder=reorder)
    reordered = reorder is not None and reorder != plan.optimizer.reorders(plan.runtime)

    budget = budget_bytes if budget_bytes is not None else plan.budget_bytes
    if budget is None:
        raise BadInputError(f"plan {plan_path} records no budget; give one with {arg('ram_bytes')}")
    net = model if model is not None else load_model(plan.model, num_classes=plan.num_classes, trust_code=trust_model_code)
    if plan.lite:  # its lite residual branches (a caller's model is not changed: a copy gets them)
        from .runtime.lite import with_lite

        net = with_lite(net, plan.input_shape, plan.lite, copy=model is not None)
    graph = trace_model(net, plan.input_shape, plan.model)
    try:
        validate_shapes(graph, plan.shapes, f"plan {plan_path}")
    except BadInputError as exc:  # the model changed since the plan was made: a failed check, not bad input
        changed = str(exc).removeprefix(f"plan {plan_path}: ")
        return CheckResult(plan_path, plan.model, plan.runtime, budget, {}, dict(plan.predicted), ("model",),
                           notes=(f"the model changed: {changed}; solve again for the model as it is now",),
                           budget_source=budget_source if budget_bytes is not None else "the plan", frozen_bits=bits)
    validate_options(graph, plan.layers, f"plan {plan_path}", plan.runtime)
    costs = annotate(graph, plan.layers, plan.runtime, plan.precision, bits)
    now = predicted_costs(costs, optimizer)
    stored = dict(plan.predicted)
    # frozen parameters counted at other bits (or gradients held otherwise) change the peak by
    # design, not because the plan is stale
    checked = tuple(k for k in CHECKED if not (overridden and k == "peak_bytes")
                    and not (reordered and k in ("peak_bytes", "grad_bytes")))
    stale = tuple(k for k in checked if k in stored and stored[k] != now[k])
    step_ms = source = limit = None  # source: a PredictedOn
    notes: list[str] = []
    if overridden:
        notes.append(f"frozen parameters counted at {bits} bits, the plan's at {plan.frozen_bits_in_effect}: "
                     "its recorded peak is not compared")
    elif bits != 32 and plan.runtime != "mcu":
        notes.append(f"the plan counts frozen parameters at {bits} bits; this PyTorch runtime holds them at 32")
    if reordered:
        notes.append(f"operator reordering {'on' if reorder else 'off'}, the plan's "
                     f"{'on' if plan.optimizer.reorders('mcu') else 'off'}: its recorded peak and gradient bytes are not compared")
    found = _device_for(plan, device, notes)
    if found is not None:
        from .predict.predictor import predict_latency

        prediction = predict_latency(graph, costs, found)
        step_ms, source = round(prediction.step_ms, 3), prediction.on
        stored_limit = stored.get("max_step_ms")
        if isinstance(stored_limit, (int, float)) and found.name == plan.device:  # the limit is the plan's device's
            limit = float(stored_limit)
    elif isinstance(stored.get("max_step_ms"), (int, float)):
        notes.append(f"the plan's step-time limit ({stored['max_step_ms']:g} ms) was not checked: no device to predict on")
    return CheckResult(plan_path, plan.model, plan.runtime, budget, now, stored, stale, step_ms, source, limit, tuple(notes),
                       budget_source if budget_bytes is not None else "the plan", bits,
                       optimizer.reorders("mcu") if plan.runtime == "mcu" else None)


def _device_for(plan: Plan, device: str | Device | None, notes: list[str]):
    """The device whose step time to predict: ``device`` (must exist), else the plan's own (skipped,
    with a note, where this machine lacks its profile or it has no latency model)."""
    from .errors import UnknownDeviceError
    from .predict.devices import resolve_device

    if device is not None:
        found = resolve_device(device)
    elif plan.device is not None:
        try:
            found = resolve_device(plan.device)
        except UnknownDeviceError:
            notes.append(f"the plan's device {plan.device!r} has no profile here: step time not predicted")
            return None
    else:
        return None
    if not found.predicts:
        notes.append(f"device {found.name} has no latency model: step time not predicted")
        return None
    return found
