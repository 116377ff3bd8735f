"""``tlplan train``: run a plan on the user's data, and show that its predictions held.

The model named by the plan is built (its classifier sized to the classes found), set up with
``apply_plan`` and trained with the plan's optimizer at the plan's batch size (a last partial
batch is dropped: the plan's memory was predicted for that batch). Checkpoints are written
atomically at the end of every epoch, so an interrupted run resumes from the last one. At the end,
bytes kept for backward, peak memory and ms per step are measured and set beside the predictions.
"""

from __future__ import annotations

import copy
import gc
import hashlib
import json
import os
import statistics
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from .costs.annotate import CostTable, annotate
from .data import Data
from .display import Tabular, clip, size
from .errors import BadInputError, arg
from .fileio import exclusive, write_atomic, write_atomic_with
from .measure.accelerator import CPU, Accelerator, select_accelerator
from .measure.allocator import keep_freed_memory
from .measure.peak import measure_peak
from .measure.saved import measure_saved_bytes
from .plan.plan import Plan
from .plan.schemes import classifier_layers, trainable_params
from .plan.validate import shapes_of, validate_options, validate_shapes
from .planning import predicted_costs
from .runtime import apply_plan
from .runtime.qas import make_optimizer  # QAS, or torch's SGD and Adam
from .trace import LayerGraph, trace_model

if TYPE_CHECKING:
    from .predict.devices import Device

CHECKPOINT = "checkpoint.pt"
RUN_RECORD = "run.json"  # the run's machine-readable record, beside its checkpoint
RUN_SCHEMA = "tlplan.train/1"


@dataclass(frozen=True)
class EpochStats:
    epoch: int
    loss: float
    train_accuracy: float
    val_accuracy: float | None
    images_per_s: float


@dataclass(frozen=True, repr=False)  # repr: a line (Tabular's)
class TrainResult(Tabular):
    """A finished run. In a notebook, the CLI's tables; ``to_dataframe()``: one row per epoch."""

    _reporter = "tlplan.report.train"

    plan: Plan  # as run: classifier sized to the data
    history: tuple[EpochStats, ...]
    resumed_from: int | None  # the epoch a checkpoint let the run skip to
    predicted: dict = field(default_factory=dict)
    measured: dict = field(default_factory=dict)  # saved_bytes, peak_bytes, step_ms (measured here)
    predicted_here: dict = field(default_factory=dict)  # step_ms, on (a PredictedOn): a measured profile of this machine
    environment: dict = field(default_factory=dict)  # where it ran: machine, threads, versions, data, steps, seconds

    def to_dict(self) -> dict:
        """The run as data: what ``--format json`` prints and ``run.json`` keeps (docs/json.md)."""
        here = self.predicted_here
        return {
            "model": self.plan.model, "scheme": self.plan.scheme, "runtime": self.plan.runtime,
            "input_shape": list(self.plan.input_shape), "num_classes": self.plan.num_classes,
            "optimizer": asdict(self.plan.optimizer),
            "history": [h.__dict__ for h in self.history], "resumed_from": self.resumed_from,
            "predicted": dict(self.predicted), "measured": dict(self.measured),
            "predicted_here": {"step_ms": here["step_ms"], "source": str(here["on"])} if here else {},
            "environment": dict(self.environment),
        }

    def _summary(self) -> str:
        plan, history = self.plan, self.history
        text = f"{clip(plan.model, 48)} · {clip(plan.scheme or 'plan', 32)} · runtime {plan.runtime}: {len(history)} epochs"
        if self.resumed_from is not None:
            text += f" (resumed from {self.resumed_from})"
        if history:
            text += f", loss {history[0].loss:.4f} → {history[-1].loss:.4f}"
            if history[-1].val_accuracy is not None:
                text += f", val acc {history[-1].val_accuracy:.3f}"
        if self.measured.get("peak_bytes") is not None:
            text += f", peak {size(self.measured['peak_bytes'])} measured"
        return text

    def _frame(self) -> tuple[list[str], list[dict]]:
        return [f.name for f in fields(EpochStats)], [asdict(h) for h in self.history]


