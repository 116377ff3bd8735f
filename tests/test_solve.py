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
from tlplan.solve.solver import _knapsack
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


@pytest.mark.parametrize("runtime", ["tlplan", "mcu"])
def test_exact_against_brute_force(runtime) -> None:
    # GIVEN a model small enough to enumerate every depth and option
    graph = trace_model(tiny(), (2, 3, 8, 8))
    space = build_space(graph, runtime, "int8" if runtime == "mcu" else "fp32")
    fixed = {d: fixed_cost(space, d) for d in space.depths}
    low, high = min(fixed.values()), max(fixed.values()) + sum(max(c.cost_bytes for c in ch.candidates) for ch in space.choices)
    for budget in [int(low + (high - low) * f) for f in (0.05, 0.2, 0.5, 0.8, 1.0)]:
        # WHEN every combination is tried under the solver's memory model (fixed cost + Σ option costs)
        brute = 0.0
        for d in space.depths:
            for picks in itertools.product(*[range(len(c.candidates)) for c in space.choices[d:]]):
                cands = [ch.candidates[k] for ch, k in zip(space.choices[d:], picks)]
                if fixed[d] + sum(c.cost_bytes for c in cands) <= budget:
                    brute = max(brute, sum(c.importance for c in cands))
        # THEN the MILP finds the same optimum
        best = max((_knapsack(space, d, budget - fixed[d]) or (None, 0.0, 0))[1] for d in space.depths if fixed[d] <= budget)
        assert best == pytest.approx(brute, abs=1e-9)


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


def test_infeasible_budget() -> None:
    graph = trace_model(tlplan.load_model("mcunet-5fps", num_classes=10), (1, 3, 128, 128))
    with pytest.raises(CheckFailed, match="cheapest .* needs"):
        solve_space(build_space(graph, "mcu", "int8"), 50 * 1024)


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
