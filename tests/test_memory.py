"""The predicted peak of a training step against torch.profiler's memory events on CPU."""

from __future__ import annotations

import copy

import pytest
import torch

import tlplan
from tlplan.costs import annotate
from tlplan.measure.peak import measure_peak
from tlplan.memory.timeline import simulate_peak
from tlplan.plan.plan import Optimizer, Plan
from tlplan.plan.schemes import parse_scheme, scheme_options
from tlplan.report.profile_rows import summary_lines
from tlplan.runtime import apply_plan
from tlplan.trace import trace_model

SHAPES = {"resnet18": (4, 3, 224, 224), "mobilenet_v2": (4, 3, 224, 224), "mcunet-5fps": (1, 3, 128, 128)}


def predicted_and_measured(name, shape, scheme, runtime="tlplan", precision="fp32", optimizer=Optimizer()):
    model = tlplan.load_model(name)
    graph = trace_model(model, shape, name)
    options = scheme_options(graph, parse_scheme(scheme))
    predicted = simulate_peak(annotate(graph, options, runtime, precision), optimizer)
    planned = apply_plan(copy.deepcopy(model), Plan(name, shape, options, runtime=runtime, precision=precision))
    return predicted, measure_peak(planned, shape, optimizer)


@pytest.mark.parametrize("runtime", ["tlplan", "eager"])
@pytest.mark.parametrize("scheme", ["full", "bias", "mobiletl:5"])
@pytest.mark.parametrize("name", list(SHAPES))
def test_peak_within_5_percent(name, scheme, runtime) -> None:
    predicted, measured = predicted_and_measured(name, SHAPES[name], scheme, runtime)
    assert predicted.resident_bytes == measured.resident_bytes  # parameters, buffers, input: exact
    assert abs(predicted.peak_bytes / measured.peak_bytes - 1) <= 0.05, (predicted.peak_at, predicted.peak_bytes, measured.peak_bytes)


@pytest.mark.parametrize(
    "optimizer", [Optimizer("sgd", 0.01, momentum=0.9), Optimizer("adam", 0.001)], ids=["momentum", "adam"]
)
def test_optimizer_state_and_step(optimizer) -> None:
    predicted, measured = predicted_and_measured("resnet18", (2, 3, 160, 160), "blocks:3", optimizer=optimizer)
    assert predicted.optimizer_bytes >= optimizer.state_slots * predicted.grad_bytes > 0
    assert predicted.resident_bytes == measured.resident_bytes
    assert abs(predicted.peak_bytes / measured.peak_bytes - 1) <= 0.05


def test_fp16_activations() -> None:
    predicted, measured = predicted_and_measured("resnet18", (2, 3, 160, 160), "full", precision="fp16")
    assert abs(predicted.peak_bytes / measured.peak_bytes - 1) <= 0.05


def test_mcu_runtime_keeps_frozen_weights_in_flash() -> None:
    model = tlplan.load_model("mcunet-5fps")
    graph = trace_model(model, (1, 3, 128, 128))
    costs = annotate(graph, scheme_options(graph, parse_scheme("bias")), "mcu", "int8")
    memory = simulate_peak(costs)
    assert memory.param_bytes == costs.totals["trainable_param_bytes"] < memory.frozen_param_bytes
    assert memory.grad_bytes == 0 and memory.optimizer_bytes == 0  # gradients applied in place
    assert memory.input_bytes == 3 * 128 * 128  # int8
    eager = simulate_peak(annotate(graph, scheme_options(graph, parse_scheme("bias")), "eager"))
    assert memory.peak_bytes < eager.peak_bytes / 5


