"""``predict_latency``: a training step's time on a device, layer by layer, from its profile.

A layer's time under a scheme is the sum of the passes the scheme makes it run (``LayerCost``
says which): its forward — recorded by autograd, or not where nothing in or below it is trained —
and the one backward call that computes the gradients it needs: of its input where something
below is trained, of its weight (with the bias) where the weight is trained, else of its bias
where only the bias is (``bwd_input``, ``bwd_weight``, ``bwd_bias``, or the measured combinations
``bwd_input_weight``, ``bwd_input_bias``; see ``tlplan.measure.microbench.PASSES``). Where a tensor feeds several layers that all send a gradient back (a residual input), the
backward also sums those gradients: one elementwise add per extra consumer, charged to the layer
that produced the tensor and priced like a forward ``add`` of its size.

* **measured** profiles: each pass from the fitted (op, pass) model; whole step = sum of layers
  + a fitted per-step overhead (``c0 + c1·layers + c2·layers with a backward + c3·layers run by
  the tlplan runtime's kernels``) that also absorbs what timing layers alone gets wrong (the
  framework's per-call costs, caches); ``c3`` is fitted on the tlplan-runtime steps calibration
  timed (0 for a profile without them).
* **datasheet** profiles: each pass from the roofline (``tlplan.predict.roofline``); whole step =
  sum of layers.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Mapping, Sequence

import numpy as np

from ..costs.annotate import CostTable, annotate
from ..ops import planned
from ..errors import BadInputError
from ..measure.microbench import CALIBRATION_OPS, CalibrationOp, Config
from ..plan.options import FROZEN
from ..trace.graph import INPUT, Layer, LayerGraph
from . import cache
from .devices import Device, resolve_device
from .drift import Drift, drift_for
from .features import feature_matrix
from .fit import FIT_VERSION, PassModel, TreeEnsemble, fit_pass_model
from .roofline import roofline_ms
from .store import LayerRow, StepRow, read_layer_rows, read_step_rows, sha256_of

FITTED = "fitted on measurements"
DATASHEET = "datasheet roofline"
FORWARD = ("fwd", "fwd_nograd")


@dataclass(frozen=True)
class PredictedOn:
    """Where a time was predicted: the device, from what (``FITTED``, ``FITTED`` adapted from
    another profile, or ``DATASHEET``), and the drift correction applied, if any."""

    device: str
    source: str
    #: the machine's speed now against at calibration, which every time was scaled by (None: not scaled)
    drift: Drift | None = field(default=None, compare=False)

    def __str__(self) -> str:
        text = f"predicted for {self.device} ({self.source})"
        return text if self.drift is None else f"{text}; {self.drift.note}"


@dataclass(frozen=True)
class LayerPrediction:
    fwd_ms: float
    bwd_ms: float | None  # None where the layer has no backward under the scheme
    parts: Mapping[str, float]  # pass → ms ("accumulate": summing a fanned-out gradient)


@dataclass(frozen=True)
class Prediction:
    """Predicted time of one training step on ``device``, and where the prediction comes from."""

    device: str
    source: str  # "fitted on measurements" or "datasheet roofline"
    layers: Mapping[str, LayerPrediction]
    fwd_ms: float
    bwd_ms: float
    overhead_ms: float  # per-step term (fitted profiles); 0 for a datasheet roofline
    step_ms: float
    unpredicted: tuple[str, ...] = ()  # layers no calibration op stands for: counted as 0 ms
    #: layers the tlplan runtime runs with its own kernels, priced with the plain PyTorch op's
    #: model because the profile has no measurements of the runtime's (calibrated before them)
    stand_ins: tuple[str, ...] = ()
    #: the drift correction: the speed measured again, and what every time above was multiplied by
    #: (its ``ratio``, 1 within the tolerance); None: not measured (correction off, or not this machine)
    drift: Drift | None = None

    @property
    def on(self) -> PredictedOn:
        return PredictedOn(self.device, self.source, self.drift)


# ---- what to predict -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    """One pass of one layer (or one gradient sum) to price."""

    layer: str
    op: str  # calibration op
    pass_: str
    config: Config
    weight_ratio: float = 1.0
    #: the plain PyTorch op a tlplan-runtime op stands in for: what a fitted profile calibrated
    #: without the runtime's ops prices it with (None: the op is a plain one)
    fallback: str | None = None


@dataclass(frozen=True)
class Plan:
    items: tuple[Item, ...]
    unpredicted: tuple[str, ...]
    layers: int  # forward calls
    backward_layers: int  # layers that run a backward call
    runtime_layers: int = 0  # layers the tlplan runtime runs with its own kernels (autograd Functions)

    @property
    def overhead_terms(self) -> np.ndarray:
        """What the per-step overhead is linear in: 1, layers, layers with a backward, layers run
        by the tlplan runtime's kernels (each a Python autograd Function, forward and backward)."""
        return np.array([1.0, self.layers, self.backward_layers, self.runtime_layers])


