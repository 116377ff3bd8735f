"""Quantization-aware scaling (QAS), the 256KB paper's optimizer: the torch optimizer's update, the
plan's optimizer field, solve --optimizer qas on mcu, the exported config and tlplan train."""

from __future__ import annotations

import pytest
import torch
import yaml

import tlplan
from tlplan import training
from tlplan.data import load_data
from tlplan.errors import BadInputError
from tlplan.plan.plan import OPTIMIZER_PRESETS, Optimizer, Plan
from tlplan.runtime.qas import QAS, make_optimizer


def test_update_is_the_scaled_gradient_formula() -> None:
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(4, 3))  # quantized values W̄, held in fp32
    b = torch.nn.Parameter(torch.randn(4))
    g_w, g_b = torch.randn(4, 3), torch.randn(4)
    s_w, s_b = 0.05, 0.02
    w0, b0 = w.detach().clone(), b.detach().clone()
    opt = QAS([w, b], lr=0.1, weight_decay=0.01, scales={w: s_w, b: s_b})
    w.grad, b.grad = g_w.clone(), g_b.clone()
    opt.step()
    # W̄ ← W̄ − lr · (G_W̄ · s⁻² + wd · W̄), per tensor with its own scale
    assert torch.allclose(w.detach(), w0 - 0.1 * (g_w / s_w**2 + 0.01 * w0), rtol=1e-6, atol=1e-6)
    assert torch.allclose(b.detach(), b0 - 0.1 * (g_b / s_b**2 + 0.01 * b0), rtol=1e-6, atol=1e-6)
    assert set(opt.state[w]) == {"scale"}  # no momentum buffer: nothing beyond the gradient per element


def test_quantized_graph_with_qas_moves_as_fp32_sgd() -> None:
    """The paper's point: on W̄ = W / s the int8 graph's gradient is s·G_W; QAS undoes it, plain SGD does not."""
    torch.manual_seed(1)
    x, y = torch.randn(16, 5), torch.randn(16, 2)
    w_real = torch.randn(2, 5)
    s = float(w_real.abs().max() / 127)  # the tensor's int8 scale

    def trajectory(param: torch.nn.Parameter, scale: float, opt) -> torch.Tensor:
        for _ in range(5):
            opt.zero_grad()
            loss = ((x @ (scale * param).T - y) ** 2).mean()
            loss.backward()
            opt.step()
        return (scale * param).detach()

    fp32 = torch.nn.Parameter(w_real.clone())
    expected = trajectory(fp32, 1.0, torch.optim.SGD([fp32], lr=0.05))
    quantized = torch.nn.Parameter(w_real / s)
    assert torch.allclose(trajectory(quantized, s, QAS([quantized], lr=0.05, scales={quantized: s})), expected, atol=1e-5)
    plain = torch.nn.Parameter(w_real / s)
    assert not torch.allclose(trajectory(plain, s, torch.optim.SGD([plain], lr=0.05)), expected, atol=1e-3)


def test_qas_refuses_what_makes_no_sense() -> None:
    w = torch.nn.Parameter(torch.ones(2))
    with pytest.raises(BadInputError, match="scale"):
        QAS([w], scales={w: 0.0})
    with pytest.raises(BadInputError, match="not among the parameters"):
        QAS([w], scales={torch.nn.Parameter(torch.ones(1)): 0.1})
    with pytest.raises(BadInputError, match="without momentum"):
        Optimizer("qas", momentum=0.9)
    base = {"version": 1, "model": "mcunet-5fps", "input_shape": [1, 3, 128, 128], "runtime": "mcu", "layers": {}}
    with pytest.raises(BadInputError, match="qas with momentum") as caught:
        Plan.from_dict({**base, "optimizer": {"name": "qas", "momentum": 0.5}})
    assert "\n" not in str(caught.value)
    plan = Plan.from_dict({**base, "optimizer": {"name": "qas", "lr": 0.05}})
    assert plan.optimizer == Optimizer("qas", 0.05) and plan.optimizer.state_slots == 0
    assert Plan.from_dict(plan.to_dict()).optimizer == plan.optimizer  # round-trips