def test_tinytl_convention_counts_frozen_weights_at_8_bits() -> None:
    """TinyTL's figure: trained parameters at 4 bytes, frozen ones at 1, plus TinyTL's peak
    activation; tlplan's own forward peak (what it holds above parameters, buffers and optimizer
    state) stays a separate figure."""
    model = tlplan.load_model("mcunet-5fps", num_classes=10)
    shape = (2, 3, 64, 64)
    report = tlplan.profile(model, shape, scheme="last")
    m = report.memory
    head = {id(p) for p in model.classifier.parameters()}
    frozen = sum(p.numel() for p in model.parameters() if id(p) not in head)
    trained = sum(4 * p.numel() for p in model.parameters() if id(p) in head)
    assert m.tinytl_bytes - m.tinytl_activation_bytes == trained + frozen
    # the forward holds at least the input and the largest layer output at once, and no more than
    # the step's peak above the resident parameters
    largest = max(4 * torch.Size(layer.output_shape).numel() for layer in report.layers)
    assert 4 * torch.Size(shape).numel() + largest <= m.activation_peak_bytes <= m.peak_bytes - m.param_bytes
    line = next(text for what, text, _ in summary_lines(report) if what == "TinyTL's convention")
    assert f"at {m.tinytl_peak_at}" in line and m.tinytl_peak_at in {layer.name for layer in report.layers}


class _Tiny(torch.nn.Module):
    """conv(3→8, s1) → BN → ReLU → block [1×1 conv(8→16) → BN → ReLU → depthwise 3×3 → BN → 1×1
    conv(16→8)] + skip → pool → linear(8→5): small enough to do TinyTL's arithmetic by hand."""

    def __init__(self) -> None:
        super().__init__()
        nn = torch.nn
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.blocks = nn.Sequential(_TinyBlock())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(8, 5)

    def forward(self, x):
        return self.classifier(torch.flatten(self.pool(self.blocks(self.stem(x))), 1))


