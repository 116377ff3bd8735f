"""``layers:K`` (the gradient-filter paper's exact baseline) and gradient filters of any patch size.

- ``layers:K`` trains the last K conv/linear layers before the classifier, and the classifier,
  with PyTorch's gradients; ``gradfilter:K:0`` trains the same convs as ``gradfilter:K:R``, exactly.
- A gradient filter takes any patch size r >= 2 up to the conv's output map (one that does not
  divide the map: the patch grid rounded up and centred, as the paper's code); the runtime's
  gradients follow the paper's formulas for the new sizes (checked against plain torch ops), and
  the bytes kept equal what saved-tensor hooks measure. Plans asking for a patch larger than a map
  are refused; the ``gradfilter:K:R`` scheme trains such convs exactly and says so.
"""

from __future__ import annotations

import copy
import json
import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import tlplan
from tlplan import ops
from tlplan.errors import BadInputError, SchemeError
from tlplan.measure.saved import measure_saved_bytes
from tlplan.plan.options import FILTER_SIZES, LayerOptions
from tlplan.plan.plan import Plan, load_plan
from tlplan.plan.schemes import SchemeWarning, parse_scheme, scheme_options, trainable_params
from tlplan.runtime import apply_plan
from tlplan.trace import trace_model

# ---- small models ---------------------------------------------------------------------------------


def small_cnn(c: int = 8) -> nn.Module:
    """Four convs (dense, strided, depthwise, pointwise), BN, ReLU-family, one linear: the classifier.

    At a resolution of 2m the first conv's output map is 2m×2m, the last three convs' m×m.
    """
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(),
        nn.Conv2d(c, 2 * c, 3, stride=2, padding=1), nn.BatchNorm2d(2 * c), nn.ReLU(),
        nn.Conv2d(2 * c, 2 * c, 3, padding=1, groups=2 * c), nn.ReLU6(),
        nn.Conv2d(2 * c, 2 * c, 1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * c, 5),
    )


#: small_cnn's convs and classifier by module name
CONVS, CLASSIFIER = ("0", "3", "6", "8"), "12"


def mlp_head_cnn() -> nn.Module:
    """Two convs, then a hidden linear layer before the classifier."""
    torch.manual_seed(1)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 5),
    )


def _options(model: nn.Module, shape, scheme: str, notes: list[str] | None = None):
    graph = trace_model(model, shape)
    return graph, scheme_options(graph, parse_scheme(scheme), notes)


