"""``tlplan.check``: recompute a plan's costs for the model it names and hold it to a budget."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .costs.annotate import annotate
from .errors import BadInputError
from .plan.plan import Plan
from .plan.validate import validate_options, validate_shapes
from .planning import predicted_costs
from .trace import trace_model

#: the stored predictions that must still hold for a plan not to be stale
CHECKED = ("saved_bytes", "peak_bytes", "trainable_param_bytes", "grad_bytes", "optimizer_bytes")


@dataclass(frozen=True)
class CheckResult:
    plan_path: str
    model: str
    runtime: str
    budget_bytes: int
    predicted: dict[str, Any]  # recomputed now
    stored: dict[str, Any]  # as the plan file says
    stale: tuple[str, ...]  # fields whose stored value no longer matches

    @property
    def fits(self) -> bool:
        return self.predicted["peak_bytes"] <= self.budget_bytes

    @property
    def passed(self) -> bool:
        return self.fits and not self.stale

    def to_dict(self) -> dict[str, Any]:
        return {"plan": self.plan_path, "model": self.model, "runtime": self.runtime, "budget_bytes": self.budget_bytes,
                "fits": self.fits, "stale": list(self.stale), "passed": self.passed,
                "predicted": self.predicted, "stored": self.stored}


def check_plan(plan: Plan, plan_path: str, budget_bytes: int | None = None, model=None) -> CheckResult:
    """Recompute ``plan``'s costs; the budget is ``budget_bytes`` or the one the plan was solved for."""
    from .zoo import load_model

    budget = budget_bytes if budget_bytes is not None else plan.budget_bytes
    if budget is None:
        raise BadInputError(f"plan {plan_path} records no budget; give one with --ram")
    net = model if model is not None else load_model(plan.model, num_classes=plan.num_classes)
    graph = trace_model(net, plan.input_shape, plan.model)
    validate_shapes(graph, plan.shapes, f"plan {plan_path}")
    validate_options(graph, plan.layers, f"plan {plan_path}")
    costs = annotate(graph, plan.layers, plan.runtime, plan.precision)
    now = predicted_costs(costs, plan.optimizer)
    stored = dict(plan.predicted)
    stale = tuple(k for k in CHECKED if k in stored and stored[k] != now[k])
    return CheckResult(plan_path, plan.model, plan.runtime, budget, now, stored, stale)
