"""TinyTL's lite residual branches: the schemes lite, lite+bias, lite:K, exact on both runtimes."""

from __future__ import annotations

import copy
import json

import pytest
import torch

import tlplan
from tlplan.errors import BadInputError, SchemeError
from tlplan.measure.saved import measure_saved_bytes
from tlplan.plan.lite import LiteConfig
from tlplan.plan.plan import Plan, load_plan
from tlplan.plan.schemes import parse_scheme
from tlplan.runtime import apply_plan
from tlplan.runtime.lite import LiteResidual, insert_lite, lite_of

CASES = [("mcunet-5fps", (1, 3, 64, 64)), ("mobilenet_v2", (2, 3, 64, 64))]
BRANCH_KEYS = {"conv1.weight", "norm1.weight", "norm1.bias", "conv2.weight", "norm2.weight", "norm2.bias"}


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    return {name: tlplan.load_model(name) for name, _ in CASES}


@pytest.mark.parametrize("runtime", ["eager", "tlplan"])
@pytest.mark.parametrize("name,shape", CASES)
def test_kept_bytes_exact(models, name, shape, runtime) -> None:
    model = models[name]
    for scheme in ("lite", "lite+bias", "lite:2"):
        plan = tlplan.plan_from_scheme(model, shape, scheme, runtime, model_name=name)
        net = apply_plan(copy.deepcopy(model), plan)
        measured = measure_saved_bytes(net, shape, None, copy_model=False).saved_bytes
        assert plan.predicted["saved_bytes"] == measured > 0, f"{name} {scheme} {runtime}"
        assert len(plan.lite) == (2 if scheme == "lite:2" else len(tlplan.trace_model(model, shape).blocks))
    assert not any("lite_residual" in k for k in model.state_dict()), "the caller's model is not changed"


def test_branch_starts_as_noop_and_keys() -> None:
    torch.manual_seed(0)
    model = tlplan.load_model("mobilenet_v2").eval()
    x = torch.randn(2, 3, 64, 64)
    before, keys = model(x), dict(model.state_dict())
    graph = tlplan.trace_model(model, (2, 3, 64, 64))
    assert insert_lite(model, graph, graph.blocks) is model
    assert torch.equal(model(x), before)
    new = set(model.state_dict()) - set(keys)
    assert new == {f"{b}.lite_residual.{k}" for b in graph.blocks for k in BRANCH_KEYS}
    assert all(torch.equal(model.state_dict()[k], v) for k, v in keys.items())  # nothing renamed or changed
    branch = model.get_submodule("features.3.lite_residual")
    assert isinstance(branch, LiteResidual) and branch.conv1.groups == 2 and branch.conv1.out_channels % 8 == 0
    assert isinstance(branch.norm1, torch.nn.GroupNorm) and branch.norm1.num_groups == branch.conv1.out_channels // 8
    # idempotent: a block with a branch keeps it
    insert_lite(model, graph, graph.blocks, LiteConfig(kernel=3, norm="batch"))
    assert model.get_submodule("features.3.lite_residual") is branch
    # its layers belong to the block, as ordinary ops
    traced = tlplan.trace_model(model, (2, 3, 64, 64))
    ops = {l.op for l in traced.layers if l.name.startswith("features.3.lite_residual.")}
    assert ops == {"avg_pool2d", "conv2d", "group_norm", "relu", "interpolate"}
    branch_layers = [l for l in traced.layers if ".lite_residual." in l.name]
    assert branch_layers and all(l.block == l.name.split(".lite_residual.")[0] for l in branch_layers)


def test_batch_norm_option_and_ineligible_block() -> None:
    model = tlplan.load_model("mcunet-5fps")
    graph = tlplan.trace_model(model, (1, 3, 64, 64))
    insert_lite(model, graph, graph.blocks[-1:], LiteConfig(norm="batch"))
    assert isinstance(model.get_submodule(f"{graph.blocks[-1]}.lite_residual.norm2"), torch.nn.BatchNorm2d)
    with pytest.raises(BadInputError, match="classifier"):
        insert_lite(model, graph, ["classifier"])
    with pytest.raises(BadInputError, match="nope"):
        insert_lite(model, graph, ["nope"])


