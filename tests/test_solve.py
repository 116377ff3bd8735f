"""The solver: exact on what it optimises, never below the evolutionary baseline, plans that run and fit."""

from __future__ import annotations

import copy
import itertools
import json

import pytest
import torch
import torch.nn as nn

import tlplan
from tlplan.errors import BadInputError, CheckFailed
from tlplan.measure.saved import measure_saved_bytes
from tlplan.plan.plan import load_plan
from tlplan.runtime import apply_plan
from tlplan.sizes import parse_size
from tlplan.solve import build_space, solve_space
from tlplan.solve.evolution import evolve
from tlplan.solve.solver import _knapsack, pareto_fronts
from tlplan.solve.space import fixed_cost
from tlplan.trace import trace_model


@pytest.mark.parametrize("text,expected", [
    ("256KB", 262144), ("256KiB", 262144), ("256kb", 262144), ("0.5MB", 524288), ("1GiB", 1 << 30),
    ("1048576", 1048576), ("2 MB", 2 << 20), ("100B", 100),
])
def test_sizes(text, expected) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["256XB", "-1KB", "", "KB", "1.2.3MB", "0"])
def test_malformed_sizes(text) -> None:
    with pytest.raises(BadInputError):
        parse_size(text)


def tiny() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.ReLU(),
        nn.Conv2d(8, 16, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4),
    )


def brute_force(space, fixed: dict, budget: int) -> float:
    """The additive model's optimum by trying every depth and every combination of options."""
    best = 0.0
    for d in space.depths:
        for picks in itertools.product(*[range(len(c.candidates)) for c in space.choices[d:]]):
            cands = [ch.candidates[k] for ch, k in zip(space.choices[d:], picks)]
            if fixed[d] + sum(c.cost_bytes for c in cands) <= budget:
                best = max(best, sum(c.importance for c in cands))
    return best


def tiny_budgets(space, fixed: dict) -> list[int]:
    low = min(fixed.values())
    high = max(fixed.values()) + sum(max(c.cost_bytes for c in ch.candidates) for ch in space.choices)
    return [int(low + (high - low) * f) for f in (0.05, 0.2, 0.5, 0.8, 1.0)]


@pytest.mark.parametrize("runtime,form", [("tlplan", None), ("mcu", None), ("mcu", "backward-config")])
def test_exact_against_brute_force(runtime, form) -> None:
    # GIVEN a model small enough to enumerate every depth and option
    graph = trace_model(tiny(), (2, 3, 8, 8))
    space = build_space(graph, runtime, "int8" if runtime == "mcu" else "fp32", form=form)
    assert space.choices and space.depths
    fixed = {d: fixed_cost(space, d) for d in space.depths}
    for budget in tiny_budgets(space, fixed):
        # WHEN every combination is tried under the solver's memory model (fixed cost + Σ option costs)
        brute = brute_force(space, fixed, budget)
        # THEN one sweep of Pareto fronts answers every depth with that optimum, and the MILP agrees
        caps = {d: budget - fixed[d] for d in space.depths if fixed[d] <= budget}
        fronts = pareto_fronts(space, caps)
        answers = [fronts.best(d, cap) for d, cap in caps.items()]
        assert max((a[1] for a in answers if a is not None), default=0.0) == pytest.approx(brute, abs=1e-9)
        milp = max((_knapsack(space, d, cap) or (None, 0.0, 0))[1] for d, cap in caps.items()) if caps else 0.0
        assert milp == pytest.approx(brute, abs=1e-9)
        # and each answer is a real plan: its options cost and weigh what the front says
        for (d, cap), found in zip(caps.items(), answers):
            if found is not None:
                chosen, value, cost = found
                cands = [ch.candidates[k] for ch, k in zip(space.choices[d:], chosen)]
                assert sum(c.cost_bytes for c in cands) == cost <= cap
                assert sum(c.importance for c in cands) == pytest.approx(value, abs=1e-9)
        # a cut at (nearly) the optimum keeps it: only points that cannot beat the plan in hand go
        if brute > 0:
            cut = pareto_fronts(space, caps, beat=brute * (1 - 1e-6))
            assert max(cut.best(d, cap)[1] for d, cap in caps.items() if cut.best(d, cap)) == pytest.approx(brute, abs=1e-9)


