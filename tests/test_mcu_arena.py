"""The mcu runtime's planned arena: operator reordering on and off, a valid greedy placement, the
engine's kernel buffers, and the paper's measured peaks in the convention each one matches."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import tlplan
from tlplan.costs.annotate import annotate
from tlplan.memory.arena import plan_arena
from tlplan.memory.timeline import simulate_peak
from tlplan.plan.plan import Optimizer
from tlplan.plan.schemes import conv_layers, parse_scheme, scheme_options
from tlplan.trace import trace_model

CONFIGS = Path(__file__).parent / "data" / "backward_configs"
CONFIG = CONFIGS / "mcunet-5fps-99kb.yaml"


@pytest.fixture(scope="module")
def graph():
    return trace_model(tlplan.load_model("mcunet-5fps", num_classes=10), (1, 3, 128, 128), "mcunet-5fps")


def test_reordering_frees_each_gradient_at_once(graph) -> None:
    costs = annotate(graph, scheme_options(graph, parse_scheme(f"sparse:{CONFIG}")), "mcu", "int8")
    on, off = plan_arena(costs, reorder=True), plan_arena(costs, reorder=False)
    assert plan_arena(costs, reorder=True) == on  # deterministic
    # fp32 gradients of every trained weight channel and bias: convs 21 24 27 30 at 1, 36 at 1/8,
    # 39 at 1/4 of their input channels, the biases of the last 22 convs, the classifier
    convs = conv_layers(graph)
    ratios = {21: 1, 24: 1, 27: 1, 30: 1, 36: 0.125, 39: 0.25}
    elements = sum(round(convs[i].param("weight").numel * r) for i, r in ratios.items())
    elements += sum(c.param("bias").numel for c in convs[-22:]) + 160 * 10 + 10
    assert on.param_grad_bytes == off.param_grad_bytes == 4 * elements
    assert off.peak_bytes > on.peak_bytes
    held = simulate_peak(costs, Optimizer(reorder=False))
    assert held.grad_bytes == 4 * elements and simulate_peak(costs).grad_bytes == 0
    assert held.peak_bytes == off.peak_bytes and simulate_peak(costs).peak_bytes == on.peak_bytes


@pytest.mark.parametrize("reorder", [True, False])
def test_placement_never_overlaps_and_bounds_the_live_bytes(graph, reorder) -> None:
    costs = annotate(graph, scheme_options(graph, parse_scheme(f"sparse:{CONFIG}")), "mcu", "int8")
    plan = plan_arena(costs, reorder=reorder)
    spans = list(zip(plan.blocks, plan.offsets))
    for k, (a, at) in enumerate(spans):
        for b, bt in spans[k + 1:]:
            if a.first_step <= b.last_step and b.first_step <= a.last_step:
                assert at + a.size_bytes <= bt or bt + b.size_bytes <= at, (a, b)
    assert plan.live_peak_bytes <= plan.arena_bytes == max(at + b.size_bytes for b, at in spans)
    # the logits' int8 buffer, masks and kept inputs are all in it
    assert {b.kind for b in plan.blocks} >= {"input", "activation", "mask", "grad", "param_grad"}


@pytest.mark.parametrize("name,measured_kb", [("mbv2-w0.35", 2939), ("proxyless-w0.3", 2745), ("mcunet-5fps", 3650)])
def test_full_update_without_reordering_near_the_measured_peak(name, measured_kb) -> None:
    graph = trace_model(tlplan.load_model(name, num_classes=10), (1, 3, 128, 128), name)
    costs = annotate(graph, scheme_options(graph, parse_scheme("full")), "mcu", "int8")
    memory = simulate_peak(costs, Optimizer(reorder=False))
    # the SRAM of the step (arena, kernel buffers, trained weights): +0.1 / +3.6 / +0.9 %
    assert abs(memory.peak_bytes / (measured_kb * 1024) - 1) <= 0.05, memory.peak_bytes / 1024
    # the engine's own convention (without the trained weights) is 9-12 % under it
    assert 0.85 <= memory.engine_peak_bytes / (measured_kb * 1024) <= 0.95
    assert memory.peak_bytes - memory.engine_peak_bytes == costs.totals["trainable_param_bytes"]


def test_full_update_kernel_buffer_is_the_widest_weight_gradient() -> None:
    graph = trace_model(tlplan.load_model("mbv2-w0.35", num_classes=10), (1, 3, 128, 128), "mbv2-w0.35")
    costs = annotate(graph, scheme_options(graph, parse_scheme("full")), "mcu", "int8")
    # the weight gradient of a 1x1 conv whose output gradient is a 64x64 plane with C_out a multiple
    # of 16 (blocks.1's expansion, 48 channels): TinyEngine's group-conv buffer, 80 bytes a pixel;
    # plus the first conv's 16-bit kernel copy (16x3x3x3 weights, 2 bytes each)
    assert plan_arena(costs, reorder=False).scratch_bytes == 64 * 64 * 80 + 2 * 16 * 3 * 3 * 3
    # sparse: the widest is the in-place depthwise kernel's 16-bit padded plane at 64x64
    sparse = annotate(graph, scheme_options(graph, parse_scheme(f"sparse:{CONFIGS / 'mbv2-w0.35-99kb.yaml'}")), "mcu", "int8")
    assert plan_arena(sparse).scratch_bytes == 2 * 66 * 66 + 2 * 16 * 3 * 3 * 3


@pytest.mark.parametrize("name,config,measured_kb,reorder,tolerance", [
    ("mbv2-w0.35", "mbv2-w0.35-99kb", 335, False, 0.05), ("proxyless-w0.3", "proxyless-w0.3-98kb", 326, False, 0.05),
    ("proxyless-w0.3", "proxyless-w0.3-98kb", 135, True, 0.05), ("mcunet-5fps", "mcunet-5fps-99kb", 173, True, 0.05),
    # mcunet-5fps's sparse figures both fit its largest released scheme (-7.3 / -2.1 %; docs/mcu.md)
    ("mcunet-5fps", "mcunet-5fps-148kb", 560, False, 0.10), ("mcunet-5fps", "mcunet-5fps-148kb", 173, True, 0.05),
])
def test_sparse_columns_in_the_engines_convention(name, config, measured_kb, reorder, tolerance) -> None:
    """Where the engine's convention reproduces the paper (-0.1 / +1.5 / +2.1 / -2.1 %)."""
    graph = trace_model(tlplan.load_model(name, num_classes=10), (1, 3, 128, 128), name)
    costs = annotate(graph, scheme_options(graph, parse_scheme(f"sparse:{CONFIGS / config}.yaml")), "mcu", "int8")
    engine = plan_arena(costs, reorder=reorder).engine_peak_bytes
    assert abs(engine / (measured_kb * 1024) - 1) <= tolerance, engine / 1024