@pytest.mark.parametrize("scheme", ["lite", "lite+bias"])
def test_trainable_set_and_gradients(models, scheme) -> None:
    name, shape = CASES[0]
    model = models[name]
    plan = tlplan.plan_from_scheme(model, shape, scheme, model_name=name)
    net = apply_plan(copy.deepcopy(model), plan)
    trained = {n for n, p in net.named_parameters() if p.requires_grad}
    branch = {n for n in dict(net.named_parameters()) if ".lite_residual." in n}
    head = {n for n in dict(net.named_parameters()) if n.startswith(net.tlplan_classifier + ".")}
    biases = {n for n in dict(net.named_parameters()) if n.endswith(".bias")} if scheme == "lite+bias" else set()
    assert trained == branch | head | biases
    if scheme == "lite":
        assert not any(n.endswith(".bias") and ".lite_residual." not in n and n not in head for n in trained)
    net.train()
    net(torch.randn(shape)).sum().backward()
    grads = {n for n, p in net.named_parameters() if p.grad is not None}
    assert grads == trained


def test_plan_file_round_trip(models, tmp_path) -> None:
    name, shape = CASES[1]
    model = models[name]
    plan = tlplan.plan_from_scheme(model, shape, "lite:3", model_name=name)
    path = tmp_path / "plan.yaml"
    plan.save(path)
    loaded = load_plan(path)
    assert loaded == plan and dict(loaded.lite) == dict(plan.lite) and len(loaded.lite) == 3
    fresh = tlplan.load_model(name)
    net = apply_plan(fresh, loaded)  # inserts the branches
    assert lite_of(net) == dict(plan.lite)
    same = apply_plan(copy.deepcopy(model), plan)
    assert {n for n, p in net.named_parameters() if p.requires_grad} == {n for n, p in same.named_parameters() if p.requires_grad}
    assert measure_saved_bytes(net, shape, None, copy_model=False).saved_bytes == plan.predicted["saved_bytes"]
    # the plan file as a scheme: profile and check rebuild the branches
    report = tlplan.profile(model, shape, scheme=str(path), model_name=name)
    assert report.totals["saved_bytes"] == plan.predicted["saved_bytes"]
    from tlplan.checking import check_plan

    result = check_plan(loaded, str(path), budget_bytes=1 << 40, model=tlplan.load_model(name))
    assert result.passed and not result.stale
    # older plans (no lite) read as before; bad lite entries are one-line errors
    data = plan.to_dict()
    assert "lite" not in tlplan.plan_from_scheme(model, shape, "bias", model_name=name).to_dict()
    for bad, match in (({"features.1": {"kernel": 4}}, "kernel"), ({"features.1": {"norm": "layer"}}, "norm"),
                       ([1], "lite"), ({"features.1": {"width": 2}}, "unknown")):
        with pytest.raises(BadInputError, match=match) as exc:
            Plan.from_dict({**data, "lite": bad})
        assert "\n" not in str(exc.value)


def test_scheme_parsing() -> None:
    assert parse_scheme("lite").kind == "lite" and parse_scheme("LITE+bias").kind == "lite+bias"
    assert (parse_scheme("lite:3").kind, parse_scheme("lite:3").k, parse_scheme("lite:3").text) == ("lite", 3, "lite:3")
    for bad, match in (("lite:", "number of blocks"), ("lite:x", "whole number"), ("lyte", "did you mean lite")):
        with pytest.raises(SchemeError, match=match) as exc:
            parse_scheme(bad)
        assert "\n" not in str(exc.value)
    model = tlplan.load_model("mcunet-5fps")
    with pytest.raises(SchemeError, match="choose K"):
        tlplan.plan_from_scheme(model, (1, 3, 64, 64), "lite:99")
    with pytest.raises(SchemeError, match="not its graph"):
        tlplan.plan_from_scheme(tlplan.trace_model(model, (1, 3, 64, 64)), (1, 3, 64, 64), "lite")


