"""The tlplan runtime's own kernels as calibration ops: timed as plans run them, priced for tlplan
plans only, added to an existing profile with ``tlplan calibrate --add``."""

from __future__ import annotations

import json
import sys

import pytest
import torch

import tlplan
from tlplan.errors import BadInputError
from tlplan.measure import microbench
from tlplan.measure.microbench import CALIBRATION_OPS, Config, time_config
from tlplan.plan.options import LayerOptions
from tlplan.plan.schemes import parse_scheme, scheme_options
from tlplan.predict import calibration
from tlplan.predict import predictor as P
from tlplan.predict.calibration import Settings, add_ops
from tlplan.predict.devices import resolve_device
from tlplan.predict.features import FEATURES, OPTION_FEATURES, feature_matrix
from tlplan.predict.roofline import roofline_ms
from tlplan.predict.store import LAYER_COLUMNS, read_layer_rows, render
from tlplan.costs.annotate import annotate
from tlplan.trace import trace_model

from profile_fixtures import synthetic_rows, write_profile

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")

RUNTIME_OPS = ("conv2d.tl", "conv2d.tl.part", "conv2d.tl.gf", "linear.tl", "batch_norm.tl", "relu.mask", "relu6.mask",
               "hardswish.mask")


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    monkeypatch.setenv("TLPLAN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TLPLAN_PROFILES", str(tmp_path / "profiles"))
    monkeypatch.setattr(calibration, "framework_overhead_bytes", lambda: 2**20)
    monkeypatch.setattr(calibration, "RECHECK_CONFIGS", 3)


def _config(op: str) -> Config:
    if op == "linear.tl":
        return Config(4, 32, 1, 1, 10, 1, 1, bias=1, weight_per_mille=250)
    c = Config(2, 16, 12, 12, 16, 12, 12, k=3, bias=1, inplace=1)
    if op == "conv2d.tl.part":
        return CALIBRATION_OPS[op].conform(Config(2, 16, 12, 12, 16, 12, 12, k=3, bias=1, weight_per_mille=250))
    if op == "conv2d.tl.gf":
        return CALIBRATION_OPS[op].conform(Config(2, 16, 12, 12, 16, 12, 12, k=3, bias=1, grad_filter=2))
    return CALIBRATION_OPS[op].conform(c)


@pytest.mark.parametrize("op", RUNTIME_OPS)
def test_each_runtime_op_times_the_passes_its_function_has(op):
    m = time_config(CALIBRATION_OPS[op], _config(op), target_s=0.005, max_repeats=2, min_repeats=1)
    expected = {
        "batch_norm.tl": {"fwd", "fwd_nograd", "bwd_input", "bwd_bias", "bwd_input_bias"},  # γ is never trained there
        "relu.mask": {"fwd", "fwd_nograd", "bwd_input"}, "relu6.mask": {"fwd", "fwd_nograd", "bwd_input"},
        "hardswish.mask": {"fwd", "fwd_nograd", "bwd_input"},
    }.get(op, {"fwd", "fwd_nograd", "bwd_input", "bwd_weight", "bwd_bias", "bwd_input_weight", "bwd_input_bias"})
    assert set(m.ms) == expected and all(v > 0 for v in m.ms.values())


def _saved_numel(fn) -> int:
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        fn()
    return sum(saved)


def test_each_backward_pass_of_a_function_is_timed_on_its_own_graph():
    """A custom Function decides at forward time what its backward computes: the bias-only pass
    must be recorded with only the bias requiring grad (nothing saved), not with the weight too."""
    bench = CALIBRATION_OPS["conv2d.tl"].build(_config("conv2d.tl"))
    assert bench.graph_per_pass
    leaves = microbench._requiring(bench, ("bias",))
    weight, bias = bench.weight
    assert not weight.requires_grad and bias.requires_grad and not leaves[0].requires_grad
    assert _saved_numel(lambda: bench.fn(*leaves)) == 0  # bias only: the runtime keeps nothing
    leaves = microbench._requiring(bench, ("weight",))
    assert weight.requires_grad
    assert _saved_numel(lambda: bench.fn(*leaves)) == leaves[0].numel() + weight.numel()  # the input and the weight


def _graph(net="mobilenet_v2", res=64):
    return trace_model(tlplan.load_model(net), (1, 3, res, res), net)