@pytest.mark.parametrize("name,runtime,factor", [("mcunet-5fps", "mcu", 2), ("resnet18", "tlplan", 2)])
def test_fronts_equal_the_milp_per_depth_on_the_zoo(name, runtime, factor) -> None:
    # GIVEN a zoo model's space at twice its cheapest plan
    res = tlplan.default_resolution(name)
    graph = trace_model(tlplan.load_model(name, num_classes=10), (1, 3, res, res), name)
    space = build_space(graph, runtime)
    budget = space.base_memory.peak_bytes * factor
    fixed = space.fixed_bytes
    caps = {d: budget - fixed[d] for d in space.depths if fixed[d] <= budget}
    fronts = pareto_fronts(space, caps)
    # THEN at every depth the front's answer has the old formulation's objective (a MILP per depth, HiGHS)
    for d, cap in caps.items():
        found, milp = fronts.best(d, cap), _knapsack(space, d, cap)
        assert (found is None) == (milp is None)
        if found is not None:
            assert found[1] == pytest.approx(milp[1], rel=1e-9, abs=1e-9)
    # and the solve reports the depths' optima it relied on, with a proven plan
    result = solve_space(space, budget)
    assert result.best.gap == 0.0 and result.best.memory.peak_bytes <= budget
    assert result.per_depth and all(model_bytes >= fixed[d] for d, _, model_bytes in result.per_depth)
    for d, value, _ in result.per_depth:
        assert value == pytest.approx(fronts.best(d, caps[d])[1], abs=1e-9)
    if result.next_better is not None:
        assert result.next_better.importance > result.best.importance
        assert result.next_better.memory.peak_bytes <= int(budget * 1.25)


def test_greedy_warm_start_is_a_plan_within_the_bound() -> None:
    from tlplan.solve.solver import _Greedy

    graph = trace_model(tiny(), (2, 3, 8, 8))
    space = build_space(graph, "tlplan")
    fixed = {d: fixed_cost(space, d) for d in space.depths}
    greedy = _Greedy.of(space)
    for budget in tiny_budgets(space, fixed):
        for d in space.depths:
            cap = budget - fixed[d]
            found = greedy.plan(space, d, cap)
            if found is None:
                continue
            chosen, value = found
            cands = [ch.candidates[k] for ch, k in zip(space.choices[d:], chosen)]
            assert sum(c.cost_bytes for c in cands) <= cap
            assert sum(c.importance for c in cands) == pytest.approx(value)
            # greedy ≤ the exact optimum ≤ the LP bound
            exact = pareto_fronts(space, {d: cap}).best(d, cap)[1]
            assert value <= exact + 1e-9 <= greedy.bound(space, d, cap) + 2e-9


@pytest.mark.parametrize("name,runtime,budget,classes", [
    ("mcunet-5fps", "mcu", "256KB", 10), ("mobilenet_v2", "tlplan", "24MB", 10), ("proxyless-w0.3", "mcu", "200KB", 10),
])
def test_never_below_the_evolutionary_baseline(name, runtime, budget, classes) -> None:
    res = 128 if tlplan.default_resolution(name) == 128 else 96
    graph = trace_model(tlplan.load_model(name, num_classes=classes), (1, 3, res, res), name)
    space = build_space(graph, runtime, "int8" if runtime == "mcu" else "fp32")
    result = solve_space(space, parse_size(budget))
    baseline = evolve(space, parse_size(budget), samples=5000)
    assert result.best.importance >= baseline > 0
    assert result.best.memory.peak_bytes <= parse_size(budget)


@pytest.mark.parametrize("budget", ["11MB", "13MB", "18MB"])
def test_solved_plan_runs_keeps_what_it_predicts_and_fits(budget) -> None:
    model = tlplan.load_model("mobilenet_v2", num_classes=10)
    shape = (2, 3, 64, 64)
    plan = tlplan.solve(model, shape, parse_size(budget), model_name="mobilenet_v2", num_classes=10)
    assert plan.predicted["peak_bytes"] <= parse_size(budget)
    planned = apply_plan(copy.deepcopy(model), plan)
    measured = measure_saved_bytes(planned, shape, None, copy_model=False).saved_bytes
    assert measured == plan.predicted["saved_bytes"]
    from tlplan.measure.peak import measure_peak

    peak = measure_peak(planned, shape).peak_bytes
    assert peak <= parse_size(budget) * 1.05  # the model's ±5%, measured