Progress = Callable[[int, int, int, float], None]  # (epoch, step in epoch, steps per epoch, loss)


def plan_for_data(plan: Plan, num_classes: int, trust_model_code: bool = False) -> tuple[Plan, nn.Module]:
    """The plan's model with ``num_classes`` outputs, and the plan checked against it (model code
    the plan names runs only with ``trust_model_code``)."""
    shaped, model, _, _ = _for_data(plan, num_classes, trust_model_code)
    return shaped, model


def _for_data(plan: Plan, num_classes: int, trust_model_code: bool = False):
    """``plan_for_data``, with the model's graph and the plan's costs on it."""
    from .zoo import load_model

    if plan.runtime == "mcu":
        raise BadInputError(f"this plan is for the mcu runtime (an int8 engine's accounting); solve with {arg('runtime')} tlplan to train here")
    model = load_model(plan.model, num_classes=num_classes, trust_code=trust_model_code)
    if plan.lite:  # TinyTL lite residual branches the plan trains
        from .runtime.lite import with_lite

        model = with_lite(model, plan.input_shape, plan.lite)
    graph = trace_model(model, plan.input_shape, plan.model)
    heads = {layer.name for layer in classifier_layers(graph)}
    validate_shapes(graph, {k: v for k, v in plan.shapes.items() if k not in heads}, f"plan for {plan.model}")
    validate_options(graph, plan.layers, f"plan for {plan.model}", plan.runtime)
    if not trainable_params(graph, plan.layers):
        raise BadInputError(f"plan for {plan.model} trains no parameter: there is nothing to fine-tune; "
                            "give its layers options (a scheme or `tlplan solve` writes them)")
    # frozen parameters at 32 bits whatever the plan's frozen_bits: PyTorch holds their fp32 tensors
    # here, and the prediction is set beside what is measured (the report says so)
    costs = annotate(graph, plan.layers, plan.runtime, plan.precision, frozen_bits=32)
    shaped = replace(plan, num_classes=num_classes, predicted=MappingProxyType(predicted_costs(costs, plan.optimizer)),
                     shapes=MappingProxyType(shapes_of(graph, plan.layers)))
    return shaped, model, graph, costs