def test_reordered_weight_gradients_are_applied_as_computed() -> None:
    graph = trace_model(tlplan.load_model("mcunet-5fps", num_classes=10), (1, 3, 128, 128), "mcunet-5fps")
    costs = annotate(graph, scheme_options(graph, parse_scheme(f"sparse:{CONFIG}")), "mcu", "int8")
    on, off = plan_arena(costs, reorder=True), plan_arena(costs, reorder=False)
    biases = 4 * sum(p.numel for layer in graph.layers for p in layer.params if p.name in costs.trainable and p.role == "bias")
    # reordered, only bias gradients are buffers (one step each): weights are updated by their kernel
    assert sum(b.size_bytes for b in on.blocks if b.kind == "param_grad") == biases
    assert all(b.first_step == b.last_step for b in on.blocks if b.kind == "param_grad")
    # not reordered, every gradient (weights of the trained channels too) is held until the update
    assert sum(b.size_bytes for b in off.blocks if b.kind == "param_grad") == off.param_grad_bytes > biases
    assert all(b.last_step == len(off.steps) - 1 for b in off.blocks if b.kind == "param_grad")


def test_mbv2_forward_floor_is_above_the_measured_reordered_peak() -> None:
    """The residual docs/mcu.md names: whole int8 tensors cannot run blocks.1 of mbv2-w0.35 at
    128x128 in 141 KB (its 8x64x64 input and 48x64x64 output are 224 KB alone)."""
    graph = trace_model(tlplan.load_model("mbv2-w0.35", num_classes=10), (1, 3, 128, 128), "mbv2-w0.35")
    costs = annotate(graph, scheme_options(graph, parse_scheme(f"sparse:{CONFIGS / 'mbv2-w0.35-99kb.yaml'}")), "mcu", "int8")
    plan = plan_arena(costs)
    step = plan.steps.index("forward blocks.1.inverted_bottleneck.conv")
    assert plan.live_bytes[step] >= (8 + 48) * 64 * 64 > 141 * 1024
    assert plan.engine_peak_bytes == plan.arena_bytes + plan.scratch_bytes