class _TinyBlock(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        nn = torch.nn
        self.expand = nn.Conv2d(8, 16, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.act = nn.ReLU()
        self.dw = nn.Conv2d(16, 16, 3, 1, 1, groups=16, bias=False)
        self.bn2 = nn.BatchNorm2d(16)
        self.project = nn.Conv2d(16, 8, 1, bias=False)

    def forward(self, x):
        return x + self.project(self.bn2(self.dw(self.act(self.bn1(self.expand(x))))))


@pytest.mark.parametrize("scheme", ["full", "bias", "last"])
def test_tinytl_activation_is_tinytls_arithmetic_by_hand(scheme) -> None:
    """TinyTL's peak activation, worked out by hand for one sample (HW = 16×16 elements a channel,
    4 bytes an element), then times the batch: per layer its input + its output over the conv's
    groups + what is kept so far + the block's live skip input; kept: trained weights' inputs,
    1 bit per ReLU element once backward runs."""
    hw, batch = 16 * 16, 2
    report = tlplan.profile(_Tiny(), (batch, 3, 16, 16), scheme=scheme)
    m = report.memory
    bwd = scheme != "last"
    w = scheme == "full"  # weights (and norm scales) trained
    kept = 0.0
    peaks = []

    def layer(transient, keeps, skip=0):
        nonlocal kept
        peaks.append(transient + kept + skip)
        kept += keeps

    skip = 4 * 8 * hw  # the block's input, alive until its join
    layer(4 * 3 * hw + 4 * 8 * hw, w * 4 * 3 * hw)  # stem conv
    layer(4 * 8 * hw, w * 4 * 8 * hw)  # stem BN
    layer(4 * 8 * hw, bwd * 8 * hw / 8)  # stem ReLU: 1 bit an element
    layer(4 * 8 * hw + 4 * 16 * hw, w * 4 * 8 * hw, skip)  # expand
    layer(4 * 16 * hw, w * 4 * 16 * hw, skip)  # bn1
    layer(4 * 16 * hw, bwd * 16 * hw / 8, skip)  # ReLU
    layer(4 * 16 * hw + (4 * 16 * hw) // 16, w * 4 * 16 * hw, skip)  # depthwise: output over its 16 groups
    layer(4 * 16 * hw, w * 4 * 16 * hw, skip)  # bn2
    layer(4 * 16 * hw + 4 * 8 * hw, w * 4 * 16 * hw, skip)  # project
    layer(4 * 8 + 4 * 5, 4 * 8)  # classifier (trained by every scheme)
    assert m.tinytl_activation_bytes == round(max(peaks) * batch)
    assert m.tinytl_activation_bytes != m.activation_peak_bytes  # not tlplan's own timeline
    names = ["stem.0", "stem.1", "stem.2", "blocks.0.expand", "blocks.0.bn1", "blocks.0.act", "blocks.0.dw",
             "blocks.0.bn2", "blocks.0.project", "classifier"]
    assert m.tinytl_peak_at == names[peaks.index(max(peaks))]


def test_tinytl_figures_match_the_papers_table_2() -> None:
    """ProxylessNAS-Mobile as TinyTL's Table 2 counts it (Flowers head, a lite residual branch in
    every block after the first, batch 8, MB = 10^6 bytes): FT-Last and TinyTL-B within 1 % of the
    figures the paper prints (Figure 3: 30.8 and 31.7 MB; Table 2 rounds them to 31 and 32)."""
    from tlplan.runtime.lite import insert_lite

    model = tlplan.load_model("proxylessnas_mobile", num_classes=102)
    insert_lite(model, (1, 3, 224, 224), [f"blocks.{i}" for i in range(1, len(model.blocks))])
    for scheme, paper in (("last", 30.8), ("bias", 31.7)):
        m = tlplan.profile(model, (8, 3, 224, 224), scheme=scheme).memory
        assert abs(m.tinytl_bytes / 1e6 / paper - 1) < 0.01, (scheme, m.tinytl_bytes)
        # tlplan's own timeline holds far more at that moment (the block's expansion and input alive)
        assert m.activation_peak_bytes > 1.5 * m.tinytl_activation_bytes


# ---- what a solver's checks reuse: per-graph memos must not change a single number --------------


def _random_plans(graph, count: int, seed: int):
    import random

    from tlplan.solve import build_space

    space = build_space(graph)
    rng = random.Random(seed)
    for _ in range(count):
        depth = rng.choice(space.depths)
        options = dict(space.base_options)
        for choice in space.choices[depth:]:
            if rng.random() < 0.3:
                options[choice.layer] = rng.choice(choice.candidates).options
        yield options


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "mobilenet_v3_small"])
def test_a_check_is_the_full_simulation(name) -> None:
    """``detail=False`` (a solver's check: the forward up to the first recorded layer taken from a
    per-graph cache) gives every figure the full simulation gives, plan after plan."""
    graph = trace_model(tlplan.load_model(name), (2, 3, 64, 64), name)
    skip = {"timeline", "tinytl_bytes", "tinytl_activation_bytes", "tinytl_peak_at"}  # what a check leaves out
    for options in _random_plans(graph, 40, seed=1):
        for runtime in ("tlplan", "eager"):
            costs = annotate(graph, options, runtime, "fp32")
            fast, full = simulate_peak(costs, detail=False), simulate_peak(costs, detail=True)
            assert {k: v for k, v in vars(fast).items() if k not in skip} == \
                {k: v for k, v in vars(full).items() if k not in skip}, (runtime, options)


def test_costs_do_not_depend_on_what_was_costed_before() -> None:
    """annotate's per-graph memo (layers below the first trained one, among others) gives a plan
    the same costs as a graph that never costed anything."""
    import dataclasses

    graph = trace_model(tlplan.load_model("mobilenet_v2"), (2, 3, 64, 64), "mobilenet_v2")
    plans = list(_random_plans(graph, 30, seed=2))
    for options in plans:  # warm the memo with every plan first
        annotate(graph, options, "tlplan", "fp32")
    for options in plans:
        fresh = dataclasses.replace(graph)  # the same layers, an empty memo
        assert annotate(graph, options, "tlplan", "fp32").layers == annotate(fresh, options, "tlplan", "fp32").layers