def test_make_optimizer_builds_qas_and_torch_ones() -> None:
    p = [torch.nn.Parameter(torch.ones(3))]
    assert isinstance(make_optimizer(p, OPTIMIZER_PRESETS["qas"]), QAS)
    assert isinstance(make_optimizer(p, OPTIMIZER_PRESETS["adam"]), torch.optim.Adam)
    assert type(make_optimizer(p, OPTIMIZER_PRESETS["sgd"])) is torch.optim.SGD


def test_solve_mcu_with_qas_records_it_counts_no_state_and_exports_it(run, tmp_path) -> None:
    path = tmp_path / "plan.yaml"
    code, out, err = run("solve", "mcunet-5fps", "--ram", "256KB", "--runtime", "mcu", "--optimizer", "qas", "-q", "-o", str(path))
    assert code == 0, err
    plan = yaml.safe_load(path.read_text())
    assert plan["optimizer"]["name"] == "qas" and plan["optimizer"]["momentum"] == 0
    assert plan["predicted"]["optimizer_bytes"] == 0 and plan["predicted"]["peak_bytes"] <= 256 * 1024
    sgd = tmp_path / "sgd.yaml"
    code, out, err = run("solve", "mcunet-5fps", "--ram", "256KB", "--runtime", "mcu", "-q", "-o", str(sgd))
    assert code == 0, err
    assert yaml.safe_load(sgd.read_text())["predicted"] == plan["predicted"]  # QAS costs what SGD costs
    code, out, err = run("check", str(path))
    assert code == 0, err + out
    exported = tmp_path / "bc.yaml"
    code, out, err = run("solve", "mcunet-5fps", "--ram", "256KB", "--runtime", "mcu", "--optimizer", "qas", "-q",
                         "--export", "backward-config", "-o", str(exported))
    assert code == 0, err
    fields = yaml.safe_load(exported.read_text())
    assert fields["run_config"]["optimizer_name"] == "sgd_scale_nomom"  # the paper's name for QAS
    assert fields["backward_config"]["enable_backward_config"] == 1
    code, out, err = run("solve", "mcunet-5fps", "--ram", "256KB", "--runtime", "mcu", "--optimizer", "qass", "-q")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "qas" in err


def test_train_runs_a_qas_plan(tmp_path) -> None:
    model = tlplan.load_model("mcunet-5fps", num_classes=10)
    plan = tlplan.plan_from_scheme(model, (2, 3, 32, 32), "bias", model_name="mcunet-5fps", num_classes=10)
    from dataclasses import replace

    plan = replace(plan, optimizer=Optimizer("qas", 0.05))
    result = training.train(plan, load_data("synthetic", 32), out_dir=tmp_path, steps=2, measure=False)
    assert result.history and all(h.loss == h.loss for h in result.history)  # it stepped, finite
    state = torch.load(tmp_path / training.CHECKPOINT, weights_only=True)["optimizer"]["state"]
    assert state and all(set(s) == {"scale"} for s in state.values())  # QAS's, with no momentum buffer


def test_qas_steps_in_place_and_takes_later_param_groups() -> None:
    import torch

    from tlplan.runtime.qas import QAS

    a = torch.nn.Parameter(torch.ones(4))
    b = torch.nn.Parameter(torch.ones(3))
    opt = QAS([a], lr=0.5, weight_decay=0.1, scales={a: 2.0})
    opt.add_param_group({"params": [b]})  # real units: scale 1
    a.grad, b.grad = torch.full((4,), 4.0), torch.full((3,), 2.0)
    storage = a.data_ptr()
    opt.step()
    assert a.data_ptr() == storage  # updated where it is
    # W̄ ← W̄·(1 − lr·wd) − lr·G·s⁻²
    assert torch.allclose(a, torch.full((4,), 1.0 * (1 - 0.05) - 0.5 * 4.0 / 4.0))
    assert torch.allclose(b, torch.full((3,), 1.0 * (1 - 0.05) - 0.5 * 2.0))