def passes_for(cost) -> list[str]:
    """The passes a layer runs under its scheme (see the module docstring): a forward, and the
    one backward call that computes every gradient the scheme needs of it."""
    return passes_of(cost.state)


def passes_of(state) -> list[str]:
    """``passes_for`` from a layer's ``GradState``."""
    if not state.recorded:
        return ["fwd_nograd"]
    wants = [part for part, needed in (("input", state.needs_input_grad), ("weight", "weight" in state.trained),
                                       ("bias", "bias" in state.trained and "weight" not in state.trained)) if needed]
    backward = "bwd_" + "_".join(wants)
    return ["fwd", backward] if wants else ["fwd"]


def _option(costs: CostTable, layer: str) -> object:
    """What the plan says of a layer, where the cost table carries per-layer options."""
    options = getattr(costs, "options", None)
    return options.get(layer) if options else None


def plain_entry(layer: Layer) -> CalibrationOp | None:
    """The calibration op of ``layer`` run by PyTorch's own kernels (no plan options)."""
    return CALIBRATION_OPS.for_layer(layer, None)


def calibration_entry(layer: Layer, option: object, runtime: str) -> tuple[CalibrationOp, Config] | None:
    """The calibration op that prices ``layer`` trained with ``option`` on ``runtime``, and its
    configuration. Only the ``tlplan`` runtime runs its own kernels (``tlplan.measure.runtime_ops``);
    ``eager`` (and the ``mcu`` engine's accounting) price PyTorch's."""
    option = _runtime_option(layer, option, runtime)
    entry = CALIBRATION_OPS.for_layer(layer, option)
    return None if entry is None else (entry, entry.config_for(layer, option))


def _runtime_option(layer: Layer, option: object, runtime: str) -> object:
    """What the runtime's kernels see of ``layer``: its options where the tlplan runtime swaps it
    (exact nn.Conv2d, nn.ReLU ... modules only; every one of them, a frozen one too), else None."""
    if runtime != "tlplan" or not planned(layer):
        return None
    return FROZEN if option is None else option


def layer_items(layer: Layer, option: object, runtime: str, passes: Sequence[str], weight_ratio: float) -> list[Item] | None:
    """The items pricing ``passes`` of ``layer`` (None: no calibration op stands for it); a
    tlplan-runtime op's items name the plain op they stand in for (``Item.fallback``)."""
    found = calibration_entry(layer, option, runtime)
    if found is None:
        return None
    entry, config = found
    plain = plain_entry(layer) if entry.prior_from else None  # only the runtime's ops stand in for another
    fallback = plain.name if plain is not None else None
    return [Item(layer.name, entry.name, p, config, weight_ratio, fallback) for p in passes]


def model_pass(item: Item) -> str:
    """The pass whose model prices ``item`` (summing two gradients is priced as an add's forward)."""
    return "fwd_nograd" if item.pass_ == "accumulate" else item.pass_


def scheme_costs(graph: LayerGraph, scheme: str, runtime: str = "eager") -> CostTable:
    """Costs of training ``graph`` under a named scheme: with plain PyTorch autograd
    (``requires_grad`` only; what calibration's whole steps run) or with the tlplan runtime."""
    from ..plan.schemes import parse_scheme, scheme_options

    return annotate(graph, scheme_options(graph, parse_scheme(scheme), []), runtime)  # the step as measured


