"""Plans as files, backward_config errors, ``compare`` and ``--plot`` as a user meets them."""

from __future__ import annotations

import json

import pytest
import yaml

import tlplan
from tlplan.errors import BadInputError, SchemeError
from tlplan.plan.plan import load_plan
from tlplan.plan.schemes import load_backward_config, parse_scheme, scheme_options, sparse_options
from tlplan.trace import trace_model


def test_plan_roundtrip(tmp_path) -> None:
    model = tlplan.load_model("mcunet-5fps")
    plan = tlplan.plan_from_scheme(model, (1, 3, 128, 128), "mobiletl:3", model_name="mcunet-5fps")
    path = tmp_path / "plan.yaml"
    plan.save(path)
    again = load_plan(path)
    assert again.layers == dict(plan.layers) and again.input_shape == plan.input_shape
    assert again.predicted["saved_bytes"] == plan.predicted["saved_bytes"] > 0
    assert [p.name for p in tmp_path.iterdir()] == ["plan.yaml"]  # no temp file left


@pytest.mark.parametrize(
    "mutate,field",
    [
        (lambda d: d.update(version=9), "version"),
        (lambda d: d.update(input_shape=[1, 3, 0, 128]), "input_shape"),
        (lambda d: d.update(runtime="gpu"), "runtime"),
        (lambda d: d.update(extra=1), "extra"),
        (lambda d: d["layers"].update({"classifier": {"weight": 1.5}}), "layers.classifier.weight"),
        (lambda d: d["layers"].update({"classifier": {"wieght": 1}}), "wieght"),
        (lambda d: d["layers"].update({"classifier": {"grad_filter": 1}}), "grad_filter"),
    ],
)
def test_malformed_plans_name_the_field(tmp_path, mutate, field) -> None:
    model = tlplan.load_model("mcunet-5fps")
    data = tlplan.plan_from_scheme(model, (1, 3, 128, 128), "bias").to_dict()
    mutate(data)
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(BadInputError, match=field):
        load_plan(path)