@pytest.mark.parametrize("name,config,measured_kb,fits", [
    ("mbv2-w0.35", "mbv2-w0.35-99kb", 141, True), ("proxyless-w0.3", "proxyless-w0.3-98kb", 135, False),
    ("mcunet-5fps", "mcunet-5fps-99kb", 173, False),
])
def test_only_mbv2_fits_its_measured_peak_with_the_first_two_blocks_in_pieces(name, config, measured_kb, fits) -> None:
    """docs/mcu.md's reading of the mbv2-w0.35 residual: the step after blocks.1 holds 132.5 KB
    (-6.0 % of 141); the same cut leaves the other two models far below their measured peaks
    (-33 / -22 %), which whole tensors reproduce."""
    graph = trace_model(tlplan.load_model(name, num_classes=10), (1, 3, 128, 128), name)
    costs = annotate(graph, scheme_options(graph, parse_scheme(f"sparse:{CONFIGS / config}.yaml")), "mcu", "int8")
    plan = plan_arena(costs)
    cut = plan.steps.index("forward blocks.1.point_linear.conv")
    rest = max(plan.live_bytes[cut + 1:]) + plan.scratch_bytes
    assert (abs(rest / (measured_kb * 1024) - 1) <= 0.10) is fits, rest / 1024


def test_solve_records_reordering_and_fits_the_budget(run, tmp_path) -> None:
    for flag, expected in (("--reorder", True), ("--no-reorder", False)):
        path = tmp_path / f"plan{flag}.yaml"
        code, out, err = run("solve", "mcunet-5fps", "--ram", "256KB", "--runtime", "mcu", flag, "-q", "-o", str(path))
        assert code == 0, err
        plan = yaml.safe_load(path.read_text())
        assert plan["optimizer"]["reorder"] is expected
        assert plan["predicted"]["peak_bytes"] <= 256 * 1024
        assert (plan["predicted"]["grad_bytes"] > 0) is not expected
    code, out, err = run("solve", "mcunet-5fps", "--ram", "256KB", "--reorder")
    assert code == 2 and "--runtime mcu" in err


