"""The 256KB paper's backward_config, read and written verbatim: every released scheme loads,
profiles, reproduces the paper's memory label and round-trips through the export unchanged."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import tlplan
from tlplan.costs.annotate import annotate
from tlplan.errors import SchemeError
from tlplan.plan.backward_config import (
    PASSTHROUGH, backward_config_yaml, export_backward_config, load_backward_config, resolve, sparse_options,
)
from tlplan.plan.schemes import classifier_layers, conv_layers, parse_scheme, scheme_options
from tlplan.trace import trace_model

DATA = Path(__file__).parent / "data" / "backward_configs"
RELEASED = sorted(p for p in DATA.glob("*.yaml") if p.name != "default.yaml")
MODELS = ("mbv2-w0.35", "proxyless-w0.3", "mcunet-5fps")
_GRAPHS: dict = {}


def graph_of(name: str):
    if name not in _GRAPHS:  # the paper's compiled configs are for a 10-class task
        _GRAPHS[name] = trace_model(tlplan.load_model(name, num_classes=10), (1, 3, 128, 128), name)
    return _GRAPHS[name]


def model_of(path: Path) -> str:
    return next(m for m in MODELS if path.name.startswith(m))


def test_every_released_scheme_is_there() -> None:
    assert len(RELEASED) == 18  # 5 compiled schemes per model + the 3 of the training scripts


@pytest.mark.parametrize("path", RELEASED, ids=lambda p: p.stem)
def test_released_config_matches_its_label_and_round_trips(path: Path, tmp_path) -> None:
    graph = graph_of(model_of(path))
    config = load_backward_config(path)
    options = scheme_options(graph, parse_scheme(f"sparse:{path}"))
    # the paper's analytic memory, in its own convention (partial_backward.nelem_saved_for_backward):
    # the classifier's weights are not counted ("fc_bits = 0"), only its int8 input is
    costs = annotate(graph, options, "mcu", "int8")
    head = {layer.name for layer in classifier_layers(graph)}
    head_cost = sum(c.saved_bytes + c.trainable_param_bytes for layer, c in zip(graph.layers, costs.layers) if layer.name in head)
    head_input = next(layer.input_shapes[0][1] for layer in graph.layers if layer.name in head)
    paper_bytes = costs.totals["saved_bytes"] + costs.totals["trainable_param_bytes"] - head_cost + head_input
    label = path.stem[len(model_of(path)) + 1:]
    if label[:-2].isdigit():  # the compiled schemes are named by their memory, in whole KB (rounded down)
        assert paper_bytes // 1024 == int(label[:-2]), (path.name, paper_bytes)
    elif label == "sparse-100kb":  # the training script's "100KB scheme" (the compiled 99kb one, 99.8 KB)
        assert round(paper_bytes / 1024) == 100
    # written in the training code's form and read back: the same options, the same fields
    out = tmp_path / "exported.yaml"
    out.write_text(backward_config_yaml(export_backward_config(graph, sparse_options(graph, config), config.passthrough)))
    again = load_backward_config(out)
    assert sparse_options(graph, again) == sparse_options(graph, config)
    assert again.passthrough == {k: config.passthrough.get(k, 0) for k in PASSTHROUGH}
    fields = yaml.safe_load(out.read_text())["backward_config"]
    # what the paper's training code does with these fields: splits the indices and ratios on "-"
    if fields["manual_weight_idx"] is not None:
        idx = [int(p) for p in str(fields["manual_weight_idx"]).split("-")]
        ratios = [float(p) for p in str(fields["weight_update_ratio"]).split("-")]
        assert len(idx) == len(ratios) and idx == sorted(idx)
        assert all(i >= len(conv_layers(graph)) - fields["n_bias_update"] for i in idx)
    assert fields["enable_backward_config"] == 1 and isinstance(fields["n_bias_update"], int)


def test_ratio_zero_is_bias_only_and_dash_strings_read_as_lists(tmp_path) -> None:
    graph = graph_of("mcunet-5fps")
    convs = [layer.name for layer in conv_layers(graph)]
    listed = load_backward_config(DATA / "mcunet-5fps-74kb.yaml")  # ratios 1-0-1-0-0.5-1 at 21-23-24-26-27-30
    options = sparse_options(graph, listed)
    assert options[convs[23]].bias and options[convs[23]].weight == 0.0
    assert options[convs[21]].weight == 1.0 and options[convs[27]].weight == 0.5
    assert {n for n, o in options.items() if o.bias} == set(convs[-21:])
    dashed = tmp_path / "dashed.yaml"
    dashed.write_text("n_bias_update: 21\nmanual_weight_idx: 21-23-24-26-27-30\nweight_update_ratio: 1-0-1-0-0.5-1\n"
                      "weight_select_criteria: magnitude+\n")
    assert sparse_options(graph, load_backward_config(dashed)) == options


def test_n_weight_update_pw1_only_and_all(tmp_path) -> None:
    graph = graph_of("mcunet-5fps")
    path = tmp_path / "bc.yaml"
    path.write_text("n_bias_update: all\nn_weight_update: 9\npw1_weight_only: 1\nweight_update_ratio: 0.25\n")
    resolved = resolve(graph, load_backward_config(path))
    # the last 9 convs are blocks 11-13 (3 each); of those, the widening 1x1 convs: 33, 36, 39
    assert resolved.n_bias == 42 and resolved.weights == ((33, 0.25), (36, 0.25), (39, 0.25))


def test_disabled_config_is_a_full_update() -> None:
    graph = graph_of("mcunet-5fps")
    options = sparse_options(graph, load_backward_config(DATA / "default.yaml"))
    assert all(options[layer.name].weight == 1.0 and options[layer.name].bias for layer in conv_layers(graph))


@pytest.mark.parametrize(
    "content,message",
    [
        ("n_bias_update: 4\nmanual_weight_idx: 30-39\n", "conv 30 updates its weight but not its bias"),
        ("n_bias_update: 6\nmanual_weight_idx: 36-39\nweight_update_ratio: 1-x\n", "weight_update_ratio"),
        ("n_bias_update: 6\nmanual_weight_idx: [36]\nweight_update_ratio: [-0.5]\n", "outside \\[0, 1\\]"),
        ("n_bias_update: 6\nmanual_weight_idx: [39, 36]\n", "forward order"),
        ("n_bias_update: 6\npw1_weight_only: 2\n", "pw1_weight_only must be 0 or 1"),
        ("data_provider:\n  root: x\n", "no backward_config section"),
        ("n_bias_update: 6\nweight_select_criteria: largest\n", "weight_select_criteria"),
    ],
)
def test_bad_configs_are_one_line_errors(tmp_path, content, message) -> None:
    path = tmp_path / "bc.yaml"
    path.write_text(content)
    with pytest.raises(SchemeError, match=message) as caught:
        sparse_options(graph_of("mcunet-5fps"), load_backward_config(path))
    assert "\n" not in str(caught.value)


def test_cli_profiles_a_released_config_and_refuses_a_bad_one(run, tmp_path) -> None:
    code, out, err = run("profile", "mcunet-5fps", "--num-classes", "10", "--runtime", "mcu", "--no-measure",
                         "--scheme", f"sparse:{DATA / 'mcunet-5fps-99kb.yaml'}", "--format", "json")
    assert code == 0, err
    bad = tmp_path / "bad.yaml"
    bad.write_text("backward_config:\n  n_bias_update: 4\n  manual_weight_idx: 30-39\n")
    code, out, err = run("profile", "mcunet-5fps", "--no-measure", "--scheme", f"sparse:{bad}")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "n_bias_update" in err


def test_export_names_the_optimizer_as_the_papers_training_code_does(tmp_path) -> None:
    from tlplan.plan.backward_config import optimizer_name
    from tlplan.plan.plan import OPTIMIZER_PRESETS, Optimizer

    # tiny-training's optimizer_entry: sgd (momentum 0.9), sgd_nomom, sgd_scale_nomom (QAS), adam
    assert [optimizer_name(OPTIMIZER_PRESETS[k]) for k in ("sgd", "momentum", "qas", "adam")] == \
        ["sgd_nomom", "sgd", "sgd_scale_nomom", "adam"]
    with pytest.raises(SchemeError, match="momentum 0.5"):
        optimizer_name(Optimizer("sgd", momentum=0.5))
    graph = graph_of("mcunet-5fps")
    config = load_backward_config(DATA / "mcunet-5fps-99kb.yaml")
    out = tmp_path / "bc.yaml"
    out.write_text(backward_config_yaml(export_backward_config(graph, sparse_options(graph, config)), OPTIMIZER_PRESETS["qas"]))
    assert yaml.safe_load(out.read_text())["run_config"] == {"optimizer_name": "sgd_scale_nomom"}
    # a training config with its run_config reads as its backward_config section
    assert sparse_options(graph, load_backward_config(out)) == sparse_options(graph, config)