def test_cli_profile_and_compare(run) -> None:
    code, out, err = run("profile", "mcunet-5fps", "--resolution", "64", "--no-measure", "--scheme", "lite", "--format", "json")
    assert code == 0, err
    report = json.loads(out)
    assert report["scheme"] == "lite" and any(".lite_residual." in row["name"] for row in report["layers"])
    code, out, err = run("compare", "mcunet-5fps", "--resolution", "64", "--schemes", "bias,lite,lite+bias", "--no-measure",
                         "--format", "json")
    assert code == 0, err
    rows = {row["scheme"]: row for row in json.loads(out)["schemes"]}
    assert set(rows) == {"full", "bias", "lite", "lite+bias"}
    assert rows["lite"]["kept_tlplan_bytes"] < rows["full"]["kept_tlplan_bytes"]
    code, out, err = run("profile", "mcunet-5fps", "--resolution", "64", "--no-measure", "--scheme", "lite:x")
    assert code == 2 and "lite:x" in err and len(err.strip().splitlines()) == 1


def test_solve_adds_no_branches() -> None:
    from corpus import SHAPE, build  # tests/ is on the path (other tests import it the same way)

    plan = tlplan.solve(build("squeezenet"), SHAPE, 1 << 30)
    assert not plan.lite and not any("lite_residual" in name for name in plan.layers)


def test_train_and_check_a_lite_plan(run, tmp_path) -> None:
    # a plan of the lite scheme trains its branches with `tlplan train` and checks with `tlplan check`
    model = tlplan.load_model("mcunet-5fps", num_classes=10)
    plan = tlplan.plan_from_scheme(model, (4, 3, 32, 32), "lite:2", model_name="mcunet-5fps", num_classes=10)
    path = tmp_path / "plan.yaml"
    plan.save(path)
    code, out, err = run("train", str(path), "--data", "synthetic", "--steps", "2", "--run-dir", str(tmp_path / "run"),
                         "--quiet", "--format", "json")
    assert code == 0, err
    result = json.loads(out)
    state = torch.load(next((tmp_path / "run").glob("*.pt")), weights_only=True)["model"]
    assert any(".lite_residual.conv1.weight" in k for k in state)
    assert result  # the run's report
    code, out, err = run("check", str(path), "--ram", "1GB")
    assert code == 0, err + out


# ---- the solver offering branches (solve --lite) ------------------------------------------------


@pytest.fixture(scope="module")
def lite_space():
    from tlplan.solve import build_space
    from tlplan.solve.lite import candidate_branches

    torch.manual_seed(0)
    model = tlplan.load_model("mobilenet_v2", num_classes=10)
    shape = (2, 3, 64, 64)
    graph, branches = candidate_branches(model, shape, "mobilenet_v2")
    return model, shape, build_space(graph, "tlplan", lite=branches)


def test_a_plan_is_costed_without_the_branches_it_leaves_out(lite_space) -> None:
    from tlplan.costs.annotate import annotate
    from tlplan.memory.timeline import simulate_peak
    from tlplan.solve.lite import plan_graph

    model, shape, space = lite_space
    some = [b for b in space.lite.layers][-3:]  # train two branches' convs, leave the rest out
    options = dict(space.base_options)
    for block in some[:2]:
        options[f"{block}.lite_residual.conv1"] = tlplan.LayerOptions(weight=1.0)
    assert space.lite.kept(options) == frozenset(some[:2])
    derived = space.graph_for(options)
    traced, config = plan_graph(space.lite, options, shape, "mobilenet_v2")
    assert set(config) == set(some[:2])
    # the graph the solver costs is the traced one of the model the plan runs on, layer for layer
    assert [(l.op, l.output_shape) for l in derived.layers] == [(l.op, l.output_shape) for l in traced.layers]
    mine = {k: v for k, v in options.items() if k in traced.by_name}
    a, b = annotate(derived, options, "tlplan"), annotate(traced, mine, "tlplan")
    assert a.totals == b.totals
    assert simulate_peak(a).peak_bytes == simulate_peak(b).peak_bytes
    # no branch trained: the caller's model itself
    assert space.lite.kept(space.base_options) == frozenset()
    assert len(space.graph_for(space.base_options).layers) == len(tlplan.trace_model(model, shape).layers)


