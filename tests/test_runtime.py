"""The tlplan runtime: gradients equal PyTorch's for exact options, the published formulas otherwise."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import tlplan
from tlplan.errors import BadInputError
from tlplan.plan.options import LayerOptions
from tlplan.plan.plan import Plan
from tlplan.plan.schemes import parse_scheme, scheme_options, trainable_params
from tlplan.runtime import apply_plan
from tlplan.runtime.functional import mask_bytes, pack_mask, unpack_mask
from tlplan.trace import trace_model


def _plan(model, shape, options, name="m", precision="fp32") -> Plan:
    return Plan(name, shape, options, runtime="tlplan", precision=precision)


def _grads(model, x):
    x = x.clone().requires_grad_(True)
    out = model(x)
    (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
    return x.grad, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _reference(model, graph, options):
    """Plain PyTorch with the same trained parameters; frozen / shift-only norms in eval mode."""
    ref = copy.deepcopy(model)
    trained = trainable_params(graph, options)
    for n, p in ref.named_parameters():
        p.requires_grad_(n in trained)
    modules = dict(ref.named_modules())
    for layer in graph.layers:
        if layer.op == "batch_norm" and options.get(layer.name, LayerOptions()).norm != "affine":
            modules[layer.module].eval()
    return ref


EXACT_CASES = [
    ("resnet18", "full"), ("resnet18", "bias"), ("resnet50", "blocks:2"), ("mobilenet_v2", "full"),
    ("mobilenet_v2", "bias"), ("mobilenet_v3_small", "full"), ("mobilenet_v3_small", "norm+last"),
    ("mobilenet_v3_large", "blocks:3"), ("proxylessnas_mobile", "bias"), ("mcunet-5fps", "full"),
    ("mbv2-w0.35", "bias"), ("proxyless-w0.3", "blocks:4"),
]


@pytest.mark.parametrize("name,scheme", EXACT_CASES, ids=[f"{n}-{s}" for n, s in EXACT_CASES])
def test_exact_options_match_pytorch_gradients(name: str, scheme: str) -> None:
    # every zoo block type: basic, bottleneck, inverted residual (v2, v3 with SE and h-swish), MCU
    torch.manual_seed(0)
    model = tlplan.load_model(name, num_classes=10).double()
    model.train()
    shape = (2, 3, 32, 32)
    graph = trace_model(model, shape, name)
    options = scheme_options(graph, parse_scheme(scheme))
    ref = _reference(model, graph, options)
    planned = apply_plan(copy.deepcopy(model), _plan(model, shape, options, name))
    for m in (ref, planned):
        for mod in m.modules():
            if isinstance(mod, nn.Dropout):
                mod.p = 0.0  # no randomness between the two runs
    x = torch.randn(shape, dtype=torch.float64)
    gx_ref, g_ref = _grads(ref, x)
    gx, g = _grads(planned, x)
    assert set(g) == set(g_ref) and g
    for n in g_ref:
        assert torch.allclose(g[n], g_ref[n], rtol=1e-9, atol=1e-12), n
    assert gx is None and gx_ref is None or torch.allclose(gx, gx_ref)


def test_partial_input_channels_first_and_magnitude() -> None:
    torch.manual_seed(1)
    conv = nn.Sequential(nn.Conv2d(8, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 4, 1))
    conv = conv.double()
    shape = (2, 8, 6, 6)
    graph = trace_model(conv, shape)
    x = torch.randn(shape, dtype=torch.float64)
    with torch.no_grad():
        conv[0].weight[:, 5] *= 10  # channel 5 has the largest magnitude
    _, full = _grads(_reference(conv, graph, {"0": LayerOptions(weight=1.0), "2": LayerOptions(weight=1.0)}), x)
    for select, expected in (("first", [0, 1]), ("magnitude", None)):
        opts = {"0": LayerOptions(weight=0.25, select=select), "2": LayerOptions(weight=1.0)}
        planned = apply_plan(copy.deepcopy(conv), _plan(conv, shape, opts))
        _, g = _grads(planned, x)
        trained = [c for c in range(8) if g["0.weight"][:, c].abs().sum() > 0]
        if expected is None:
            assert 5 in trained and len(trained) == 2
        else:
            assert trained == expected
        for c in range(8):
            want = full["0.weight"][:, c] if c in trained else torch.zeros_like(full["0.weight"][:, c])
            assert torch.allclose(g["0.weight"][:, c], want)
        assert torch.allclose(g["2.weight"], full["2.weight"])


def test_partial_depthwise_and_linear() -> None:
    torch.manual_seed(2)
    model = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.Flatten(), nn.Linear(8 * 16, 3)).double()
    shape = (2, 8, 4, 4)
    graph = trace_model(model, shape)
    x = torch.randn(shape, dtype=torch.float64)
    _, full = _grads(_reference(model, graph, {"0": LayerOptions(weight=1.0), "2": LayerOptions(weight=1.0, bias=True)}), x)
    opts = {"0": LayerOptions(weight=0.5), "2": LayerOptions(weight=0.125, bias=True)}
    _, g = _grads(apply_plan(copy.deepcopy(model), _plan(model, shape, opts)), x)
    assert torch.allclose(g["0.weight"][:4], full["0.weight"][:4]) and not g["0.weight"][4:].any()
    assert torch.allclose(g["2.weight"][:, :16], full["2.weight"][:, :16]) and not g["2.weight"][:, 16:].any()
    assert torch.allclose(g["2.bias"], full["2.bias"])


# ---- approximate options: the published formulas, written out independently here ----------------


def _filter_reference(x, w, g, stride, r, depthwise):
    """Gradient filtering (Yang et al.) computed patch by patch with explicit loops."""
    n, c_in, h, wd = x.shape
    c_out, _, ho, wo = g.shape
    ph, pw = math.ceil(ho / r), math.ceil(wo / r)
    win_h, win_w = r * stride, r * stride
    off_h, off_w = math.ceil((ph * win_h - h) / 2), math.ceil((pw * win_w - wd) / 2)
    goff_h, goff_w = math.ceil((ph * r - ho) / 2), math.ceil((pw * r - wo) / 2)
    gx = torch.zeros_like(x)
    gw = torch.zeros(w.shape[:2], dtype=x.dtype)
    w_sum = w.sum((2, 3))
    for i in range(ph):
        for j in range(pw):
            rows = [a for a in range(i * r - goff_h, (i + 1) * r - goff_h) if 0 <= a < ho]
            cols = [b for b in range(j * r - goff_w, (j + 1) * r - goff_w) if 0 <= b < wo]
            g_avg = g[:, :, rows][:, :, :, cols].mean((2, 3))  # (n, c_out)
            xr = [a for a in range(i * win_h - off_h, (i + 1) * win_h - off_h) if 0 <= a < h]
            xc = [b for b in range(j * win_w - off_w, (j + 1) * win_w - off_w) if 0 <= b < wd]
            x_sum = x[:, :, xr][:, :, :, xc].sum((2, 3))  # (n, c_in)
            if depthwise:
                gw += (g_avg * x_sum).sum(0).view(-1, 1)
                spread = g_avg * w_sum.view(1, -1)
            else:
                gw += g_avg.t() @ x_sum
                spread = g_avg @ w_sum
            for a in xr:
                for b in xc:
                    gx[:, :, a, b] = spread
    return gx, gw[:, :, None, None].expand(w.shape)


@pytest.mark.parametrize("r", [2, 4, 7])
@pytest.mark.parametrize("stride,depthwise,size", [(1, False, 7), (1, False, 8), (2, False, 14), (1, True, 9), (2, True, 15)])
def test_gradient_filter_follows_the_published_formula(r, stride, depthwise, size) -> None:
    torch.manual_seed(3)
    c = 4
    conv = nn.Conv2d(c, c if depthwise else 5, 3, stride=stride, padding=1, groups=c if depthwise else 1).double()
    model = nn.Sequential(nn.Identity(), conv)
    shape = (2, c, size, size)
    opts = {"1": LayerOptions(weight=1.0, bias=True, grad_filter=r)}
    planned = apply_plan(copy.deepcopy(model), _plan(model, shape, opts))
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    out = planned(x)
    g = torch.randn_like(out)
    out.backward(g)
    gx_ref, gw_ref = _filter_reference(x.detach(), conv.weight.detach(), g, stride, r, depthwise)
    assert torch.allclose(x.grad, gx_ref)
    assert torch.allclose(planned[1].weight.grad, gw_ref)
    assert torch.allclose(planned[1].bias.grad, g.sum((0, 2, 3)))  # the bias gradient stays exact


def test_hswish_sign_surrogate_and_exact_relu_masks() -> None:
    x = torch.linspace(-8, 8, 64, dtype=torch.float64).view(1, 4, 4, 4)
    for module, slope in ((nn.Hardswish(), lambda t: (t > 0).double()), (nn.ReLU6(), lambda t: ((t > 0) & (t < 6)).double())):
        model = nn.Sequential(nn.Identity(), module)
        planned = apply_plan(copy.deepcopy(model), _plan(model, x.shape, {"1": LayerOptions(mask=True)}))
        xi = x.clone().requires_grad_(True)
        y = planned(xi)
        assert torch.equal(y, module(x))  # the forward is untouched
        g = torch.randn_like(y)
        y.backward(g)
        assert torch.equal(xi.grad, g * slope(x))


@pytest.mark.parametrize("numel", [1, 7, 8, 9, 64, 1001])
def test_mask_packing_roundtrip(numel: int) -> None:
    mask = torch.rand(numel) > 0.5
    packed = pack_mask(mask)
    assert packed.dtype == torch.uint8 and packed.numel() == mask_bytes(numel) == math.ceil(numel / 8)
    assert torch.equal(unpack_mask(packed, mask.shape), mask)


@pytest.mark.parametrize("numel", [2, 7, 8, 9, 1001])
def test_mask_packing_same_bits_on_both_paths(numel: int) -> None:
    """The numpy fast path and the torch path (other devices, strided masks) store the same bits."""
    mask = torch.rand(2 * numel) > 0.5
    strided = mask[::2]  # not contiguous: the torch path
    assert not strided.is_contiguous()
    assert torch.equal(pack_mask(strided), pack_mask(strided.contiguous()))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("kind", ["relu", "relu6"])
def test_masked_activation_gradient_equals_pytorch_in_every_dtype(dtype: torch.dtype, kind: str) -> None:
    """Bit for bit PyTorch's own backward, also where the incoming gradient is inf or NaN at a
    blocked element (a multiply by the mask would give NaN there), on an odd element count."""
    torch.manual_seed(3)
    module = nn.ReLU() if kind == "relu" else nn.ReLU6()
    x = (torch.randn(3, 5, 7, 9) * 4).to(dtype)
    g = torch.randn(x.shape).to(dtype)
    blocked = (x <= 0).nonzero()[:2]
    g[tuple(blocked[0])], g[tuple(blocked[1])] = float("inf"), float("nan")
    expected_x = x.clone().requires_grad_(True)
    module(expected_x).backward(g)
    planned = apply_plan(nn.Sequential(nn.Identity(), module), _plan(nn.Sequential(nn.Identity(), module), x.shape, {"1": LayerOptions(mask=True)}))
    got_x = x.clone().requires_grad_(True)
    planned(got_x).backward(g.transpose(2, 3).contiguous().transpose(2, 3))  # a strided gradient too
    assert torch.equal(got_x.grad, expected_x.grad)
    got_x.grad = None
    planned(got_x).backward(g)
    assert torch.equal(got_x.grad, expected_x.grad)


# ---- a ReLU / ReLU6 whose output a later layer keeps: that output, not a mask -------------------


class _ActThenConv(nn.Module):
    """An activation feeding a conv that trains its weight (so it keeps the activation's output)."""

    def __init__(self, act: nn.Module, write_after: bool = False) -> None:
        super().__init__()
        self.conv0, self.act, self.conv = nn.Conv2d(3, 4, 3, padding=1), act, nn.Conv2d(4, 4, 3, padding=1)
        self.write_after = write_after

    def forward(self, x):
        y = self.act(self.conv0(x))
        if self.write_after:
            y = y.mul_(2)  # an in-place op on the activation's output before the conv reads it
        return self.conv(y)


def _exact_plan(model, shape):
    g = trace_model(model, shape)
    options = {layer.name: LayerOptions(weight=1.0, bias=True) for layer in g.layers if layer.op == "conv2d"}
    options["act"] = LayerOptions(mask=True)
    return g, _plan(model, shape, options)


@pytest.mark.parametrize("act", [nn.ReLU(), nn.ReLU6(), nn.ReLU(inplace=True), nn.ReLU6(inplace=True)], ids=repr)
def test_activation_keeps_the_output_the_conv_keeps_and_is_exact(act) -> None:
    from tlplan.costs.annotate import annotate
    from tlplan.measure.saved import measure_saved_bytes

    torch.manual_seed(5)
    model = _ActThenConv(act)
    shape = (2, 3, 9, 11)
    graph, plan = _exact_plan(model, shape)
    cost = next(c for c in annotate(graph, plan.layers, "tlplan", "fp32").layers if c.name == "act")
    assert cost.mask_from_output and cost.mask_bytes == 0
    planned = apply_plan(copy.deepcopy(model), plan)
    assert planned.act.mask_from_output
    x = torch.randn(shape) * 4
    x[0, 0, 0, :3] = torch.tensor([0.0, 6.0, 1e-30])  # the edges: blocked, blocked, passed
    g = torch.randn(2, 4, 9, 11)
    expected = x.clone().requires_grad_(True)
    model(expected).backward(g)
    got = x.clone().requires_grad_(True)
    planned(got).backward(g)
    assert torch.equal(got.grad, expected.grad)  # PyTorch's own kernels, bit for bit
    assert torch.equal(planned.conv0.weight.grad, model.conv0.weight.grad)
    # what it keeps: the conv's input alone, shared; nothing of its own (a mask would add numel/8)
    predicted = annotate(graph, plan.layers, "tlplan", "fp32").totals["saved_bytes"]
    assert measure_saved_bytes(apply_plan(copy.deepcopy(model), plan), shape).saved_bytes == predicted


def test_activation_keeps_a_mask_where_the_output_is_overwritten_or_not_kept() -> None:
    from tlplan.costs.annotate import annotate
    from tlplan.measure.saved import measure_saved_bytes

    shape = (2, 3, 8, 8)
    # a later in-place op writes the output: keeping it would keep a changed tensor
    model = _ActThenConv(nn.ReLU6(), write_after=True)
    graph, plan = _exact_plan(model, shape)
    costs = {c.name: c for c in annotate(graph, plan.layers, "tlplan", "fp32").layers}
    assert not costs["act"].mask_from_output and costs["act"].mask_bytes == mask_bytes(2 * 4 * 8 * 8)
    planned = apply_plan(copy.deepcopy(model), plan)
    x = torch.randn(shape) * 4
    expected, got = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    model(expected).sum().backward()
    planned(got).sum().backward()  # runs (a stale kept output would raise) and is exact
    assert torch.equal(got.grad, expected.grad)
    # a conv that trains only its bias does not keep its input: the mask stays
    options = dict(plan.layers)
    options["conv"] = LayerOptions(bias=True)
    costs = {c.name: c for c in annotate(graph, options, "tlplan", "fp32").layers}
    assert not costs["act"].mask_from_output and costs["act"].mask_bytes > 0
    # a module called twice keeps one way: here the second call's output is kept by nobody
    resnet = tlplan.load_model("resnet18")
    g = trace_model(resnet, (1, 3, 64, 64), "resnet18")
    full = scheme_options(g, parse_scheme("full"))
    costs = {c.name: c for c in annotate(g, full, "tlplan", "fp32").layers}
    assert costs["layer4.1.relu"].mask_bytes and costs["layer4.1.relu_1"].mask_bytes  # before the pooling: no keeper
    planned = apply_plan(copy.deepcopy(resnet), Plan("resnet18", (1, 3, 64, 64), full, runtime="tlplan"))
    assert not planned.layer4[1].relu.mask_from_output
    assert measure_saved_bytes(planned, (1, 3, 64, 64)).saved_bytes == annotate(g, full, "tlplan", "fp32").totals["saved_bytes"]


def test_mobilenet_full_keeps_no_relu6_mask_the_convs_make_unneeded() -> None:
    from tlplan.costs.annotate import annotate

    model = tlplan.load_model("mobilenet_v2")
    g = trace_model(model, (1, 3, 64, 64), "mobilenet_v2")
    costs = annotate(g, scheme_options(g, parse_scheme("full")), "tlplan", "fp32").layers
    relu6 = [c for layer, c in zip(g.layers, costs) if layer.op == "relu6"]
    assert sum(c.mask_from_output for c in relu6) == len(relu6) - 1  # all but the last, before the pooling
    assert sum(c.mask_bytes for c in relu6) == relu6[-1].mask_bytes > 0


# ---- apply_plan as a user meets it ---------------------------------------------------------------


def test_apply_plan_keeps_parameters_and_trains_only_the_plan(tmp_path) -> None:
    torch.manual_seed(4)
    model = tlplan.load_model("mcunet-5fps", num_classes=5)
    keys = list(model.state_dict())
    params = {n: p for n, p in model.named_parameters()}
    config = tmp_path / "backward_config.yaml"
    config.write_text("n_bias_update: 6\nmanual_weight_idx: [36, 39]\nweight_update_ratio: [0.25, 0.5]\n")
    plan = tlplan.plan_from_scheme(model, (2, 3, 64, 64), f"sparse:{config}")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    apply_plan(model, plan)
    assert list(model.state_dict()) == keys
    assert all(p is params[n] for n, p in model.named_parameters())  # the same Parameter objects
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trained == set(trainable_params(trace_model(model, (2, 3, 64, 64)), plan.layers))
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)
    F.cross_entropy(model(torch.randn(2, 3, 64, 64)), torch.tensor([0, 1])).backward()
    assert {n for n, p in model.named_parameters() if p.grad is not None} == trained
    opt.step()
    for n, p in model.named_parameters():
        if n not in trained:
            assert torch.equal(p, before[n]), n  # frozen parameters never move
    name = "blocks.12.inverted_bottleneck.conv.weight"
    w = dict(model.named_parameters())[name]
    moved = (w.grad.abs().sum((0, 2, 3)) > 0)
    assert int(moved.sum()) == 24  # ratio 0.25 of 96 input channels
    assert torch.equal(w[:, ~moved], before[name][:, ~moved])  # the other channels untouched


@pytest.mark.parametrize(
    "options,message",
    [
        ({"nope": LayerOptions(bias=True)}, "not in"),
        ({"first_conv.act": LayerOptions(weight=1.0)}, "has no weight"),
        ({"classifier": LayerOptions(norm="shift")}, "norm options"),
        ({"first_conv.conv": LayerOptions(mask=True)}, "1-bit masks"),
    ],
)
def test_apply_plan_refuses_options_that_do_not_fit(options, message) -> None:
    model = tlplan.load_model("mcunet-5fps")
    with pytest.raises(BadInputError, match=message):
        apply_plan(model, _plan(model, (1, 3, 64, 64), options))


def test_mcu_plans_do_not_run_here() -> None:
    model = tlplan.load_model("mcunet-5fps")
    plan = Plan("mcunet-5fps", (1, 3, 64, 64), {}, runtime="mcu")
    with pytest.raises(BadInputError, match="int8"):
        apply_plan(model, plan)
