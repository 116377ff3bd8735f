"""The 256KB paper's ``backward_config``, read and written as its training code has it.

The paper's code (tiny-training, ``algorithm/configs/default.yaml`` and
``core/utils/partial_backward.py``) reads these fields; every one is accepted here, with the
meaning that code gives it:

* ``enable_backward_config``: 0 means the config is ignored and the whole network trains;
* ``n_bias_update``: biases of the last N convs (a number, or ``all``);
* ``manual_weight_idx``: convs whose weight trains, by index in forward order (0 = the first
  conv, the classifier excluded), written ``21-24-27`` (the training code's form), a YAML list
  (the compiler's form), or one number; when it is null, ``n_weight_update`` (a number or ``all``)
  picks the last N convs instead;
* ``pw1_weight_only``: of those, keep only the expanding 1×1 convs;
* ``weight_update_ratio``: per listed conv, the share of its input channels trained (null: all;
  one number: the same for every conv; ``1-1-0.125`` or a list: one each). 0 trains no channel:
  that conv updates its bias only, as the paper's compiled configs use it. A whole number above 1
  is a channel count;
* ``weight_select_criteria``: ``magnitude+`` (largest input channels), ``magnitude-``, ``random``;
* ``quantize_gradient``, ``freeze_fc``, ``train_scale``: change how the gradient is computed or
  nothing at all, not what is kept: read, kept and written back as they were (``passthrough``).

A field the paper's config does not have is refused (a misspelt one would otherwise be silently
ignored); so is any value its code would refuse. A training config's other sections (``run_config``
...) are not read; ``backward_config_yaml`` writes the plan's optimizer there
(``run_config.optimizer_name``: ``sgd_scale_nomom`` for QAS).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

from ..errors import BadInputError, SchemeError
from ..fileio import load_yaml, read_text
from ..ops import is_norm, spec_of
from ..trace.graph import Layer, LayerGraph
from .options import LayerOptions

#: every field of the paper's backward_config, in its default.yaml's order
FIELDS = ("enable_backward_config", "n_bias_update", "n_weight_update", "weight_update_ratio", "weight_select_criteria",
          "pw1_weight_only", "manual_weight_idx", "quantize_gradient", "freeze_fc", "train_scale")
#: fields that change neither what is trained nor what is kept: passed through unchanged
PASSTHROUGH = ("quantize_gradient", "freeze_fc", "train_scale")
#: the paper's criteria → tlplan's ``select`` (the memory is the same for all: the channels' count)
CRITERIA = {"magnitude+": "magnitude", "magnitude-": "first", "random": "first", "magnitude": "magnitude", "first": "first"}


@dataclass(frozen=True)
class BackwardConfig:
    """A backward_config as read: its fields verbatim (``fields``) and where it came from."""

    fields: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    where: str = "backward_config"

    @property
    def passthrough(self) -> dict[str, Any]:
        """The fields that do not change memory, as given (written back by ``export_backward_config``)."""
        return {key: self.fields[key] for key in PASSTHROUGH if key in self.fields}

    def get(self, key: str, default: Any = None) -> Any:
        return self.fields.get(key, default)


@dataclass(frozen=True)
class Resolved:
    """What a config trains on one graph, by the paper's rules."""

    full: bool  # enable_backward_config is 0: everything trains
    n_bias: int
    weights: tuple[tuple[int, float], ...]  # (conv index, share of input channels); 0: bias only
    select: str  # tlplan's select


def load_backward_config(path: str | Path) -> BackwardConfig:
    """Read a backward_config file (safe YAML): a ``backward_config:`` section of a training config,
    or its fields at the top level. Bad files: a one-line SchemeError."""
    path = Path(path)
    where = f"backward_config {path}"
    try:
        data = load_yaml(read_text(path, "backward_config"), where)
    except BadInputError as exc:
        raise SchemeError(str(exc)) from None
    if isinstance(data, dict) and "backward_config" in data:
        data = data["backward_config"]
    elif isinstance(data, dict) and not set(data) & set(FIELDS) and data:
        raise SchemeError(f"{where}: no backward_config section and none of its fields (n_bias_update, manual_weight_idx, ...)")
    if not isinstance(data, dict):
        raise SchemeError(f"{where}: expected a mapping with n_bias_update, manual_weight_idx, weight_update_ratio")
    unknown = sorted(str(k) for k in set(data) - set(FIELDS))
    if unknown:
        raise SchemeError(f"{where}: unknown field(s) {', '.join(unknown)}; a backward_config has {', '.join(FIELDS)}")
    return BackwardConfig(MappingProxyType(dict(data)), where)


