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


# ---- shape propagation: a plain conv's shape by arithmetic, every other node run ---------------

CONV_CASES = [
    (nn.Conv2d(3, 8, 3), (1, 3, 17, 13)),
    (nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False), (2, 3, 17, 12)),
    (nn.Conv2d(4, 8, (3, 5), stride=(2, 3), padding=(1, 2), dilation=(2, 1), groups=2), (1, 4, 19, 23)),
    (nn.Conv2d(6, 6, 3, padding="same", dilation=3, groups=6, padding_mode="reflect"), (1, 6, 11, 11)),
    (nn.Conv2d(3, 5, 4, padding="valid", stride=3), (3, 3, 10, 9)),
    (nn.Conv2d(3, 5, 3, padding=2, padding_mode="circular"), (1, 3, 7, 7)),
    (nn.Conv1d(2, 4, 5, stride=2, padding=1), (1, 2, 31)),
    (nn.Conv3d(2, 3, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)), (1, 2, 4, 9, 9)),
]


@pytest.mark.parametrize(("conv", "shape"), CONV_CASES)
def test_plain_conv_stands_in_with_its_exact_output(conv, shape) -> None:
    from tlplan.trace.tracer import _call_module, _plain_conv_output_shape

    x = torch.zeros(shape)
    assert _plain_conv_output_shape(conv, x) is not None  # the shortcut is taken...
    with torch.no_grad():
        expected = conv(x)
        got = _call_module(conv, (x,), {})
    assert got.shape == expected.shape and got.dtype == expected.dtype and got.is_contiguous()
    torch.testing.assert_close(got, expected)  # ...and on a zero input it is the conv's very output


class _CountingConv(nn.Conv2d):
    calls = 0

    def forward(self, x):
        type(self).calls += 1
        return super().forward(x)


def test_conv_runs_where_the_shortcut_could_be_wrong() -> None:
    from tlplan.trace.tracer import _plain_conv_output_shape

    conv = nn.Conv2d(3, 4, 3)
    x = torch.zeros(1, 3, 8, 8)
    assert _plain_conv_output_shape(conv, torch.zeros(1, 5, 8, 8)) is None  # wrong channels: the conv raises
    assert _plain_conv_output_shape(conv, torch.zeros(1, 3, 2, 2)) is None  # input smaller than the kernel
    assert _plain_conv_output_shape(conv, x.to(memory_format=torch.channels_last)) is None
    assert _plain_conv_output_shape(conv, x.double()) is None
    assert _plain_conv_output_shape(_CountingConv(3, 4, 3), x) is None  # a subclass: its forward may differ
    handle = conv.register_forward_hook(lambda m, a, out: out[:, :2])
    assert _plain_conv_output_shape(conv, x) is None  # a hook may reshape the output
    handle.remove()
    handle = nn.modules.module.register_module_forward_hook(lambda m, a, out: None)
    try:
        assert _plain_conv_output_shape(conv, x) is None
    finally:
        handle.remove()
    conv.forward = lambda t: t  # an instance's own forward
    assert _plain_conv_output_shape(conv, x) is None
    other = nn.Conv2d(3, 4, 3)
    other._conv_forward = lambda t, w, b: t
    assert _plain_conv_output_shape(other, x) is None
    # a channels_last weight gives a channels_last output
    assert _plain_conv_output_shape(nn.Conv2d(3, 4, 3).to(memory_format=torch.channels_last), x) is None
    mixed = nn.Conv2d(3, 4, 3)
    mixed.bias.data = mixed.bias.data.double()  # the conv raises on it
    assert _plain_conv_output_shape(mixed, x) is None
    reflect = nn.Conv2d(3, 4, 3, padding=3, padding_mode="reflect")
    assert _plain_conv_output_shape(reflect, torch.zeros(1, 3, 2, 2)) is None  # as wide as the input: its own error
    assert _plain_conv_output_shape(reflect, x) == (1, 4, 12, 12)


class _NonzeroAfterConvs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3, bias=False)

    def forward(self, x):
        return torch.nonzero(self.b(self.a(x)))  # a shape that the conv's values decide


def test_shapes_that_values_decide_and_autocast_run_the_convs() -> None:
    from tlplan.trace.tracer import _trace

    torch.manual_seed(0)
    model = _NonzeroAfterConvs()
    with torch.no_grad():
        expected = model.eval()(torch.zeros(1, 3, 8, 8)).shape
    graph = _trace(model, (1, 3, 8, 8), "nz")
    assert graph.layers[-1].output_shape == tuple(expected)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # convs return bfloat16 there
        graph = _trace(nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU()), (1, 3, 8, 8), "m")
    assert [layer.output_dtype_bytes for layer in graph.layers] == [2, 2]


class _HookedConvs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = _CountingConv(3, 6, 3, padding=1)
        self.b = nn.Conv2d(6, 6, 3, padding="same", dilation=2)
        self.b.register_forward_hook(lambda m, args, out: out[:, :4])  # shrinks the output the trace sees
        self.c = nn.Conv1d(4, 2, 3)

    def forward(self, x):
        y = self.b(F.relu(self.a(x)))
        return self.c(torch.flatten(y, 2))


@pytest.mark.parametrize("batch", [1, 3])
def test_shapes_equal_fx_interpreters(batch: int) -> None:
    """The trace's own loop records exactly the shapes torch.fx's Interpreter (running every conv) sees."""
    from tlplan.trace import ops
    from tlplan.trace.tracer import _record_shapes

    for model, size in ((tlplan.load_model("mobilenet_v2"), (3, 64, 64)), (tlplan.load_model("resnet18"), (3, 40, 48)),
                        (_HookedConvs(), (3, 9, 7)), (Functional(), (3, 8, 8))):
        graph = ops.LeafTracer().trace(model)
        model.eval()
        seen: dict[str, tuple] = {}

        class Recorder(torch.fx.Interpreter):
            def run_node(self, n):
                out = super().run_node(n)
                if isinstance(out, torch.Tensor) and n.op != "output":  # the output node is not a layer
                    seen[n.name] = (tuple(out.shape), out.dtype, out.is_contiguous())
                return out

        with torch.no_grad():
            Recorder(model, graph=graph).run(torch.zeros(batch, *size))
            metas = _record_shapes(model, graph, [torch.zeros(batch, *size)])[0]
        assert {k: (m.shape, m.dtype, m.contiguous) for k, m in metas.items()} == seen
    assert _CountingConv.calls >= 2  # the subclass really ran, in both


def test_trace_records_what_fx_records() -> None:
    """Plain functions (torch.flatten, F.relu) go through the trace's fast path; the graph is fx's own."""
    from tlplan.trace import ops

    class Fx(ops.LeafTracer):
        def proxy(self, node):
            return torch.fx.Proxy(node, self)

    class Mixed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x):
            y = F.relu(self.conv(x))
            y = torch.cat([y, torch.sigmoid(y)], dim=1)
            z = torch.flatten(F.adaptive_avg_pool2d(y, 1), 1)
            return z.softmax(-1) + torch.ones(1).add(z).shape[-1] + y.size(1)

    for build in (Mixed, lambda: tlplan.load_model("mobilenet_v2"), lambda: tlplan.load_model("mcunet-5fps")):
        ours, theirs = ops.LeafTracer().trace(build()), Fx().trace(build())  # each names constants it adds to its root
        assert [(n.op, n.target, str(n.args), str(n.kwargs)) for n in ours.nodes] == \
            [(n.op, n.target, str(n.args), str(n.kwargs)) for n in theirs.nodes]


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
