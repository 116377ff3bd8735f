"""The model zoo: plain-torch definitions (torchvision is not installable here) and model specs.

A model spec is either a zoo name (case-insensitive, ``_`` and ``-`` interchangeable) or
``package.module:factory``, where ``factory`` is any callable returning an ``nn.Module``. Besides
the names in :data:`ZOO`, ``mobilenet_v2-<width>`` names MobileNetV2 at each published width
multiplier (0.35, 0.5, 0.75, 1.0, 1.3, 1.4); ``mobilenet_v2-1.4`` is also listed in :data:`ZOO`.

Every zoo model carries two plain attributes used by the rest of tlplan:

* ``tlplan_blocks``: qualified module names (as in ``named_modules()``) of its blocks in forward
  order — residual / inverted-residual / Inception blocks, plus the final 1×1 head conv block
  when present; the stem is excluded;
* ``tlplan_classifier``: the qualified name of the final ``nn.Linear``.

Example:
    >>> from tlplan.zoo import load_model, default_resolution
    >>> model = load_model("resnet18", num_classes=10)
    >>> model.tlplan_classifier, default_resolution("resnet18")
    ('fc', 224)
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import re
from dataclasses import dataclass
from typing import Any, Callable, Optional

from torch import nn

from tlplan.errors import UnknownModelError, UntrustedModelError, arg
from tlplan.zoo.inception import MIN_RESOLUTION as INCEPTION_MIN_RESOLUTION
from tlplan.zoo.inception import inception_v3
from tlplan.zoo.mcu import mbv2_w035, mcunet_5fps, proxyless_w03
from tlplan.zoo.mobilenet import (
    MOBILENET_V2_WIDTHS,
    mobilenet_v2,
    mobilenet_v2_140,
    mobilenet_v2_width,
    mobilenet_v3_large,
    mobilenet_v3_small,
    proxylessnas_mobile,
)
from tlplan.zoo.resnet import resnet18, resnet34, resnet50

__all__ = [
    "ZOO", "ZooEntry", "default_resolution", "load_model", "mobilenet_v2_names", "zoo_names",
]

_SPEC_FORM = "package.module:factory"


@dataclass(frozen=True)
class ZooEntry:
    """One zoo model: its name, factory (takes ``num_classes``), input resolution, description,
    and the smallest input height / width it runs at (1: any)."""

    name: str
    factory: Callable[..., nn.Module]
    resolution: int
    description: str
    min_resolution: int = 1


ZOO: dict[str, ZooEntry] = {
    e.name: e
    for e in (
        ZooEntry("resnet18", resnet18, 224, "ResNet-18 (torchvision), 11.7M params, 1.81 GMACs"),
        ZooEntry("resnet34", resnet34, 224, "ResNet-34 (torchvision), 21.8M params, 3.66 GMACs"),
        ZooEntry(
            "resnet50", resnet50, 224, "ResNet-50 v1.5 (torchvision), 25.6M params, 4.09 GMACs"
        ),
        ZooEntry(
            "inception_v3", inception_v3, 299,
            "Inception v3 (torchvision, no aux classifier), 23.8M params, 5.71 GMACs",
            min_resolution=INCEPTION_MIN_RESOLUTION,
        ),
        ZooEntry(
            "mobilenet_v2", mobilenet_v2, 224,
            "MobileNetV2 (torchvision; width 1.0, others as mobilenet_v2-<width>), 3.5M params, "
            "0.30 GMACs",
        ),
        ZooEntry(
            "mobilenet_v2-1.4", mobilenet_v2_140, 224,
            "MobileNetV2-1.4 (TinyTL's Table 3 network), 6.1M params, 0.58 GMACs",
        ),
        ZooEntry(
            "mobilenet_v3_large", mobilenet_v3_large, 224,
            "MobileNetV3-Large (torchvision), 5.5M params, 0.22 GMACs",
        ),
        ZooEntry(
            "mobilenet_v3_small", mobilenet_v3_small, 224,
            "MobileNetV3-Small (torchvision), 2.5M params, 0.06 GMACs",
        ),
        ZooEntry(
            "proxylessnas_mobile", proxylessnas_mobile, 224,
            "ProxylessNAS-Mobile (TinyTL backbone), 4.1M params, 0.32 GMACs",
        ),
        ZooEntry(
            "mcunet-5fps", mcunet_5fps, 128,
            "MCUNet-5fps (tiny-training int8 graph, BN folded), 22.45 MMACs conv",
        ),
        ZooEntry(
            "mbv2-w0.35", mbv2_w035, 128,
            "MobileNetV2-w0.35 (tiny-training int8 graph, BN folded), 16.65 MMACs conv",
        ),
        ZooEntry(
            "proxyless-w0.3", proxyless_w03, 128,
            "ProxylessNAS-w0.3 (tiny-training int8 graph, BN folded), 18.62 MMACs conv",
        ),
    )
}


def zoo_names() -> list[str]:
    """The zoo's model names, in registry order."""
    return list(ZOO)