def test_tlplan_plans_are_priced_with_the_runtime_ops_eager_plans_with_pytorchs():
    graph = _graph()
    options = scheme_options(graph, parse_scheme("gradfilter:4:2"))
    eager = {i.op for i in P.plan_items(graph, annotate(graph, options, "eager")).items}
    runtime = P.plan_items(graph, annotate(graph, options, "tlplan")).items
    assert not eager & set(RUNTIME_OPS)
    assert {"conv2d.tl", "conv2d.tl.gf", "batch_norm.tl", "relu6.mask"} <= {i.op for i in runtime}
    # every conv runs the runtime's Function, frozen ones too; no plain conv is left
    assert not {"conv2d", "conv2d.dw", "conv2d.pw"} & {i.op for i in runtime}
    filtered = [i for i in runtime if i.op == "conv2d.tl.gf"]
    assert {i.config.grad_filter for i in filtered} == {2} and all(i.fallback in ("conv2d.pw", "conv2d.dw", "conv2d")
                                                                   for i in filtered)
    mcu = {i.op for i in P.plan_items(graph, annotate(graph, options, "mcu")).items}  # the int8 engine's accounting
    assert not mcu & set(RUNTIME_OPS)


def test_a_partial_weight_carries_its_share_into_the_configuration():
    graph = _graph("mcunet-5fps")
    conv = next(layer for layer in graph.layers if layer.op == "conv2d" and layer.attrs.get("groups", 1) == 1)
    found = P.calibration_entry(conv, LayerOptions(weight=0.25), "tlplan")
    assert found[0].name == "conv2d.tl.part" and found[1].weight_per_mille == 250
    found = P.calibration_entry(conv, LayerOptions(weight=1.0, bias=True), "tlplan")
    assert found[0].name == "conv2d.tl" and (found[1].weight_per_mille, found[1].grad_filter) == (1000, 0)
    plain = P.calibration_entry(conv, LayerOptions(weight=0.25), "eager")[0]
    assert plain is P.plain_entry(conv) and plain.name == "conv2d"  # the 3×3 stem, run by PyTorch's conv


def test_option_features_only_for_the_runtimes_conv_and_linear():
    c = _config("conv2d.tl.part")
    assert feature_matrix("conv2d.tl.part", [c]).shape == (1, len(FEATURES) + len(OPTION_FEATURES))
    assert feature_matrix("conv2d.tl.part", [c])[0, -2] == pytest.approx(torch.log1p(torch.tensor(250.0)).item())
    assert feature_matrix("conv2d", [c]).shape == (1, len(FEATURES))  # plain ops' fits stay as they were
    assert feature_matrix("relu.mask", [c]).shape == (1, len(FEATURES))


def test_a_profile_without_the_runtime_ops_prices_them_as_pytorchs_and_says_so(monkeypatch, tmp_path):
    root = tmp_path / "profiles"
    write_profile(root)
    graph, scheme = _graph("mcunet-5fps"), "bias"
    options = scheme_options(graph, parse_scheme(scheme))
    eager = P.predict_latency(graph, annotate(graph, options, "eager"), "synthetic")
    runtime = P.predict_latency(graph, annotate(graph, options, "tlplan"), "synthetic")
    assert runtime.step_ms > 0 and not runtime.unpredicted
    assert eager.stand_ins == () and len(runtime.stand_ins) > 10
    convs = [layer.name for layer in graph.layers if layer.op == "conv2d"]
    assert set(convs) <= set(runtime.stand_ins)
    # a frozen conv below the trained ones runs the same forward either way: the same price
    assert runtime.layers[convs[0]].fwd_ms == pytest.approx(eager.layers[convs[0]].fwd_ms)
    report = tlplan.profile(tlplan.load_model("mcunet-5fps"), (1, 3, 64, 64), scheme="bias", runtime="tlplan",
                            device="synthetic")
    assert report.to_dict()["predicted"]["stand_ins"] and any("--add" in w for w in report.warnings)