def _config(config: BackwardConfig | Mapping[str, Any]) -> BackwardConfig:
    if isinstance(config, BackwardConfig):
        return config
    data = dict(config)
    where = data.pop("_where", "backward_config")
    return BackwardConfig(MappingProxyType(data), where)


def _flag(value: Any, key: str, where: str) -> bool:
    if value is None or (isinstance(value, (bool, int)) and value in (0, 1)):
        return bool(value)
    raise SchemeError(f"{where}: {key} must be 0 or 1, not {value!r}")


def _count(value: Any, key: str, where: str, most: int) -> int:
    if value == "all":
        return most
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= most:
        raise SchemeError(f"{where}: {key} must be a whole number from 0 to {most} (the model's convs) or all, not {value!r}")
    return value


def _numbers(value: Any, key: str, where: str, kind: type) -> list:
    """A dash-joined string (``21-24-27``, the training code's form), a list, or one number."""
    if isinstance(value, str):
        parts = value.split("-")
    elif isinstance(value, list):
        parts = value
    else:
        parts = [value]
    out = []
    for part in parts:
        try:
            if isinstance(part, bool) or not isinstance(part, (int, float, str)):
                raise ValueError
            number = float(part) if kind is float else int(part)
            if kind is int and isinstance(part, float) and part != number:
                raise ValueError
        except (TypeError, ValueError, OverflowError):
            raise SchemeError(f"{where}: {key} {value!r}: expected {'numbers' if kind is float else 'whole numbers'} "
                              "joined by '-' (e.g. 21-24-27) or a list") from None
        out.append(number)
    return out


def _is_pw1(layer: Layer) -> bool:
    """The paper's "first pointwise conv" of a block: 1×1 and widening."""
    kernel = layer.attrs.get("kernel_size", (1, 1))
    kernel = tuple(kernel) if isinstance(kernel, (list, tuple)) else (kernel, kernel)
    return kernel == (1, 1) and layer.output_shape[1] > layer.input_shapes[0][1]


