"""The plan: what to train in each layer, for which model, input and runtime. A versioned YAML file."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

import yaml

from ..display import Tabular, clip, shape_text, size
from ..errors import BadInputError
from ..fileio import load_yaml, read_text, write_atomic
from .lite import LiteConfig
from .options import LayerOptions

PLAN_VERSION = 1
RUNTIMES = ("eager", "tlplan", "mcu")
PRECISIONS = ("fp32", "fp16", "int8")
OPTIMIZERS = ("sgd", "adam", "qas")


@dataclass(frozen=True)
class Optimizer:
    """The optimizer a plan trains with. ``qas``: the 256KB paper's quantization-aware scaling,
    SGD without momentum whose gradient of each tensor is scaled by the inverse square of that
    tensor's quantization scale (``tlplan.runtime.qas.QAS``); no state beyond the gradient."""

    name: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.0
    weight_decay: float = 0.0
    #: operator reordering (the 256KB paper's): each weight gradient applied as soon as it is
    #: computed, not kept until the step's update. None: the runtime's default (on for mcu, the
    #: one runtime that can do it; PyTorch keeps every gradient until ``optimizer.step``)
    reorder: bool | None = None

    def __post_init__(self) -> None:
        problem = self.problem()
        if problem:
            raise BadInputError(problem)

    def problem(self) -> str | None:
        """Why this optimizer makes no sense (None: it does)."""
        if self.name not in OPTIMIZERS:
            return f"optimizer {self.name!r}; use one of {', '.join(OPTIMIZERS)}"
        if self.name == "qas" and self.momentum:
            return (f"optimizer qas with momentum {self.momentum:g}: quantization-aware scaling is SGD without "
                    "momentum (the 256KB paper's sgd_scale_nomom); use momentum 0 or the sgd optimizer")
        return None

    def reorders(self, runtime: str) -> bool:
        """Whether gradients are applied as computed on ``runtime``."""
        return runtime == "mcu" if self.reorder is None else self.reorder

    @property
    def state_slots(self) -> int:
        """Optimizer state tensors kept per trained parameter (momentum buffer; Adam's two moments;
        none for QAS: its per-tensor scale is the quantized model's own, one number a tensor)."""
        if self.name == "adam":
            return 2
        return 1 if self.momentum else 0


#: the optimizers a command line names: their state counts in the memory a plan needs
OPTIMIZER_PRESETS = {"sgd": Optimizer(), "momentum": Optimizer("sgd", 0.01, 0.9), "adam": Optimizer("adam", 0.001),
                     "qas": Optimizer("qas", 0.01)}


