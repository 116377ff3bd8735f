"""tlplan beside the TinyTL and gradient-filter papers' memory tables, under each paper's own convention.

- TinyTL (Cai et al., NeurIPS 2020), Table 2: ProxylessNAS-Mobile at 224x224, batch 8, the seven
  rows (FT-Last, TinyTL-B, TinyTL-L, TinyTL-L+B, TinyTL-L+B@320, FT-Norm+Last, FT-Full); and
  Figure 3's resolution sweep of the same methods (the memory of each point of its accuracy/memory
  curves). TinyTL's figure is model size (frozen weights 8-bit, trained 32-bit) plus its peak
  activation, computed by its released arithmetic: tlplan's ``memory.tinytl_bytes``
  (``tlplan.memory.tinytl``).
- TinyTL, Table 3: full fine-tuning of Inception-V3 (299x299), ResNet-50 and MobileNetV2-1.4 (224),
  and Inception-V3's FT-Norm+Last and FT-Last rows, batch 8, same convention.
- Gradient filtering (Yang et al., CVPR 2023), Table 2's memory rows: ImageNet 224x224, batch 1,
  fp32, the bytes kept of the trained convs' inputs only, last N convs trained exactly
  (tlplan ``layers:N``) or with patch 2 (``gradfilter:N:2``). The backward MACs beside them are
  tlplan's; the paper's FLOP rows were not available.

Like with like. TinyTL's figures are for *its* network, which differs from tlplan's zoo model in
three ways this script reproduces (docs/methods/tinytl.md gives the evidence):
- MB is 10^6 bytes (its training script prints ``memory_cost / 1e6``);
- the classifier is the Flowers-102 head (Table 2's caption: "the classifier head for Flowers is
  used"), 102 classes, not ImageNet's 1000;
- the network carries its lite residual branches in every row (pre-trained with them; frozen, at
  8 bits, where a row does not train them), in the blocks TinyTL's code puts them: every
  ProxylessNAS-Mobile block after the first, none in the first block or the final 1x1 conv
  (``feature_mix_layer``); kernel 5, or 3 in the last four blocks (at 224 tlplan's own rule gives
  those same kernels, so the branches are inserted once at 224 and kept at every resolution, as
  TinyTL's fixed rule does).

Columns: "tlplan" is ``memory.tinytl_bytes`` on that network (derived); "TinyTL code" is TinyTL's
released ``count_activation_size`` ported here with forward hooks on the same network (derived, an
independent check of the library's arithmetic); "zoo" is what ``tlplan profile proxylessnas_mobile
--scheme S`` prints on the stock model (1000 classes, no branches except in the lite rows, which
add one to every block). Every tlplan figure is derived, nothing measured; "paper" is published.

Run by hand: ``.venv/bin/python benchmarks/tinytl_tables.py`` (a few minutes on 2 cores).
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn

import tlplan
from tlplan import ops
from tlplan.costs.annotate import annotate
from tlplan.memory.timeline import simulate_peak
from tlplan.plan.schemes import LITE_CHILD, classifier_layers, parse_scheme, scheme_options, trainable_params
from tlplan.runtime.lite import insert_lite
from tlplan.trace import trace_model

MB = 10**6  # TinyTL's MB (its training script divides by 1e6)
KB = 2**10
FLOWERS = 102  # Table 2's classifier head
PAPER = "TinyTL, NeurIPS 2020 (proceedings version; arXiv 2007.11622)"

#: Table 2 (ProxylessNAS-Mobile, batch 8, Flowers head): (label, method, resolution, published MB)
TABLE2 = (
    ("FT-Last", "last", 224, 31),
    ("TinyTL-B", "bias", 224, 32),
    ("TinyTL-L", "lite", 224, 37),
    ("TinyTL-L+B", "lite+bias", 224, 37),
    ("TinyTL-L+B@320", "lite+bias", 320, 65),
    ("FT-Norm+Last", "norm+last", 224, 192),
    ("FT-Full", "full", 224, 391),
)
#: Figure 3 (Top-1 accuracy against training memory, ProxylessNAS-Mobile, batch 8): the memory
#: (MB) printed with each point, by method and input resolution (only the points whose memory the
#: figure's data gives)
FIGURE3 = {
    "full": {96: 87.2, 128: 140.5, 160: 208.7, 192: 292.4, 224: 390.8},
    "last": {224: 30.8, 256: 38.7, 288: 47.6, 320: 57.6},
    "norm+last": {160: 100.7, 192: 142.9, 224: 192.4, 256: 249.9, 320: 387.5},
    "bias": {160: 18.7, 192: 24.7, 224: 31.7, 256: 39.8, 288: 49.0, 320: 59.3},
    "lite": {160: 24.1, 192: 30.1, 224: 37.1, 256: 45.2, 288: 54.4, 320: 64.7},
    "lite+bias": {160: 24.2, 192: 30.1, 224: 37.1, 256: 45.2, 288: 54.4, 320: 64.7},
}
#: Figure 3's model sizes (MB), one per method (the network with its branches, Flowers head)
FIGURE3_MODEL = {"full": 18.98636, "last": 5.138576, "norm+last": 5.264432, "bias": 5.201504,
                 "lite": 10.587824, "lite+bias": 10.63352}
#: Table 3 (batch 8): (label, zoo model, resolution, scheme, published MB); NASNet-A Mobile (566 MB)
#: is not in tlplan's zoo
TABLE3 = (
    ("FT-Full I-V3", "inception_v3", 299, "full", 850),
    ("FT-Full R-50", "resnet50", 224, "full", 802),
    ("FT-Full M2-1.4", "mobilenet_v2-1.4", 224, "full", 644),
    ("FT-Norm+Last I-V3", "inception_v3", 299, "norm+last", 326),
    ("FT-Last I-V3", "inception_v3", 299, "last", 94),
)
#: gradient filtering, Table 2 memory rows: (model, N convs, KB kept exactly, KB kept with r=2), batch 1, 224
GRADFILTER = (("resnet18", 4, 490, 112), ("mobilenet_v2", 2, 245, 80))


# ---- TinyTL's network -----------------------------------------------------------------------------

def tinytl_blocks(model: nn.Module) -> list[str]:
    """The blocks TinyTL's code gives a lite residual branch: every block of ProxylessNAS-Mobile's
    ``blocks`` list after the first (its ``insert_lite_residual`` walks the block groups from the
    second block on); not the first block, not ``feature_mix_layer``."""
    return [f"blocks.{i}" for i in range(1, len(model.blocks))]


def tinytl_network(resolution: int = 224) -> nn.Module:
    """ProxylessNAS-Mobile as TinyTL's Table 2 counts it: Flowers head, branches in TinyTL's blocks
    (inserted at 224, where tlplan's kernel rule gives TinyTL's kernels, and kept at every resolution)."""
    model = tlplan.load_model("proxylessnas_mobile", num_classes=FLOWERS)
    return insert_lite(model, (1, 3, 224, 224), tinytl_blocks(model))


def _branch_layers(graph) -> list:
    return [l for l in graph.layers if l.block and l.module and l.module.startswith(f"{l.block}.{LITE_CHILD}.")]


def method_options(graph, method: str) -> dict:
    """Per-layer options of a Table 2 method on the network with branches. The scheme names apply
    as they are, except ``lite`` / ``lite+bias``: train the branches the network has (TinyTL's
    blocks), not one per block the model declares."""
    if method not in ("lite", "lite+bias"):
        return scheme_options(graph, parse_scheme(method))
    branch = {l.name for l in _branch_layers(graph)}
    with_bias = scheme_options(graph, parse_scheme("bias"))
    # the main path's 1-bit masks, as the bias scheme sets them (the branch's ReLU feeds a trained
    # conv that keeps its input anyway)
    options = {n: o for n, o in with_bias.items() if o.mask and n not in branch}
    options.update(with_bias if method == "lite+bias" else scheme_options(graph, parse_scheme("last")))
    for layer in graph.layers:
        if layer.name in branch:
            opts = ops.spec_of(layer).train_all(layer)
            if opts is not None:
                options[layer.name] = opts
    return options


def tlplan_figures(model: nn.Module, shape: tuple[int, ...], method: str, name: str = "net") -> dict:
    """tlplan's memory of ``method`` on ``model`` (tlplan runtime): TinyTL's figure and its parts."""
    graph = trace_model(model, shape, name)
    options = method_options(graph, method)
    m = simulate_peak(annotate(graph, options, "tlplan"))
    return {"tinytl": m.tinytl_bytes, "model": m.tinytl_bytes - m.tinytl_activation_bytes,
            "activation": m.tinytl_activation_bytes, "at": m.tinytl_peak_at, "timeline": m.activation_peak_bytes,
            "peak": m.peak_bytes, "trained": trainable_params(graph, options), "graph": graph}


# ---- TinyTL's released arithmetic, ported with forward hooks ---------------------------------------

def tinytl_code(model: nn.Module, shape: tuple[int, ...], trained: frozenset[str], classifier: str | None) -> float:
    """TinyTL's ``profile_memory_cost`` ported (bytes): leaf modules hooked in forward order, each
    adding ``its transient + kept so far + live residual input`` to the running peak, then its kept
    bytes; at batch 1, times the batch; plus the model at 8-bit frozen / 32-bit trained. The
    trained parameters come from tlplan's options (as requires_grad); ReLU masks count once anything
    beyond the classifier trains, as TinyTL's script sets ``require_backward``. Kept apart from the
    library (``tlplan.memory.tinytl``) so that each checks the other."""
    net = copy.deepcopy(model)
    for pname, param in net.named_parameters():
        param.requires_grad_(pname in trained)
    backward = any(not (classifier and p.startswith(classifier + ".")) for p in trained)
    state = {"peak": 0.0, "kept": 0.0, "residual": 0.0}

    def cost(m, x, y):
        n_in, n_out = x[0].numel(), y.numel()
        weight_trained = getattr(m, "weight", None) is not None and m.weight.requires_grad
        if isinstance(m, nn.Conv2d):
            return (4 * n_in if weight_trained else 0), 4 * n_in + (4 * n_out) // m.groups
        if isinstance(m, nn.Linear):
            return (4 * n_in if weight_trained else 0), 4 * (n_in + n_out)
        if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            return (4 * n_in if weight_trained else 0), 4 * n_in
        if isinstance(m, (nn.ReLU, nn.ReLU6, nn.LeakyReLU)):
            return (n_in / 8 if backward else 0), 4 * n_in
        if isinstance(m, (nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid, nn.Tanh)):
            return (4 * n_in if backward else 0), 4 * n_in
        return 0, 0

    def leaf(m, x, y):
        kept, transient = cost(m, x, y)
        state["peak"] = max(state["peak"], transient + state["kept"] + state["residual"])
        state["kept"] += kept

    def enter(m, args):
        state["residual"] = 4 * args[0].numel()

    def leave(m, args, out):
        state["residual"] = 0.0

    for m in net.modules():
        if not list(m.children()):
            m.register_forward_hook(leaf)
        if getattr(m, "use_res_connect", False) or type(m).__name__ in ("BasicBlock", "Bottleneck"):  # as TinyTL's code
            m.register_forward_pre_hook(enter)
            m.register_forward_hook(leave)
    net.eval()
    with torch.no_grad():
        net(torch.zeros((1, *shape[1:])))
    model_bytes = sum((4 if p.requires_grad else 1) * p.numel() for p in net.parameters())
    return state["peak"] * shape[0] + model_bytes


def zoo_figure(shape: tuple[int, ...], method: str) -> float:
    """What ``tlplan profile proxylessnas_mobile --scheme METHOD`` prints as TinyTL's convention (bytes)."""
    return tlplan.profile(tlplan.load_model("proxylessnas_mobile"), shape, scheme=method).memory.tinytl_bytes


