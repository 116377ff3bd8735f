"""Per-layer MACs (forward against fvcore, backward by rule), scheme resolution, rule registry."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn as nn
from fvcore.nn import FlopCountAnalysis

import tlplan
from tlplan.costs import annotate
from tlplan.ops import REGISTRY, OpSpec
from tlplan.errors import SchemeError
from tlplan.plan.schemes import parse_scheme, scheme_options, trainable_params
from tlplan.trace import trace_model


def costs_for(name: str, scheme: str, res: int | None = None, batch: int = 1):
    model = tlplan.load_model(name)
    res = res or tlplan.default_resolution(name)
    graph = trace_model(model, (batch, 3, res, res), name)
    return model, graph, annotate(graph, scheme_options(graph, parse_scheme(scheme)), "eager")


@pytest.mark.parametrize("name,res", [("resnet18", 96), ("mobilenet_v2", 96), ("mobilenet_v3_small", 96), ("mcunet-5fps", 128)])
def test_forward_macs_agree_with_fvcore_per_layer(name: str, res: int) -> None:
    model, graph, costs = costs_for(name, "full", res, batch=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        analysis = FlopCountAnalysis(model.eval(), torch.randn(2, 3, res, res))
        analysis.unsupported_ops_warnings(False)
        analysis.uncalled_modules_warnings(False)
        fv = analysis.by_module()
    checked = 0
    for layer, cost in zip(graph.layers, costs.layers):
        if layer.op in ("conv2d", "linear"):
            assert cost.macs_fwd == fv[layer.module], layer.name
            checked += 1
    assert checked > 10


def test_backward_macs_full() -> None:
    _, graph, costs = costs_for("resnet18", "full", 64)
    convs = [c for c in costs.layers if c.op in ("conv2d", "linear")]
    # the first layer needs no input gradient: the image does not require grad
    assert convs[0].name == "conv1" and convs[0].macs_bwd_input == 0
    assert convs[0].macs_bwd_weight == convs[0].macs_fwd
    for c in convs[1:]:
        assert c.macs_bwd_input == c.macs_fwd and c.macs_bwd_weight == c.macs_fwd, c.name
    assert costs.totals["macs_bwd"] == 2 * costs.totals["macs_fwd"] - convs[0].macs_fwd


def test_backward_macs_last_only_classifier() -> None:
    _, _, costs = costs_for("resnet18", "last", 64)
    for c in costs.layers:
        if c.name == "fc":
            assert c.macs_bwd_weight == c.macs_fwd and c.macs_bwd_input == 0
        else:
            assert c.macs_bwd == 0 and c.saved_bytes == 0, c.name  # no backward below the lowest trained layer


def test_backward_macs_top_block() -> None:
    _, graph, costs = costs_for("resnet18", "blocks:1", 64)
    by = {c.name: c for c in costs.layers}
    assert graph.blocks[-1] == "layer4.1"
    for c in costs.layers:
        if c.block != "layer4.1" and c.name != "fc":
            assert c.macs_bwd == 0 and c.saved_bytes == 0 and c.trainable_params == 0, c.name
    # the block's first conv reads a value nothing trained produced: weight gradient only
    assert by["layer4.1.conv1"].macs_bwd_input == 0
    assert by["layer4.1.conv1"].macs_bwd_weight == by["layer4.1.conv1"].macs_fwd
    assert by["layer4.1.conv2"].macs_bwd_input == by["layer4.1.conv2"].macs_fwd


def test_bias_only_needs_input_gradients_but_no_weight_gradients() -> None:
    _, _, costs = costs_for("mcunet-5fps", "bias")
    convs = [c for c in costs.layers if c.op == "conv2d"]
    assert all(c.macs_bwd_weight == 0 for c in convs)
    assert convs[0].macs_bwd_input == 0
    assert all(c.macs_bwd_input == c.macs_fwd for c in convs[1:])
    assert all(c.trainable_params == c.output_shape[1] for c in convs)  # each conv's bias, nothing else


def test_trainable_sets_of_schemes() -> None:
    model = tlplan.load_model("resnet18")
    graph = trace_model(model, (1, 3, 64, 64))
    names = {n for n, _ in model.named_parameters()}
    assert trainable_params(graph, scheme_options(graph, parse_scheme("full"))) == names
    assert trainable_params(graph, scheme_options(graph, parse_scheme("last"))) == {"fc.weight", "fc.bias"}
    assert trainable_params(graph, scheme_options(graph, parse_scheme("bias"))) == {n for n in names if n.endswith(".bias")} | {"fc.weight"}
    norm = trainable_params(graph, scheme_options(graph, parse_scheme("norm+last")))
    assert "layer1.0.bn1.weight" in norm and "layer1.0.conv1.weight" not in norm and "fc.weight" in norm
    top2 = trainable_params(graph, scheme_options(graph, parse_scheme("blocks:2")))
    assert top2 == {n for n in names if n.startswith(("layer4.0.", "layer4.1.", "fc."))}
    assert trainable_params(graph, scheme_options(graph, parse_scheme("blocks:0"))) == {"fc.weight", "fc.bias"}


@pytest.mark.parametrize("bad", ["", "bogus", "blocks", "blocks:x", "blocks:-1", "full:2"])
def test_bad_scheme_names(bad: str) -> None:
    with pytest.raises(SchemeError):
        parse_scheme(bad)


def test_scheme_with_too_many_blocks() -> None:
    graph = trace_model(tlplan.load_model("resnet18"), (1, 3, 64, 64))
    with pytest.raises(SchemeError, match="has 8 blocks"):
        trainable_params(graph, scheme_options(graph, parse_scheme("blocks:9")))


def test_scheme_needs_a_classifier() -> None:
    graph = trace_model(nn.Sequential(nn.MaxPool2d(2), nn.ReLU()), (1, 3, 8, 8))
    with pytest.raises(SchemeError, match="no classifier to train"):
        trainable_params(graph, scheme_options(graph, parse_scheme("last")))


def test_registry_refuses_duplicates() -> None:
    class Again(OpSpec):
        kind = "conv2d"

    class SameModule(OpSpec):
        kind = "my_conv"
        modules = (nn.Conv2d,)

    with pytest.raises(ValueError, match="already registered"):
        REGISTRY.register(Again())
    with pytest.raises(ValueError, match="already recognised as 'conv2d'"):
        REGISTRY.register(SameModule())
    assert "my_conv" not in REGISTRY


def test_unsupported_op_is_reported_not_hidden() -> None:
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 1)
            self.shuffle = nn.PixelShuffle(1)

        def forward(self, x):
            return torch.sin(self.shuffle(self.conv(x)))

    graph = trace_model(Odd(), (1, 3, 4, 4))
    costs = annotate(graph, {})
    assert sorted(costs.unsupported) == ["shuffle", "sin"]
    assert any("no cost rule" in w for w in graph.warnings)


def test_unknown_scheme_suggests_the_closest() -> None:
    with pytest.raises(SchemeError, match="did you mean mobiletl"):
        parse_scheme("mobletl:3")
