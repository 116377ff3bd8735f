"""Latency prediction: features, the fitted models, the cache, profile data validation, the roofline."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch.nn as nn

import tlplan
from tlplan.errors import BadInputError
from tlplan.measure.microbench import CALIBRATION_OPS, Config
from tlplan.predict import predictor as P
from tlplan.predict.devices import load_device, resolve_device
from tlplan.predict.features import FEATURES, bytes_in, feature_matrix, macs, raw_features, weight_numel
from tlplan.predict.fit import TreeEnsemble, fit_pass_model
from tlplan.predict.roofline import pass_work, roofline_ms
from tlplan.predict.store import read_layer_rows, read_step_rows
from tlplan.trace import trace_model

from profile_fixtures import known_ms, synthetic_rows, write_profile

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    monkeypatch.setenv("TLPLAN_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("TLPLAN_PROFILES", raising=False)


@pytest.fixture
def profiles(monkeypatch, tmp_path):
    root = tmp_path / "profiles"
    root.mkdir()
    monkeypatch.setenv("TLPLAN_PROFILES", str(root))
    return root


def mcu_costs(scheme: str = "full", res: int = 64):
    graph = trace_model(tlplan.load_model("mcunet-5fps"), (1, 3, res, res), "mcunet-5fps")
    return graph, P.scheme_costs(graph, scheme)


# --------------------------------------------------------------------------- features


def test_conv_features_from_a_traced_layer():
    # GIVEN a depthwise 5×5 stride-2 conv and a pointwise conv, traced
    model = nn.Sequential(nn.Conv2d(8, 8, 5, stride=2, padding=2, groups=8, bias=False), nn.Conv2d(8, 24, 1))
    graph = trace_model(model, (2, 8, 20, 20))
    dw, pw = graph.layers
    # THEN they map to the depthwise and pointwise entries with the right configurations
    assert CALIBRATION_OPS.for_layer(dw).name == "conv2d.dw"
    assert CALIBRATION_OPS.for_layer(pw).name == "conv2d.pw"
    c = CALIBRATION_OPS["conv2d.dw"].config_of(dw)
    assert c == Config(2, 8, 20, 20, 8, 10, 10, k=5, stride=2, groups=8, bias=0)
    assert macs("conv2d.dw", c) == 2 * 8 * 10 * 10 * 1 * 25
    assert weight_numel("conv2d.dw", c) == 8 * 1 * 25
    assert bytes_in("conv2d.dw", c) == 2 * 8 * 20 * 20 * 4
    p = CALIBRATION_OPS["conv2d.pw"].config_of(pw)
    assert macs("conv2d.pw", p) == 2 * 24 * 10 * 10 * 8 and weight_numel("conv2d.pw", p) == 24 * 8 + 24
    # and the MACs agree with the conv's op spec
    from tlplan.ops import spec_of

    assert spec_of(dw).macs_fwd(dw) == macs("conv2d.dw", c)
    row = dict(zip(FEATURES, raw_features("conv2d.dw", c)))
    assert row["hw_in"] == 400 and row["hw_out"] == 100 and row["groups"] == 8 and row["bytes_out"] == 2 * 8 * 100 * 4
    assert np.allclose(feature_matrix("conv2d.dw", [c])[0], np.log1p(raw_features("conv2d.dw", c)))


def test_other_ops_configs():
    model = tlplan.load_model("mobilenet_v3_small", num_classes=10)
    graph = trace_model(model, (2, 3, 64, 64))
    seen = {}
    for layer in graph.layers:
        entry = CALIBRATION_OPS.for_layer(layer)
        assert entry is not None, layer.name  # every zoo op has a calibration entry
        seen.setdefault(entry.name, (layer, entry.config_of(layer)))
    layer, c = seen["mul.bcast"]
    assert layer.input_shapes[0] != layer.input_shapes[1] and (c.h, c.w) == tuple(layer.output_shape[2:])
    layer, c = seen["linear"]  # the first linear: 576 → 1024
    assert (c.batch, c.c_in, c.c_out, c.h) == (2, 576, 1024, 1)
    layer, c = seen["hardswish"]
    assert c.inplace == 1 and c.numel_in == math.prod(layer.output_shape)


def test_calibration_registry_refuses_duplicates():
    with pytest.raises(ValueError, match="already registered"):
        CALIBRATION_OPS.register(CALIBRATION_OPS["relu"])


# --------------------------------------------------------------------------- fitting


def test_tree_export_matches_sklearn():
    from sklearn.ensemble import ExtraTreesRegressor

    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 5))
    y = X[:, 0] * 2 + np.sin(X[:, 1])
    forest = ExtraTreesRegressor(n_estimators=7, min_samples_leaf=2, random_state=0).fit(X, y)
    Xt = rng.normal(size=(50, 5))
    assert np.allclose(TreeEnsemble.from_sklearn(forest).predict(Xt), forest.predict(Xt))


def test_fit_recovers_a_known_relationship():
    # GIVEN pointwise convs timed on a synthetic device: ms = 0.02 + 1 ns/MAC + 0.05 ns/byte
    rows = [r for r in synthetic_rows(ops=("conv2d.pw",), per_op=120) if r.pass_ == "fwd"]
    train, test = rows[:100], rows[100:]
    model = fit_pass_model("conv2d.pw", "fwd", [r.config for r in train], [r.ms for r in train])
    # THEN held-out configurations are predicted within a few percent
    pred = model.predict([r.config for r in test])
    truth = np.array([r.ms for r in test])
    assert np.max(np.abs(pred / truth - 1)) < 0.05
    # and the base extrapolates: 8× the batch of the largest configuration is about 8× its work
    big = max(train, key=lambda r: macs("conv2d.pw", r.config)).config
    from dataclasses import replace

    bigger = replace(big, batch=big.batch * 8)
    assert model.predict([bigger])[0] == pytest.approx(known_ms("conv2d.pw", "fwd", bigger), rel=0.25)


def test_whole_network_from_fitted_profile(profiles):
    write_profile(profiles)
    graph, costs = mcu_costs("full")
    p = P.predict_latency(graph, costs, "synthetic")
    assert p.source == "fitted on measurements" and p.device == "synthetic"
    assert p.unpredicted == ()
    assert p.step_ms == pytest.approx(p.fwd_ms + p.bwd_ms + p.overhead_ms)
    expected = sum(known_ms(it.op, "fwd" if it.pass_ == "accumulate" else it.pass_, it.config)
                   for it in P.plan_items(graph, costs).items)
    assert p.fwd_ms + p.bwd_ms == pytest.approx(expected, rel=0.15)
    # the classifier under "last": a recorded forward and its weight gradient; everything else frozen
    _, last = mcu_costs("last")
    q = P.predict_latency(graph, last, "synthetic")
    for name, lp in q.layers.items():
        if name == "classifier":
            assert set(lp.parts) == {"fwd", "bwd_weight"}  # its input needs no gradient
        else:
            assert set(lp.parts) == {"fwd_nograd"} and lp.bwd_ms is None
    assert q.step_ms < p.step_ms


def test_gradient_sums_at_residual_inputs():
    graph, costs = mcu_costs("full")
    plan = P.plan_items(graph, costs)
    sums = [it for it in plan.items if it.pass_ == "accumulate"]
    # one per residual block: the block input feeds the block and its add
    adds = [layer for layer in graph.layers if layer.op == "add"]
    assert len(sums) == len(adds) > 0
    assert plan.backward_layers == len(graph.layers)
    # a conv below trained layers, training its weight: both gradients from one measured call
    conv = next(it for it in plan.items if it.layer == "blocks.1.depth_conv.conv" and it.pass_ != "fwd")
    assert conv.pass_ == "bwd_input_weight"
    _, bias = mcu_costs("bias")
    conv = next(it for it in P.plan_items(graph, bias).items if it.layer == "blocks.1.depth_conv.conv" and it.pass_ != "fwd")
    assert conv.pass_ == "bwd_input_bias"


def test_runtime_layers_are_the_modules_the_runtime_swaps():
    from tlplan.measure.latency import prepared_copy

    cases = P.StepCases()
    for scheme in ("full", "bias"):
        costs = cases.costs("mcunet-5fps", scheme, 1, 48, "tlplan")
        model = prepared_copy(tlplan.load_model("mcunet-5fps"), costs)
        swapped = [m for m in model.modules() if type(m).__module__.startswith("tlplan.runtime")]
        assert cases.plan("mcunet-5fps", scheme, 1, 48, "tlplan").runtime_layers == len(swapped) > 0
        assert cases.plan("mcunet-5fps", scheme, 1, 48).runtime_layers == 0  # plain PyTorch


def test_overhead_fit_recovers_a_per_runtime_layer_term(monkeypatch):
    from tlplan.predict.store import StepRow

    # GIVEN steps whose time beyond their layers is a known line in the overhead's terms
    true = np.array([2.0, 0.01, 0.02, 0.05])
    cases = P.StepCases()
    monkeypatch.setattr(P, "layer_sum_ms", lambda profile, plan: 0.0)
    rows = []
    for network in ("mcunet-5fps", "mbv2-w0.35"):
        for scheme, runtime in (("full", "eager"), ("last", "eager"), ("bias", "eager"), ("full", "tlplan"),
                                ("bias", "tlplan"), ("mobiletl:3", "tlplan")):
            terms = cases.plan(network, scheme, 1, 48, runtime).overhead_terms
            rows.append(StepRow(network, scheme, 1, 48, float(true @ terms), 0.0, runtime))
    # THEN the fit finds the runtime's term, and the steps (the ridge may trade the other,
    # nearly collinear terms against each other: every scheme of a network has as many layers)
    fitted = P.fit_overhead(None, rows, cases)
    assert fitted[3] == pytest.approx(true[3], rel=0.05)
    for row in rows:
        assert fitted @ cases.plan(*row.key).overhead_terms == pytest.approx(row.ms, rel=0.02)
    # and without runtime steps, that term stays 0 (older profiles predict as they did)
    assert P.fit_overhead(None, [r for r in rows if r.runtime == "eager"], cases)[3] == 0


def test_missing_op_model_is_reported_not_silent(profiles):
    write_profile(profiles, rows=[r for r in synthetic_rows() if r.op != "relu6"])
    graph, costs = mcu_costs("full")
    p = P.predict_latency(graph, costs, "synthetic")
    assert p.unpredicted and all("act" in name for name in p.unpredicted)


# --------------------------------------------------------------------------- the cache


def test_fit_is_cached_and_invalidated_by_the_data(profiles, monkeypatch):
    folder = write_profile(profiles)
    graph, costs = mcu_costs("full")
    calls = []
    real = P.fit_profile
    monkeypatch.setattr(P, "fit_profile", lambda *a, **k: calls.append(1) or real(*a, **k))
    first = P.predict_latency(graph, costs, "synthetic")
    assert len(calls) == 1
    cached = list((profiles.parent / "cache" / "fits").glob("*.npz"))
    assert len(cached) == 1
    np.load(cached[0], allow_pickle=False)  # plain arrays: loads without pickle
    second = P.predict_latency(graph, costs, "synthetic")
    assert len(calls) == 1 and second.step_ms == pytest.approx(first.step_ms)
    # WHEN the measurements change THEN the fit is redone
    with open(folder / "steps.csv", "a") as f:
        f.write("mcunet-5fps,bias,1,64,12.0,0.0,eager\n")
    P.predict_latency(graph, costs, "synthetic")
    assert len(calls) == 2
    # a corrupt cache file is ignored and rewritten
    for path in (profiles.parent / "cache" / "fits").glob("*.npz"):
        path.write_bytes(b"not an npz")
    P.predict_latency(graph, costs, "synthetic")
    assert len(calls) == 3


# --------------------------------------------------------------------------- malformed profiles


HEADER = "op,pass,batch,c_in,h,w,c_out,h_out,w_out,k,stride,groups,bias,inplace,origin,round,ms,foreign_cpu\n"
GOOD = "relu,fwd,1,8,4,4,8,4,4,1,1,1,0,0,random,0,0.01,0.0\n"


@pytest.mark.parametrize(
    "content, problem",
    [
        (HEADER + GOOD + "relu,fwd,1,8,4\n", "line 3: 5 fields, expected 18"),
        (HEADER + GOOD.replace("0.01", "nan"), "is not a finite number"),
        (HEADER + GOOD.replace("0.01", "fast"), "ms = 'fast' is not a number"),
        (HEADER + GOOD.replace("0.01", "-1"), "must be positive"),
        (HEADER + GOOD.replace("relu,", "softmax,", 1), "unknown op 'softmax'"),
        (HEADER + GOOD.replace(",fwd,", ",sideways,"), "unknown pass 'sideways'"),
        (HEADER.replace("origin", "colour") + GOOD, "unknown column(s) 'colour'"),
        (HEADER.replace(",foreign_cpu", "") + GOOD.rsplit(",", 1)[0] + "\n", "missing column(s) foreign_cpu"),
        (HEADER + GOOD[:-5], "cut short"),
        ("", "empty"),
        (HEADER + GOOD.replace(",1,8,", ",1.5,8,", 1), "is not a whole number"),
    ],
    ids=["short-row", "nan", "text", "negative", "unknown-op", "unknown-pass", "unknown-column", "missing-column",
         "truncated", "empty", "fractional"],
)
def test_bad_measurements_csv(tmp_path, content, problem):
    path = tmp_path / "measurements.csv"
    path.write_text(content)
    with pytest.raises(BadInputError) as info:
        read_layer_rows(path)
    message = str(info.value)
    assert str(path) in message and problem in message and "\n" not in message


def test_bad_steps_csv(tmp_path):
    path = tmp_path / "steps.csv"
    path.write_text("network,scheme,batch,resolution,ms,foreign_cpu\nmcunet-5fps,full,1,64,inf,\n")
    with pytest.raises(BadInputError, match="not a finite number"):
        read_step_rows(path)
    # a file from before steps named their runtime: plain PyTorch steps
    path.write_text("network,scheme,batch,resolution,ms,foreign_cpu\nmcunet-5fps,full,1,64,12.5,\n")
    (row,) = read_step_rows(path)
    assert row.ms == 12.5 and row.foreign_cpu is None and row.runtime == "eager"
    path.write_text("network,scheme,batch,resolution,ms,foreign_cpu,runtime\nmcunet-5fps,full,1,64,12.5,,mcu\n")
    with pytest.raises(BadInputError, match="line 2: unknown runtime 'mcu'"):
        read_step_rows(path)


def test_missing_data_file_named(profiles):
    folder = write_profile(profiles)
    (folder / "measurements.csv").unlink()
    graph, costs = mcu_costs("last")
    with pytest.raises(BadInputError) as info:
        P.predict_latency(graph, costs, "synthetic")
    assert str(folder / "measurements.csv") in str(info.value) and "missing" in str(info.value)


@pytest.mark.parametrize(
    "change, problem",
    [
        ({"calibration": {"budget_s": 60, "colour": 1}}, "unknown key 'colour'"),
        ({"efficiency_compute": {"conv2d": 1.5}}, "efficiencies must be in (0, 1]"),
        ({"efficiency_compute": {"conv2d": "fast"}}, "'conv2d' must be a finite number"),
        ({"layer_overhead_s": float("nan")}, "not a finite number"),
        ({"accuracy": {"mape": 5.0, "smile": 1}}, "unknown key 'smile'"),
        ({"anchors": [{"model": "x", "published_ms": 1, "mood": "ok"}]}, "unknown key 'mood' in an anchor"),
        ({"measurements": "../elsewhere.csv", "steps": "steps.csv"}, "must be a file name in the profile's folder"),
        ({"steps": None}, "names both its measurements and its steps file"),
        ({"wattage": 5}, "unknown field 'wattage'"),
    ],
)
def test_bad_device_json(profiles, change, problem):
    folder = write_profile(profiles)
    data = json.loads((folder / "device.json").read_text())
    data.update(change)
    data = {k: v for k, v in data.items() if v is not None}
    (folder / "device.json").write_text(json.dumps(data))
    with pytest.raises(BadInputError) as info:
        load_device(folder / "device.json")
    assert str(folder / "device.json") in str(info.value) and problem in str(info.value)


def test_cli_broken_profile_is_one_line_exit_2(profiles, monkeypatch, capsys):
    import sys

    from tlplan.cli import main

    folder = write_profile(profiles, name="broken")
    (folder / "measurements.csv").write_text(HEADER + GOOD + "relu,fwd,1,8\n")
    monkeypatch.setattr(sys, "argv", ["tlplan", "profile", "mcunet-5fps", "--no-measure", "--device", "broken"])
    with pytest.raises(SystemExit) as info:
        main()
    err = capsys.readouterr().err
    assert info.value.code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and str(folder / "measurements.csv") in lines[0] and "line 3" in lines[0]


# --------------------------------------------------------------------------- the datasheet roofline


def test_roofline_follows_the_formula():
    device = resolve_device("jetson-nano")
    assert device.source == "datasheet" and device.efficiency_compute and device.efficiency_memory
    peak, bw = device.peak_flops_fp32, device.memory_bandwidth_bytes_per_s
    over = device.layer_overhead_s
    # a big dense conv is compute bound
    conv = Config(8, 256, 28, 28, 256, 28, 28, k=3)
    flops, moved = pass_work("conv2d", "fwd", conv, 4)
    assert flops == 2 * macs("conv2d", conv)
    assert moved == (conv.numel_in + conv.numel_out + 256 * 256 * 9) * 4
    expected = max(flops / (peak * device.efficiency_compute["conv2d"]), moved / (bw * device.efficiency_memory["default"]))
    assert roofline_ms(device, "conv2d", "fwd", conv) == pytest.approx((expected + over) * 1e3)
    assert flops / (peak * device.efficiency_compute["conv2d"]) > moved / (bw * device.efficiency_memory["default"])
    # a ReLU is memory bound; without autograd it costs the same work
    relu = Config(8, 256, 28, 28, 256, 28, 28)
    flops, moved = pass_work("relu", "fwd", relu, 4)
    assert moved == 2 * relu.numel_in * 4 and flops == relu.numel_in
    mem_s = moved / (bw * device.efficiency_memory["default"])
    assert roofline_ms(device, "relu", "fwd", relu) == pytest.approx((mem_s + over) * 1e3)
    assert roofline_ms(device, "relu", "fwd_nograd", relu) == roofline_ms(device, "relu", "fwd", relu)
    # a weight gradient on a quarter of the input channels does a quarter of the MACs
    assert pass_work("conv2d", "bwd_weight", conv, 4, 0.25)[0] == pytest.approx(0.25 * 2 * macs("conv2d", conv))


def test_datasheet_prediction_says_so():
    graph, costs = mcu_costs("bias", res=128)
    p = P.predict_latency(graph, costs, "jetson-nano")
    assert p.source == "datasheet roofline" and p.overhead_ms == 0
    assert p.step_ms == pytest.approx(p.fwd_ms + p.bwd_ms)


def test_mcu_anchors_stored_match_the_code():
    from tlplan.predict import anchors

    device = resolve_device("stm32f746")
    assert device.efficiency_compute["default"] == pytest.approx(anchors.calibrated_efficiency(device), rel=1e-3)
    stored = {a["model"]: a for a in device.anchors}
    assert stored["mcunet-5fps"]["role"] == "fitted" and stored["mbv2-w0.35"]["role"] == "predicted"
    assert anchors.anchor_ms(device, "mcunet-5fps") == pytest.approx(546, rel=1e-3)
    for model in ("mbv2-w0.35", "proxyless-w0.3"):
        assert stored[model]["predicted_ms"] == pytest.approx(anchors.anchor_ms(device, model), rel=1e-3)
        assert stored[model]["published_ms"] == anchors.PUBLISHED_MS[model]


def test_every_shipped_profile_predicts():
    graph, costs = mcu_costs("full")
    for device in tlplan.predict.devices.list_devices():
        assert device.predicts, device.name
        if device.source == "datasheet":
            assert "datasheet" in device.notes or "datasheet" in device.references
            assert P.predict_latency(graph, costs, device).step_ms > 0


# --------------------------------------------------------------------------- profile --device


def test_profile_with_a_device_adds_predicted_columns(profiles):
    write_profile(profiles)
    report = tlplan.profile(tlplan.load_model("mcunet-5fps"), (1, 3, 64, 64), scheme="full", device="synthetic")
    d = report.to_dict()
    assert d["totals"]["predicted_step_ms"] > 0
    assert d["predicted"]["source"] == "fitted on measurements"
    assert all(layer["latency_ms_predicted"]["fwd"] > 0 for layer in d["layers"])
    assert d["sources"]["latency_ms_predicted"] == "predicted for synthetic (fitted on measurements)"
    from tlplan.report import profile_rows as pr

    cols = pr.columns(report)
    assert "synthetic ms fwd (fitted)" in cols and "ms fwd" not in cols
    assert any("predicted from a profile fitted on measurements" in s for _, _, s in pr.summary_lines(report))


def test_a_profile_of_this_machine_with_other_threads_says_so(profiles):
    import torch

    from tlplan.predict.devices import cpu_name

    folder = write_profile(profiles)
    data = json.loads((folder / "device.json").read_text())
    model = tlplan.load_model("mcunet-5fps")
    for threads, warned in ((torch.get_num_threads() + 1, True), (torch.get_num_threads(), False)):
        (folder / "device.json").write_text(json.dumps({**data, "cpu": cpu_name(), "threads": threads}))
        report = tlplan.profile(model, (1, 3, 64, 64), scheme="last", device="synthetic", measure=False)
        mentions = [w for w in report.warnings if f"OMP_NUM_THREADS={threads}" in w]
        assert bool(mentions) == warned


def test_a_fastest_run_profile_beside_a_measured_median_says_so(profiles):
    folder = write_profile(profiles)
    data = json.loads((folder / "device.json").read_text())
    (folder / "device.json").write_text(json.dumps({**data, "statistic": "min"}))
    model = tlplan.load_model("mcunet-5fps")
    measured = tlplan.profile(model, (1, 3, 48, 48), scheme="last", device="synthetic", measure=True, repeats=1)
    assert any("fastest run" in w and "median" in w for w in measured.warnings)
    predicted_only = tlplan.profile(model, (1, 3, 48, 48), scheme="last", device="synthetic")
    assert not any("fastest run" in w for w in predicted_only.warnings)  # no measured column beside it


# --------------------------------------------------------------------------- drift correction


def _fake_timer(factor: float, calls: list | None = None):
    """The reference workload on a machine ``factor`` times as slow as at calibration."""

    def timer(op, config, statistic):
        if calls is not None:
            calls.append(op)
        return {"fwd": 1.0 * factor, "bwd_input": 2.5 * factor}

    return timer


def _with_index(folder, *, cpu: str | None = None, factor: float = 1.0, variation: float | None = None):
    """``folder``'s profile as measured on this machine (or ``cpu``) with a speed index taken at
    ``factor`` (and the calibration run's ``variation``)."""
    import os

    from tlplan.predict import drift
    from tlplan.predict.devices import cpu_name

    path = folder / "device.json"
    data = json.loads(path.read_text())
    index = dataclasses_replace(drift.measure_index(1, "min", timer=_fake_timer(factor)), variation=variation)
    data.update(cpu=cpu or cpu_name(), cores=os.cpu_count() or 1, threads=1, statistic="min",
                speed_index=index.to_json())
    path.write_text(json.dumps(data))
    return load_device(path)


@pytest.fixture
def drift_state(monkeypatch):
    from tlplan.predict import drift

    drift.clear_cache()
    drift.set_enabled(None)
    monkeypatch.delenv(drift.ENV, raising=False)
    yield drift
    drift.clear_cache()
    drift.set_enabled(None)


def _with_and_without_drift(device, drift_state):
    """``device``'s prediction of mcunet's full step with drift correction, and without it."""
    graph, costs = mcu_costs("full")
    corrected = P.predict_latency(graph, costs, device)
    drift_state.set_enabled(False)
    plain = P.predict_latency(graph, costs, device)
    drift_state.set_enabled(None)
    return corrected, plain


def test_drift_ratio_is_applied_exactly(profiles, drift_state, monkeypatch):
    # GIVEN a profile of this machine whose reference workload now runs 1.18× as long as at calibration
    device = _with_index(write_profile(profiles))
    monkeypatch.setattr(drift_state, "_time_one", _fake_timer(1.18))
    corrected, plain = _with_and_without_drift(device, drift_state)
    # THEN every time is scaled by exactly that ratio, and the prediction says so
    assert corrected.drift is not None and corrected.drift.ratio == pytest.approx(1.18, rel=1e-12)
    assert plain.drift is None and plain.on.drift is None
    for name, layer in plain.layers.items():
        assert corrected.layers[name].fwd_ms == pytest.approx(1.18 * layer.fwd_ms, rel=1e-9)
    assert corrected.overhead_ms == pytest.approx(1.18 * plain.overhead_ms, rel=1e-9)
    assert corrected.step_ms == pytest.approx(1.18 * plain.step_ms, rel=1e-9)
    assert str(corrected.on).endswith("machine 18 % slower than at calibration; times scaled by 1.18")
    assert str(plain.on) == "predicted for synthetic (fitted on measurements)"
    faster = drift_state.Drift("x", 0.8, "", "")
    assert faster.note == "machine 20 % faster than at calibration; times scaled by 0.80"
    assert drift_state.Drift("x", 1.005, "", "").note.startswith("machine as fast as at calibration")


def test_a_speed_change_within_the_index_noise_is_not_applied(profiles, drift_state, monkeypatch):
    # GIVEN a profile of this machine whose reference workload now runs 3 % longer than at calibration
    device = _with_index(write_profile(profiles))
    monkeypatch.setattr(drift_state, "_time_one", _fake_timer(1.03))
    measured, plain = _with_and_without_drift(device, drift_state)
    # THEN nothing is scaled (two indices of an unchanged machine differ by that much), and it says so
    assert measured.drift.measured_ratio == pytest.approx(1.03) and measured.drift.ratio == 1.0
    assert measured.step_ms == plain.step_ms
    assert measured.drift.note == ("machine 3 % slower than at calibration, within the speed index's own noise (5 %); "
                                   "times not scaled")
    assert measured.drift.to_json()["measured_ratio"] == pytest.approx(1.03)
    # just past the noise, the whole ratio applies
    assert drift_state.Drift("x", 1.0 + drift_state.NOISE, "", "").ratio == pytest.approx(1.0 + drift_state.NOISE)
    assert drift_state.Drift("x", 0.94, "", "").ratio == 0.94
    # an index stored before the run's variation existed, timed by the median: that statistic's noise
    legacy = drift_state.Drift("x", 1.10, "", "", None, "median")
    assert legacy.ratio == 1.0 and legacy.note.endswith("within the speed index's own noise (15 %); times not scaled")
    assert drift_state.Drift("x", 1.2, "", "", None, "median").ratio == 1.2


def test_a_speed_change_within_the_machines_own_variation_is_not_applied(profiles, drift_state, monkeypatch):
    # GIVEN a profile whose calibration run saw the machine's speed stray 20 % from its median
    device = _with_index(write_profile(profiles), variation=0.2)
    # WHEN the machine now runs the index 15 % faster: no evidence of a change, nothing scaled
    monkeypatch.setattr(drift_state, "_time_one", _fake_timer(1 / 1.15))
    within, plain_prediction = _with_and_without_drift(device, drift_state)
    plain = plain_prediction.step_ms
    assert within.drift.ratio == 1.0 and within.step_ms == plain and within.drift.tolerance == pytest.approx(0.2)
    assert within.drift.note == ("machine 13 % faster than at calibration, within its own variation during calibration "
                                 "(20 %); times not scaled")
    # WHEN it runs 30 % slower: beyond it, scaled by the whole ratio
    drift_state.clear_cache()
    monkeypatch.setattr(drift_state, "_from_disk", lambda key, now_s: None)  # as if ten minutes had passed
    monkeypatch.setattr(drift_state, "_time_one", _fake_timer(1.3))
    beyond, _ = _with_and_without_drift(device, drift_state)
    assert beyond.drift.ratio == pytest.approx(1.3) and beyond.step_ms == pytest.approx(1.3 * plain)


def test_drift_uses_the_median_pass_ratio(drift_state):
    # one pass hit by a neighbour does not move the ratio
    then = drift_state.measure_index(1, "min", timer=_fake_timer(1.0))
    noisy = drift_state.SpeedIndex(tuple(
        dataclasses_replace(e, ms=e.ms * (3.0 if i == 0 else 1.1)) for i, e in enumerate(then.entries)),
        then.date, 1, "min", 0.0)
    assert noisy.ratio_to(then) == pytest.approx(1.1)


def dataclasses_replace(obj, **changes):
    import dataclasses

    return dataclasses.replace(obj, **changes)


def test_a_profile_of_another_machine_is_not_corrected(profiles, drift_state, monkeypatch):
    calls: list = []
    device = _with_index(write_profile(profiles), cpu="Some Other CPU @ 1.0GHz")
    monkeypatch.setattr(drift_state, "_time_one", _fake_timer(2.0, calls))
    graph, costs = mcu_costs("last")
    p = P.predict_latency(graph, costs, device)
    assert p.drift is None and calls == []  # nothing timed: this machine is not the one measured
    assert "scaled" not in str(p.on)


def test_old_profiles_without_an_index_load_and_are_not_corrected(profiles, drift_state, monkeypatch):
    calls: list = []
    monkeypatch.setattr(drift_state, "_time_one", _fake_timer(2.0, calls))
    device = load_device(write_profile(profiles) / "device.json")
    assert device.speed_index is None
    p = P.predict_latency(*mcu_costs("last"), device)
    assert p.drift is None and calls == []
    # the shipped measured profiles predate the index: they load and predict as before
    from tlplan.predict.devices import shipped_profiles_dir

    for name in ("host-x86-2c", "host-x86-2c-1t"):
        assert load_device(shipped_profiles_dir() / name / "device.json").speed_index is None


def test_the_speed_measurement_is_cached_in_process_and_on_disk(profiles, drift_state, monkeypatch):
    calls: list = []
    device = _with_index(write_profile(profiles))
    monkeypatch.setattr(drift_state, "_time_one", _fake_timer(1.1, calls))
    now = [1000.0]
    first = drift_state.drift_for(device, timer=None)
    timed = len(calls)
    assert timed and first.ratio == pytest.approx(1.1)
    assert drift_state.drift_for(device).ratio == pytest.approx(1.1) and len(calls) == timed  # this process
    drift_state.clear_cache()
    assert drift_state.drift_for(device).ratio == pytest.approx(1.1) and len(calls) == timed  # the disk cache
    # past the expiry, timed again
    then = drift_state.SpeedIndex.from_json(device.speed_index)
    later = drift_state.current_index(device, then, clock=lambda: now[0] + 1e12)
    assert len(calls) == 2 * timed and later.ratio_to(then) == pytest.approx(1.1)


def test_drift_correction_can_be_switched_off(profiles, drift_state, monkeypatch):
    calls: list = []
    device = _with_index(write_profile(profiles))
    monkeypatch.setattr(drift_state, "_time_one", _fake_timer(1.5, calls))
    monkeypatch.setenv(drift_state.ENV, "0")
    assert drift_state.drift_for(device) is None
    monkeypatch.delenv(drift_state.ENV)
    drift_state.set_enabled(False)
    assert drift_state.drift_for(device) is None and calls == []
    drift_state.set_enabled(None)
    assert drift_state.drift_for(device).ratio == pytest.approx(1.5)


@pytest.mark.parametrize("index, problem", [
    ({"entries": []}, "non-empty"),
    ({"entries": [{"op": "relu6", "pass": "fwd", "ms": -1.0}]}, "positive"),
    ({"entries": [{"op": "relu6", "pass": "fwd", "ms": 1.0, "colour": 3}]}, "unknown key"),
    ({"entries": [{"op": "relu6", "pass": "fwd", "ms": 1.0}], "when": "now"}, "unknown key"),
    ({"entries": [{"op": "relu6", "pass": "fwd", "ms": 1.0, "batch": "4"}]}, "whole number"),
])
def test_a_bad_speed_index_is_a_clear_error(tmp_path, index, problem):
    folder = write_profile(tmp_path)
    data = json.loads((folder / "device.json").read_text())
    data["speed_index"] = index
    (folder / "device.json").write_text(json.dumps(data))
    with pytest.raises(BadInputError, match=f"speed_index.*{problem}"):
        load_device(folder / "device.json")


def test_profile_json_and_table_say_what_correction_was_applied(profiles, drift_state, monkeypatch, capsys):
    import sys

    from tlplan.cli import main

    _with_index(write_profile(profiles))
    monkeypatch.setattr(drift_state, "_time_one", _fake_timer(1.18))

    def run(*args):
        monkeypatch.setattr(sys, "argv", ["tlplan", *args])
        with pytest.raises(SystemExit) as info:
            main()
        assert info.value.code in (0, None)
        return capsys.readouterr().out

    data = json.loads(run("profile", "mcunet-5fps", "--resolution", "64", "--device", "synthetic", "--format", "json"))
    assert data["predicted"]["drift"]["ratio"] == pytest.approx(1.18)
    assert data["predicted"]["drift"]["note"] == "machine 18 % slower than at calibration; times scaled by 1.18"
    for fmt in ("table", "markdown"):
        out = run("profile", "mcunet-5fps", "--resolution", "64", "--device", "synthetic", "--format", fmt)
        assert "machine 18 % slower than at calibration; times scaled by 1.18" in " ".join(out.split())
    off = json.loads(run("--no-drift-correction", "profile", "mcunet-5fps", "--resolution", "64", "--device",
                         "synthetic", "--format", "json"))
    assert "drift" not in off["predicted"]
    assert off["totals"]["predicted_step_ms"] == pytest.approx(data["totals"]["predicted_step_ms"] / 1.18, rel=1e-3)
    compare = run("compare", "mcunet-5fps", "--resolution", "64", "--device", "synthetic", "--no-measure",
                  "--schemes", "last,bias")
    assert "times scaled by 1.18" in " ".join(compare.split())


# --------------------------------------------------------------------------- quick adaptation: the correction


def test_adaptation_scales_are_fitted_exactly_and_shrunk_where_rows_are_few(profiles):
    from tlplan.predict import adapt
    from tlplan.predict.store import LayerRow

    device = load_device(write_profile(profiles) / "device.json")
    base = P.load_fitted(device)
    # GIVEN rows "measured" on a new machine: conv2d.pw 1.5× the base's prediction, relu6 3× (one row)
    configs = [row.config for row in synthetic_rows(ops=("conv2d.pw",), per_op=6, seed=3) if row.pass_ == "fwd"]
    rows = []
    for c in configs:
        for pass_ in ("fwd", "bwd_input"):
            (ms,) = base.price([P.Item("", "conv2d.pw", pass_, c)])
            rows.append(LayerRow("conv2d.pw", pass_, c, "net", 0, 1.5 * ms, 0.0))
    (relu,) = [r.config for r in synthetic_rows(ops=("relu6",), per_op=1) if r.pass_ == "fwd"]
    (ms,) = base.price([P.Item("", "relu6", "fwd", relu)])
    rows.append(LayerRow("relu6", "fwd", relu, "net", 0, 3.0 * ms, 0.0))
    scales, default = adapt.fit_scales(base, rows)
    # THEN a model with many rows takes their factor; one row moves its model only part of the way
    # toward it (pulled to the median); models without rows use the median
    assert default == pytest.approx(1.5)
    assert scales[("conv2d.pw", "fwd")] == pytest.approx(1.5) and scales[("conv2d.pw", "bwd_input")] == pytest.approx(1.5)
    assert 1.5 < scales[("relu6", "fwd")] < 3.0
    correction = adapt.Correction(scales, default, None)
    assert adapt.Correction.from_json(correction.to_json()).scales.keys() == scales.keys()
    fitted = adapt.apply(base, correction)
    item = P.Item("", "conv2d.pw", "fwd", configs[0])
    assert fitted.price([item])[0] == pytest.approx(1.5 * base.price([item])[0])
    other = P.Item("", "conv2d.dw", "fwd", synthetic_rows(ops=("conv2d.dw",), per_op=1)[0].config)
    assert fitted.price([other])[0] == pytest.approx(1.5 * base.price([other])[0])
    # cached fits keep the scales
    again = P.FittedProfile.from_arrays(fitted.arrays())
    assert dict(again.scales) == pytest.approx(dict(fitted.scales)) and again.default_scale == pytest.approx(1.5)


def test_the_layers_factor_and_overhead_are_refitted_on_whole_steps(profiles):
    from tlplan.predict import adapt

    device = load_device(write_profile(profiles) / "device.json")
    base = P.load_fitted(device)
    base = P.FittedProfile(base.models, np.array([2.0, 0.05, 0.0, 0.0]), base.digest)
    layers_scaled = adapt.apply(base, adapt.Correction({}, 1.2, None))
    # GIVEN steps measured as 0.8 × the corrected layers plus an overhead of 1 ms + 0.2 ms a layer
    true = np.array([1.0, 0.2, 0.0, 0.0])
    steps = []
    for scheme in ("full", "last", "bias"):
        for res in (48, 64, 96):
            graph, costs = mcu_costs(scheme, res)
            plan = P.plan_items(graph, costs)
            steps.append((plan, 0.8 * float(np.nansum(layers_scaled.price(plan.items))) + float(true @ plan.overhead_terms)))
    scale, overhead = adapt.fit_steps(base, layers_scaled, steps)
    fitted = adapt.apply(base, adapt.Correction({}, 1.2, overhead, step_scale=scale))
    prior = adapt.apply(base, adapt.Correction({}, 1.2, None))

    def error(profile):
        return max(abs(float(np.nansum(profile.price(plan.items))) + profile.overhead_ms(plan) - ms) / ms
                   for plan, ms in steps)

    # THEN the refitted profile predicts the steps far better than BASE's scaled one
    assert error(fitted) < 0.2 * error(prior) and scale < 1.0
    assert adapt.fit_steps(base, layers_scaled, []) == (1.0, None)  # no steps: BASE's overhead × the layers' factor
    assert prior.overhead == pytest.approx(base.overhead * 1.2)
    again = P.FittedProfile.from_arrays(fitted.arrays())
    assert again.layer_scale == pytest.approx(scale)


def test_an_adapted_profile_says_where_it_comes_from(profiles):
    folder = write_profile(profiles)
    data = json.loads((folder / "device.json").read_text())
    data["adapted"] = {"from": "host-x86-2c-1t", "method": "scale", "configs": 3, "rows": 9, "steps": 1,
                       "scales": {"conv2d.pw/fwd": 2.0}, "default_scale": 1.0,
                       "overhead_ms": {"per_step": 1.0, "per_layer": 0.01}}
    (folder / "device.json").write_text(json.dumps(data))
    device = load_device(folder / "device.json")
    graph, costs = mcu_costs("full")
    p = P.predict_latency(graph, costs, device)
    assert p.source == "fitted on measurements, adapted from host-x86-2c-1t"
    assert str(p.on) == "predicted for synthetic (fitted on measurements, adapted from host-x86-2c-1t)"
    data["adapted"] = {"method": "scale"}
    (folder / "device.json").write_text(json.dumps(data))
    with pytest.raises(BadInputError, match="'from'"):
        load_device(folder / "device.json")


def test_residual_models_correct_shape_by_shape(profiles):
    from tlplan.predict import adapt
    from tlplan.predict.store import LayerRow

    device = load_device(write_profile(profiles) / "device.json")
    base = P.load_fitted(device)
    # GIVEN a new machine on which small conv2d.pw layers run as on the base and large ones 2× slower
    configs = sorted({r.config for r in synthetic_rows(ops=("conv2d.pw",), per_op=60, seed=5)},
                     key=lambda c: macs("conv2d.pw", c))
    cut = macs("conv2d.pw", configs[len(configs) // 2])

    def slowdown(c):
        return 2.0 if macs("conv2d.pw", c) > cut else 1.0

    rows = [LayerRow("conv2d.pw", "fwd", c, "net", 0, slowdown(c) * float(base.price([P.Item("", "conv2d.pw", "fwd", c)])[0]),
                     0.0) for c in configs]
    correction = adapt.fit_correction(base, rows, [])
    assert set(correction.residuals) == {("conv2d.pw", "fwd")}
    fitted = adapt.apply(base, correction)
    small, large = configs[2], configs[-3]
    ratio = [float(fitted.price([P.Item("", "conv2d.pw", "fwd", c)])[0] / base.price([P.Item("", "conv2d.pw", "fwd", c)])[0])
             for c in (small, large)]
    # THEN the residual model follows the shape (a single scale would be about 1.4 for both)
    assert ratio[0] == pytest.approx(1.0, abs=0.15) and ratio[1] == pytest.approx(2.0, rel=0.15)
    # and a cached fit keeps it
    again = P.FittedProfile.from_arrays(fitted.arrays())
    assert again.price([P.Item("", "conv2d.pw", "fwd", large)])[0] == pytest.approx(
        fitted.price([P.Item("", "conv2d.pw", "fwd", large)])[0])