# ---- the tables ---------------------------------------------------------------------------------------

def ratio(ours: float, paper: float | None) -> str:
    return "-" if paper is None else f"{ours / paper:.2f}"


def main(tables: tuple[str, ...] = ("2", "sweep", "3", "gradfilter")) -> None:
    printers = {"2": table2, "sweep": sweep, "3": table3, "gradfilter": gradfilter}
    for i, name in enumerate(tables):
        if i:
            print()
        printers[name]()


def table2() -> None:
    print(f"TinyTL Table 2: ProxylessNAS-Mobile, batch 8, Flowers head, branches in TinyTL's blocks; "
          f"TinyTL's convention, MB = 10^6 bytes (tlplan: derived; paper: published, {PAPER})")
    print(f"{'method':<15} {'scheme':<10} {'input':>5} {'paper MB':>9} {'tlplan MB':>10} {'ratio':>6} {'model MB':>9} "
          f"{'activation MB':>14} {'peak at':<34} {'TinyTL code MB':>15} {'zoo MB':>7}")
    nets = {}
    for label, method, res, paper in TABLE2:
        net = nets.setdefault(res, tinytl_network())
        shape = (8, 3, res, res)
        f = tlplan_figures(net, shape, method)
        code = tinytl_code(net, shape, f["trained"], f["graph"].classifier)
        zoo = zoo_figure(shape, method)
        print(f"{label:<15} {method:<10} {res:>5} {paper:>9} {f['tinytl'] / MB:>10.1f} {ratio(f['tinytl'] / MB, paper):>6} "
              f"{f['model'] / MB:>9.2f} {f['activation'] / MB:>14.1f} {f['at']:<34} {code / MB:>15.1f} {zoo / MB:>7.1f}")