@dataclass(frozen=True, repr=False)  # repr: a line (Tabular's), not every layer's options
class Plan(Tabular):
    """What to train, layer by layer. ``layers`` lists only layers whose options are not frozen.

    In a notebook it shows as a table of those layers' options; ``to_dataframe()``: one row per layer.
    """

    model: str
    input_shape: tuple[int, ...]
    layers: Mapping[str, LayerOptions]
    runtime: str = "tlplan"
    precision: str = "fp32"
    optimizer: Optimizer = Optimizer()
    scheme: str | None = None  # the preset it came from, if any
    num_classes: int = 1000
    budget_bytes: int | None = None
    device: str | None = None
    predicted: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    #: output shape of every layer the plan sets options for, as traced when it was made
    shapes: Mapping[str, tuple[int, ...]] = field(default_factory=lambda: MappingProxyType({}))
    version: int = PLAN_VERSION
    #: TinyTL lite residual branches the plan's model has, by block (``lite``, ``lite+bias``, ``lite:K``);
    #: whoever builds the model for the plan inserts them (``tlplan.runtime.lite.insert_lite``)
    lite: Mapping[str, LiteConfig] = field(default_factory=lambda: MappingProxyType({}))
    #: bits the memory model counts each frozen parameter at: 8 (TinyTL's quantised frozen weights)
    #: or 32; None: the runtime's own (32 on eager and tlplan, 8 on mcu). ``frozen_bits_in_effect``
    frozen_bits: int | None = None

    @property
    def frozen_bits_in_effect(self) -> int:
        from ..costs.annotate import default_frozen_bits

        return self.frozen_bits if self.frozen_bits is not None else default_frozen_bits(self.runtime)

    def options(self, layer: str) -> LayerOptions:
        return self.layers.get(layer, LayerOptions())

    def with_predicted(self, predicted: Mapping[str, Any]) -> "Plan":
        return replace(self, predicted=MappingProxyType(dict(predicted)))

    # ---- notebook ------------------------------------------------------------------------------

    def _summary(self) -> str:
        p = self.predicted
        # a layer may be listed for a 1-bit mask alone: listed is not trained
        trained = sum(1 for o in self.layers.values() if o.weight or o.bias or o.norm != "frozen")
        text = (f"{clip(self.model, 48)} · {shape_text(self.input_shape)} · scheme {clip(self.scheme or '-', 32)} · "
                f"runtime {self.runtime}: {len(self.layers)} layers set ({trained} train parameters)")
        if self.lite:
            text += f", {len(self.lite)} lite residual branches"
        if self.frozen_bits_in_effect != 32 and self.runtime != "mcu":
            text += f", frozen weights counted at {self.frozen_bits_in_effect} bits"
        if self.budget_bytes is not None:
            text += f", budget {size(self.budget_bytes)}"
        if p.get("peak_bytes") is not None:
            text += f", peak {size(p['peak_bytes'])} predicted"
        if self.device:
            text += f", device {clip(self.device, 32)}"
        return text

    def _frame(self) -> tuple[list[str], list[dict[str, Any]]]:
        columns = ["layer", *(f.name for f in fields(LayerOptions)), "output_shape"]
        return columns, [{"layer": name, **asdict(opts), "output_shape": self.shapes.get(name)}
                         for name, opts in self.layers.items()]

    def _render(self, console: Any) -> None:
        """A plan has no CLI table (the CLI writes it as YAML): its layers, each with what it trains."""
        from ..report import tables

        # the output shape last: where the width runs out, it is the column left out
        cells = [[name, _trains(opts), shape_text(self.shapes[name]) if name in self.shapes else ""]
                 for name, opts in self.layers.items()]
        title = f"plan · {self.model} · input {shape_text(self.input_shape)} · scheme {self.scheme or '-'} · runtime {self.runtime}"
        caption = "layers not listed are frozen"
        if self.predicted.get("peak_bytes") is not None:
            caption += f"; predicted peak {size(self.predicted['peak_bytes'])}"
        if self.budget_bytes is not None:
            caption += f" for a budget of {size(self.budget_bytes)}"
        console.print(tables.rich(title, ("layer", "trains", "output"), cells, "lll", caption=caption))

    # ---- YAML ----------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "model": self.model,
            "num_classes": self.num_classes,
            "input_shape": list(self.input_shape),
            "runtime": self.runtime,
            "precision": self.precision,
            "frozen_bits": self.frozen_bits_in_effect,
            "optimizer": {
                "name": self.optimizer.name, "lr": self.optimizer.lr,
                "momentum": self.optimizer.momentum, "weight_decay": self.optimizer.weight_decay,
                # written only where it was chosen: a plan without it reads as before
                **({"reorder": self.optimizer.reorder} if self.optimizer.reorder is not None else {}),
            },
            "scheme": self.scheme,
            "budget_bytes": self.budget_bytes,
            "device": self.device,
            "layers": {name: opts.to_dict() for name, opts in self.layers.items()},
            "shapes": {name: list(shape) for name, shape in self.shapes.items()},
            "predicted": dict(self.predicted),
            # written only where there are branches: a plan without them reads as before
            **({"lite": {block: cfg.to_dict() for block, cfg in self.lite.items()}} if self.lite else {}),
        }

    def save(self, path: str | Path) -> None:
        """Write the plan as YAML, atomically (a temp file in the same folder, then a rename)."""
        write_atomic(Path(path), yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None))

    @classmethod
    def from_dict(cls, data: Any, where: str = "plan") -> "Plan":
        if not isinstance(data, dict):
            raise BadInputError(f"{where}: expected a mapping at the top level")
        known = {"version", "model", "num_classes", "input_shape", "runtime", "precision", "optimizer",
                 "scheme", "budget_bytes", "device", "layers", "predicted", "shapes", "lite", "frozen_bits"}
        unknown = set(data) - known
        if unknown:
            raise BadInputError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
        version = data.get("version")
        if version != PLAN_VERSION:
            raise BadInputError(f"{where}: version {version!r} is not supported (this tlplan reads version {PLAN_VERSION})")
        model = data.get("model")
        if not isinstance(model, str) or not model or len(model) > 300:
            raise BadInputError(f"{where}: 'model' must name a zoo model or package.module:factory")
        shape = data.get("input_shape")
        if not (isinstance(shape, list) and len(shape) == 4 and all(_whole(d, 1, MAX_DIM) for d in shape)):
            raise BadInputError(
                f"{where}: 'input_shape' must be four whole numbers from 1 to {MAX_DIM:,} [batch, channels, height, width]"
            )
        runtime = data.get("runtime", "tlplan")
        if runtime not in RUNTIMES:
            raise BadInputError(f"{where}: runtime {runtime!r}; use one of {', '.join(RUNTIMES)}")
        precision = data.get("precision", "fp32")
        if precision not in PRECISIONS:
            raise BadInputError(f"{where}: precision {precision!r}; use one of {', '.join(PRECISIONS)}")
        frozen_bits = data.get("frozen_bits")  # absent: the runtime's own
        if frozen_bits is not None and not (_whole(frozen_bits, 8, 32) and frozen_bits in (8, 32)):
            raise BadInputError(f"{where}: frozen_bits {frozen_bits!r}; use 8 or 32 (bits per frozen parameter)")
        if runtime == "mcu" and frozen_bits not in (None, 8):
            raise BadInputError(f"{where}: frozen_bits {frozen_bits!r} on the mcu runtime, an int8 engine; use 8")
        opt = data.get("optimizer") or {}
        if not isinstance(opt, dict) or set(opt) - {"name", "lr", "momentum", "weight_decay", "reorder"}:
            raise BadInputError(f"{where}: optimizer must be a mapping of name, lr, momentum, weight_decay, reorder")
        reorder = opt.get("reorder")
        if reorder is not None and not isinstance(reorder, bool):
            raise BadInputError(f"{where}: optimizer reorder must be true or false, not {reorder!r}")
        if reorder and runtime != "mcu":
            raise BadInputError(f"{where}: optimizer reorder is for the mcu runtime (PyTorch keeps gradients until the step)")
        name = opt.get("name", "sgd")
        if name not in OPTIMIZERS:
            raise BadInputError(f"{where}: optimizer {name!r}; use one of {', '.join(OPTIMIZERS)}")
        numbers = {key: opt.get(key, default) for key, default in (("lr", 0.01), ("momentum", 0.0), ("weight_decay", 0.0))}
        for key, value in numbers.items():
            if not _number(value):
                raise BadInputError(f"{where}: optimizer {key} must be a finite number, not {value!r}")
        if not 0 < numbers["lr"] <= 10:
            raise BadInputError(f"{where}: optimizer lr must be above 0 and at most 10, not {numbers['lr']!r}")
        if not 0 <= numbers["momentum"] < 1 or not 0 <= numbers["weight_decay"] <= 1:
            raise BadInputError(f"{where}: optimizer momentum must be in [0, 1) and weight_decay in [0, 1]")
        if name == "qas" and numbers["momentum"]:
            raise BadInputError(f"{where}: optimizer qas with momentum {numbers['momentum']!r}: quantization-aware scaling is SGD "
                                "without momentum (the 256KB paper's sgd_scale_nomom); use momentum 0")
        optimizer = Optimizer(name, float(numbers["lr"]), float(numbers["momentum"]), float(numbers["weight_decay"]), reorder)
        layers_in = data.get("layers") or {}
        if not isinstance(layers_in, dict):
            raise BadInputError(f"{where}: 'layers' must map layer names to options")
        layers = {}
        for layer, opts in layers_in.items():
            if not isinstance(layer, str):
                raise BadInputError(f"{where}: layer names must be text, not {layer!r}")
            if not isinstance(opts, dict):
                raise BadInputError(f"{where}: layers.{layer} must be a mapping of options")
            layers[str(layer)] = LayerOptions.from_dict(opts, f"{where}: layers.{layer}")
        num_classes = data.get("num_classes", 1000)
        if not _whole(num_classes, 1, MAX_CLASSES):
            raise BadInputError(f"{where}: 'num_classes' must be a whole number from 1 to {MAX_CLASSES:,}")
        budget = data.get("budget_bytes")
        if budget is not None and not _whole(budget, 1, MAX_BYTES):
            raise BadInputError(f"{where}: 'budget_bytes' must be a whole number of bytes from 1 to 2**60")
        for key in ("scheme", "device"):
            value = data.get(key)
            if value is not None and (not isinstance(value, str) or len(value) > 300):
                raise BadInputError(f"{where}: {key!r} must be text (a name), not {value!r}")
        predicted = data.get("predicted") or {}
        if not isinstance(predicted, dict):
            raise BadInputError(f"{where}: 'predicted' must be a mapping")
        for key, value in predicted.items():
            if not isinstance(key, str) or not (_number(value) or (isinstance(value, str) and len(value) <= 300)):
                raise BadInputError(f"{where}: predicted.{key} must be a finite number (or a short text), not {value!r}")
            if key.endswith("_bytes") and not _whole(value, 0, MAX_BYTES):
                raise BadInputError(f"{where}: predicted.{key} must be a whole number of bytes, not {value!r}")
        shapes_in = data.get("shapes") or {}
        if not isinstance(shapes_in, dict) or not all(
            isinstance(k, str) and isinstance(v, list) and len(v) <= 8 and all(_whole(d, 0, MAX_NUMEL) for d in v)
            for k, v in shapes_in.items()
        ):
            raise BadInputError(f"{where}: 'shapes' must map layer names to lists of whole numbers")
        lite_in = data.get("lite") or {}
        if not isinstance(lite_in, dict):
            raise BadInputError(f"{where}: 'lite' must map block names to lite branch settings (kernel, groups, expand, norm)")
        lite = {}
        for block, cfg in lite_in.items():
            if not isinstance(block, str) or not block or len(block) > 300:
                raise BadInputError(f"{where}: lite block names must be text, not {block!r}")
            lite[block] = LiteConfig.from_dict(cfg, f"{where}: lite.{block}")
        return cls(
            lite=MappingProxyType(lite),
            model=model, input_shape=tuple(shape), layers=MappingProxyType(layers), runtime=runtime,
            precision=precision, optimizer=optimizer, scheme=data.get("scheme"), num_classes=num_classes,
            budget_bytes=budget, device=data.get("device"), predicted=MappingProxyType(predicted),
            shapes=MappingProxyType({str(k): tuple(v) for k, v in shapes_in.items()}),
            frozen_bits=frozen_bits,
        )


MAX_DIM = 4096  # an input dimension (batch, channels, height, width): a 65536² image asks 51 GB of a trace
MAX_CLASSES = 1_000_000
MAX_NUMEL = 1 << 40
MAX_BYTES = 1 << 60


def _trains(options: LayerOptions) -> str:
    """The options that differ from frozen, named as in the YAML: ``weight 0.25, select magnitude, bias, grad filter 4``."""
    parts = []
    for key, value in options.to_dict().items():
        name = key.replace("_", " ")
        parts.append(name if value is True else f"{name} {value:g}" if isinstance(value, float) else f"{name} {value}")
    return ", ".join(parts)


def _whole(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _number(value: Any) -> bool:
    """A finite number (a whole one of at most 63 bits: 10**400 is no byte count)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return abs(value) < 1 << 63
    return isinstance(value, float) and math.isfinite(value)


def load_plan(path: str | Path) -> Plan:
    """Read and validate a plan file (YAML, loaded with ``safe_load``)."""
    path = Path(path)
    data = load_yaml(read_text(path, "plan"), f"plan {path}")
    return Plan.from_dict(data, where=f"plan {path}")
