"""Step times on a device in solve / compare / pareto (--device, --max-step-ms), and importance by
contribution analysis (short fine-tunes per option)."""

from __future__ import annotations

import csv
import json

import pytest
import torch
import torch.nn as nn

import tlplan
from tlplan.costs.annotate import annotate
from tlplan.data import Data
from tlplan.errors import BadInputError, CheckFailed
from tlplan.plan.schemes import parse_scheme, scheme_options
from tlplan.predict.predictor import predict_latency
from tlplan.solve import build_space, solve_space
from tlplan.solve.contribution import contribution_importance
from tlplan.solve.importance import option_key
from tlplan.solve.space import _options_for
from tlplan.solve.timing import time_model
from tlplan.trace import trace_model

SHAPE = (8, 3, 96, 96)


@pytest.fixture(scope="module")
def space():
    graph = trace_model(tlplan.load_model("mobilenet_v2", num_classes=10), SHAPE, "mobilenet_v2")
    return build_space(graph, "tlplan")


def _predicted(space, options) -> float:
    return predict_latency(space.graph, annotate(space.graph, options, space.runtime, space.precision), "jetson-nano").step_ms


def test_time_limit_holds_and_costs_importance(space) -> None:
    budget = 64 * 1024 * 1024
    free = solve_space(space, budget, time=time_model(space, "jetson-nano", per_depth=False))
    assert free.best.step_ms == pytest.approx(_predicted(space, free.best.options))
    limited_model = time_model(space, "jetson-nano")
    assert limited_model.minimum_ms < free.best.step_ms
    limit = (limited_model.minimum_ms + free.best.step_ms) / 2
    limited = solve_space(space, budget, time=limited_model, max_step_ms=limit)
    # the limit is met as predicted for the whole plan, not just by the additive model
    assert limited.best.step_ms == pytest.approx(_predicted(space, limited.best.options))
    assert limited.best.step_ms <= limit
    assert limited.best.memory.peak_bytes <= budget
    assert 0 < limited.best.importance < free.best.importance


def test_time_model_is_additive_where_it_can_be(space) -> None:
    """Fixed time of a depth + the options' deltas predicts the whole step of the plan they make."""
    model = time_model(space, "jetson-nano")
    result = solve_space(space, 64 * 1024 * 1024, time=model, max_step_ms=1e9)
    depth = result.best.depth
    additive = model.fixed_ms[depth] + sum(
        float(model.deltas[k][[c.options for c in ch.candidates].index(result.best.options.get(ch.layer, tlplan.LayerOptions()))])
        for k, ch in enumerate(space.choices) if k >= depth)
    assert additive == pytest.approx(result.best.step_ms, rel=0.05)


def test_infeasible_time_limit(space) -> None:
    model = time_model(space, "jetson-nano")
    with pytest.raises(CheckFailed, match=r"cheapest \(classifier only\) is predicted at"):
        solve_space(space, 64 * 1024 * 1024, time=model, max_step_ms=model.minimum_ms / 2)


def test_cli_solve_device(run, tmp_path) -> None:
    args = ("solve", "mobilenet_v2", "--ram", "64MB", "--batch", "8", "--resolution", "96", "--num-classes", "10",
            "--device", "jetson-nano")
    code, out, err = run(*args, "-o", str(tmp_path / "plan.yaml"))
    assert code == 0, err
    assert "step time" in out and "predicted for jetson-nano (datasheet roofline)" in out
    plan = tlplan.load_plan(tmp_path / "plan.yaml")
    assert plan.predicted["step_ms_source"] == "predicted for jetson-nano (datasheet roofline)"
    free_ms = plan.predicted["step_ms"]
    code, out, err = run(*args, "--max-step-ms", f"{free_ms * 0.8:.1f}", "--format", "json")
    assert code == 0, err
    data = json.loads(out)
    assert data["predicted"]["step_ms"] <= data["predicted"]["max_step_ms"] == float(f"{free_ms * 0.8:.1f}")
    code, _, err = run(*args, "--max-step-ms", "0.5")
    assert code == 1 and "no plan runs within 0.5 ms" in err
    code, _, err = run("solve", "mobilenet_v2", "--ram", "64MB", "--max-step-ms", "100")
    assert code == 2 and "needs --device" in err
    code, _, err = run(*args, "--max-step-ms", "-3")
    assert code == 2 and "positive" in err


