"""Schemes: named presets of per-layer options (``full``, ``bias``, ``blocks:K``, ``mobiletl:K`` ...)."""

from __future__ import annotations

import difflib
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

from ..errors import SchemeError
from ..ops import is_conv, is_norm, is_weighted, option_problem, spec_of, trained_roles
from ..trace.graph import Layer, LayerGraph
from .options import LayerOptions

SCHEME_HELP = (
    "full, last (classifier only), bias (all biases + classifier), norm+last, blocks:K (last K blocks), "
    "mobiletl:K, layers:K (last K conv/linear layers, exact), gradfilter:K:R (last K convs, R×R patches, R >= 2; "
    "R = 0: no filter), sparse:FILE (a 256KB-paper backward_config), lite (TinyTL lite residual branches + classifier), "
    "lite+bias (also every bias), lite:K (branches in the last K blocks), or a plan file (plan.yaml)"
)
#: the scheme names, for did-you-mean suggestions
SCHEME_NAMES = ("full", "last", "bias", "norm+last", "blocks", "mobiletl", "layers", "gradfilter", "sparse", "lite", "lite+bias")
#: schemes that train TinyTL lite residual branches (the model gets them first: ``tlplan.runtime.lite``)
LITE_SCHEMES = ("lite", "lite+bias")
#: the child module a block's lite residual branch is registered as
LITE_CHILD = "lite_residual"


class SchemeWarning(UserWarning):
    """A scheme ran with less than it names: e.g. ``gradfilter:K:R`` training some of its convs
    exactly because R is larger than their output map."""


@dataclass(frozen=True)
class Scheme:
    kind: str  # full, last, bias, norm+last, blocks, mobiletl, layers, gradfilter, sparse, lite, lite+bias, plan
    k: int | None = None
    r: int | None = None
    path: str | None = None

    @property
    def text(self) -> str:
        if self.kind == "plan":
            return str(self.path)
        if self.kind == "sparse":
            return f"sparse:{self.path}"
        if self.kind == "gradfilter":
            return f"gradfilter:{self.k}:{self.r}"
        return f"{self.kind}:{self.k}" if self.k is not None else self.kind


def _whole(raw: str, part: str, what: str) -> int:
    try:
        value = int(part)
    except ValueError:
        raise SchemeError(f"scheme {raw!r}: {what} must be a whole number") from None
    if value < 0:
        raise SchemeError(f"scheme {raw!r}: {what} must be 0 or more")
    return value


def parse_scheme(text: str) -> Scheme:
    """Parse a scheme name; a bad one is a one-line SchemeError listing the valid forms."""
    raw = (text or "").strip()
    head, _, rest = raw.partition(":")
    head = head.lower()
    if head in ("full", "last", "bias", "norm+last") and not rest:
        return Scheme(head)
    if head in LITE_SCHEMES:
        if not rest and not _:
            return Scheme(head)
        if not rest:
            raise SchemeError(f"scheme {raw!r}: give the number of blocks, e.g. {head}:4 (branches in the last 4 blocks)")
        return Scheme(head, _whole(raw, rest, "K (blocks)"))
    if head in ("blocks", "mobiletl"):
        if not rest:
            raise SchemeError(f"scheme {raw!r}: give the number of blocks, e.g. {head}:4")
        return Scheme(head, _whole(raw, rest, "K (blocks)"))
    if head == "layers":
        if not rest:
            raise SchemeError(f"scheme {raw!r}: give the number of layers, e.g. layers:4 (the last 4 conv/linear layers)")
        return Scheme("layers", _whole(raw, rest, "K (layers)"))
    if head == "gradfilter":
        parts = rest.split(":")
        if len(parts) != 2:
            raise SchemeError(
                f"scheme {raw!r}: use gradfilter:K:R, e.g. gradfilter:4:2 (last 4 convs, 2×2 patches; R = 0: no filter)"
            )
        k, r = _whole(raw, parts[0], "K (convs)"), _whole(raw, parts[1], "R (patch)")
        if r == 1:
            raise SchemeError(
                f"scheme {raw!r}: patch size R must be 2 or more (a 1×1 patch filters nothing); "
                f"R = 0 trains the same convs exactly (gradfilter:{k}:0, like layers:{k})"
            )
        return Scheme("gradfilter", k, r)
    if head == "sparse":
        if not rest:
            raise SchemeError(f"scheme {raw!r}: give the backward_config file, e.g. sparse:config.yaml")
        return Scheme("sparse", path=rest)
    if raw.endswith((".yaml", ".yml")):
        if not Path(raw).is_file():
            raise SchemeError(f"plan file {raw!r} does not exist")
        return Scheme("plan", path=raw)
    close = difflib.get_close_matches(head, list(SCHEME_NAMES), n=1)
    hint = f"did you mean {close[0]}? " if close else ""
    raise SchemeError(f"unknown scheme {raw!r}; {hint}use {SCHEME_HELP}")


