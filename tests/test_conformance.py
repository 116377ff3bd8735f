"""Every model of the conformance corpus × every scheme × both PyTorch runtimes, exact.

For each case: trace → cost → plan → apply → one training step, and
- the bytes predicted as kept for backward equal what autograd keeps (saved-tensor hooks);
- what the plan trains is exactly what has a gradient after the step;
- the gradients equal PyTorch's where the options are exact (for the tlplan runtime, against a
  model whose norms on running statistics run in eval mode, as the runtime's do);
- forward MACs agree with torch.utils.flop_counter and with fvcore.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
from fvcore.nn import FlopCountAnalysis
from torch.utils.flop_counter import FlopCounterMode

from tlplan import ops
from tlplan.costs import annotate
from tlplan.errors import SchemeError
from tlplan.measure.saved import graph_saved_bytes, measure_saved_bytes
from tlplan.plan.plan import Plan
from tlplan.plan.schemes import parse_scheme, scheme_options, trainable_params
from tlplan.runtime import apply_plan
from tlplan.trace import trace_model

from corpus import CORPUS, SHAPE, build

SCHEMES = ("full", "last", "bias", "norm+last", "blocks:1", "mobiletl:2", "gradfilter:2:2", "sparse")
#: schemes whose options are exact (no gradient filter, no h-swish surrogate)
EXACT = {"full", "last", "bias", "norm+last", "blocks:1", "sparse"}


def _case(name: str, scheme: str, runtime: str, tmp_path=None):
    model = build(name)
    graph = trace_model(model, SHAPE, name)
    if scheme == "sparse":  # the 256KB paper's form: biases of the last two convs, the last conv's weight
        from tlplan.plan.schemes import conv_layers

        convs = len(conv_layers(graph))
        config = tmp_path / "backward_config.yaml"
        config.write_text(f"n_bias_update: {min(2, convs)}\nmanual_weight_idx: [{convs - 1}]\nweight_update_ratio: [1]\n")
        scheme = f"sparse:{config}"
    try:
        options = scheme_options(graph, parse_scheme(scheme))
    except SchemeError as exc:  # a model without blocks or convs for the scheme: a clean error
        pytest.skip(str(exc))
    return model, graph, options


@pytest.mark.parametrize("runtime", ["eager", "tlplan"])
@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("name", sorted(CORPUS))
def test_corpus_exact(name: str, scheme: str, runtime: str, tmp_path) -> None:
    model, graph, options = _case(name, scheme, runtime, tmp_path)
    assert graph.classifier is not None, "every corpus model has a classifier (a Linear or a conv)"
    costs = annotate(graph, options, runtime)
    plan = Plan(name, SHAPE, options, runtime=runtime)
    reference = copy.deepcopy(model)
    planned = apply_plan(copy.deepcopy(model), plan, graph=graph)

    # bytes kept for backward, to the byte
    measured = measure_saved_bytes(planned, SHAPE, None).saved_bytes
    assert costs.totals["saved_bytes"] == measured, (name, scheme, runtime)

    # one step: the trained set, and the gradients
    trainable = trainable_params(graph, options)
    for p_name, p in reference.named_parameters():
        p.requires_grad_(p_name in trainable)
    if runtime == "tlplan":  # the runtime's norms on running statistics compute what eval mode does
        modules = dict(reference.named_modules())
        for layer in graph.layers:
            if layer.module and ops.planned(layer) and ops.is_norm(layer) and plan.options(layer.name).norm != "affine":
                modules[layer.module].eval()
    planned.train()
    torch.manual_seed(1)
    x = torch.randn(SHAPE)
    weights = torch.randn(SHAPE[0], 5)
    grads = {}
    for which, net in (("planned", planned), ("reference", reference)):
        torch.manual_seed(2)
        out = net(x)
        if which == "planned":  # a second witness: the autograd graph's own saved tensors
            assert graph_saved_bytes(out, planned).saved_bytes == measured, (name, scheme, runtime)
        (out * weights).sum().backward()
        grads[which] = {n: p.grad for n, p in net.named_parameters() if p.grad is not None}
    assert set(grads["planned"]) == set(trainable), (name, scheme, runtime)
    if scheme in EXACT:  # (atol: a bias before a train-mode norm has a zero gradient up to rounding)
        for n, g in grads["reference"].items():
            assert torch.allclose(grads["planned"][n], g, rtol=1e-3, atol=1e-3), (name, scheme, runtime, n)
    else:  # the classifier's gradient needs nothing below it: exact under every option
        head = {p.name for layer in graph.layers if (layer.module or layer.name) == graph.classifier for p in layer.params}
        for n in head:
            assert torch.allclose(grads["planned"][n], grads["reference"][n], rtol=1e-3, atol=1e-3), (name, scheme, n)


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_corpus_macs_agree_with_flop_counters(name: str) -> None:
    model = build(name).eval()
    graph = trace_model(model, SHAPE, name)
    macs = annotate(graph, {}).totals["macs_fwd"]
    x = torch.randn(SHAPE)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    # torch counts 2 FLOPs per multiply-accumulate of convolutions and matrix products
    linear_maps = {"convolution", "addmm", "mm", "bmm"}
    flops = sum(v for op, v in counter.get_flop_counts()["Global"].items() if str(op).split(".")[-1] in linear_maps)
    assert macs == flops // 2, (name, macs, flops)
    fv = FlopCountAnalysis(model, x)
    fv.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    by_op = fv.by_operator()
    if "aten::_convolution_mode" in fv.unsupported_ops():  # fvcore skips convs padded "same"
        macs -= sum(ops.spec_of(layer).macs_fwd(layer) for layer in graph.layers if isinstance(layer.attrs.get("padding"), str))
    assert macs == sum(v for op, v in by_op.items() if op in ("conv", "linear", "addmm", "matmul", "einsum", "bmm")), (name, by_op)


def test_corpus_covers_every_spec() -> None:
    seen = set()
    for name in CORPUS:
        seen |= {layer.op for layer in trace_model(build(name), SHAPE, name).layers}
    assert ops.REGISTRY.kinds - seen == set(), "every op spec needs a model in the corpus"
    assert ops.UNSUPPORTED not in seen


def test_conv_subclasses_are_swapped_or_measured() -> None:
    # GIVEN a "same"-padding subclass (computes what Conv2d computes) and two convs with a forward
    # of their own (weight standardisation; reflect padding)
    graph = trace_model(build("subclass"), SHAPE, "subclass")
    by = graph.by_name
    # THEN the first is swapped by the runtime and takes every option; the others are measured
    assert ops.planned(by["stem"]) and "probe" not in by["stem"].attrs
    for name in ("std", "reflect"):
        assert not ops.planned(by[name]) and "probe" in by[name].attrs
        from tlplan.plan.options import LayerOptions

        assert "tlplan runtime cannot" in ops.option_problem(by[name], LayerOptions(weight=0.5), "tlplan")
        assert ops.option_problem(by[name], LayerOptions(weight=1.0, bias=True), "tlplan") is None
        assert all(o.weight in (0.0, 1.0) and not o.grad_filter for o in ops.spec_of(by[name]).choices(by[name], "tlplan"))


def test_functional_depthwise_reads_groups_from_the_call() -> None:
    graph = trace_model(build("functional"), SHAPE, "functional")
    dw = next(layer for layer in graph.layers if layer.op == "conv2d" and layer.attrs.get("groups") == 8)
    assert ops.spec_of(dw).macs_fwd(dw) == 2 * 8 * 8 * 8 * 9  # not C× more, as groups=1 would give
    assert [p.role for p in dw.params] == ["weight"]


def test_depthwise_multiplier_takes_no_partial_weight() -> None:
    from tlplan.plan.options import LayerOptions

    graph = trace_model(build("conv-zoo"), SHAPE, "conv-zoo")
    mult = graph.by_name["features.1.0"]
    assert "channel multiplier" in ops.option_problem(mult, LayerOptions(weight=0.5), "tlplan")
    assert "channel multiplier" in ops.option_problem(mult, LayerOptions(weight=1.0, grad_filter=2), "tlplan")
    dilated = graph.by_name["features.2.0"]
    assert "undilated" in ops.option_problem(dilated, LayerOptions(weight=1.0, grad_filter=2), "tlplan")
    assert ops.option_problem(dilated, LayerOptions(weight=0.5), "tlplan") is None


def test_conv_classifier_takes_every_scheme() -> None:
    graph = trace_model(build("squeezenet"), SHAPE, "squeezenet")
    assert graph.classifier == "classifier.1"
    last = scheme_options(graph, parse_scheme("last"))
    assert trainable_params(graph, last) == {"classifier.1.weight", "classifier.1.bias"}


def test_docs_list_of_supported_ops_is_generated_from_the_registry() -> None:
    from pathlib import Path

    from tlplan.ops.docs import supported_ops_markdown

    text = (Path(__file__).parent.parent / "docs" / "profile.md").read_text(encoding="utf-8")
    assert supported_ops_markdown() in text, "run: python -m tlplan.ops.docs docs/profile.md"


def test_a_user_registered_spec_is_recognised_and_costed() -> None:
    # GIVEN a user's op spec for nn.ELU, registered from outside tlplan
    import torch.nn as nn

    from tlplan.ops.activation import ActivationSpec
    from tlplan.plan.options import LayerOptions

    class ELUSpec(ActivationSpec):
        kind = "elu"
        summary = "ELU"
        modules = (nn.ELU,)

    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ELU(), nn.Flatten(), nn.Linear(4 * 14 * 14, 2))
    before = trace_model(model, SHAPE, "elu")
    assert before.by_name["1"].op == ops.UNSUPPORTED
    assert ops.option_problem(before.by_name["1"], LayerOptions(mask=True)) is not None
    ops.register(ELUSpec())
    try:
        graph = trace_model(model, SHAPE, "elu")
        options = scheme_options(graph, parse_scheme("full"))
        predicted = annotate(graph, options, "eager").totals["saved_bytes"]
        measured = measure_saved_bytes(model, SHAPE, trainable_params(graph, options)).saved_bytes
        assert graph.by_name["1"].op == "elu" and predicted == measured
    finally:
        ops.REGISTRY.unregister("elu")