def _canonical(name: str) -> str:
    """``name`` as zoo names are compared: stripped, lower case, ``-`` read as ``_``."""
    return name.strip().lower().replace("-", "_")


_BY_CANONICAL: dict[str, ZooEntry] = {_canonical(n): e for n, e in ZOO.items()}
assert len(_BY_CANONICAL) == len(ZOO), "two zoo names differ only in case or _ / -"

#: ``mobilenet_v2-<width>`` (canonical form), the width a decimal number
_MOBILENET_V2_WIDTH = re.compile(r"mobilenet_v2_(\d+(?:\.\d*)?|\.\d+)")
_MOBILENET_V2_FORM = "mobilenet_v2-<width>"


def _mobilenet_v2_width_of(spec: str) -> Optional[float]:
    """The width of a ``mobilenet_v2-<width>`` spec (published or not), or None for other specs."""
    match = _MOBILENET_V2_WIDTH.fullmatch(_canonical(spec))
    return float(match.group(1)) if match else None


def mobilenet_v2_names() -> list[str]:
    """The ``mobilenet_v2-<width>`` names, one for each published width, narrowest first."""
    return [f"mobilenet_v2-{w}" for w in MOBILENET_V2_WIDTHS.values()]


def _width_entry(width: float) -> ZooEntry:
    name = f"mobilenet_v2-{MOBILENET_V2_WIDTHS[width]}"
    listed = ZOO.get(name)
    if listed is not None:
        return listed
    return ZooEntry(
        name, mobilenet_v2_width(width), 224, f"MobileNetV2 at width {MOBILENET_V2_WIDTHS[width]}"
    )


def _zoo_entry(spec: str) -> Optional[ZooEntry]:
    """The zoo entry for ``spec`` (case-insensitive; ``_`` and ``-`` interchangeable; the
    ``mobilenet_v2-<width>`` names at the published widths), or None."""
    entry = _BY_CANONICAL.get(_canonical(spec))
    if entry is not None:
        return entry
    width = _mobilenet_v2_width_of(spec)
    if width is not None and width in MOBILENET_V2_WIDTHS:
        return _width_entry(width)
    return None


def default_resolution(spec: str) -> Optional[int]:
    """The input resolution a zoo model is defined at (224, 299 or 128); None for a non-zoo spec."""
    entry = _zoo_entry(spec)
    return entry.resolution if entry is not None else None