def plan_items(graph: LayerGraph, costs: CostTable, weight_ratios: Mapping[str, float] | None = None) -> Plan:
    items: list[Item] = []
    unpredicted: list[str] = []
    gradients_into: dict[str, int] = {}
    backward_layers = runtime_layers = 0
    for layer, cost in zip(graph.layers, costs.layers):
        passes = passes_for(cost)
        backward_layers += len(passes) > 1
        if cost.state.needs_input_grad:
            for src, needs in zip(layer.inputs, cost.state.inputs_require_grad):
                if needs and src != INPUT:
                    gradients_into[src] = gradients_into.get(src, 0) + 1
        option = _option(costs, layer.name)
        from_output = getattr(cost, "mask_from_output", False) and option is not None
        if from_output:  # no mask: PyTorch's kernels on the output it keeps, in the runtime's autograd Function
            option = replace(option, mask=False)
        ratio = (weight_ratios or {}).get(layer.name, getattr(option, "weight", 0) or 1.0)
        priced = layer_items(layer, option, costs.runtime, passes, ratio)
        if priced is None:
            unpredicted.append(layer.name)
            continue
        items.extend(priced)
        runtime_layers += priced[0].fallback is not None or from_output
    for src, n in gradients_into.items():
        if n > 1:
            shape = graph.by_name[src].output_shape
            b, c = shape[0], shape[1] if len(shape) > 1 else 1
            h, w = (shape[2], shape[3]) if len(shape) == 4 else (1, 1)
            for _ in range(n - 1):
                items.append(Item(src, "add", "accumulate", Config(b, c, h, w, c, h, w)))
    return Plan(tuple(items), tuple(unpredicted), len(costs.layers), backward_layers, runtime_layers)


# ---- fitted profiles ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class FittedProfile:
    """The (op, pass) models of a measured profile and its per-step overhead coefficients."""

    models: Mapping[tuple[str, str], PassModel]
    overhead: np.ndarray  # (4,): ms per step, per layer, per layer with a backward, per tlplan-runtime layer
    digest: str = ""
    #: an adapted profile's correction (tlplan.predict.adapt): each (op, pass) model's times
    #: multiplied by its factor, ``default_scale`` for a model without one
    scales: Mapping[tuple[str, str], float] = field(default_factory=dict)
    default_scale: float = 1.0
    #: an adapted profile's residual models: where an (op, pass) has one, its times are multiplied
    #: by exp(trees(features)) instead of its scale
    residuals: Mapping[tuple[str, str], TreeEnsemble] = field(default_factory=dict)
    #: an adapted profile's factor on every layer time, fitted on whole steps (layers timed alone
    #: and inside a step need not change alike from one machine to another)
    layer_scale: float = 1.0

    def model_key(self, item: Item) -> tuple[str, str]:
        """The (op, pass) model that prices ``item``: its own, else the plain op's it stands in for
        (``Item.fallback``), for a profile calibrated without the runtime's ops."""
        pass_ = model_pass(item)
        if (item.op, pass_) not in self.models and item.fallback is not None:
            return (item.fallback, pass_)
        return (item.op, pass_)

    def price(self, items: Sequence[Item]) -> np.ndarray:
        """ms of each item; NaN where the profile has no model for it (``model_key``)."""
        out = np.full(len(items), np.nan)
        groups: dict[tuple[str, str], list[int]] = {}
        for i, item in enumerate(items):
            groups.setdefault(self.model_key(item), []).append(i)
        for key, idx in groups.items():
            model = self.models.get(key)
            if model is None:
                continue
            configs = [items[i].config for i in idx]
            residual = self.residuals.get(key)
            if residual is not None:
                out[idx] = model.predict(configs) * np.exp(residual.predict(feature_matrix(model.op, configs)))
            else:
                out[idx] = model.predict(configs) * self.scales.get(key, self.default_scale)
        return out * self.layer_scale if self.layer_scale != 1.0 else out

    def overhead_ms(self, plan: Plan) -> float:
        return float(self.overhead @ plan.overhead_terms)

    def arrays(self) -> dict[str, np.ndarray]:
        data: dict[str, np.ndarray] = {"overhead": self.overhead, "digest": np.array(self.digest)}
        scaled = sorted(self.scales)
        data["scale_keys"] = np.array(["/".join(k) for k in scaled] or [""])[: len(scaled)]
        data["scale_values"] = np.array([self.scales[k] for k in scaled], dtype=np.float64)
        data["default_scale"] = np.array(self.default_scale)
        data["layer_scale"] = np.array(self.layer_scale)
        residual_keys = sorted(self.residuals)
        data["residual_ops"] = np.array([op for op, _ in residual_keys], dtype=str)
        data["residual_passes"] = np.array([p for _, p in residual_keys], dtype=str)
        for i, key in enumerate(residual_keys):
            data.update(self.residuals[key].arrays(f"r{i}."))
        keys = sorted(self.models)
        data["ops"] = np.array([op for op, _ in keys])
        data["passes"] = np.array([p for _, p in keys])
        for i, key in enumerate(keys):
            model = self.models[key]
            data[f"m{i}.base"] = model.base
            data[f"m{i}.rows"] = np.array(model.rows)
            data.update(model.trees.arrays(f"m{i}."))
        return data

    @classmethod
    def from_arrays(cls, data: Mapping[str, np.ndarray]) -> "FittedProfile":
        models = {}
        for i, (op, p) in enumerate(zip(data["ops"].tolist(), data["passes"].tolist())):
            models[(op, p)] = PassModel(op, p, np.asarray(data[f"m{i}.base"]), TreeEnsemble.from_arrays(data, f"m{i}."),
                                        int(data[f"m{i}.rows"]))
        scales = {}
        if "scale_keys" in data:
            for key, value in zip(data["scale_keys"].tolist(), data["scale_values"].tolist()):
                op, _, pass_ = key.rpartition("/")
                scales[(op, pass_)] = float(value)
        default = float(data["default_scale"]) if "default_scale" in data else 1.0
        residuals = {}
        if "residual_ops" in data:
            for i, key in enumerate(zip(data["residual_ops"].tolist(), data["residual_passes"].tolist())):
                residuals[key] = TreeEnsemble.from_arrays(data, f"r{i}.")
        layer_scale = float(data["layer_scale"]) if "layer_scale" in data else 1.0
        return cls(MappingProxyType(models), np.asarray(data["overhead"]), str(data["digest"]),
                   MappingProxyType(scales), default, MappingProxyType(residuals), layer_scale)


