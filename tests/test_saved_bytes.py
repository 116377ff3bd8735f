"""Predicted bytes kept for backward (eager runtime) equal what autograd saves, to the byte.

Measured with saved_tensors_hooks in a training-mode forward, deduplicated by storage, the
model's parameters and buffers excluded (tlplan.measure.saved).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import tlplan
from tlplan.costs import annotate
from tlplan.measure.saved import measure_saved_bytes
from tlplan.plan.schemes import options_for_params, parse_scheme, scheme_options, trainable_params
from tlplan.trace import trace_model

SCHEMES = ["full", "last", "bias", "norm+last", "blocks:1", "blocks:3"]


def predicted_and_measured(model: nn.Module, shape: tuple[int, ...], trainable) -> tuple[int, int]:
    graph = trace_model(model, shape)
    predicted = annotate(graph, options_for_params(graph, trainable), "eager").totals["saved_bytes"]
    return predicted, measure_saved_bytes(model, shape, trainable).saved_bytes


@pytest.mark.parametrize("name", tlplan.zoo_names())
def test_zoo_models_every_scheme_exact(name: str) -> None:
    model = tlplan.load_model(name)
    # the model's own resolution; Inception v3's 299 costs seconds a scheme, and 139 runs every
    # block at a map size of its own (5x5 and 3x3 at the end, as 299 gives 8x8)
    res = 139 if name == "inception_v3" else tlplan.default_resolution(name)
    shape = (2, 3, res, res)  # batch 2: activations scale with the batch, BN statistics do not
    graph = trace_model(model, shape, name)
    for scheme in SCHEMES:
        options = scheme_options(graph, parse_scheme(scheme))
        predicted = annotate(graph, options, "eager").totals["saved_bytes"]
        trainable = trainable_params(graph, options)
        measured = measure_saved_bytes(model, shape, trainable).saved_bytes
        assert predicted == measured, f"{name} {scheme}: predicted {predicted} != measured {measured}"


def test_full_keeps_more_than_bias_keeps_more_than_last() -> None:
    model = tlplan.load_model("mobilenet_v2")
    graph = trace_model(model, (1, 3, 224, 224))
    kept = {s: annotate(graph, scheme_options(graph, parse_scheme(s)), "eager").totals["saved_bytes"] for s in ("full", "bias", "last")}
    # TinyTL's observation: in plain PyTorch, bias-only keeps almost everything full training keeps
    assert kept["full"] > kept["bias"] > 0.9 * kept["full"]
    assert kept["last"] == 1280 * 4  # only the classifier's input


# ---- op by op: small models, every trainable pattern -------------------------------------------


class SE(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.fc1 = nn.Conv2d(c, 4, 1)
        self.fc2 = nn.Conv2d(4, c, 1)

    def forward(self, x):
        s = F.adaptive_avg_pool2d(x, 1)
        s = F.hardsigmoid(self.fc2(F.relu(self.fc1(s))))
        return s * x


class OpZoo(nn.Module):
    """One of each op kind the rules know, in-place and functional variants included."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.act1 = nn.ReLU6(inplace=True)
        self.c2 = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)
        self.act2 = nn.Hardswish()
        self.se = SE(8)
        self.c3 = nn.Conv2d(16, 8, 1)
        self.act3 = nn.SiLU(inplace=True)
        self.pool = nn.MaxPool2d(2)
        self.c4 = nn.Conv2d(8, 8, 1)
        self.fc = nn.Linear(8 * 2 * 2, 5)
        self.drop = nn.Dropout(0.3)

    def forward(self, x):
        x = self.act1(self.bn1(self.c1(x)))
        y = self.act2(self.c2(x))
        y = self.se(y)
        z = torch.cat([x, y], 1)
        z = self.act3(self.c3(z))
        z = F.hardswish(z, inplace=True)
        z = self.pool(z) + torch.sigmoid(F.avg_pool2d(z, 2))
        z = F.relu(self.c4(z), inplace=True)
        z = F.adaptive_avg_pool2d(z, 2).flatten(1)
        return self.fc(self.drop(z))


def _patterns(model: nn.Module) -> dict[str, set[str]]:
    names = [n for n, _ in model.named_parameters()]
    return {
        "all": set(names),
        "first conv only": {"c1.weight", "c1.bias"},
        "classifier only": {"fc.weight", "fc.bias"},
        "biases": {n for n in names if n.endswith("bias")},
        "weights": {n for n in names if n.endswith("weight")},
        "middle": {"c3.weight"},
        "se only": {n for n in names if n.startswith("se.")},
        "nothing": set(),
    }


@pytest.mark.parametrize("pattern", list(_patterns(OpZoo())))
def test_every_op_kind_exact(pattern: str) -> None:
    torch.manual_seed(0)
    model = OpZoo()
    predicted, measured = predicted_and_measured(model, (3, 3, 8, 8), _patterns(model)[pattern])
    assert predicted == measured


def test_input_requiring_no_grad_still_kept_by_a_trained_first_conv() -> None:
    # GIVEN only the first conv's weight trained WHEN one forward runs THEN the image is kept
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    predicted, measured = predicted_and_measured(model, (2, 3, 10, 10), {"0.weight"})
    assert predicted == measured == 2 * 3 * 10 * 10 * 4 + 2 * 4 * 8 * 8 * 4


def test_inplace_relu6_keeps_a_copy_of_its_input() -> None:
    # PyTorch's in-place hardtanh_ keeps a clone of its input: more memory than out-of-place
    def kept(inplace: bool) -> int:
        model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU6(inplace=inplace), nn.Conv2d(4, 4, 1))
        predicted, measured = predicted_and_measured(model, (1, 3, 6, 6), {n for n, _ in model.named_parameters()})
        assert predicted == measured
        return measured

    one = 1 * 4 * 6 * 6 * 4
    assert kept(False) == 3 * 6 * 6 * 4 + 2 * one  # image, conv output (ReLU6 input), ReLU6 output
    assert kept(True) == 3 * 6 * 6 * 4 + 2 * one  # image, clone of the input, the overwritten output


def test_relu_output_shared_with_next_conv_counted_once() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU(inplace=False), nn.Conv2d(4, 4, 1))
    predicted, measured = predicted_and_measured(model, (1, 3, 6, 6), {n for n, _ in model.named_parameters()})
    assert predicted == measured == 3 * 6 * 6 * 4 + 4 * 6 * 6 * 4


def test_measuring_frees_what_it_counted() -> None:
    """An op that keeps its own output (a ReLU) must not be kept alive by the measurement: the
    node would hold the output, the output its node, a cycle no collector breaks (it leaked the
    forward's tensors, tens of MB a call on mcunet-5fps at batch 8)."""
    import gc
    import weakref

    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 1))
    outputs = []
    model[1].register_forward_hook(lambda module, args, out: outputs.append(weakref.ref(out)))
    first = measure_saved_bytes(model, (2, 3, 16, 16), copy_model=False).saved_bytes
    gc.collect()
    assert outputs and outputs[0]() is None
    assert measure_saved_bytes(model, (2, 3, 16, 16), copy_model=False).saved_bytes == first == (2 * 3 * 16 * 16 + 2 * 8 * 14 * 14) * 4
