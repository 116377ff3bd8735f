"""tlplan beside the TinyTL and gradient-filter papers' memory tables, under each paper's own convention.

- TinyTL (Cai et al., NeurIPS 2020), Table 2: ProxylessNAS-Mobile at 224x224, batch 8, one row per
  method. TinyTL reports training memory as model size (frozen weights 8-bit, trained 32-bit) plus
  peak activation: tlplan's ``memory.tinytl_bytes``, derived from its simulated timeline on the
  tlplan runtime (1-bit ReLU masks, as TinyTL counts them).
- TinyTL, Table 3: full fine-tuning of ResNet-50 and MobileNetV2-1.4 at 224, Inception-V3 at 299,
  batch 8, same convention. The paper's figures for these rows were not available when this was
  written (the column says so); tlplan's are printed so that they can be set beside them.
- Gradient filtering (Yang et al., CVPR 2023), Table 2's memory rows: ImageNet 224x224, batch 1,
  fp32, the bytes kept of the trained convs' inputs only, last N convs trained exactly
  (tlplan ``layers:N``) or with patch 2 (``gradfilter:N:2``). The backward MACs beside them are
  tlplan's; the paper's FLOP rows were not available either.

Run by hand: ``.venv/bin/python benchmarks/tinytl_tables.py`` (a few minutes). Every tlplan
figure is derived (counted from shapes and tlplan's rules), none measured; "paper" is published;
"TinyTL code" is TinyTL's released memory arithmetic ported here, run on the same network
(derived), to show where tlplan's timeline and that arithmetic part.
"""

from __future__ import annotations

import tlplan
from tlplan.costs.annotate import annotate
from tlplan.plan.schemes import classifier_layers, parse_scheme, scheme_options
from tlplan.trace import trace_model

MB = 2**20
KB = 2**10
#: TinyTL Table 2, ProxylessNAS-Mobile at 224, batch 8 (MB, as published)
#: (lite: TinyTL-L, lite+bias: TinyTL-L+B; tlplan puts a branch in every block the model declares)
TABLE2 = {"full": 391, "last": 31, "bias": 32, "norm+last": 192, "lite": 37, "lite+bias": 37}
#: TinyTL Table 3: full fine-tuning, batch 8 (model, resolution, published MB or None where not at hand)
TABLE3 = (("resnet50", 224, None), ("mobilenet_v2-1.4", 224, None), ("inception_v3", 299, None))
#: gradient filtering, Table 2 memory rows: (model, N convs, KB kept exactly, KB kept with r=2), batch 1, 224
GRADFILTER = (("resnet18", 4, 490, 112), ("mobilenet_v2", 2, 245, 80))


def tinytl_row(model, shape: tuple[int, ...], scheme: str):
    """TinyTL's figure (MB), its model and activation parts, and tlplan's own predicted peak (MB)."""
    m = tlplan.profile(model, shape, scheme=scheme).memory
    return m.tinytl_bytes / MB, (m.tinytl_bytes - m.activation_peak_bytes) / MB, m.activation_peak_bytes / MB, m.peak_bytes / MB