def test_cli_pareto_device(run) -> None:
    code, out, err = run("solve", "mcunet-5fps", "--ram", "256KB", "--runtime", "mcu", "--pareto", "--device", "stm32f746",
                         "--format", "csv", "-q", "--points", "3")
    assert code == 0, err
    rows = list(csv.DictReader(out.splitlines()))
    assert rows and all(float(r["step_ms_predicted"]) > 0 and r["predicted_for"] == "stm32f746" for r in rows)
    code, out, err = run("solve", "mcunet-5fps", "--ram", "256KB", "--runtime", "mcu", "--pareto", "--device", "stm32f746",
                         "--format", "json", "-q", "--points", "3")
    data = json.loads(out)
    assert data["step_ms_source"] == "predicted for stm32f746 (datasheet roofline)"
    # each point's time is the whole-step prediction of the plan solved at that budget
    assert all(p["step_ms"] > 0 for p in data["frontier"] + data["schemes"])


def test_compare_device(run) -> None:
    code, out, err = run("compare", "mcunet-5fps", "--no-measure", "--device", "stm32f746", "--schemes", "bias",
                         "--format", "json")
    assert code == 0, err
    data = json.loads(out)
    assert data["predicted"] == "predicted for stm32f746 (datasheet roofline)" and data["measured"] is None
    graph = trace_model(tlplan.load_model("mcunet-5fps"), (1, 3, 128, 128), "mcunet-5fps")
    costs = annotate(graph, scheme_options(graph, parse_scheme("bias")), "tlplan")
    bias = next(r for r in data["schemes"] if r["scheme"] == "bias")
    assert bias["step_ms_predicted"] == pytest.approx(predict_latency(graph, costs, "stm32f746").step_ms, abs=1e-3)
    assert bias["step_ms"] is None
    code, out, err = run("compare", "mcunet-5fps", "--no-measure", "--device", "stm32f746", "--schemes", "bias")
    assert code == 0 and "stm32f746 ms/step (predicted)" in out


# ---- contribution analysis ---------------------------------------------------------------------------


class Tiny(nn.Module):
    """Two live convs and a dead one between them (its ReLU never opens: no gradient reaches it)."""

    def __init__(self, num_classes: int = 2):
        super().__init__()
        self.conv0 = nn.Conv2d(3, 8, 3, padding=1)
        self.dead = nn.Conv2d(8, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.relu0, self.relu1, self.relu2 = nn.ReLU(), nn.ReLU(), nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, num_classes)
        with torch.no_grad():
            self.dead.bias.fill_(-1e4)

    def forward(self, x):
        h = self.relu0(self.conv0(x))
        h = h + self.relu1(self.dead(h))
        return self.fc(self.pool(self.relu2(self.conv2(h))).flatten(1))