def sweep() -> None:
    print("TinyTL Figure 3: the same network and methods at other input sizes, batch 8 (MB = 10^6 bytes; "
          "tlplan: derived; paper: the memory printed with each point)")
    resolutions = sorted({r for points in FIGURE3.values() for r in points})
    print(f"{'method':<10} {'model MB paper/tlplan':>22} " + " ".join(f"{r:>15}" for r in resolutions))
    nets = tinytl_network()
    for method, points in FIGURE3.items():
        cells, model = [], None
        for res in resolutions:
            if res not in points:
                cells.append(f"{'':>15}")
                continue
            f = tlplan_figures(nets, (8, 3, res, res), method)
            model = f["model"]
            cells.append(f"{points[res]:>5.1f}/{f['tinytl'] / MB:>5.1f} {f['tinytl'] / MB / points[res]:>4.2f}")
        model_cell = f"{FIGURE3_MODEL[method]:.2f}/{model / MB:.2f}"
        print(f"{method:<10} {model_cell:>22} " + " ".join(cells))
    print("(each cell: paper MB / tlplan MB, ratio)")


def table3() -> None:
    print(f"TinyTL Table 3: batch 8, Flowers head (102 classes); TinyTL's convention, MB = 10^6 bytes "
          f"(tlplan: derived; paper: published, {PAPER}); NASNet-A Mobile (566 MB) is not in the zoo")
    print(f"{'row':<18} {'network':<17} {'input':>5} {'paper MB':>9} {'tlplan MB':>10} {'ratio':>6} {'model MB':>9} "
          f"{'activation MB':>14} {'TinyTL code MB':>15}")
    for label, name, res, scheme, paper in TABLE3:
        net = tlplan.load_model(name, num_classes=FLOWERS)
        shape = (8, 3, res, res)
        f = tlplan_figures(net, shape, scheme, name)
        code = tinytl_code(net, shape, f["trained"], f["graph"].classifier)
        print(f"{label:<18} {name:<17} {res:>5} {paper:>9} {f['tinytl'] / MB:>10.1f} {ratio(f['tinytl'] / MB, paper):>6} "
              f"{f['model'] / MB:>9.1f} {f['activation'] / MB:>14.1f} {code / MB:>15.1f}")


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


def gradfilter() -> None:
    print("Gradient filtering Table 2 (memory rows): 224x224, batch 1, fp32, trained convs' inputs kept, KB = 1024 bytes "
          "(derived; paper: published); backward MACs derived")
    print(f"{'network':<14} {'scheme':<16} {'paper KB':>9} {'tlplan KB':>10} {'ratio':>6} {'MMACs bwd':>10}")
    for name, n, exact, filtered in GRADFILTER:
        graph = trace_model(tlplan.load_model(name), (1, 3, 224, 224), name)
        for scheme, paper in ((f"layers:{n}", exact), (f"gradfilter:{n}:2", filtered)):
            kept, macs = input_kept_bytes(graph, scheme)
            print(f"{name:<14} {scheme:<16} {paper:>9} {kept / KB:>10.1f} {ratio(kept / KB, paper):>6} {macs / 1e6:>10.1f}")


if __name__ == "__main__":
    import sys

    main(tuple(sys.argv[1:]) or ("2", "sweep", "3", "gradfilter"))