def _step_grads(net: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    out = net(x)
    (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
    return {n: p.grad for n, p in net.named_parameters() if p.grad is not None}


# ---- layers:K ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "k,expected",
    [
        (0, ["10"]),  # the classifier only
        (1, ["8", "10"]),  # the hidden linear layer counts as a layer
        (2, ["3", "8", "10"]),
        (3, ["0", "3", "8", "10"]),
    ],
)
def test_layers_k_trains_the_last_k_conv_and_linear_layers_with_pytorch_gradients(k, expected) -> None:
    model = mlp_head_cnn().double()
    shape = (2, 3, 8, 8)
    graph, options = _options(model, shape, f"layers:{k}")
    want = {f"{m}.{p}" for m in expected for p in ("weight", "bias")}
    assert trainable_params(graph, options) == want
    assert all(o.grad_filter == 0 and o.weight in (0.0, 1.0) for o in options.values())

    planned = apply_plan(copy.deepcopy(model), Plan("m", shape, options, runtime="tlplan"), graph=graph)
    reference = copy.deepcopy(model)
    for name, p in reference.named_parameters():
        p.requires_grad_(name in want)
    for module in reference.modules():  # the runtime's frozen norms use their running statistics
        if isinstance(module, nn.BatchNorm2d):
            module.eval()
    planned.train()
    x = torch.randn(shape, dtype=torch.float64)
    got, ref = _step_grads(planned, x), _step_grads(reference, x)
    assert set(got) == set(ref) == want
    for name in want:
        assert torch.allclose(got[name], ref[name]), name


def test_layers_k_is_gradfilter_k_0_on_a_cnn_whose_only_linear_is_the_classifier() -> None:
    graph = trace_model(small_cnn(), (2, 3, 16, 16))
    for k in range(5):
        layers, zero, filtered = (scheme_options(graph, parse_scheme(s)) for s in (f"layers:{k}", f"gradfilter:{k}:0", f"gradfilter:{k}:2"))
        assert layers == zero
        assert {n: o.grad_filter for n, o in filtered.items() if o.grad_filter} == {n: 2 for n in CONVS[4 - k:]}
        trained = lambda options: {n: (o.weight, o.bias) for n, o in options.items() if o.weight or o.bias}  # noqa: E731
        assert trained(filtered) == trained(layers)  # (the ReLUs differ: masks where a filtered conv keeps no input)
        assert trainable_params(graph, layers) == {f"{m}.{p}" for m in (*CONVS[4 - k:], CLASSIFIER) for p in ("weight", "bias")}
    # with a hidden linear layer they differ: gradfilter counts convs only
    graph = trace_model(mlp_head_cnn(), (2, 3, 8, 8))
    layers, zero = (scheme_options(graph, parse_scheme(s)) for s in ("layers:2", "gradfilter:2:0"))
    assert trained(layers) == {n: (1.0, True) for n in ("3", "8", "10")}
    assert trained(zero) == {n: (1.0, True) for n in ("0", "3", "10")}


def test_layers_k_beyond_the_model_says_how_many_there_are() -> None:
    graph = trace_model(mlp_head_cnn(), (1, 3, 8, 8), "tiny")
    with pytest.raises(SchemeError) as err:
        scheme_options(graph, parse_scheme("layers:4"))
    assert str(err.value) == "scheme 'layers:4': tiny has 3 conv and linear layers before the classifier; choose K from 0 to 3"
    with pytest.raises(SchemeError, match="tiny has 2 convolutions before the classifier; choose K from 0 to 2"):
        scheme_options(graph, parse_scheme("gradfilter:3:0"))


@pytest.mark.parametrize(
    "text,message",
    [
        ("layers", "scheme 'layers': give the number of layers, e.g. layers:4"),
        ("layers:", "give the number of layers"),
        ("layers:x", "scheme 'layers:x': K (layers) must be a whole number"),
        ("layers:-1", "K (layers) must be 0 or more"),
        ("layer:3", "unknown scheme 'layer:3'; did you mean layers?"),
        ("gradfilter:3:1", "patch size R must be 2 or more (a 1×1 patch filters nothing); R = 0 trains the same convs exactly"),
        ("gradfilter:3", "use gradfilter:K:R, e.g. gradfilter:4:2"),
        ("gradfilter:3:-2", "R (patch) must be 0 or more"),
    ],
)
def test_scheme_parse_errors_are_one_line(text, message) -> None:
    with pytest.raises(SchemeError) as err:
        parse_scheme(text)
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("text", ["layers:0", "layers:3", "LAYERS:3", "gradfilter:3:0", "gradfilter:2:5", "gradfilter:1:8"])
def test_scheme_names_round_trip(text) -> None:
    scheme = parse_scheme(text)
    assert scheme.text == text.lower() and parse_scheme(scheme.text) == scheme


def test_unknown_scheme_error_lists_layers_k() -> None:
    with pytest.raises(SchemeError) as err:
        parse_scheme("nope")
    assert "layers:K (last K conv/linear layers, exact)" in str(err.value)
    assert "gradfilter:K:R (last K convs, R×R patches, R >= 2; R = 0: no filter)" in str(err.value)


# ---- gradient filters of any patch size: the runtime's gradients -----------------------------------


def _filter_reference(x, w, g, stride: int, r: int, groups: int):
    """Yang et al.'s filtered gradients with plain torch ops, for an r dividing the output map and
    an input of exactly stride × the output (a "same"-padded conv): average the output gradient
    over r×r patches; sum the input over the matching r·stride windows; dW is the same for every
    kernel tap (Σ over batch and patches of ĝ·x̃), dx spreads ĝ times the summed kernel over each window."""
    n, c_in, h, wd = x.shape
    _, c_out, ho, wo = g.shape
    assert ho % r == 0 and wo % r == 0 and (h, wd) == (ho * stride, wo * stride)
    ph, pw, win = ho // r, wo // r, r * stride
    g_avg = g.reshape(n, c_out, ph, r, pw, r).mean((3, 5))
    x_sum = x.reshape(n, c_in, ph, win, pw, win).sum((3, 5))
    w_sum = w.sum((2, 3))
    if groups == 1:
        gw = torch.einsum("nohw,nihw->oi", g_avg, x_sum)
        spread = torch.einsum("nohw,oi->nihw", g_avg, w_sum)
    else:  # depthwise
        gw = (g_avg * x_sum).sum((0, 2, 3)).view(c_out, 1)
        spread = g_avg * w_sum.view(1, c_out, 1, 1)
    gx = spread.repeat_interleave(win, 2).repeat_interleave(win, 3)
    return gx, gw[:, :, None, None].expand(w.shape)


CONV_CASES = [  # r, c_in, c_out, kernel, stride, groups, input size
    (3, 4, 5, 3, 1, 1, 9),
    (3, 6, 6, 3, 2, 6, 12),  # depthwise, strided: 6×6 output
    (5, 4, 4, 3, 1, 4, 10),  # depthwise
    (5, 6, 3, 1, 1, 1, 20),  # pointwise: 20×20, four patches a side
    (8, 3, 4, 3, 2, 1, 32),  # strided: 16×16 output, 16×16 input windows
]


@pytest.mark.parametrize("r,c_in,c_out,k,stride,groups,size", CONV_CASES)
def test_filtered_gradients_equal_the_reference(r, c_in, c_out, k, stride, groups, size) -> None:
    torch.manual_seed(r)
    conv = nn.Conv2d(c_in, c_out, k, stride=stride, padding=k // 2, groups=groups).double()
    model = nn.Sequential(conv)
    shape = (2, c_in, size, size)
    plan = Plan("m", shape, {"0": LayerOptions(weight=1.0, bias=True, grad_filter=r)}, runtime="tlplan")
    planned = apply_plan(copy.deepcopy(model), plan)
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    out = planned(x)
    g = torch.randn_like(out)
    out.backward(g)
    gx_ref, gw_ref = _filter_reference(x.detach(), conv.weight.detach(), g, stride, r, groups)
    assert torch.allclose(x.grad, gx_ref)
    assert torch.allclose(planned[0].weight.grad, gw_ref)
    assert torch.allclose(planned[0].bias.grad, g.sum((0, 2, 3)))  # the bias gradient stays exact
    if stride == 1:
        # a second witness: PyTorch's own conv weight gradient from the patch-averaged output
        # gradient, at the kernel's centre tap (the tap whose window is the patch itself)
        g_tilde = F.avg_pool2d(g, r).repeat_interleave(r, 2).repeat_interleave(r, 3)
        w = conv.weight.detach().clone().requires_grad_(True)
        (exact,) = torch.autograd.grad(F.conv2d(x.detach(), w, None, 1, k // 2, 1, groups), w, g_tilde)
        centre = exact[:, :, k // 2, k // 2]
        assert torch.allclose(planned[0].weight.grad, centre[:, :, None, None].expand_as(exact))


# ---- gradient filters of any patch size: bytes kept and MACs ------------------------------------------


@pytest.mark.parametrize("r,precision", [(3, "fp32"), (5, "fp32"), (8, "fp32"), (3, "fp16")])
def test_profile_kept_bytes_equal_saved_tensor_hooks(r, precision) -> None:
    model = small_cnn()
    shape = (2, 3, 4 * r, 4 * r)  # the last three convs: 2r×2r maps
    scheme = f"gradfilter:3:{r}"
    with warnings.catch_warnings():
        warnings.simplefilter("error", SchemeWarning)  # every one of the three convs is filtered
        report = tlplan.profile(model, shape, scheme=scheme, precision=precision)
        plan = tlplan.plan_from_scheme(model, shape, scheme, precision=precision)
    assert {n: o.grad_filter for n, o in plan.layers.items() if o.grad_filter} == {n: r for n in CONVS[1:]}
    planned = apply_plan(copy.deepcopy(model), plan)
    measured = measure_saved_bytes(planned, shape, None, copy_model=False).saved_bytes
    assert report.totals["saved_bytes"] == measured

    # each filtered conv keeps C_in · (H/r) · (W/r) patch sums and multiplies as many per output channel
    element = 2 if precision == "fp16" else 4
    rows = {row.name: row for row in report.layers}
    n = shape[0]
    patches = 2 * 2  # 2r×2r maps, r×r patches
    for name, c_in, c_out, groups, needs_dx in (("3", 8, 16, 1, False), ("6", 16, 16, 16, True), ("8", 16, 16, 1, True)):
        macs = n * patches * c_out * (c_in // groups)
        assert rows[name].saved_bytes == n * c_in * patches * element, name
        assert rows[name].macs_bwd_weight == macs, name
        assert rows[name].macs_bwd_input == (macs if needs_dx else 0), name


def test_gradfilter_keeps_less_than_layers_and_the_same_trainable_params() -> None:
    model, shape = small_cnn(), (2, 3, 20, 20)  # 10×10 maps: r = 5
    exact = tlplan.profile(model, shape, scheme="layers:3").totals
    filtered = tlplan.profile(model, shape, scheme="gradfilter:3:5").totals
    assert filtered["trainable_params"] == exact["trainable_params"]
    assert filtered["saved_bytes"] < exact["saved_bytes"] and filtered["macs_bwd"] < exact["macs_bwd"]


# ---- a patch size that does not divide the map, or is larger than it ---------------------------------


@pytest.mark.parametrize("r", [2, 3, 4])
def test_a_non_dividing_patch_follows_the_papers_code_and_keeps_what_is_predicted(r, tmp_path) -> None:
    """r that does not divide the map: the patch grid is rounded up and centred, an edge patch
    averages the cells it covers (as the gradient-filter paper's code); gradients and kept bytes exact."""
    from test_runtime import _filter_reference  # the published formula, patch by patch with loops

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, stride=2, padding=1),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5)).double()
    shape = (2, 3, 14, 14)  # maps 14×14, then 7×7: r = 2, 3, 4 do not divide 7
    plan = Plan("m", shape, {"1": LayerOptions(weight=1.0, bias=True, grad_filter=r),
                             "4": LayerOptions(weight=1.0, bias=True)}, runtime="tlplan")
    path = tmp_path / "plan.yaml"
    plan.save(path)
    predicted = tlplan.profile(model.float(), shape, scheme=str(path)).totals["saved_bytes"]
    model.double()
    planned = apply_plan(copy.deepcopy(model), plan)
    assert predicted == measure_saved_bytes(copy.deepcopy(planned).float(), shape, None, copy_model=False).saved_bytes
    x = torch.randn(shape, dtype=torch.float64)
    planned(x).sum().backward()
    # the reference: the exact gradient reaching conv 1's output, then the filter's formula
    h = model[0](x).detach()
    out = model[1](h).detach().requires_grad_(True)
    g = torch.autograd.grad(model[4](model[3](model[2](out))).sum(), out)[0]
    _, gw = _filter_reference(h, model[1].weight.detach(), g, 2, r, depthwise=False)
    assert torch.allclose(planned[1].weight.grad, gw)
    assert torch.allclose(planned[1].bias.grad, g.sum((0, 2, 3)))  # the bias gradient stays exact


def test_a_patch_larger_than_the_map_is_refused_naming_layer_and_map() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, stride=2, padding=1))
    shape = (1, 3, 14, 14)  # maps 14×14, then 7×7
    with pytest.raises(BadInputError) as err:
        apply_plan(copy.deepcopy(model), Plan("m", shape, {"1": LayerOptions(weight=1.0, grad_filter=8)}, runtime="tlplan"))
    assert str(err.value) == ("plan for m: layers.1: grad_filter 8 is larger than this conv's 7×7 output map; "
                              "use a patch size up to 7 or 0 (exact)")
    for r in (2, 5, 7):  # up to the map, the solver's sizes or not
        apply_plan(copy.deepcopy(model), Plan("m", shape, {"1": LayerOptions(weight=1.0, grad_filter=r)}, runtime="tlplan"))


def test_plan_file_with_a_patch_larger_than_the_map_is_refused_by_the_cli(run, tmp_path) -> None:
    model = tlplan.load_model("mcunet-5fps")
    shape = (1, 3, 64, 64)  # the last convs: 2×2 maps
    plan = tlplan.plan_from_scheme(model, shape, "gradfilter:2:2", model_name="mcunet-5fps")
    data = plan.to_dict()
    assert data["scheme"] == "gradfilter:2:2"
    data["layers"]["blocks.13.point_linear.conv"]["grad_filter"] = 3
    import yaml

    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(data))
    code, out, err = run("profile", "mcunet-5fps", "--resolution", "64", "--no-measure", "--scheme", str(path))
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert ("layers.blocks.13.point_linear.conv: grad_filter 3 is larger than this conv's 2×2 output map; "
            "use a patch size up to 2 or 0 (exact)") in err