@pytest.mark.parametrize("name,runtime", [("mcunet-5fps", "mcu"), ("mobilenet_v2", "tlplan")])
def test_infeasible_budget(name, runtime) -> None:
    res = tlplan.default_resolution(name)
    graph = trace_model(tlplan.load_model(name, num_classes=10), (1, 3, res, res), name)
    space = build_space(graph, runtime, "int8" if runtime == "mcu" else "fp32")
    below = space.base_memory.peak_bytes - 1
    with pytest.raises(CheckFailed, match="cheapest .* needs"):
        solve_space(space, below)
    # answered from the cheapest plan alone: no depth's fixed cost was simulated for it
    assert "fixed_bytes" not in space.__dict__
    # and at the cheapest plan's own peak there is a plan (the cheapest, or one as lean)
    assert solve_space(space, below + 1).best.memory.peak_bytes <= below + 1


def test_cli_solve_mcu_256kb(run, tmp_path) -> None:
    path = tmp_path / "plan.yaml"
    code, out, err = run("solve", "mcunet-5fps", "--ram", "256KB", "--runtime", "mcu", "-o", str(path), "--format", "json")
    assert code == 0, err
    d = json.loads(out)
    assert d["predicted"]["peak_bytes"] <= 256 * 1024 and d["budget_bytes"] == 256 * 1024 and d["mip_gap"] == 0
    plan = load_plan(path)
    assert plan.runtime == "mcu" and plan.budget_bytes == 256 * 1024 and plan.num_classes == 10
    assert plan.predicted["peak_bytes"] == d["predicted"]["peak_bytes"]


def test_cli_solve_errors(run) -> None:
    code, out, err = run("solve", "mcunet-5fps", "--ram", "100KB", "--runtime", "mcu")
    assert code == 1 and "cheapest (classifier only) needs" in err and "Traceback" not in err
    for bad in ("256XB", "-1KB", ""):
        code, out, err = run("solve", "mcunet-5fps", "--ram", bad)
        assert code == 2 and err.strip().splitlines()[-1].startswith("error: size")


def test_cli_pareto(run, tmp_path) -> None:
    png = tmp_path / "front.png"
    written = tmp_path / "front.json"  # with --pareto, -o writes the frontier (there is no single plan)
    code, out, err = run("solve", "mcunet-5fps", "--ram", "300KB", "--runtime", "mcu", "--pareto", "--plot", str(png),
                         "--format", "json", "-o", str(written), "--points", "4")
    assert code == 0, err
    d = json.loads(written.read_text())
    values = [p["importance"] for p in d["frontier"]]
    assert values == sorted(values) and len(values) >= 3  # more budget, never less importance
    assert all(p["peak_bytes"] <= p["budget_bytes"] for p in d["frontier"])
    assert {"bias", "last", "full"} <= {p["label"] for p in d["schemes"]}
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_user_importance_table_steers_the_choice(run, tmp_path) -> None:
    table = tmp_path / "imp.csv"
    table.write_text("layer,option,importance\nblocks.3.point_linear.conv,w1+b,1000\n")
    code, out, err = run("solve", "mcunet-5fps", "--ram", "300KB", "--runtime", "mcu", "--importance", str(table), "--format", "json")
    assert code == 0, err
    chosen = {r["layer"]: r["trains"] for r in json.loads(out)["layers"]}
    assert chosen.get("blocks.3.point_linear.conv") == "w1+b"
    table.write_text("layer,option,importance\nx,y,notanumber\n")
    code, out, err = run("solve", "mcunet-5fps", "--ram", "300KB", "--runtime", "mcu", "--importance", str(table))
    assert code == 2 and "not a number" in err


def test_export_backward_config_round_trips(run, tmp_path) -> None:
    path = tmp_path / "bc.yaml"
    code, out, err = run("solve", "mcunet-5fps", "--ram", "256KB", "--runtime", "mcu", "--export", "backward-config", "-o", str(path), "--format", "json")
    assert code == 0, err
    solved = {r["layer"]: r["trains"] for r in json.loads(out)["layers"]}
    # the exported config, read back as a scheme, trains the same convs the same way
    code, out, err = run("profile", "mcunet-5fps", "--num-classes", "10", "--runtime", "mcu", "--no-measure",
                         "--scheme", f"sparse:{path}", "--format", "json")
    assert code == 0, err
    from tlplan.plan.schemes import load_backward_config, sparse_options
    from tlplan.solve.importance import option_key

    graph = trace_model(tlplan.load_model("mcunet-5fps", num_classes=10), (1, 3, 128, 128))
    again = {name: option_key(o) for name, o in sparse_options(graph, load_backward_config(path)).items()}
    assert again == {k: v for k, v in solved.items() if k != "classifier"}


def test_export_refuses_other_plans(run) -> None:
    code, out, err = run("solve", "mcunet-5fps", "--ram", "256KB", "--runtime", "mcu", "--export", "onnx")
    assert code == 2 and "backward-config" in err