class StepCases:
    """Traced graphs and cost tables of whole-step measurements, built once per (network, shape)."""

    def __init__(self, trust_code: bool = True) -> None:
        #: whether a network named as package.module:factory may be built (not from a profile's data)
        self.trust_code = trust_code
        self._graphs: dict[tuple[str, int, int], LayerGraph] = {}
        self._costs: dict[tuple[str, str, int, int, str], CostTable] = {}
        self._plans: dict[tuple[str, str, int, int, str], Plan] = {}

    def costs(self, network: str, scheme: str, batch: int, resolution: int, runtime: str = "eager") -> CostTable:
        from ..trace import trace_model
        from ..zoo import load_model

        key = (network, scheme, batch, resolution, runtime)
        if key not in self._costs:
            gkey = (network, batch, resolution)
            if gkey not in self._graphs:
                self._graphs[gkey] = trace_model(load_model(network, trust_code=self.trust_code),
                                                 (batch, 3, resolution, resolution), network)
            graph = self._graphs[gkey]
            self._costs[key] = scheme_costs(graph, scheme, runtime)
        return self._costs[key]

    def plan(self, network: str, scheme: str, batch: int, resolution: int, runtime: str = "eager") -> Plan:
        """What the case's step runs, to price: the same for every fit."""
        key = (network, scheme, batch, resolution, runtime)
        if key not in self._plans:
            costs = self.costs(*key)
            self._plans[key] = plan_items(costs.graph, costs)
        return self._plans[key]


def fit_profile(layer_rows: Sequence[LayerRow], step_rows: Sequence[StepRow], *, cases: StepCases | None = None,
                digest: str = "", seed: int = 0) -> FittedProfile:
    """Fit every (op, pass) model on ``layer_rows``, then the per-step overhead on ``step_rows``."""
    grouped: dict[tuple[str, str], list[LayerRow]] = {}
    for row in layer_rows:
        grouped.setdefault((row.op, row.pass_), []).append(row)
    models = {
        key: fit_pass_model(key[0], key[1], [r.config for r in rows], [r.ms for r in rows], seed=seed)
        for key, rows in sorted(grouped.items())
    }
    partial = FittedProfile(MappingProxyType(models), np.zeros(N_OVERHEAD), digest)
    if cases is None:  # a profile's data file names the networks: it never runs code (a shared folder is data)
        from ..zoo import _zoo_entry

        cases = StepCases(trust_code=False)
        step_rows = [row for row in step_rows if _zoo_entry(row.key[0]) is not None]
    overhead = fit_overhead(partial, step_rows, cases)
    return FittedProfile(partial.models, overhead, digest)


def layer_sum_ms(profile: FittedProfile, plan: Plan) -> float:
    return float(np.nansum(profile.price(plan.items)))


N_OVERHEAD = 4