def resolve(graph: LayerGraph, config: BackwardConfig | Mapping[str, Any]) -> Resolved:
    """What ``config`` trains on ``graph``, by the rules of the paper's training code."""
    from .schemes import conv_layers

    config = _config(config)
    where = config.where
    convs = conv_layers(graph)
    n_conv = len(convs)
    select_text = config.get("weight_select_criteria", "magnitude+")
    if not isinstance(select_text, str) or select_text not in CRITERIA:
        raise SchemeError(f"{where}: weight_select_criteria must be magnitude+, magnitude- or random, not {select_text!r}")
    select = CRITERIA[select_text]
    for key in ("quantize_gradient", "freeze_fc", "train_scale", "pw1_weight_only"):
        _flag(config.get(key), key, where)
    enabled = config.get("enable_backward_config", 1)
    if not _flag(1 if enabled is None else enabled, "enable_backward_config", where):
        # the paper's trainer ignores the rest: a full update
        return Resolved(True, n_conv, tuple((i, 1.0) for i in range(n_conv)), select)
    n_bias = _count(config.get("n_bias_update", 0), "n_bias_update", where, n_conv)
    idx_given = config.get("manual_weight_idx")
    if idx_given is not None:
        idx = _numbers(idx_given, "manual_weight_idx", where, int)
    else:
        n_weight = config.get("n_weight_update")
        n_weight = 0 if n_weight is None else _count(n_weight, "n_weight_update", where, n_bias if n_weight == "all" else n_conv)
        idx = sorted(n_conv - 1 - i for i in range(n_weight))
    for i in idx:
        if not 0 <= i < n_conv:
            raise SchemeError(f"{where}: manual_weight_idx {i!r} is out of range: the model has convs 0 to {n_conv - 1}")
    if _flag(config.get("pw1_weight_only"), "pw1_weight_only", where):
        idx = [i for i in idx if _is_pw1(convs[i])]
    if sorted(idx) != idx or len(set(idx)) != len(idx):
        raise SchemeError(f"{where}: manual_weight_idx {idx_given!r} must list convs in forward order, each once")
    first_biased = n_conv - n_bias
    outside = [i for i in idx if i < first_biased]
    if outside:
        raise SchemeError(f"{where}: conv {outside[0]} updates its weight but not its bias: n_bias_update {n_bias} "
                          f"covers convs {first_biased} to {n_conv - 1} (the paper's code requires both)")
    ratios_given = config.get("weight_update_ratio")
    if ratios_given is None:
        ratios = [1.0] * len(idx)
    elif isinstance(ratios_given, (int, float)) and not isinstance(ratios_given, bool):
        ratios = [float(ratios_given)] * len(idx)
    else:
        ratios = _numbers(ratios_given, "weight_update_ratio", where, float)
        if len(ratios) != len(idx):
            raise SchemeError(f"{where}: weight_update_ratio has {len(ratios)} entries for {len(idx)} manual_weight_idx")
    weights = []
    for i, ratio in zip(idx, ratios):
        c_in = convs[i].input_shapes[0][1]
        if 0 <= ratio <= 1:
            share = ratio
        elif ratio > 1 and ratio == int(ratio) and ratio <= c_in:  # a channel count
            share = ratio / c_in
        else:
            raise SchemeError(f"{where}: weight_update_ratio {ratio:g} for conv {i} is outside [0, 1] "
                              f"(0: bias only) and not a channel count up to its {c_in} input channels")
        weights.append((i, float(share)))
    return Resolved(False, n_bias, tuple(weights), select)


def _has_bias(layer: Layer) -> bool:
    return layer.param("bias") is not None


def sparse_options(graph: LayerGraph, config: BackwardConfig | Mapping[str, Any]) -> dict[str, LayerOptions]:
    """Per-layer options of a backward_config: biases of the last n convs, chosen weights at
    channel shares (0: bias only). The classifier is the caller's (it always trains)."""
    from .schemes import conv_layers

    resolved = resolve(graph, config)
    convs = conv_layers(graph)
    options: dict[str, LayerOptions] = {}
    if resolved.full:
        for layer in graph.layers:
            opts = spec_of(layer).train_all(layer)
            if opts is not None:
                options[layer.name] = opts
        return options
    for layer in convs[len(convs) - resolved.n_bias:] if resolved.n_bias else []:
        options[layer.name] = LayerOptions(bias=_has_bias(layer))
        if not _has_bias(layer):  # a conv without a bias: its norm's shift plays that part
            follower = next((c for c in graph.consumers(layer.name)), None)
            if follower and is_norm(graph.by_name[follower]):
                options[follower] = LayerOptions(norm="shift")
    for i, share in resolved.weights:
        layer = convs[i]
        if share == 0:  # no channel trained: the bias only, as the paper's code does with a ratio of 0
            continue
        prev = options.get(layer.name, LayerOptions())
        options[layer.name] = LayerOptions(weight=share, select=resolved.select, bias=prev.bias)
    return options