def test_profile_and_check_take_reordering_and_follow_the_plan(run, tmp_path) -> None:
    import json

    sparse = f"sparse:{CONFIG}"
    peaks = {}
    for flag in ("--reorder", "--no-reorder"):
        code, out, err = run("profile", "mcunet-5fps", "--runtime", "mcu", "--no-measure", "-q", "--scheme", sparse, flag,
                             "--format", "json")
        assert code == 0, err
        report = json.loads(out)
        assert report["memory"]["reorder"] is (flag == "--reorder")
        memory = report["memory"]
        assert memory["peak_bytes"] == memory["engine_peak_bytes"] + memory["trainable_param_bytes"]
        assert (report["memory"]["grad_bytes"] > 0) is (flag == "--no-reorder")
        peaks[flag] = report["totals"]["peak_bytes"]
    assert peaks["--no-reorder"] > peaks["--reorder"]
    code, out, err = run("profile", "mcunet-5fps", "--runtime", "mcu", "--no-measure", "-q", "--scheme", sparse, "--format", "json")
    assert json.loads(out)["totals"]["peak_bytes"] == peaks["--reorder"]  # on by default
    # a plan solved without reordering profiles and checks as it was solved
    path = tmp_path / "held.yaml"
    code, out, err = run("solve", "mcunet-5fps", "--ram", "256KB", "--runtime", "mcu", "--no-reorder", "-q", "-o", str(path))
    assert code == 0, err
    plan = yaml.safe_load(path.read_text())
    code, out, err = run("profile", "mcunet-5fps", "--runtime", "mcu", "--no-measure", "-q", "--scheme", str(path), "--format", "json")
    assert code == 0, err
    report = json.loads(out)
    assert report["memory"]["reorder"] is False and report["totals"]["peak_bytes"] == plan["predicted"]["peak_bytes"]
    code, out, err = run("check", str(path), "--format", "json")
    assert code == 0 and json.loads(out)["reorder"] is False
    # checked with reordering on instead: recomputed so, not held to the plan's own peak, and said
    code, out, err = run("check", str(path), "--reorder", "--format", "json")
    result = json.loads(out)
    assert code == 0 and result["passed"] and result["reorder"] is True and result["stale"] == []
    assert result["predicted"]["peak_bytes"] <= plan["predicted"]["peak_bytes"] and result["predicted"]["grad_bytes"] == 0
    assert any("reordering on" in note for note in result["notes"])


def test_reordering_is_refused_off_the_mcu_runtime(run, tmp_path) -> None:
    code, out, err = run("profile", "mcunet-5fps", "--no-measure", "-q", "--reorder")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--reorder/--no-reorder" in err and "mcu" in err
    path = tmp_path / "plan.yaml"
    code, out, err = run("solve", "mcunet-5fps", "--ram", "4MB", "-q", "-o", str(path))
    assert code == 0, err
    code, out, err = run("check", str(path), "--no-reorder")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "mcu" in err


def paper_extra_bytes(graph, costs) -> int:
    """The paper's analytic extra memory (its convention: the classifier's weights not counted,
    only its int8 input), as tests/test_backward_config.py checks it against the labels."""
    from tlplan.plan.schemes import classifier_layers

    head = {layer.name for layer in classifier_layers(graph)}
    head_cost = sum(c.saved_bytes + c.trainable_param_bytes for layer, c in zip(graph.layers, costs.layers) if layer.name in head)
    head_input = next(layer.input_shapes[0][1] for layer in graph.layers if layer.name in head)
    return costs.totals["saved_bytes"] + costs.totals["trainable_param_bytes"] - head_cost + head_input


def test_solved_256kb_plan_fits_and_updates_at_least_the_released_scheme(run, graph, tmp_path) -> None:
    path = tmp_path / "plan.yaml"
    code, out, err = run("solve", "mcunet-5fps", "--ram", "256KB", "--runtime", "mcu", "-q", "-o", str(path))
    assert code == 0, err
    plan = tlplan.load_plan(path)
    costs = annotate(graph, plan.layers, "mcu", "int8")
    assert plan_arena(costs).peak_bytes == plan.predicted["peak_bytes"] <= 256 * 1024
    # the paper's released schemes for this model that fit the same budget under the same planner:
    # 49, 74 and 99 KB (240.9 KB planned; the 124 KB one needs 264.5 KB)
    fitting = []
    for kb in (49, 74, 99, 124, 148):
        released = annotate(graph, scheme_options(graph, parse_scheme(f"sparse:{CONFIGS / f'mcunet-5fps-{kb}kb.yaml'}")), "mcu", "int8")
        if plan_arena(released).peak_bytes <= 256 * 1024:
            fitting.append(paper_extra_bytes(graph, released))
    assert len(fitting) == 3
    assert paper_extra_bytes(graph, costs) >= max(fitting)  # 123.8 KB against 99.8 KB