def _task(n: int = 48, size: int = 12) -> Data:
    g = torch.Generator().manual_seed(1)
    labels = torch.arange(n) % 2
    images = torch.randn(n, 3, size, size, generator=g) * 0.5
    images[labels == 1, 0, : size // 2] += 1.5  # class 1: a bright top half in the red channel
    return Data(images, labels, ("a", "b"), "generated")


def test_contribution_importance() -> None:
    torch.manual_seed(0)
    model = Tiny()
    graph = trace_model(model, (8, 3, 12, 12), "tiny")
    table = contribution_importance(model, graph, _task(), batch=8, steps=6)
    expected = {(layer.name, option_key(o)) for layer in graph.layers
                if layer.module != "fc" for o in _options_for(layer, "tlplan")}
    assert set(table) == expected
    assert max(table.values()) == 1.0 and min(table.values()) >= 0
    dead = [v for (layer, _), v in table.items() if layer == graph.layers[2].name]
    assert graph.layers[2].module == "dead" and dead and all(v == 0 for v in dead)  # no gradient, no gain
    assert table == contribution_importance(model, graph, _task(), batch=8, steps=6)  # seeded: repeatable


def test_contribution_needs_held_out_data() -> None:
    model = Tiny()
    graph = trace_model(model, (1, 3, 12, 12), "tiny")
    one = Data(torch.zeros(1, 3, 12, 12), torch.zeros(1, dtype=torch.long), ("a", "b"), "one image")
    with pytest.raises(BadInputError, match="too few"):
        contribution_importance(model, graph, one, batch=1, steps=1)


def test_cli_importance_contribution(run, tmp_path, monkeypatch) -> None:
    (tmp_path / "tinynet.py").write_text(
        "import sys\nsys.path.insert(0, %r)\nfrom test_device_planning import Tiny\n\n"
        "def make(num_classes=2):\n    import torch\n    torch.manual_seed(0)\n    return Tiny(num_classes)\n"
        % str(__import__("pathlib").Path(__file__).parent))
    monkeypatch.syspath_prepend(str(tmp_path))
    data = _task()
    torch.save({"images": data.images, "labels": data.labels}, tmp_path / "task.pt")
    out = tmp_path / "imp.csv"
    code, _, err = run("importance", "tinynet:make", "--data", str(tmp_path / "task.pt"), "--method", "contribution",
                       "--steps", "4", "--resolution", "12", "--batch", "8", "-o", str(out))
    assert code == 0, err
    rows = list(csv.DictReader(out.read_text().splitlines()))
    assert rows and max(float(r["importance"]) for r in rows) == 1.0
    code, _, err = run("importance", "tinynet:make", "--data", "synthetic", "--method", "votes")
    assert code == 2 and "unknown --method" in err


def test_check_holds_the_step_limit(run, tmp_path) -> None:
    import yaml

    plan_path = tmp_path / "plan.yaml"
    code, _, err = run("solve", "mcunet-5fps", "--ram", "256KB", "--runtime", "mcu", "--device", "stm32f746",
                       "--max-step-ms", "700", "-o", str(plan_path), "-q")
    assert code == 0, err
    code, out, err = run("check", str(plan_path), "--format", "markdown")
    assert code == 0, err
    assert "step time on stm32f746" in out and "predicted for stm32f746 (datasheet roofline)" in out
    data = yaml.safe_load(plan_path.read_text())
    data["predicted"]["max_step_ms"] = 1.0  # a limit the plan no longer meets
    plan_path.write_text(yaml.safe_dump(data))
    code, out, err = run("check", str(plan_path), "--format", "json")
    assert code == 1 and "over the plan's limit of 1 ms" in err
    assert json.loads(out)["fast_enough"] is False


def test_train_predicts_its_step_with_a_profile_of_this_machine(run, tmp_path) -> None:
    plan = tlplan.plan_from_scheme(tlplan.load_model("mcunet-5fps", num_classes=2), (4, 3, 48, 48), "bias",
                                   model_name="mcunet-5fps", num_classes=2)
    plan.save(tmp_path / "plan.yaml")
    args = ("train", str(tmp_path / "plan.yaml"), "--data", "synthetic", "--steps", "3", "--out", str(tmp_path / "run"), "-q")
    code, _, err = run(*args, "--device", "jetson-nano")
    assert code == 2 and "datasheet profile" in err
    assert not (tmp_path / "run").exists()  # refused before training
    code, out, err = run(*args, "--device", "host-x86-2c")
    assert code == 0, err
    flat = " ".join(out.split())  # the caption wraps
    assert "ms per step (host-x86-2c)" in out and "predicted for host-x86-2c (fitted on measurements)" in flat