@pytest.mark.parametrize("value", [1, -2])
def test_a_patch_of_one_or_less_is_refused_in_plans(value) -> None:
    with pytest.raises(BadInputError, match=r"layers.c.grad_filter: .*use 0 \(exact\) or a patch size of 2 or more"):
        LayerOptions.from_dict({"weight": 1.0, "grad_filter": value}, "plan: layers.c")
    assert LayerOptions.from_dict({"weight": 1.0, "grad_filter": 9}, "plan").grad_filter == 9


def test_gradfilter_scheme_trains_convs_it_cannot_filter_exactly_and_says_so() -> None:
    model, shape = small_cnn(), (2, 3, 14, 14)  # maps 14×14, then 7×7 for the last three convs
    note = ("scheme gradfilter:4:8: 3 of the last 4 convs train exactly, without a gradient filter: "
            "3, 6, 8 (R = 8 is larger than the 7×7 output map)")
    notes: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # given a list, the note goes there, not to a warning
        graph, options = _options(model, shape, "gradfilter:4:8", notes)
    assert notes == [note]
    assert options["0"] == LayerOptions(weight=1.0, bias=True, grad_filter=8)
    assert all(options[n] == LayerOptions(weight=1.0, bias=True) for n in CONVS[1:])
    report = tlplan.profile(model, shape, scheme="gradfilter:4:8")
    assert note in report.warnings  # in the report (and so in every format), not a Python warning
    plan = Plan("m", shape, options, runtime="tlplan")
    measured = measure_saved_bytes(apply_plan(copy.deepcopy(model), plan), shape, None, copy_model=False).saved_bytes
    assert report.totals["saved_bytes"] == measured
    # none falls back: no note
    with warnings.catch_warnings():
        warnings.simplefilter("error", SchemeWarning)
        _, options = _options(model, shape, "gradfilter:3:2")
    assert {options[n].grad_filter for n in CONVS[1:]} == {2}