def test_solve_lite_adds_the_branches_it_trains_and_keeps_what_it_predicts(lite_space) -> None:
    from tlplan.solve import plan_of, solve_space

    model, shape, space = lite_space
    budget = int(space.base_memory.peak_bytes * 1.3)
    result = solve_space(space, budget)
    plan = plan_of(result, space, "mobilenet_v2", 10)
    assert plan.lite, "at this budget a branch is the most important use of the room"
    assert all(any(name.startswith(f"{b}.lite_residual.") for name in plan.layers) for b in plan.lite)
    assert plan.predicted["peak_bytes"] == result.best.memory.peak_bytes <= budget
    # at least as important as without the branches on offer
    without = tlplan.solve(model, shape, budget, model_name="mobilenet_v2", num_classes=10)
    assert plan.predicted["importance"] >= without.predicted["importance"]
    # applied (apply_plan inserts the branches), it keeps exactly what it predicts
    net = apply_plan(copy.deepcopy(model), plan)
    assert set(lite_of(net)) == set(plan.lite)
    assert measure_saved_bytes(net, shape, None, copy_model=False).saved_bytes == plan.predicted["saved_bytes"]


def test_cli_solve_lite(run, tmp_path) -> None:
    path = tmp_path / "plan.yaml"
    code, out, err = run("solve", "mcunet-5fps", "--resolution", "64", "--batch", "2", "--num-classes", "10",
                         "--ram", "3MB", "--lite", "-o", str(path), "--quiet")
    assert code == 0, err
    plan = load_plan(path)
    assert plan.predicted["peak_bytes"] <= 3 * 2**20
    code, out, err = run("check", str(path), "--ram", "3MB")
    assert code == 0, err + out
    for extra in (["--runtime", "mcu"], ["--device", "host-x86-2c"], ["--pareto"]):
        code, out, err = run("solve", "mcunet-5fps", "--resolution", "64", "--ram", "3MB", "--lite", *extra)
        assert code == 2 and len(err.strip().splitlines()) == 1 and "lite" in err, (extra, err)


def test_lite_on_offer_scores_the_model_s_own_layers_as_without(lite_space) -> None:
    from tlplan.solve import build_space

    model, shape, space = lite_space
    plain = build_space(tlplan.trace_model(model, shape, "mobilenet_v2"), "tlplan")
    mine = {c.layer: c for c in space.choices}
    for choice in plain.choices:
        assert [(c.options, c.importance, c.cost_bytes) for c in mine[choice.layer].candidates] == \
            [(c.options, c.importance, c.cost_bytes) for c in choice.candidates], choice.layer


def test_lite_offers_the_blocks_that_can_take_one_and_refuses_models_without() -> None:
    from corpus import SHAPE, build  # tests/ is on the path (other tests import it the same way)
    from tlplan.solve.lite import candidate_branches

    with pytest.raises(BadInputError, match="has no blocks"):
        tlplan.solve(build("functional"), SHAPE, 1 << 30, lite=True)
    with pytest.raises(BadInputError, match="no block of .* can take"):
        tlplan.solve(build("parametrized"), SHAPE, 1 << 30, lite=True)
    model = build("conv-zoo")
    graph, branches = candidate_branches(model, SHAPE, "conv-zoo")
    plain = tlplan.trace_model(model, SHAPE)
    assert set(branches.layers) <= set(plain.blocks) and branches.layers
    assert not any("lite_residual" in k for k in model.state_dict()), "the caller's model is not changed"