def tinytl_arithmetic(model, shape: tuple[int, ...], scheme: str) -> float:
    """TinyTL's own code's figure (MB), for the schemes that add no branch: its
    ``count_activation_size`` ported (per leaf layer: its input plus its output over the conv's
    groups, integer bytes; plus what is kept so far and a live residual input; at batch 1) times
    the batch, plus the model at 8-bit frozen / 32-bit trained parameters. Derived, to show where
    tlplan's timeline and that arithmetic part."""
    import copy

    import torch
    import torch.nn as nn

    from tlplan.plan.schemes import trainable_params

    net = copy.deepcopy(model)
    graph = trace_model(net, shape, "m")
    trained = trainable_params(graph, scheme_options(graph, parse_scheme(scheme)))
    for name, param in net.named_parameters():
        param.requires_grad_(name in trained)
    backward = scheme != "last"  # the classifier alone: no gradient passes a ReLU
    state = {"peak": 0.0, "kept": 0.0, "residual": 0.0}

    def cost(m, x, y):
        n_in, n_out = x[0].numel(), y.numel()
        weight_trained = getattr(m, "weight", None) is not None and m.weight.requires_grad
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            groups = getattr(m, "groups", 1)
            return (4 * n_in if weight_trained else 0), 4 * n_in + n_out * (4 // groups)
        if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            return (4 * n_in if weight_trained else 0), 4 * n_in
        if isinstance(m, (nn.ReLU, nn.ReLU6)):
            return (n_in / 8 if backward else 0), 4 * n_in
        if isinstance(m, (nn.Hardswish, nn.Sigmoid, nn.SiLU)):
            return (4 * n_in if backward else 0), 4 * n_in
        return None

    def leaf_hook(m, x, y):
        found = cost(m, x, y)
        if found is not None:
            kept, transient = found
            state["peak"] = max(state["peak"], transient + state["kept"] + state["residual"])
            state["kept"] += kept

    def enter(m, args):
        state["residual"] = 4 * args[0].numel()

    def leave(m, args, out):
        state["residual"] = 0.0

    for m in net.modules():
        if not list(m.children()):
            m.register_forward_hook(leaf_hook)
        if getattr(m, "use_res_connect", False) or type(m).__name__ in ("BasicBlock", "Bottleneck"):  # as TinyTL's code
            m.register_forward_pre_hook(enter)
            m.register_forward_hook(leave)
    net.eval()
    with torch.no_grad():
        net(torch.zeros((1, *shape[1:])))
    model_bytes = sum((4 if p.requires_grad else 1) * p.numel() for p in net.parameters())
    return (state["peak"] * shape[0] + model_bytes) / MB


def input_kept_bytes(graph, scheme: str) -> tuple[int, int]:
    """Bytes kept of the inputs of the convs whose weights ``scheme`` trains (masks aside; the
    classifier aside), and the backward MACs of the whole step: the paper's memory figure counts
    only those inputs."""
    costs = annotate(graph, scheme_options(graph, parse_scheme(scheme)), "tlplan")
    heads = {layer.name for layer in classifier_layers(graph)}  # trained by every scheme; the paper counts convs
    kept = 0
    for layer, cost in zip(graph.layers, costs.layers):
        if "weight" not in cost.state.trained or layer.name in heads:
            continue
        kept += sum(t.private_bytes if t.value is None else graph.value_bytes(t.value) for t in cost.saved if t.what != "mask")
    return kept, costs.totals["macs_bwd"]


def ratio(ours: float, paper: float | None) -> str:
    return "-" if paper is None else f"{ours / paper:.2f}"


def main(tables: tuple[str, ...] = ("2", "3", "gradfilter")) -> None:
    if "2" in tables:
        table2()
    if "3" in tables:
        print()
        table3()
    if "gradfilter" in tables:
        print()
        gradfilter()


def table2() -> None:
    print("TinyTL Table 2: ProxylessNAS-Mobile, 224x224, batch 8; TinyTL's convention (derived; paper: published)")
    print(f"{'method':<12} {'paper MB':>9} {'tlplan MB':>10} {'ratio':>6} {'model MB':>9} {'activation MB':>14} "
          f"{'tlplan peak MB':>15} {'TinyTL code MB':>15}")
    model = tlplan.load_model("proxylessnas_mobile")
    for scheme, paper in TABLE2.items():
        ours, size, act, peak = tinytl_row(model, (8, 3, 224, 224), scheme)
        code = "-" if scheme.startswith("lite") else f"{tinytl_arithmetic(model, (8, 3, 224, 224), scheme):.1f}"
        print(f"{scheme:<12} {paper:>9} {ours:>10.1f} {ratio(ours, paper):>6} {size:>9.1f} {act:>14.1f} {peak:>15.1f} {code:>15}")


def table3() -> None:
    print("TinyTL Table 3: full fine-tuning, batch 8; TinyTL's convention (derived; paper: published, '-' not at hand)")
    print(f"{'network':<18} {'input':>5} {'paper MB':>9} {'tlplan MB':>10} {'ratio':>6} {'model MB':>9} {'activation MB':>14} "
          f"{'tlplan peak MB':>15} {'TinyTL code MB':>15}")
    for name, res, paper in TABLE3:
        net = tlplan.load_model(name)
        ours, size, act, peak = tinytl_row(net, (8, 3, res, res), "full")
        code = tinytl_arithmetic(net, (8, 3, res, res), "full")
        print(f"{name:<18} {res:>5} {'-' if paper is None else paper:>9} {ours:>10.1f} {ratio(ours, paper):>6} {size:>9.1f} "
              f"{act:>14.1f} {peak:>15.1f} {code:>15.1f}")


def gradfilter() -> None:
    print("Gradient filtering Table 2 (memory rows): 224x224, batch 1, fp32, trained convs' inputs kept "
          "(derived; paper: published); backward MACs derived")
    print(f"{'network':<14} {'scheme':<16} {'paper KB':>9} {'tlplan KB':>10} {'ratio':>6} {'MMACs bwd':>10}")
    for name, n, exact, filtered in GRADFILTER:
        graph = trace_model(tlplan.load_model(name), (1, 3, 224, 224), name)
        for scheme, paper in ((f"layers:{n}", exact), (f"gradfilter:{n}:2", filtered)):
            kept, macs = input_kept_bytes(graph, scheme)
            print(f"{name:<14} {scheme:<16} {paper:>9} {kept / KB:>10.1f} {ratio(kept / KB, paper):>6} {macs / 1e6:>10.1f}")


if __name__ == "__main__":
    main()