def test_unreadable_and_invalid_plan_files(tmp_path) -> None:
    with pytest.raises(BadInputError, match="cannot read"):
        load_plan(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("layers: [unclosed\n")
    with pytest.raises(BadInputError, match="not valid YAML"):
        load_plan(bad)


@pytest.mark.parametrize(
    "content,message",
    [
        ("n_bias_update: 6\nmanual_weight_idx: [99]\nweight_update_ratio: [0.5]\n", "manual_weight_idx 99 is out of range"),
        ("n_bias_update: 6\nmanual_weight_idx: [36]\nweight_update_ratio: [1.5]\n", "weight_update_ratio 1.5"),
        ("n_bias_update: 6\nmanual_weight_idx: [36]\nweight_update_ratio: [-1]\n", "outside \\[0, 1\\]"),
        ("n_bias_update: 99\n", "n_bias_update"),
        ("n_bias_update: 6\nmanual_weight_idx: [36, 39]\nweight_update_ratio: [0.5]\n", "2 manual_weight_idx"),
        ("n_bias_update: 6\nweight_select: x\n", "unknown field"),
    ],
)
def test_malformed_backward_config(tmp_path, content, message) -> None:
    path = tmp_path / "bc.yaml"
    path.write_text(content)
    graph = trace_model(tlplan.load_model("mcunet-5fps"), (1, 3, 128, 128))
    with pytest.raises(SchemeError, match=message):
        scheme_options(graph, parse_scheme(f"sparse:{path}"))


def test_backward_config_semantics(tmp_path) -> None:
    path = tmp_path / "bc.yaml"
    path.write_text("backward_config:\n  n_bias_update: 4\n  manual_weight_idx: [39]\n  weight_update_ratio: [0.25]\n")
    graph = trace_model(tlplan.load_model("mcunet-5fps"), (1, 3, 128, 128))
    opts = sparse_options(graph, load_backward_config(path))
    convs = [l.name for l in graph.layers if l.op == "conv2d"]
    assert {n for n, o in opts.items() if o.bias} == set(convs[-4:])
    assert opts[convs[39]].weight == 0.25 and opts[convs[39]].select == "magnitude"


def test_cli_sparse_error_is_one_line(run, tmp_path) -> None:
    path = tmp_path / "bc.yaml"
    path.write_text("n_bias_update: 6\nmanual_weight_idx: [99]\n")
    code, out, err = run("profile", "mcunet-5fps", "--no-measure", "--scheme", f"sparse:{path}")
    assert code == 2 and err.strip().startswith("error:") and len(err.strip().splitlines()) == 1
    assert "manual_weight_idx" in err


def test_compare_rows_and_ratios(run) -> None:
    code, out, err = run("compare", "mcunet-5fps", "--schemes", "bias,blocks:3,mobiletl:3,gradfilter:4:2",
                         "--format", "json", "--repeats", "1")
    assert code == 0, err
    d = json.loads(out)
    schemes = [r["scheme"] for r in d["schemes"]]
    assert schemes == ["full", "bias", "blocks:3", "mobiletl:3", "gradfilter:4:2"]  # full added as reference
    full = d["schemes"][0]
    assert full["ratio_to_full"]["kept_tlplan_bytes"] == 1.0
    for r in d["schemes"]:
        assert r["step_ms"] > 0
        assert r["kept_tlplan_bytes"] <= r["kept_eager_bytes"] or r["scheme"] == "full"
        assert r["ratio_to_full"]["kept_tlplan_bytes"] == pytest.approx(r["kept_tlplan_bytes"] / full["kept_tlplan_bytes"])
    bias = d["schemes"][1]
    assert bias["kept_tlplan_bytes"] * 10 < bias["kept_eager_bytes"]


def test_compare_markdown_and_bad_scheme(run) -> None:
    code, out, err = run("compare", "mcunet-5fps", "--schemes", "bias", "--no-measure", "--format", "markdown")
    assert code == 0 and out.count("\n| ") >= 3 and "|---|" in out
    code, out, err = run("compare", "mcunet-5fps", "--schemes", "bias,nope", "--no-measure")
    assert code == 2 and "unknown scheme 'nope'" in err


def test_profile_plot_writes_a_png(run, tmp_path) -> None:
    path = tmp_path / "mem.png"
    code, out, err = run("profile", "mcunet-5fps", "--no-measure", "--scheme", "mobiletl:3", "--plot", str(path), "-q")
    assert code == 0, err
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_profile_runtimes_and_precision(run) -> None:
    kept = {}
    for args in (("--runtime", "eager"), ("--runtime", "tlplan"), ("--runtime", "tlplan", "--precision", "fp16"), ("--runtime", "mcu")):
        code, out, err = run("profile", "mcunet-5fps", "--scheme", "bias", "--no-measure", "--format", "json", *args)
        assert code == 0, err
        d = json.loads(out)
        kept[" ".join(args)] = (d["totals"]["saved_bytes"], d["totals"]["peak_bytes"])
    assert kept["--runtime eager"][0] > 10 * kept["--runtime tlplan"][0]
    assert kept["--runtime tlplan --precision fp16"][0] <= kept["--runtime tlplan"][0]
    # int8 activations, frozen weights in flash: the MCU engine's peak is the smallest
    assert kept["--runtime mcu"][1] < kept["--runtime tlplan"][1] / 4
    code, out, err = run("profile", "mcunet-5fps", "--runtime", "gpu", "--no-measure")
    assert code == 2 and "unknown runtime" in err


def test_a_plan_file_is_a_scheme(run, tmp_path) -> None:
    model = tlplan.load_model("mcunet-5fps")
    plan = tlplan.plan_from_scheme(model, (1, 3, 128, 128), "mobiletl:3", model_name="mcunet-5fps")
    path = tmp_path / "plan.yaml"
    plan.save(path)
    code, out, err = run("profile", "mcunet-5fps", "--no-measure", "--format", "json", "--scheme", str(path))
    assert code == 0, err
    assert json.loads(out)["totals"]["saved_bytes"] == plan.predicted["saved_bytes"]
    code, out, err = run("profile", "resnet18", "--no-measure", "--scheme", str(path))
    assert code == 2 and "is not in" in err  # the plan's layers do not exist in another model