def fit_overhead(profile: FittedProfile, step_rows: Sequence[StepRow], cases: StepCases) -> np.ndarray:
    """Least squares, on relative error, of (measured step − sum of layers) on ``Plan.overhead_terms``."""
    if not step_rows:
        return np.zeros(N_OVERHEAD)
    X, y, w = [], [], []
    for row in step_rows:
        plan = cases.plan(*row.key)
        X.append(plan.overhead_terms)
        y.append(row.ms - layer_sum_ms(profile, plan))
        w.append(1.0 / row.ms)
    A = np.array(X) * np.array(w)[:, None]
    b = np.array(y) * np.array(w)
    ridge = 1e-3 * np.eye(N_OVERHEAD)  # a handful of networks: keep the terms from trading off wildly
    return np.linalg.solve(A.T @ A + ridge, A.T @ b)


def _data_files(device: Device) -> tuple[Path, Path]:
    folder = device.folder or Path(".")
    return folder / str(device.measurements), folder / str(device.steps)


_LOADED: dict[tuple, tuple["FittedProfile", Path, tuple]] = {}  # data files' identity -> fit, its cache file and that file's identity


def _identity(path: Path) -> tuple:
    try:
        st = path.stat()
    except OSError:
        return (str(path), None, None)
    return (str(path.resolve()), st.st_size, st.st_mtime_ns)


def load_fitted(device: Device) -> FittedProfile:
    """The device's fit: from the cache when its data has not changed, else fitted and cached.

    Within a process a fit is loaded once while the data files and its cache file stay as they
    were (path, size, mtime): hashing 8 MB of measurements and reading the cached arrays is most
    of a prediction's time."""
    measurements, steps = _data_files(device)
    for path in (measurements, steps):
        if not path.is_file():
            raise BadInputError(f"profile data {path}: the file is missing (named by {device.folder}/device.json); "
                                "run `tlplan calibrate` again")
    identity = (_identity(measurements), _identity(steps))
    if device.adapted:  # the base's fit (its data files are copied along), with the correction in device.json
        from . import adapt

        return adapt.load_adapted(device, _cached_fit(identity, measurements, steps))
    return _cached_fit(identity, measurements, steps)


def _cached_fit(identity: tuple, measurements: Path, steps: Path) -> FittedProfile:
    if identity in _LOADED:
        fitted, cached, cached_identity = _LOADED[identity]
        if _identity(cached) == cached_identity:
            return fitted
    fitted, cached = _load_fitted(measurements, steps)
    _LOADED[identity] = (fitted, cached, _identity(cached))
    return fitted


def cached_fit(path: Path, digest: str) -> "FittedProfile | None":
    """The fit kept at ``path`` when it is the fit of ``digest``'s data; None when absent, stale
    or unreadable (then the caller fits again and overwrites it)."""
    arrays = cache.load_arrays(path)
    if arrays is None:
        return None
    try:
        fitted = FittedProfile.from_arrays(arrays)
    except (KeyError, ValueError, TypeError):
        return None
    return fitted if fitted.digest == digest else None


def _load_fitted(measurements: Path, steps: Path) -> tuple[FittedProfile, Path]:
    """The fit and its cache file: read from there when it holds this data's fit, else fitted and written."""
    digest = sha256_of(measurements, steps)
    path = cache.fit_path(digest, FIT_VERSION)
    fitted = cached_fit(path, digest)
    if fitted is not None:
        return fitted, path
    layer_rows = read_layer_rows(measurements)
    step_rows = read_step_rows(steps)
    if not layer_rows:
        raise BadInputError(f"profile data {measurements}: no measurements; run `tlplan calibrate` again")
    fitted = fit_profile(layer_rows, step_rows, digest=digest)
    cache.save_arrays(path, fitted.arrays())
    return fitted, path