def test_gradfilter_note_gives_the_reason_of_each_fallback() -> None:
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=2, dilation=2), nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 8, 3, stride=2, padding=1),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5),
    )
    notes: list[str] = []
    _, options = _options(model, (1, 3, 10, 10), "gradfilter:3:5", notes)  # maps 10, 10, 5
    assert notes == [
        "scheme gradfilter:3:5: 1 of the last 3 convs train exactly, without a gradient filter: "
        "0 (gradient filtering needs an undilated conv)"
    ]
    assert options["1"].grad_filter == options["2"].grad_filter == 5 and not options["0"].grad_filter
    notes.clear()
    _options(model, (1, 3, 6, 6), "gradfilter:2:4", notes)  # maps 6, then 3: a 4×4 patch does not fit a 3×3 map
    assert notes == ["scheme gradfilter:2:4: 1 of the last 2 convs train exactly, without a gradient filter: "
                     "2 (R = 4 is larger than the 3×3 output map)"]


def test_solver_offers_a_small_fixed_set_of_sizes_that_fit_the_map() -> None:
    assert FILTER_SIZES == (2, 4, 7)
    for size, offered in ((7, {2, 4, 7}), (5, {2, 4}), (3, {2}), (1, set())):
        model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1))
        layer = trace_model(model, (1, 3, size, size)).layers[0]
        filters = {o.grad_filter for o in ops.spec_of(layer).choices(layer, "tlplan") if o.grad_filter}
        assert filters == offered, size
        for r in filters:  # and each one the plan validation takes
            assert ops.option_problem(layer, LayerOptions(weight=1.0, grad_filter=r), "tlplan") is None


