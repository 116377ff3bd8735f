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
    """TinyTL's figure: trained parameters at 4 bytes, frozen ones at 1, plus the forward's peak
    activation (what it holds above parameters, buffers and optimizer state)."""
    model = tlplan.load_model("mcunet-5fps", num_classes=10)
    shape = (2, 3, 64, 64)
    report = tlplan.profile(model, shape, scheme="last")
    m = report.memory
    head = {id(p) for p in model.classifier.parameters()}
    frozen = sum(p.numel() for p in model.parameters() if id(p) not in head)
    trained = sum(4 * p.numel() for p in model.parameters() if id(p) in head)
    assert m.tinytl_bytes - m.activation_peak_bytes == trained + frozen
    # the forward holds at least the input and the largest layer output at once, and no more than
    # the step's peak above the resident parameters
    largest = max(4 * torch.Size(layer.output_shape).numel() for layer in report.layers)
    assert 4 * torch.Size(shape).numel() + largest <= m.activation_peak_bytes <= m.peak_bytes - m.param_bytes
    assert any(what == "TinyTL's convention" for what, _, _ in summary_lines(report))
