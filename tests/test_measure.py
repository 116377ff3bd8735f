"""Measured latency per layer and per step; measured saved bytes."""

from __future__ import annotations

import torch
import torch.nn as nn

import tlplan
from tlplan.costs import annotate
from tlplan.measure.latency import measure_latency
from tlplan.measure.saved import measure_saved_bytes
from tlplan.plan.schemes import parse_scheme, scheme_options
from tlplan.trace import trace_model


def _costs(model, shape, scheme):
    graph = trace_model(model, shape)
    return annotate(graph, scheme_options(graph, parse_scheme(scheme)), "eager")


def test_every_layer_timed_and_backward_only_where_there_is_one() -> None:
    model = tlplan.load_model("mcunet-5fps")
    costs = _costs(model, (1, 3, 64, 64), "blocks:1")
    timings = measure_latency(model, costs, warmup=1, repeats=2)
    assert set(timings.layers) == {c.name for c in costs.layers}
    for cost in costs.layers:
        t = timings.layers[cost.name]
        assert t.fwd_ms > 0
        if cost.state.recorded:
            assert t.bwd_ms is not None and t.bwd_ms > 0, cost.name
        else:
            assert t.bwd_ms is None, cost.name  # frozen below the trained block: no backward at all
    assert timings.step_ms > 0 and timings.repeats == 2


def test_inplace_layers_time_without_corrupting_the_run() -> None:
    # in-place ReLU6 layers are timed on copies: the next layers still see the real values
    model = tlplan.load_model("mobilenet_v2", num_classes=10)
    costs = _costs(model, (2, 3, 32, 32), "full")
    timings = measure_latency(model, costs, warmup=0, repeats=1)
    assert len(timings.layers) == len(costs.layers)


def test_measure_latency_leaves_the_model_alone() -> None:
    model = tlplan.load_model("resnet18", num_classes=10)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    measure_latency(model, _costs(model, (2, 3, 32, 32), "last"), warmup=0, repeats=1)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.requires_grad for p in model.parameters())


def test_saved_measurement_counts_each_storage_once_and_excludes_parameters() -> None:
    # conv → ReLU → conv: the ReLU keeps its output and the second conv keeps that same tensor
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU(), nn.Conv2d(4, 4, 1))
    m = measure_saved_bytes(model, (1, 3, 5, 5), {"2.weight"})
    assert m.saved_bytes == 4 * 5 * 5 * 4 and m.tensors == 1  # conv weights are parameters: excluded


def test_profile_with_measurement_labels_its_numbers() -> None:
    report = tlplan.profile(tlplan.load_model("mcunet-5fps"), (1, 3, 64, 64), scheme="last", measure=True, repeats=1)
    assert report.measured is not None and "threads" in report.measured
    assert report.sources["latency_ms"] == "measured here"
    assert all(row.latency_ms is not None and row.latency_ms["fwd"] > 0 for row in report.layers)
    assert report.totals["measured_step_ms"] > 0
    unmeasured = tlplan.profile(tlplan.load_model("mcunet-5fps"), (1, 3, 64, 64))
    assert "latency_ms" not in unmeasured.sources and all(r.latency_ms is None for r in unmeasured.layers)
