"""``tlplan.profile``: trace, cost, simulate and optionally measure, into one frozen report."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Callable, Mapping

import torch
import torch.nn as nn

from .costs.annotate import CostTable, annotate
from .display import Tabular, approx_count, clip, shape_text, size
from .errors import BadInputError, arg
from .memory.timeline import MemoryBreakdown, simulate_peak
from .plan.plan import Optimizer
from .plan.schemes import parse_scheme, scheme_options
from .predict.devices import Device, resolve_device
from .trace import LayerGraph, trace_model

RUNTIMES = ("eager", "tlplan", "mcu")
PRECISIONS = ("fp32", "fp16")

#: What each kind of number is, so no report shows an estimate as a measurement.
SOURCES = {
    "params": "counted from the model",
    "macs": "derived from shapes (conv and linear multiply-accumulates)",
    "saved_bytes": "derived from the runtime's rules (eager: PyTorch autograd; tlplan: tlplan's ops; mcu: an int8 engine)",
    "peak_bytes": "predicted by a simulated forward+backward timeline",
    "latency_ms": "measured here",
}
#: the peak's source where the step is predicted for a GPU (``accelerator`` cuda)
CUDA_PEAK_SOURCE = ("predicted by a simulated forward+backward timeline, counted as the CUDA caching allocator's blocks "
                    "(512-byte rounding), with cuDNN workspace per convolution and cuBLAS's workspaces (cuda)")


@dataclass(frozen=True)
class LayerRow:
    name: str
    op: str
    block: str | None
    output_shape: tuple[int, ...]
    params: int
    trainable_params: int
    macs_fwd: int
    macs_bwd_input: int
    macs_bwd_weight: int
    saved_bytes: int
    latency_ms: Mapping[str, float | None] | None = None  # {"fwd": ms, "bwd": ms or None}
    latency_ms_predicted: Mapping[str, float | None] | None = None  # on the --device, same keys

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["output_shape"] = list(self.output_shape)
        d["latency_ms"] = dict(self.latency_ms) if self.latency_ms is not None else None
        d["latency_ms_predicted"] = dict(self.latency_ms_predicted) if self.latency_ms_predicted is not None else None
        return d


@dataclass(frozen=True, repr=False)  # repr: a line (Tabular's), not every layer's fields
class ProfileReport(Tabular):
    """What training a model costs, layer by layer. Fields as in the JSON of ``tlplan profile``.

    In a notebook it shows as the CLI's table; ``to_dataframe()`` gives one row per layer.
    """

    _reporter = "tlplan.report.text"

    model: str
    input_shape: tuple[int, ...]
    runtime: str
    scheme: str
    device: str | None
    layers: tuple[LayerRow, ...]
    totals: Mapping[str, Any]
    memory: MemoryBreakdown
    measured: Mapping[str, Any] | None  # where and how latencies were measured
    sources: Mapping[str, str]
    warnings: tuple[str, ...] = ()
    costs: CostTable | None = field(default=None, repr=False, compare=False)
    predicted: Mapping[str, Any] | None = None  # where and how latencies were predicted (--device)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "input_shape": list(self.input_shape),
            "runtime": self.runtime,
            "scheme": self.scheme,
            "device": self.device,
            "layers": [row.to_dict() for row in self.layers],
            "totals": dict(self.totals),
            "memory": {k: v for k, v in asdict(self.memory).items() if k != "timeline"},
            "measured": dict(self.measured) if self.measured else None,
            "predicted": dict(self.predicted) if self.predicted else None,
            "sources": dict(self.sources),
            "warnings": list(self.warnings),
        }

    def _summary(self) -> str:
        t = self.totals
        where = f" · device {clip(self.device, 32)}" if self.device else ""
        text = (f"{clip(self.model, 48)} · {shape_text(self.input_shape)} · scheme {clip(self.scheme, 32)} · runtime {self.runtime}"
                f"{where}: {len(self.layers)} layers, {approx_count(t['params'])} params ({approx_count(t['trainable_params'])} "
                f"trainable), kept {size(t['saved_bytes'])}, peak {size(self.memory.peak_bytes)}")
        if t.get("measured_step_ms") is not None:
            text += f", step {t['measured_step_ms']:,.1f} ms measured"
        return text

    def _frame(self) -> tuple[list[str], list[dict[str, Any]]]:
        from .report.profile_rows import as_records

        # the CSV's fields, with the report's own values where the CSV writes text: a shape is a tuple,
        # not 1x8x32x32, and a missing block or time is None (NaN in pandas), not an empty cell
        records = []
        for row, record in zip(self.layers, as_records(self), strict=True):
            record = {k: None if k.startswith("latency_ms") and v == "" else v for k, v in record.items()}
            records.append(record | {"output_shape": row.output_shape, "block": row.block})
        if records:
            return list(records[0]), records
        # no layers: the same columns, without a record to read them from
        latency = ["latency_ms_fwd", "latency_ms_bwd"]
        latency += ["latency_ms_predicted_fwd", "latency_ms_predicted_bwd"] if self.predicted else []
        return [f.name for f in fields(LayerRow) if not f.name.startswith("latency_ms")] + latency + ["note"], []


def profile(
    model: nn.Module,
    input_shape: tuple[int, ...],
    scheme: str = "full",
    runtime: str = "tlplan",
    device: str | Device | None = None,
    *,
    precision: str = "fp32",
    frozen_bits: int | None = None,
    model_name: str | None = None,
    measure: bool = False,
    repeats: int = 5,
    progress: Callable[[int, int], None] | None = None,
    reorder: bool | None = None,
    accelerator: Any = "auto",
) -> ProfileReport:
    """Profile training ``model`` on inputs of ``input_shape`` under ``scheme``.

    Args:
        model: an ``nn.Module`` (see ``tlplan.load_model``); it is not modified.
        input_shape: batch first, e.g. ``(8, 3, 224, 224)``.
        scheme: ``full``, ``last``, ``bias``, ``norm+last``, ``blocks:K``, ``mobiletl:K``,
            ``layers:K``, ``gradfilter:K:R``, ``sparse:FILE``, ``lite``, ``lite+bias``, ``lite:K`` (TinyTL's
            lite residual branches, added to a copy of the model) or a plan file.
        runtime: ``tlplan`` (tlplan's runtime ops), ``eager`` (plain PyTorch autograd with only
            ``requires_grad`` set) or ``mcu`` (an int8 training engine; analytic, not measurable here).
        precision: activations kept by the tlplan runtime, ``fp32`` or ``fp16``.
        frozen_bits: bits the memory model counts each frozen parameter at, 8 or 32 (None: the
            runtime's own, 32 on eager and tlplan, 8 on mcu); ``memory.frozen_bits`` says which.
        device: a device profile name: each layer's and the whole step's time is predicted for it
            (from its fitted measurements, or its datasheet roofline), beside what is measured here.
        measure: also time every layer and a whole training step on this machine.
        accelerator: ``cpu``, ``cuda`` or ``auto`` (cuda when the model is on a GPU, or ``device`` is
            a profile calibrated on cuda; see ``tlplan.measure.accelerator``): where ``measure``
            times, and, on cuda, the peak is predicted as the CUDA caching allocator counts it
            (``tlplan.memory.cuda``). Measuring on cuda needs a GPU; predicting for one does not.
        reorder: the mcu runtime only: apply each gradient as soon as it is computed (the 256KB
            paper's operator reordering) or hold every one until the update (False). None: a plan
            file's own choice, else on; ``memory.reorder`` says which.

    Returns:
        A ProfileReport whose ``layers`` and ``totals`` carry the JSON contract's fields.

    Example:
        >>> import tlplan
        >>> r = tlplan.profile(tlplan.load_model("mcunet-5fps"), (1, 3, 128, 128), scheme="bias")
        >>> r.totals["saved_bytes"] > 0
        True
    """
    if runtime not in RUNTIMES:
        raise BadInputError(f"unknown runtime {runtime!r}; use one of {', '.join(RUNTIMES)}")
    if precision not in PRECISIONS:
        raise BadInputError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    from .costs.annotate import check_frozen_bits

    check_frozen_bits(runtime, frozen_bits)  # before tracing: a bad value is a one-line error at once
    if reorder is not None and runtime != "mcu":
        raise BadInputError(f"{arg('reorder')} is for the mcu runtime: PyTorch keeps every gradient until the optimizer's step")
    found = resolve_device(device) if device else None
    from .measure.accelerator import accelerator_kind, model_on_cuda, select_accelerator

    # where it is measured (a GPU must be there) or, measuring nothing, what the peak is predicted for
    if runtime == "mcu" and isinstance(accelerator, str) and accelerator.strip().lower() == "cuda":
        raise BadInputError(f"{arg('accelerator')} cuda: the mcu runtime is an int8 engine's own memory plan, not a GPU's; "
                            f"drop {arg('accelerator')} or choose runtime tlplan or eager")
    chosen = select_accelerator(accelerator, model=model, device=found) if measure and runtime != "mcu" else None
    # the mcu engine's arena is its own accounting: never counted as a GPU allocator would
    kind = "cpu" if runtime == "mcu" else (chosen.kind if chosen is not None else accelerator_kind(accelerator, model=model, device=found))
    model_on_gpu = model if model_on_cuda(model) is not None else None  # its GPU sizes cuBLAS's workspaces
    if model_on_gpu is not None:  # traced and costed on the CPU; timed on the GPU from a copy
        import copy

        model = copy.deepcopy(model).to("cpu")
    parsed = parse_scheme(scheme)
    from .runtime.lite import for_scheme

    # lite schemes (and plan files with lite branches): a copy of the model with the branches
    model, graph, _ = for_scheme(model, tuple(input_shape), parsed, model_name or type(model).__name__)
    notes: list[str] = []  # what the scheme could not do as asked (a conv it could not filter): said in the report
    costs = annotate(graph, scheme_options(graph, parsed, notes), runtime, precision, frozen_bits)
    if reorder is None and runtime == "mcu" and parsed.kind == "plan":  # the plan's own choice
        from .plan.plan import load_plan

        reorder = load_plan(parsed.path).optimizer.reorders("mcu")
    memory = simulate_peak(costs, Optimizer(reorder=reorder))
    cuda_source = ""
    if kind == "cuda":  # as the CUDA caching allocator counts it (tlplan.memory.cuda)
        from .measure.accelerator import gpu_target
        from .memory.cuda import cuda_breakdown

        capability, torch_version, where = gpu_target(found, chosen, model_on_gpu)
        memory = cuda_breakdown(costs, memory, capability=capability, torch_version=torch_version)
        cuda_source = f"{CUDA_PEAK_SOURCE}; cuBLAS workspaces for {where}"
    timings = None
    if measure and runtime == "mcu":
        raise BadInputError(f"the mcu runtime is an int8 engine's accounting and cannot be timed here; give {arg('measure=False')}")
    if measure:
        from .measure.latency import measure_latency

        timings = measure_latency(model, costs, repeats=repeats, progress=progress, accelerator=chosen)
    report = _report(graph, costs, memory, parsed.text, found.name if found else None, timings)
    if kind == "cuda":
        from dataclasses import replace

        report = replace(report, sources={**report.sources, "peak_bytes": cuda_source})
    if notes:
        from dataclasses import replace

        report = replace(report, warnings=report.warnings + tuple(notes))
    return with_prediction(report, found) if found else report


def with_prediction(report: ProfileReport, device: Any) -> ProfileReport:
    """The report with each layer's and the step's time predicted on ``device`` added beside it
    (unchanged where the profile has nothing to predict from: a measured profile without data)."""
    from dataclasses import replace

    from .predict import predict_latency

    if not device.predicts or report.costs is None:
        return report
    p = predict_latency(report.costs.graph, report.costs, device)
    rows = tuple(
        replace(row, latency_ms_predicted={"fwd": round(p.layers[row.name].fwd_ms, 4),
                                           "bwd": None if p.layers[row.name].bwd_ms is None else round(p.layers[row.name].bwd_ms, 4)})
        for row in report.layers
    )
    totals = {**report.totals, "latency_ms_predicted": {"fwd": round(p.fwd_ms, 3), "bwd": round(p.bwd_ms, 3)},
              "predicted_step_ms": round(p.step_ms, 3)}
    predicted = {"device": p.device, "source": p.source, "device_source": device.source,
                 "overhead_ms": round(p.overhead_ms, 3), "unpredicted": list(p.unpredicted),
                 "stand_ins": list(p.stand_ins)}
    if device.accuracy:
        predicted["accuracy"] = {k: device.accuracy[k] for k in ("mape", "within_10") if k in device.accuracy}
    if p.drift is not None:  # the machine's speed measured again: what times were scaled by (1 within the tolerance)
        predicted["drift"] = p.drift.to_json()
    sources = {**report.sources, "latency_ms_predicted": str(p.on)}
    warnings = report.warnings
    if p.unpredicted:
        warnings += (f"no latency model on {p.device} for {len(p.unpredicted)} layer(s), counted as 0 ms: "
                     f"{', '.join(p.unpredicted[:5])}{' ...' if len(p.unpredicted) > 5 else ''}",)
    if p.stand_ins:
        warnings += (f"{device.name} was calibrated without the tlplan runtime's kernels: {len(p.stand_ins)} layer(s) "
                     f"priced as PyTorch's own (run `tlplan calibrate --name {device.name} --add` on the device)",)
    warnings += _thread_mismatch(device)
    if device.statistic == "min" and report.measured is not None:
        warnings += (f"{device.name} predicts a step's fastest run; the measured column is the median of its runs",)
    return replace(report, layers=rows, totals=totals, predicted=predicted, sources=sources, warnings=warnings)


def _thread_mismatch(device: Any) -> tuple[str, ...]:
    """A measured profile of this machine predicts the framework threads it was timed with: say so
    where this process runs with another number (its measured column is not like for like)."""
    from .predict.devices import cpu_name

    threads = torch.get_num_threads()
    if device.source != "measured" or not device.threads or device.threads == threads or device.cpu != cpu_name():
        return ()
    return (f"{device.name} predicts training with {device.threads} framework thread(s); this process runs "
            f"{threads} (run it with OMP_NUM_THREADS={device.threads} to time like for like)",)


def _report(graph: LayerGraph, costs: CostTable, memory: MemoryBreakdown, scheme: str, device: str | None, timings: Any) -> ProfileReport:
    rows = []
    for cost in costs.layers:
        latency = None
        if timings is not None and cost.name in timings.layers:
            t = timings.layers[cost.name]
            latency = {"fwd": round(t.fwd_ms, 4), "bwd": None if t.bwd_ms is None else round(t.bwd_ms, 4)}
        rows.append(
            LayerRow(
                name=cost.name,
                op=cost.op,
                block=cost.block,
                output_shape=cost.output_shape,
                params=cost.params,
                trainable_params=cost.trainable_params,
                macs_fwd=cost.macs_fwd,
                macs_bwd_input=cost.macs_bwd_input,
                macs_bwd_weight=cost.macs_bwd_weight,
                saved_bytes=cost.saved_bytes,
                latency_ms=latency,
            )
        )
    totals: dict[str, Any] = dict(costs.totals)
    totals["peak_bytes"] = memory.peak_bytes
    measured = None
    if timings is not None:
        totals["latency_ms"] = {
            "fwd": round(sum(t.fwd_ms for t in timings.layers.values()), 3),
            "bwd": round(sum(t.bwd_ms or 0.0 for t in timings.layers.values()), 3),
        }
        totals["measured_step_ms"] = round(timings.step_ms, 3)
        measured = {
            "host": timings.where if timings.accelerator != "cpu" else host_description(),
            "accelerator": timings.accelerator,
            "threads": timings.threads,
            "repeats": timings.repeats,
            "statistic": "median after warm-up",
            "torch": torch.__version__,
        }
    warnings = list(graph.warnings)
    return ProfileReport(
        model=graph.model_name,
        input_shape=graph.input_shape,
        runtime=costs.runtime,
        scheme=scheme,
        device=device,
        layers=tuple(rows),
        totals=totals,
        memory=memory,
        measured=measured,
        sources=SOURCES if timings is not None else {k: v for k, v in SOURCES.items() if k != "latency_ms"},
        warnings=tuple(warnings),
        costs=costs,
    )


def host_description() -> str:
    from .predict.devices import cpu_name

    threads = torch.get_num_threads()
    return f"{cpu_name()}, {threads} thread{'s' if threads != 1 else ''}"