def check_out_dir(out_dir: Path) -> None:
    """The run folder can be made (or is a folder) and written to; else a one-line error now."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise BadInputError(f"{arg('out')} {out_dir} is a file, not a folder; give a folder for the run's checkpoints")
    existing = next(p for p in (out_dir, *out_dir.absolute().parents) if p.exists())  # made when training starts
    if not existing.is_dir():
        raise BadInputError(f"cannot make the run folder {out_dir}: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise BadInputError(f"cannot make the run folder {out_dir}: {existing} is not writable; give another {arg('out')}")


def _fingerprint(plan: Plan) -> str:
    text = json.dumps({k: v for k, v in plan.to_dict().items() if k != "predicted"}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _save_checkpoint(path: Path, state: dict) -> None:
    write_atomic_with(path, lambda f: torch.save(state, f))  # a crash leaves the previous checkpoint whole


def _split(data: Data, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(data.labels), generator=g)
    n_val = len(order) // 5 if len(order) >= 10 else 0
    return order[n_val:], order[:n_val]


def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch: int,
             on: torch.device | str = "cpu") -> float:
    was = model.training
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(labels), batch):
            predicted = model(images[i : i + batch].to(on)).argmax(1).cpu()
            correct += int((predicted == labels[i : i + batch]).sum())
    model.train(was)
    return correct / max(1, len(labels))


def train(
    plan: Plan,
    data: Data,
    *,
    out_dir: Path,
    weights: dict | None = None,
    epochs: int | None = None,
    steps: int | None = None,
    progress: Progress | None = None,
    seed: int = 0,
    measure: bool = True,
    device: str | Device | None = None,
    trust_model_code: bool = False,
    accelerator: str | Accelerator | None = "auto",
) -> TrainResult:
    """Train as ``plan`` says; see the module docstring.

    ``accelerator``: ``cpu``, ``cuda`` or ``auto`` (cuda where ``device`` names a profile
    calibrated on cuda and this PyTorch can use CUDA; ``tlplan.measure.accelerator``): the model
    and each batch are placed there, steps are timed with its stopwatch, the peak is its own
    (on a GPU the caching allocator's), and the predicted peak is counted as it counts memory.
    """
    check_out_dir(out_dir)  # before seconds of setup
    found = None
    if device is not None:
        from .predict.devices import resolve_device

        found = resolve_device(device)
    chosen = select_accelerator(accelerator, device=found)  # cuda without CUDA: an error before any setup
    prepared = _for_data(plan, data.num_classes, trust_model_code)
    here = _profile_here(found, chosen) if measure else None  # before training: a wrong --device fails now
    try:
        Path(out_dir).mkdir(parents=True, exist_ok=True)  # only once the run can start
    except OSError as exc:
        raise BadInputError(f"cannot make the run folder {out_dir}: {exc.strerror or exc}") from None
    with exclusive(Path(out_dir) / ".lock",
                   f"another tlplan train is running in {out_dir}; wait for it or give another {arg('out')}"):
        return _train(prepared, here, data, out_dir=Path(out_dir), weights=weights, epochs=epochs, steps=steps,
                      progress=progress, seed=seed, measure=measure, accelerator=chosen)


def _train(prepared: tuple, here, data: Data, *, out_dir: Path, weights: dict | None, epochs: int | None,
           steps: int | None, progress: Progress | None, seed: int, measure: bool,
           accelerator: Accelerator = CPU) -> TrainResult:
    plan, model, graph, costs = prepared
    on = accelerator.device
    if weights is not None:
        own = model.state_dict()
        model.load_state_dict({k: v for k, v in weights.items() if k in own and v.shape == own[k].shape}, strict=False)
    batch = plan.input_shape[0]
    train_idx, val_idx = _split(data, seed)
    per_epoch = len(train_idx) // batch
    if per_epoch == 0:
        raise BadInputError(f"data {data.source}: {len(train_idx)} training images are fewer than one batch of {batch}")
    if steps is not None:
        epochs = -(-steps // per_epoch)
    epochs = epochs or 1
    apply_plan(model, plan, graph=graph)
    model.to(on)
    model.train()
    trained = [p for p in model.parameters() if p.requires_grad]
    opt = make_optimizer(trained, plan.optimizer)
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt = out_dir / CHECKPOINT
    fingerprint = _fingerprint(plan)
    start, history, resumed = 0, [], None
    if ckpt.exists():
        try:
            state = torch.load(ckpt, map_location="cpu", weights_only=True)
        except Exception:
            raise BadInputError(f"checkpoint {ckpt} cannot be read; delete it to start over") from None
        if state.get("fingerprint") != fingerprint:
            raise BadInputError(f"checkpoint {ckpt} belongs to another plan; use another {arg('out')} or delete it")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start = resumed = int(state["epoch"])
        history = [EpochStats(**h) for h in state["history"]]
    keep_freed_memory()  # steps run as the measured profiles' timings did (tlplan.measure.allocator)
    t_run = time.perf_counter()
    step_times: list[float] = []
    done_steps = start * per_epoch
    for epoch in range(start, epochs):
        order = train_idx[torch.randperm(len(train_idx), generator=torch.Generator().manual_seed(seed + epoch))]
        losses, correct, seen, t_epoch = [], 0, 0, time.perf_counter()
        for i in range(per_epoch):
            if steps is not None and done_steps >= steps:
                break
            idx = order[i * batch : (i + 1) * batch]
            x, y = data.images[idx].to(on), data.labels[idx].to(on)
            accelerator.synchronize()
            timer = accelerator.timer()  # the host's clock; CUDA events on a GPU
            timer.start()
            out = model(x)
            loss = F.cross_entropy(out, y)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            timer.stop()
            step_times.append(timer.ms())
            losses.append(loss.detach().item())
            correct += int((out.argmax(1) == y).sum())
            seen += len(y)
            done_steps += 1
            if progress:
                progress(epoch, i + 1, per_epoch, losses[-1])
        val = accuracy(model, data.images[val_idx], data.labels[val_idx], batch, on) if len(val_idx) else None
        history.append(EpochStats(epoch + 1, statistics.fmean(losses) if losses else float("nan"), correct / max(1, seen), val,
                                  seen / max(1e-9, time.perf_counter() - t_epoch)))
        _save_checkpoint(ckpt, {
            "fingerprint": fingerprint, "epoch": epoch + 1, "model": model.state_dict(),
            "optimizer": opt.state_dict(), "history": [h.__dict__ for h in history],
        })
    measured = {}
    if measure:
        shape = plan.input_shape
        measured["saved_bytes"] = measure_saved_bytes(model, shape, None, copy_model=True).saved_bytes
        # what the loop still holds (the last batch and its logits, the trained weights and their
        # optimizer) leaves the accelerator first: on a GPU the allocator's peak counts every tensor in
        # the process, and the step measured below is a copy's, as a fresh process would run it
        x = y = out = loss = opt = None
        model.to("cpu")
        gc.collect()
        measured["peak_bytes"] = measure_peak(copy.deepcopy(model), shape, plan.optimizer, accelerator).peak_bytes
        if step_times:
            measured["step_ms"] = round(statistics.median(step_times), 3)
    environment = _environment(data, done_steps - start * per_epoch, time.perf_counter() - t_run, accelerator)
    predicted = dict(plan.predicted)
    if accelerator.kind == "cuda" and "peak_bytes" in predicted:  # as the caching allocator counts it
        from .memory.cuda import cuda_breakdown
        from .memory.timeline import simulate_peak

        predicted["peak_bytes"] = cuda_breakdown(costs, simulate_peak(costs, plan.optimizer), plan.optimizer,
                                                 capability=getattr(accelerator, "capability", None)).peak_bytes
    result = TrainResult(plan, tuple(history), resumed, predicted, measured,
                         _predicted_here(graph, costs, here) if measure else {}, environment)
    write_atomic(out_dir / RUN_RECORD, json.dumps({"schema": RUN_SCHEMA, **result.to_dict()}, indent=2) + "\n")
    return result


def _environment(data: Data, steps_run: int, seconds: float, accelerator: Accelerator = CPU) -> dict:
    """Where and how the run's measured numbers were taken: they hold for this machine only."""
    import platform
    import sys

    from . import __version__
    from .predict.devices import cpu_name

    return {
        "cpu": cpu_name(), "cores": os.cpu_count(), "threads": torch.get_num_threads(), "platform": platform.platform(),
        "python": sys.version.split()[0], "torch": torch.__version__, "tlplan": __version__,
        "data": data.source, "images": len(data.labels), "classes": data.num_classes,
        "steps_run": steps_run, "seconds": round(seconds, 3),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "accelerator": accelerator.kind,
        **({"gpu": accelerator.name} if accelerator.kind == "cuda" else {}),
    }


def _profile_here(device: str | Device | None, accelerator: Accelerator = CPU):
    """The profile to predict this machine's step time with: ``device`` (a measured profile), else
    a measured profile of this machine (same CPU, cores, threads; on a GPU, same GPU) where one exists."""
    from .predict.devices import resolve_device, this_machine

    if device is None:
        return this_machine(accelerator=accelerator)
    found = resolve_device(device)
    if found.source != "measured":
        raise BadInputError(f"{arg('device')} {found.name} is a datasheet profile: training runs here, so its step time can only be "
                            "compared with a profile measured on this machine (tlplan calibrate)")
    return found


def _predicted_here(graph: LayerGraph, costs: CostTable, found) -> dict:
    """This machine's step time for the plan ``costs`` stand for, predicted from the profile ``found`` (None: nothing)."""
    from .predict.predictor import predict_latency

    if found is None or not found.predicts:
        return {}
    prediction = predict_latency(graph, costs, found)
    return {"step_ms": round(prediction.step_ms, 3), "on": prediction.on}
