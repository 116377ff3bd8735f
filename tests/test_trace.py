"""The layer graph: functional ops, residual joins, blocks, shapes, the hook fallback."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import tlplan
from tlplan.errors import BadInputError, TraceError
from tlplan.trace import INPUT, trace_model


@pytest.fixture(scope="module")
def resnet18_graph():
    return trace_model(tlplan.load_model("resnet18"), (1, 3, 64, 64), "resnet18")


def test_residual_joins_are_explicit(resnet18_graph) -> None:
    g = resnet18_graph
    add = g.by_name["layer1.0.add"]
    assert add.op == "add" and set(add.inputs) == {"layer1.0.bn2", "maxpool"}
    add2 = next(layer for layer in g.layers if layer.block == "layer2.0" and layer.op == "add")
    assert "layer2.0.downsample.1" in add2.inputs
    # the backward path is a graph query: from the stem to the classifier through both branches
    assert g.digraph.has_edge("maxpool", "layer1.0.add")
    assert g.digraph.has_edge("maxpool", "layer1.0.conv1")
    assert "fc" in g.consumers("flatten")


def test_blocks_known_for_every_layer(resnet18_graph) -> None:
    g = resnet18_graph
    assert g.blocks == ("layer1.0", "layer1.1", "layer2.0", "layer2.1", "layer3.0", "layer3.1", "layer4.0", "layer4.1")
    assert g.by_name["conv1"].block is None and g.by_name["fc"].block is None
    assert g.by_name["layer3.1.conv2"].block == "layer3.1"
    assert g.by_name["layer3.1.add_5"].block == "layer3.1"  # functional ops inherit their module's block
    assert g.classifier == "fc"


def test_shared_module_called_twice_owns_its_params_once(resnet18_graph) -> None:
    g = resnet18_graph
    relus = [layer.name for layer in g.layers if layer.module == "layer1.0.relu"]
    assert relus == ["layer1.0.relu", "layer1.0.relu_1"]
    assert g.param_count == 11_689_512


class Functional(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, padding=1)
        self.b = nn.Conv2d(3, 4, 1)
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        y = torch.cat([F.relu(self.a(x)), self.b(x)], dim=1)
        y = F.max_pool2d(y, 2)
        y = y.mean((2, 3), keepdim=True)
        return self.fc(torch.flatten(y, 1))


def test_functional_ops_are_layers() -> None:
    g = trace_model(Functional(), (2, 3, 8, 8))
    assert [layer.op for layer in g.layers] == ["conv2d", "relu", "conv2d", "cat", "max_pool2d", "mean", "flatten", "linear"]
    cat = next(layer for layer in g.layers if layer.op == "cat")
    assert cat.inputs == ("relu", "b") and cat.output_shape == (2, 8, 8, 8)
    assert g.by_name["a"].inputs == (INPUT,)
    assert g.by_name["flatten"].alias_of == "mean"  # a view shares its input's storage


def test_inplace_ops_alias_their_input() -> None:
    g = trace_model(nn.Sequential(nn.Conv2d(3, 3, 1), nn.ReLU(inplace=True), nn.ReLU6()), (1, 3, 4, 4))
    assert g.by_name["1"].alias_of == "0" and g.by_name["2"].alias_of is None
    assert g.storage_root("1") == "0"


@pytest.mark.parametrize("batch", [1, 3, 8])
def test_shapes_match_a_real_forward(batch: int) -> None:
    model = tlplan.load_model("mobilenet_v2")
    g = trace_model(model, (batch, 3, 96, 96))
    seen: dict[str, tuple[int, ...]] = {}

    def record(name):
        def hook(module, args, out) -> None:
            seen.setdefault(name, tuple(out.shape))

        return hook

    hooks = [m.register_forward_hook(record(n)) for n, m in model.named_modules() if not list(m.children())]
    model.eval()
    with torch.no_grad():
        model(torch.zeros(batch, 3, 96, 96))
    for h in hooks:
        h.remove()
    for layer in g.layers:
        if layer.module in seen and layer.name == layer.module:
            assert layer.output_shape == seen[layer.module], layer.name
    assert g.layers[-1].output_shape == (batch, 1000)


def test_tracing_leaves_the_model_untouched() -> None:
    model = tlplan.load_model("resnet18").train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    tlplan.profile(model, (2, 3, 64, 64), scheme="bias")
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.requires_grad for p in model.parameters())


class DataDependent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        y = self.relu(self.conv(x))
        if y.sum() > 0:  # data-dependent control flow: torch.fx cannot trace it
            y = y * 2
        return self.fc(y.mean((2, 3)))


def test_hook_fallback_with_a_warning() -> None:
    g = trace_model(DataDependent(), (2, 3, 8, 8), "dd")
    assert g.traced_by == "hooks"
    assert any("module hooks" in w and "not seen" in w for w in g.warnings)
    assert [(layer.name, layer.op, layer.output_shape) for layer in g.layers] == [
        ("conv", "conv2d", (2, 4, 6, 6)),
        ("relu", "relu", (2, 4, 6, 6)),
        ("fc", "linear", (2, 2)),
    ]
    assert g.by_name["relu"].inputs == ("conv",)
    assert g.classifier == "fc"
    report = tlplan.profile(DataDependent(), (2, 3, 8, 8), scheme="last")
    assert report.totals["trainable_params"] == 10 and report.warnings


def test_inferred_blocks_for_a_plain_model() -> None:
    model = nn.Sequential(
        nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()),
        nn.Sequential(nn.Conv2d(4, 4, 3), nn.ReLU()),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2),
    )
    g = trace_model(model, (1, 3, 16, 16))
    assert g.blocks == ("0", "1")
    assert g.by_name["1.0"].block == "1" and g.classifier == "4"


@pytest.mark.parametrize("shape", [(1, 3, 0, 0), (0, 3, 8, 8), (3,), (1, 3, -2, 8)])
def test_bad_input_shape(shape) -> None:
    with pytest.raises(BadInputError):
        trace_model(nn.Conv2d(3, 3, 1), shape)


def test_model_that_cannot_run_on_the_input() -> None:
    with pytest.raises(TraceError, match="does not run on input"):
        trace_model(tlplan.load_model("resnet18"), (1, 5, 32, 32))  # five channels into a 3-channel stem


# ---- the trace cache: one trace per model structure and input shape ---------------------------


def test_same_structure_and_shape_is_traced_once() -> None:
    from tlplan.trace.tracer import structure_key

    model = tlplan.load_model("mcunet-5fps")
    first = trace_model(model, (1, 3, 64, 64), "m")
    with torch.no_grad():  # new weight values do not change shapes: the same graph serves
        for p in model.parameters():
            p.mul_(2)
    assert trace_model(model, (1, 3, 64, 64), "m") is first
    twin = tlplan.load_model("mcunet-5fps")  # another object of the same structure
    assert structure_key(twin) == structure_key(model)
    assert trace_model(twin, (1, 3, 64, 64), "m") is first
    assert trace_model(model, (2, 3, 64, 64), "m") is not first  # another input shape: traced again
    assert trace_model(model, (2, 3, 64, 64), "m").input_shape == (2, 3, 64, 64)


def test_a_changed_structure_is_traced_again() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(self.conv(x).mean((2, 3)))

    model = Net()
    before = trace_model(model, (1, 3, 16, 16), "net")
    model.conv.stride = (2, 2)  # a plain attribute the forward reads
    strided = trace_model(model, (1, 3, 16, 16), "net")
    assert strided is not before and strided.by_name["conv"].output_shape == (1, 4, 8, 8)

    model.conv = nn.Conv2d(3, 4, 3, padding=1)  # a replaced module of the same shape: same structure
    assert trace_model(model, (1, 3, 16, 16), "net") is before

    handle = model.conv.register_forward_hook(lambda m, i, o: o[:, :, ::2, ::2])  # a hook that reshapes
    hooked = trace_model(model, (1, 3, 16, 16), "net")
    assert hooked is not before
    handle.remove()

    class Net(Net):  # noqa: F811 -- a notebook cell run again with another forward
        def forward(self, x):
            return self.fc(self.conv(x).amax((2, 3)))

    redefined = Net()
    redefined.load_state_dict(model.state_dict())
    graph = trace_model(redefined, (1, 3, 16, 16), "net")
    assert graph is not before and any("amax" in layer.target for layer in graph.layers)