def test_the_roofline_prices_a_gradient_filter_as_r_squared_less_backward_work(monkeypatch):
    monkeypatch.delenv("TLPLAN_PROFILES")  # the shipped datasheet profiles
    device = resolve_device("jetson-nano")
    dense = Config(8, 64, 28, 28, 64, 28, 28, k=3)
    filtered = Config(8, 64, 28, 28, 64, 28, 28, k=3, grad_filter=4)
    assert roofline_ms(device, "conv2d.tl.gf", "fwd", filtered) == pytest.approx(roofline_ms(device, "conv2d.tl", "fwd", dense))
    assert roofline_ms(device, "conv2d.tl.gf", "bwd_weight", filtered) < roofline_ms(device, "conv2d.tl", "bwd_weight", dense) / 4


def _without_option_columns(csv_text: str) -> str:
    """A measurements CSV as tlplan wrote it before ``weight_per_mille`` and ``grad_filter``."""
    drop = {LAYER_COLUMNS.index("weight_per_mille"), LAYER_COLUMNS.index("grad_filter")}
    return "".join(",".join(c for i, c in enumerate(line.split(",")) if i not in drop) + "\n"
                   for line in csv_text.splitlines())


def test_old_measurements_without_option_columns_still_load(tmp_path):
    rows = synthetic_rows(ops=("conv2d",), per_op=3)
    text = render(LAYER_COLUMNS, rows)
    path = tmp_path / "measurements.csv"
    path.write_text(_without_option_columns(text))
    loaded = read_layer_rows(path)
    assert [r.config for r in loaded] == [r.config for r in rows]
    assert {(r.config.weight_per_mille, r.config.grad_filter) for r in loaded} == {(1000, 0)}
    path.write_text(text.replace(",1000,0,", ",2000,0,", 1))
    with pytest.raises(BadInputError, match="line 2: weight_per_mille must be 1 to 1000"):
        read_layer_rows(path)


# --------------------------------------------------------------------------- calibrate --add


ADD = dict(budget_s=0.5, networks=("mcunet-5fps",), chunk_s=0.2, threshold=1.0)


def _evaluated_profile(root):
    """The synthetic profile with accuracy figures and an evaluation's cases, as --evaluate leaves it."""
    folder = write_profile(root)
    data = json.loads((folder / "device.json").read_text())
    data["accuracy"] = {"mape": 5.0, "within_10": 90.0, "cases": 2}
    (folder / "device.json").write_text(json.dumps(data))
    (folder / "evaluation.csv").write_text("network,scheme\n")
    return folder


def test_adding_ops_keeps_the_profile_and_records_the_run(tmp_path):
    root = tmp_path / "profiles"
    folder = _evaluated_profile(root)
    before = read_layer_rows(folder / "measurements.csv")
    steps = (folder / "steps.csv").read_text()

    device, record, dropped = add_ops(Settings("synthetic", ops=("relu6.mask", "conv2d.tl"), **ADD), root=root)
    assert not dropped
    rows = read_layer_rows(folder / "measurements.csv")
    assert rows[: len(before)] == before  # the profile's own rows, as they were
    assert {r.op for r in rows[len(before):]} == {"relu6.mask", "conv2d.tl"}
    assert (folder / "steps.csv").read_text() == steps and (folder / "evaluation.csv").exists()
    assert device.accuracy["mape"] == 5.0  # nothing it was computed from changed
    assert device.additions[-1] == record and record["ops"] == "relu6.mask,conv2d.tl"
    assert record["rechecked_configs"] == 3 and record["time_vs_profile"] > 0 and record["rows"] == len(rows) - len(before)
    assert sorted(p.name for p in root.iterdir()) == ["synthetic"]  # no partial or temporary folder left
    # the new rows fit a model: a tlplan plan is no longer priced by stand-ins for those ops
    graph = _graph("mcunet-5fps")
    costs = annotate(graph, scheme_options(graph, parse_scheme("full")), "tlplan")
    p = P.predict_latency(graph, costs, "synthetic")
    assert p.step_ms > 0 and not any(layer.startswith("relu") for layer in p.stand_ins)


def test_replacing_an_op_drops_the_accuracy_it_entered(tmp_path):
    root = tmp_path / "profiles"
    folder = _evaluated_profile(root)
    device, _, dropped = add_ops(Settings("synthetic", ops=("add",), **ADD), root=root)  # rows replaced
    assert dropped and device.accuracy is None and not (folder / "evaluation.csv").exists()
    device, _, dropped = add_ops(Settings("synthetic", ops=("relu",), **ADD), root=root)  # a plain op added
    assert not dropped and device.accuracy is None  # nothing left to drop