# ---- the CLI and plan files ----------------------------------------------------------------------------


def test_cli_profile_and_compare_take_layers_k(run) -> None:
    code, out, err = run("profile", "mcunet-5fps", "--resolution", "64", "--no-measure", "--scheme", "layers:3", "--format", "json")
    assert code == 0, err
    profile = json.loads(out)
    assert profile["scheme"] == "layers:3"
    code, out, err = run("compare", "mcunet-5fps", "--resolution", "64", "--no-measure", "--format", "json",
                         "--schemes", "layers:3,gradfilter:3:0,gradfilter:3:2")
    assert code == 0, err
    rows = {r["scheme"]: r for r in json.loads(out)["schemes"]}
    assert list(rows) == ["full", "layers:3", "gradfilter:3:0", "gradfilter:3:2"]
    same = ("kept_tlplan_bytes", "kept_eager_bytes", "trainable_params", "macs_bwd", "peak_bytes")
    assert all(rows["layers:3"][f] == rows["gradfilter:3:0"][f] for f in same)
    assert rows["layers:3"]["kept_tlplan_bytes"] == profile["totals"]["saved_bytes"]
    assert rows["gradfilter:3:2"]["kept_tlplan_bytes"] < rows["layers:3"]["kept_tlplan_bytes"]
    assert rows["gradfilter:3:2"]["trainable_params"] == rows["layers:3"]["trainable_params"]


def test_plan_file_from_layers_k_round_trips(tmp_path) -> None:
    model, shape = small_cnn(), (1, 3, 16, 16)
    plan = tlplan.plan_from_scheme(model, shape, "layers:2")
    path = tmp_path / "plan.yaml"
    plan.save(path)
    assert "scheme: layers:2" in path.read_text()
    again = load_plan(path)
    assert again.scheme == "layers:2" and again.layers == dict(plan.layers)
    graph, from_file = _options(model, shape, str(path))
    assert from_file == dict(plan.layers)
    assert tlplan.profile(model, shape, scheme=str(path)).totals["saved_bytes"] == \
        tlplan.profile(model, shape, scheme="layers:2").totals["saved_bytes"]