# ---- the entry point -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pricer:
    """What prices passes on one device: its fitted models (measured profiles) or its roofline."""

    device: Device
    fitted: FittedProfile | None  # None: the datasheet roofline
    #: the machine's speed now against at calibration: every time is multiplied by its ratio
    drift: Drift | None = None

    @classmethod
    def of(cls, device: "Device | str | Pricer", fitted: FittedProfile | None = None) -> "Pricer":
        """What prices passes on ``device``; a measured profile of this machine with a speed index
        is corrected for drift (``tlplan.predict.drift``) unless that is switched off."""
        if isinstance(device, Pricer):
            return device if fitted is None else cls(device.device, fitted, device.drift)
        device = resolve_device(device)  # a Device is returned as it is
        if fitted is None and not device.predicts:
            what = "measurements" if device.source == "measured" else "peak_flops_fp32"
            raise BadInputError(f"device profile {device.name} has no {what}: nothing to predict latency from")
        if fitted is None and device.source == "measured":
            fitted = load_fitted(device)
        drift = drift_for(device) if fitted is not None else None
        return cls(device, fitted, drift)

    @property
    def source(self) -> str:
        if self.fitted is None:
            return DATASHEET
        base = (self.device.adapted or {}).get("from")
        return f"{FITTED}, adapted from {base}" if base else FITTED

    @property
    def scale(self) -> float:
        return self.drift.ratio if self.drift is not None else 1.0

    @property
    def on(self) -> PredictedOn:
        return PredictedOn(self.device.name, self.source, self.drift)

    def price(self, items: Sequence[Item]) -> np.ndarray:
        """ms of each item (drift-corrected); NaN where a fitted profile has no model for it."""
        if self.fitted is not None:
            return self.fitted.price(items) * self.scale
        return np.array([roofline_ms(self.device, it.op, it.pass_, it.config, it.weight_ratio) for it in items])

    def overhead_ms(self, plan: Plan) -> float:
        return self.fitted.overhead_ms(plan) * self.scale if self.fitted is not None else 0.0

    def stands_in(self, item: Item) -> bool:
        """Whether ``item`` is priced with its plain op's model (a profile without the runtime's ops)."""
        if self.fitted is None:
            return False
        key = self.fitted.model_key(item)
        return key[0] != item.op and key in self.fitted.models


def predict_latency(graph: LayerGraph, costs: CostTable, device: "Device | str | Pricer", *,
                    weight_ratios: Mapping[str, float] | None = None,
                    fitted: FittedProfile | None = None) -> Prediction:
    """Predict a training step's time on ``device``, per layer and whole.

    Args:
        graph, costs: a traced model and its costs under a scheme (``tlplan.costs.annotate``).
        device: a ``Device``, a profile name (see ``tlplan devices``), or a ``Pricer`` made once
            for many predictions.
        weight_ratios: per layer, the share of input channels whose weight gradient is computed
            (sparse update); default: the plan's own ratios (``costs.options``), else 1. Only the
            datasheet roofline uses it.
        fitted: a fit to use instead of the device's own (leave-one-network-out evaluation).

    Returns:
        A frozen Prediction; ``source`` says whether it was fitted on measurements or derived
        from a datasheet.

    Example:
        >>> import tlplan
        >>> g = tlplan.trace_model(tlplan.load_model("mcunet-5fps"), (1, 3, 128, 128))
        >>> p = predict_latency(g, scheme_costs(g, "last"), "stm32f746")
        >>> p.source, p.step_ms > 0
        ('datasheet roofline', True)
    """
    plan = plan_items(graph, costs, weight_ratios)
    pricer = Pricer.of(device, fitted)
    ms = pricer.price(plan.items)
    missing = {plan.items[i].layer for i in np.flatnonzero(np.isnan(ms))}
    ms = np.nan_to_num(ms)
    overhead = pricer.overhead_ms(plan)
    source = pricer.source
    per_layer: dict[str, dict[str, float]] = {}
    for item, value in zip(plan.items, ms):
        parts = per_layer.setdefault(item.layer, {})
        parts[item.pass_] = parts.get(item.pass_, 0.0) + float(value)
    layers = {}
    for cost in costs.layers:
        parts = per_layer.get(cost.name, {})
        bwd = [v for p, v in parts.items() if p not in FORWARD]
        fwd = sum(v for p, v in parts.items() if p in FORWARD)
        layers[cost.name] = LayerPrediction(fwd, sum(bwd) if bwd else None, MappingProxyType(parts))
    fwd = sum(p.fwd_ms for p in layers.values())
    bwd = sum(p.bwd_ms or 0.0 for p in layers.values())
    unpredicted = tuple(dict.fromkeys([*plan.unpredicted, *sorted(missing)]))
    stand_ins = tuple(dict.fromkeys(item.layer for item in plan.items if pricer.stands_in(item)))
    return Prediction(pricer.device.name, source, MappingProxyType(layers), fwd, bwd, overhead, fwd + bwd + overhead,
                      unpredicted, stand_ins, pricer.drift)