def test_adding_to_a_missing_or_complete_profile_is_a_clear_error(tmp_path):
    root = tmp_path / "profiles"
    with pytest.raises(BadInputError, match="no profile nothere .* to add to"):
        add_ops(Settings("nothere", **ADD), root=root)
    write_profile(root, rows=synthetic_rows(ops=CALIBRATION_OPS.names, per_op=1))
    with pytest.raises(BadInputError, match="already has measurements of every calibration op"):
        add_ops(Settings("synthetic", **ADD), root=root)


def test_calibrate_add_cli(monkeypatch, capsys, tmp_path):
    from tlplan.cli import main

    write_profile(tmp_path / "profiles")
    monkeypatch.setattr(sys, "argv", ["tlplan", "calibrate", "--name", "synthetic", "--add", "--ops", "relu.mask",
                                      "--budget-minutes", "0.005", "--networks", "mcunet-5fps", "--max-foreign-cpu", "1",
                                      "-q"])
    with pytest.raises(SystemExit) as info:
        main()
    out = capsys.readouterr().out
    assert info.value.code == 0 and "added" in out and "relu.mask" in out and "re-timed" in out
    monkeypatch.setattr(sys, "argv", ["tlplan", "calibrate", "--name", "nothere", "--add", "-q"])
    with pytest.raises(SystemExit) as info:
        main()
    err = capsys.readouterr().err.strip().splitlines()
    assert info.value.code == 2 and len(err) == 1 and "no profile nothere" in err[0]


def test_the_runtime_ops_are_the_ones_listed_and_evaluation_knows_them():
    from tlplan.measure import runtime_ops

    assert runtime_ops.RUNTIME_OPS == RUNTIME_OPS
    assert all(CALIBRATION_OPS[op].prior_from for op in RUNTIME_OPS)


def test_layers_the_runtime_does_not_swap_keep_pytorchs_ops():
    """The runtime swaps exact nn.Conv2d / nn.ReLU ... modules: a functional relu stays PyTorch's."""
    import torch.nn.functional as F

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
            self.fc = torch.nn.Linear(8, 2)

        def forward(self, x):
            return self.fc(F.relu(self.conv(x)).mean((2, 3)))

    graph = trace_model(Net(), (1, 3, 8, 8))
    by_op = {layer.op: layer for layer in graph.layers}
    masked = LayerOptions(mask=True)
    assert P.calibration_entry(by_op["relu"], masked, "tlplan")[0].name == "relu"  # functional: not swapped
    assert P.calibration_entry(by_op["conv2d"], None, "tlplan")[0].name == "conv2d.tl"  # a module, frozen too


def test_the_solver_prices_runtime_layers_with_stand_ins_on_an_older_profile(tmp_path):
    from tlplan.solve import timing

    write_profile(tmp_path / "profiles")
    graph = _graph("mcunet-5fps")
    conv = next(layer for layer in graph.layers if P.plain_entry(layer).name == "conv2d.pw")
    items = timing._items(conv, LayerOptions(weight=0.5), "tlplan")
    assert {i.op for i in items} == {"conv2d.tl.part"} and {i.fallback for i in items} == {"conv2d.pw"}
    ms = P.Pricer.of("synthetic").price(items)
    assert (ms > 0).all()  # priced by the plain pointwise conv's model, not 0


def test_a_partial_folder_from_before_the_option_columns_resumes(tmp_path):
    """An interrupted calibration of an older tlplan left rows without weight_per_mille and
    grad_filter: resuming rewrites them in today's columns, and new rows append cleanly."""
    root = tmp_path / "profiles"
    partial = calibration._Partial(root, "old")
    partial.dir.mkdir(parents=True)
    rows = synthetic_rows(ops=("add",), per_op=2)
    text = render(LAYER_COLUMNS, rows)
    partial.layers_path.write_text(_without_option_columns(text))
    partial.open(Settings("old", 1.0))
    assert partial.layers_path.read_text() == text
    partial.append(partial.layers_path, rows[:1])
    resumed = partial.layer_rows()
    assert [(r.op, r.pass_, r.config) for r in resumed] == [(r.op, r.pass_, r.config) for r in rows + rows[:1]]