# ---- from a scheme to per-layer options -----------------------------------------------------------


def _has_bias(layer: Layer) -> bool:
    return layer.param("bias") is not None


def classifier_layers(graph: LayerGraph) -> list[Layer]:
    """The calls of the classifier (a module, or a functional layer by its name)."""
    if graph.classifier is None:
        return []
    return [layer for layer in graph.layers if (layer.module or layer.name) == graph.classifier]


def conv_layers(graph: LayerGraph) -> list[Layer]:
    """Convolutions in forward order (the 256KB paper's conv index; the classifier excluded)."""
    head = {layer.name for layer in classifier_layers(graph)}
    return [layer for layer in graph.layers if is_conv(layer) and layer.name not in head]


def weighted_layers(graph: LayerGraph) -> list[Layer]:
    """Conv and linear layers (transposed convs too) in forward order, the classifier excluded:
    what ``layers:K`` counts. On a CNN whose only linear layer is its classifier, ``conv_layers``."""
    head = {layer.name for layer in classifier_layers(graph)}
    return [layer for layer in graph.layers if is_weighted(layer) and layer.name not in head]


def _last(graph: LayerGraph, scheme: Scheme, layers: list[Layer], what: str) -> list[Layer]:
    """The last ``scheme.k`` of ``layers``; K beyond their number is a SchemeError saying how many there are."""
    if scheme.k > len(layers):
        raise SchemeError(f"scheme {scheme.text!r}: {graph.model_name} has {len(layers)} {what}; choose K from 0 to {len(layers)}")
    return layers[len(layers) - scheme.k :] if scheme.k else []


def _train_all(layer: Layer) -> LayerOptions | None:
    return spec_of(layer).train_all(layer)