def _accepts(fn: Callable[..., Any], name: str) -> bool:
    """Whether ``fn`` takes keyword argument ``name`` (explicitly or through ``**kwargs``)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(
        p.kind is inspect.Parameter.VAR_KEYWORD
        or (p.name == name and p.kind is not inspect.Parameter.POSITIONAL_ONLY)
        for p in params
    )


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _unknown_name(spec: str) -> UnknownModelError:
    names = zoo_names()
    widths = ", ".join(MOBILENET_V2_WIDTHS.values())
    width_form = f"{_MOBILENET_V2_FORM} for width {widths}"
    width = _mobilenet_v2_width_of(spec)
    if width is not None:  # a width nobody published: the nearest one, and the list
        nearest = min(MOBILENET_V2_WIDTHS, key=lambda w: (abs(w - width), w))
        return UnknownModelError(
            f"unknown model {spec!r}; did you mean mobilenet_v2-{MOBILENET_V2_WIDTHS[nearest]}? "
            f"(MobileNetV2 comes in the published widths {widths}, as {_MOBILENET_V2_FORM}; "
            f"zoo: {', '.join(names)}; or give {_SPEC_FORM})"
        )
    candidates = list(dict.fromkeys(names + mobilenet_v2_names()))
    close = difflib.get_close_matches(spec.strip().lower(), candidates, n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return UnknownModelError(
        f"unknown model {spec!r}{hint} (zoo: {', '.join(names)}; {width_form}; or give "
        f"{_SPEC_FORM})"
    )


def _resolve_factory(spec: str) -> Callable[..., Any]:
    """Import ``package.module`` and look up ``factory`` (dotted attribute paths allowed)."""
    if spec.count(":") != 1:
        raise UnknownModelError(
            f"malformed model spec {spec!r}: expected one ':' as in {_SPEC_FORM}"
        )
    module_name, attr_path = (part.strip() for part in spec.split(":"))
    if not module_name or not attr_path:
        missing = "module" if not module_name else "factory"
        raise UnknownModelError(
            f"malformed model spec {spec!r}: the {missing} part is empty; expected {_SPEC_FORM}"
        )
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise UnknownModelError(
            f"cannot import module {module_name!r} from model spec {spec!r} ({_one_line(exc)}); "
            f"expected {_SPEC_FORM} with an importable module"
        ) from exc
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # the user's module failed while importing (sys.exit too: never a success)
        raise UnknownModelError(
            f"importing module {module_name!r} from model spec {spec!r} failed: {_one_line(exc)}"
        ) from exc
    for part in attr_path.split("."):
        if not part or not hasattr(obj, part):
            raise UnknownModelError(
                f"module {module_name!r} has no attribute {attr_path!r} (model spec {spec!r}; "
                f"expected {_SPEC_FORM})"
            )
        obj = getattr(obj, part)
    if not callable(obj):
        raise UnknownModelError(
            f"{spec!r} is a {type(obj).__name__}, not callable; expected {_SPEC_FORM} naming a "
            "function or class that returns an nn.Module"
        )
    return obj


def require_trusted(spec: str) -> None:
    """Refuse a model spec from a file that would run code (anything but a zoo name)."""
    if _zoo_entry(spec) is None:
        raise UntrustedModelError(
            f"the model {spec.strip()!r} is code ({_SPEC_FORM}) named by a file, and tlplan runs model code "
            f"only when you name it yourself (command line, project settings) or with {arg('trust_model_code')}"
        )


def load_model(spec: str, num_classes: int = 1000, *, trust_code: bool = True, **kwargs: Any) -> nn.Module:
    """Build a model from a zoo name or a ``package.module:factory`` spec.

    Args:
        spec: a zoo name (case-insensitive, see :func:`zoo_names`; also ``mobilenet_v2-<width>``
            at a published width, see :func:`mobilenet_v2_names`) or ``package.module:factory``.
        num_classes: classifier width; passed to an external factory only if it accepts it.
        trust_code: whether a ``package.module:factory`` may be imported and called. Pass False
            for a spec read from a file the user did not write (a plan from a pull request): a
            zoo name is always allowed, code is refused with ``UntrustedModelError``.
        **kwargs: extra factory arguments (e.g. ``width_mult`` for ``mobilenet_v2``, any width;
            ``aux_logits=True`` for ``inception_v3``).

    Returns:
        The model (an ``nn.Module``).

    Raises:
        UnknownModelError: unknown zoo name (with suggestions), malformed spec, module not
            importable, attribute missing, factory not callable, failing, or not returning a
            module.

    Example:
        >>> load_model("mobilenet_v2", num_classes=10, width_mult=0.5).tlplan_classifier
        'classifier.1'
        >>> type(load_model("torch.nn:Identity")).__name__
        'Identity'
    """
    if not isinstance(spec, str) or not spec.strip():
        raise UnknownModelError(
            f"empty model spec {spec!r}: give a zoo name ({', '.join(zoo_names())}) or "
            f"{_SPEC_FORM}"
        )
    entry = _zoo_entry(spec)
    if entry is not None:
        factory: Callable[..., Any] = entry.factory
        call_kwargs: dict[str, Any] = {"num_classes": num_classes, **kwargs}
    elif ":" in spec:
        if not trust_code:
            require_trusted(spec)
        factory = _resolve_factory(spec.strip())
        call_kwargs = dict(kwargs)
        if _accepts(factory, "num_classes"):
            call_kwargs["num_classes"] = num_classes
    else:
        raise _unknown_name(spec)

    try:
        model = factory(**call_kwargs)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # sys.exit() in a factory is an error, never a success
        args = ", ".join(f"{k}={v!r}" for k, v in call_kwargs.items())
        raise UnknownModelError(
            f"model factory for {spec!r} failed when called with ({args}): {_one_line(exc)}"
        ) from exc
    if not isinstance(model, nn.Module):
        raise UnknownModelError(
            f"model factory for {spec!r} returned {type(model).__name__}, not an nn.Module; "
            f"expected {_SPEC_FORM} returning a torch.nn.Module"
        )
    return model