def export_backward_config(graph: LayerGraph, options: Mapping[str, LayerOptions],
                           passthrough: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The paper's ``backward_config`` of a plan, in the form its training code reads.

    ``manual_weight_idx`` and ``weight_update_ratio`` are dash-joined strings (``21-24-27``,
    ``1-1-0.125``): the training code splits them on ``-`` (a YAML list it would refuse). The
    plan must have that form: biases of a run of convs ending at the last one, weights of chosen
    convs at input channel shares, the classifier; no norm, gradient-filter or h-swish options (ReLU
    masks are exact, so they do not count). ``passthrough``: fields that do not change memory
    (``BackwardConfig.passthrough``), written as given; the rest take the paper's defaults.
    """
    from .schemes import classifier_layers, conv_layers

    convs = conv_layers(graph)
    classifier = {layer.name for layer in classifier_layers(graph)}
    index = {layer.name: i for i, layer in enumerate(convs)}
    for name, opts in options.items():
        layer = graph.by_name.get(name)
        if layer is None or name in classifier or (opts.mask and spec_of(layer).mask == "exact"):
            continue
        if opts.norm != "frozen" or opts.grad_filter or opts.mask or name not in index:
            raise SchemeError(
                f"layer {name!r} uses an option a backward_config cannot say ({layer.op}); "
                "only conv biases and conv weights at channel ratios export"
            )
    biased = [i for name, i in index.items() if options.get(name, LayerOptions()).bias]
    weights = sorted((i, options[name]) for name, i in index.items() if options.get(name, LayerOptions()).weight > 0)
    n_bias = len(convs) - min(biased + [i for i, _ in weights], default=len(convs))
    if sorted(biased) != list(range(len(convs) - len(biased), len(convs))) or (weights and len(biased) != n_bias):
        raise SchemeError("the plan's trained biases are not the last convs in a row (with every trained weight's); "
                          "a backward_config cannot say that")
    selects = {opts.select for _, opts in weights}
    extra = dict(passthrough or {})
    unknown = set(extra) - set(PASSTHROUGH)
    if unknown:
        raise SchemeError(f"passthrough field(s) {', '.join(sorted(unknown))}: only {', '.join(PASSTHROUGH)} pass through")
    return {
        "enable_backward_config": 1,
        "n_bias_update": n_bias,
        # with manual_weight_idx given the paper's code does not read it; 0 says "none beyond the list"
        "n_weight_update": 0 if weights else None,
        "weight_update_ratio": "-".join(_ratio_text(opts.weight) for _, opts in weights) if weights else None,
        "weight_select_criteria": "magnitude+" if selects <= {"magnitude"} else "random",
        "pw1_weight_only": 0,
        "manual_weight_idx": "-".join(str(i) for i, _ in weights) if weights else None,
        "quantize_gradient": extra.get("quantize_gradient", 0),
        "freeze_fc": extra.get("freeze_fc", 0),
        "train_scale": extra.get("train_scale", 0),
    }


def _ratio_text(share: float) -> str:
    """A share as the training code parses it (``float``): ``1``, ``0.125``; exact to 12 digits."""
    return format(share, ".12g")


def backward_config_yaml(config: Mapping[str, Any], optimizer: Any = None) -> str:
    """The text of a backward_config file: the fields under ``backward_config:``, as the paper's
    training code loads a config (``configs/transfer.yaml`` merged over ``default.yaml``).

    ``optimizer`` (a plan's ``Optimizer``): also ``run_config.optimizer_name``, the name the
    paper's ``build_optimizer`` knows it by (``optimizer_name``): QAS is ``sgd_scale_nomom``."""
    import yaml

    data: dict[str, Any] = {"backward_config": dict(config)}
    if optimizer is not None:
        data["run_config"] = {"optimizer_name": optimizer_name(optimizer)}
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)


def optimizer_name(optimizer: Any) -> str:
    """A plan's optimizer as the paper's training code names it (``core/optimizer/optimizer_entry.py``):
    ``sgd_scale_nomom`` (QAS), ``sgd_nomom``, ``sgd`` (its momentum is 0.9), ``adam``."""
    if optimizer.name == "qas":
        return "sgd_scale_nomom"
    if optimizer.name == "adam":
        return "adam"
    if optimizer.momentum and optimizer.momentum != 0.9:
        raise SchemeError(f"SGD with momentum {optimizer.momentum:g}: the paper's training code has SGD with momentum 0.9 "
                          "or none (sgd, sgd_nomom)")
    return "sgd" if optimizer.momentum else "sgd_nomom"


__all__ = ["FIELDS", "PASSTHROUGH", "BackwardConfig", "Resolved", "backward_config_yaml", "export_backward_config",
           "load_backward_config", "optimizer_name", "resolve", "sparse_options"]