def scheme_options(graph: LayerGraph, scheme: Scheme, notes: list[str] | None = None) -> dict[str, LayerOptions]:
    """Per-layer options of a scheme on this graph (layers left out are frozen).

    Where the scheme runs with less than it names (``gradfilter:K:R`` training a conv exactly that R
    cannot filter), a note says which layers and why: appended to ``notes`` when given (for a
    report's warnings), else a ``SchemeWarning``.
    """
    if scheme.kind == "plan":
        from .plan import load_plan
        from .validate import validate_options

        plan = load_plan(scheme.path)
        validate_options(graph, plan.layers, f"plan {scheme.path}")
        return dict(plan.layers)
    classifier = classifier_layers(graph)
    if scheme.kind != "full" and not classifier:
        raise SchemeError(
            f"scheme {scheme.text!r}: {graph.model_name} has no classifier to train (a Linear or conv layer "
            "producing the logits); use the scheme full"
        )
    options: dict[str, LayerOptions] = {}

    def train(layers: Iterable[Layer]) -> None:
        for layer in layers:
            opts = _train_all(layer)
            if opts is not None:
                options[layer.name] = opts

    if scheme.kind == "full":
        train(graph.layers)
    elif scheme.kind == "bias":
        for layer in graph.layers:
            opts = spec_of(layer).train_bias(layer)
            if opts is not None:
                options[layer.name] = opts
    elif scheme.kind == "norm+last":
        train(layer for layer in graph.layers if is_norm(layer))
    elif scheme.kind in ("blocks", "mobiletl"):
        top = _top_blocks(graph, scheme)
        in_top = [layer for layer in graph.layers if layer.block in top]
        train(in_top)
        if scheme.kind == "mobiletl":
            _mobiletl_norms(in_top, top, options)
    elif scheme.kind == "layers":  # the gradient-filter paper's "vanilla" baseline: exact gradients
        train(_last(graph, scheme, weighted_layers(graph), "conv and linear layers before the classifier"))
    elif scheme.kind == "gradfilter":
        fallbacks: dict[str, list[str]] = {}
        for layer in _last(graph, scheme, conv_layers(graph), "convolutions before the classifier"):
            exact = LayerOptions(weight=1.0, bias=_has_bias(layer))
            options[layer.name] = exact
            if not scheme.r:  # gradfilter:K:0: the same convs, no filter
                continue
            filtered = LayerOptions(weight=1.0, bias=_has_bias(layer), grad_filter=scheme.r)
            # a conv the runtime cannot filter (grouped, dilated, its own forward, a map smaller
            # than R) trains exactly, and a note says so
            # (a module called several times runs with one set of options: every call must take it)
            calls = [c for c in graph.layers if layer.module is not None and c.module == layer.module] or [layer]
            problem = next(filter(None, (option_problem(c, filtered, "tlplan") for c in calls)), None)
            if problem is None:
                options[layer.name] = filtered
            else:
                fallbacks.setdefault(_fallback_reason(layer, scheme.r, problem), []).append(layer.name)
        if fallbacks:
            _note(notes, _fallback_note(scheme, fallbacks))
    elif scheme.kind == "sparse":
        options.update(sparse_options(graph, load_backward_config(scheme.path)))
    elif scheme.kind in LITE_SCHEMES:
        if scheme.kind == "lite+bias":  # TinyTL-L+B: every bias too, as the bias scheme
            for layer in graph.layers:
                opts = spec_of(layer).train_bias(layer)
                if opts is not None:
                    options[layer.name] = opts
        train(lite_layers(graph, lite_blocks(graph, scheme), scheme))
    train(classifier)
    _same_for_every_call(graph, options)
    _masks(graph, options, surrogate=scheme.kind == "mobiletl")
    return options


def _fallback_reason(layer: Layer, r: int, problem: str) -> str:
    spec = spec_of(layer)
    if spec.filter_ok(layer) is None and spec.filter_size_problem(layer, r) is not None:
        h, w = layer.output_shape[-2:]
        return f"R = {r} is larger than the {h}×{w} output map"
    return problem


def _fallback_note(scheme: Scheme, fallbacks: Mapping[str, list[str]]) -> str:
    count = sum(len(names) for names in fallbacks.values())
    parts = []
    for reason, names in fallbacks.items():
        shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
        parts.append(f"{shown} ({reason})")
    return (f"scheme {scheme.text}: {count} of the last {scheme.k} convs train exactly, without a gradient filter: "
            + "; ".join(parts))


def _note(notes: list[str] | None, text: str) -> None:
    if notes is not None:
        notes.append(text)
    else:  # (stacklevel: the line that asked for the scheme's options)
        warnings.warn(text, SchemeWarning, stacklevel=3)


def _same_for_every_call(graph: LayerGraph, options: dict[str, LayerOptions]) -> None:
    """A module called several times (a shared block) runs with one set of options: the first
    call's that trains something, for every call."""
    calls: dict[str, list[Layer]] = {}
    for layer in graph.layers:
        if layer.module is not None:
            calls.setdefault(layer.module, []).append(layer)
    for layers in calls.values():
        chosen = next((options[l.name] for l in layers if options.get(l.name, LayerOptions()) != LayerOptions()), None)
        if chosen is not None and len(layers) > 1:
            for layer in layers:
                options[layer.name] = chosen


def lite_blocks(graph: LayerGraph, scheme: Scheme) -> list[str]:
    """The blocks a lite scheme puts branches in, in forward order: all, or the last K."""
    if not graph.blocks:
        raise SchemeError(f"scheme {scheme.text!r}: {graph.model_name} has no blocks to add lite residual branches to")
    if scheme.k is None:
        return list(graph.blocks)
    return [b for b in graph.blocks if b in _top_blocks(graph, scheme)]


def _in_branch(layer: Layer, block: str) -> bool:
    return layer.module is not None and layer.module.startswith(f"{block}.{LITE_CHILD}.")


def lite_layers(graph: LayerGraph, blocks: Iterable[str], scheme: Scheme | None = None) -> list[Layer]:
    """The layers of these blocks' lite residual branches; a block without one is a SchemeError."""
    blocks = list(blocks)
    layers = [layer for layer in graph.layers if any(_in_branch(layer, b) for b in blocks)]
    missing = [b for b in blocks if not any(_in_branch(layer, b) for layer in layers)]
    if missing:
        what = f"scheme {scheme.text!r}" if scheme is not None else "lite"
        raise SchemeError(
            f"{what}: block {missing[0]} of {graph.model_name} has no lite residual branch; insert the branches first "
            "(tlplan.runtime.lite.insert_lite; tlplan.plan_from_scheme, profile and compare do it on a copy)"
        )
    return layers


def _top_blocks(graph: LayerGraph, scheme: Scheme) -> set[str]:
    if scheme.k > len(graph.blocks):
        raise SchemeError(
            f"scheme {scheme.text!r}: {graph.model_name} has {len(graph.blocks)} blocks; choose K from 0 to {len(graph.blocks)}"
        )
    return set(graph.blocks[len(graph.blocks) - scheme.k :]) if scheme.k else set()


def _mobiletl_norms(in_top: list[Layer], top: set[str], options: dict[str, LayerOptions]) -> None:
    """MobileTL: the internal norms of a fine-tuned block train their shift only; the last one all."""
    for block in top:
        norms = [layer for layer in in_top if layer.block == block and is_norm(layer) and layer.params]
        for layer in norms[:-1]:
            options[layer.name] = LayerOptions(norm="shift")


def _masks(graph: LayerGraph, options: dict[str, LayerOptions], surrogate: bool) -> None:
    """ReLU and ReLU6 back-propagate from 1-bit masks (exact); h-swish only under MobileTL.

    A ReLU's exact backward keeps its output, which costs nothing extra when a consumer keeps that
    output anyway (a fully trained conv or linear reading it, a pooling): then it stays exact.
    """
    # a module called several times (ResNet's one ReLU per block) takes one setting for all calls
    calls: dict[str, list[Layer]] = {}
    for layer in graph.layers:
        calls.setdefault(layer.module or layer.name, []).append(layer)
    for layer in graph.layers:
        spec = spec_of(layer)
        if not spec.masks(layer, surrogate):
            continue
        if spec.keeps == "output" and all(_output_kept_by_consumer(graph, c, options) for c in calls[layer.module or layer.name]):
            continue
        options[layer.name] = LayerOptions(mask=True)


def _output_kept_by_consumer(graph: LayerGraph, layer: Layer, options: Mapping[str, LayerOptions]) -> bool:
    root = graph.storage_root(layer.name)
    for other in graph.layers:
        if not other.inputs or graph.storage_root(other.inputs[0]) != root:
            continue
        if spec_of(other).keeps_input(other, options.get(other.name)):
            return True
    return False


def trainable_params(graph: LayerGraph, options: Mapping[str, LayerOptions]) -> frozenset[str]:
    """Qualified names of the parameters the options train (all of a partially trained weight)."""
    names = set()
    for name, opts in options.items():
        layer = graph.by_name.get(name)
        if layer is None or opts is None:
            continue
        roles = trained_roles(layer, opts)
        names.update(p.name for p in layer.all_params if p.role in roles)
    return frozenset(names)


def options_for_params(graph: LayerGraph, names: Iterable[str]) -> dict[str, LayerOptions]:
    """Options that train exactly the named parameters (what ``requires_grad`` alone expresses)."""
    names = set(names)
    options = {}
    for layer in graph.layers:
        trained = {p.role for p in layer.all_params if p.name in names}
        if not trained:
            continue
        if is_norm(layer):
            options[layer.name] = LayerOptions(norm="affine" if "weight" in trained else "shift")
        elif spec_of(layer).train_all(layer) is not None:
            options[layer.name] = LayerOptions(weight=1.0 if "weight" in trained else 0.0, bias="bias" in trained)
    return options


# ---- the 256KB paper's backward_config: its own module (read and written verbatim) ----------------

from .backward_config import (  # noqa: E402  (it uses this module's conv_layers)
    BackwardConfig,
    export_backward_config,
    load_backward_config,
    sparse_options,
)
