"""Reporters of ``tlplan train``: the epochs, then measured against predicted."""

from __future__ import annotations

import json

from rich.console import Console
from rich.table import Table

from ..training import TrainResult
from . import units

NOTE = "predicted: the plan's memory model; measured: here, during and after this run; KB = 1024 bytes"


def _compare_rows(result: TrainResult) -> list[list[str]]:
    rows = []
    for label, key, fmt in (("kept for backward", "saved_bytes", units.human_bytes), ("peak memory", "peak_bytes", units.human_bytes)):
        p, m = result.predicted.get(key), result.measured.get(key)
        ratio = "-" if not p or m is None else f"{m / p:.3f}"
        rows.append([label, "-" if p is None else fmt(p), "-" if m is None else fmt(m), ratio])
    step, here = result.measured.get("step_ms"), result.predicted_here.get("step_ms")
    if here is None:
        rows.append(["ms per step", "- (no measured profile of this machine: tlplan calibrate)", units.ms(step), "-"])
    else:
        name = result.predicted_here["source"].split(" (")[0].removeprefix("predicted for ")
        rows.append([f"ms per step ({name})", units.ms(here), units.ms(step), "-" if step is None else f"{step / here:.3f}"])
    return rows


def note(result: TrainResult) -> str:
    extra = (f"; ms per step: {result.predicted_here['source']}, forward and backward (the optimizer step is measured, "
             "not predicted)") if result.predicted_here else ""
    return NOTE + extra


def render_table(result: TrainResult, console: Console) -> None:
    epochs = Table(title=f"training {result.plan.model} · {result.plan.scheme or 'plan'} · runtime {result.plan.runtime}")
    for col in ("epoch", "loss", "train acc", "val acc", "images/s"):
        epochs.add_column(col, justify="right", no_wrap=True)
    for h in result.history:
        epochs.add_row(str(h.epoch), f"{h.loss:.4f}", f"{h.train_accuracy:.3f}", "-" if h.val_accuracy is None else f"{h.val_accuracy:.3f}",
                       f"{h.images_per_s:,.1f}")
    console.print(epochs)
    table = Table(title="predicted vs measured", caption=note(result))
    for col, right in (("", False), ("predicted", True), ("measured here", True), ("measured/predicted", True)):
        table.add_column(col, justify="right" if right else "left", no_wrap=True)
    for row in _compare_rows(result):
        table.add_row(*row)
    console.print(table)


def to_json(result: TrainResult) -> str:
    return json.dumps({"model": result.plan.model, "history": [h.__dict__ for h in result.history],
                       "resumed_from": result.resumed_from, "predicted": result.predicted, "measured": result.measured,
                       "predicted_here": result.predicted_here}, indent=2) + "\n"


def to_markdown(result: TrainResult) -> str:
    lines = ["### predicted vs measured", "", "| | predicted | measured here | measured/predicted |", "|---|---:|---:|---:|"]
    lines += ["| " + " | ".join(r) + " |" for r in _compare_rows(result)]
    return "\n".join(lines + ["", f"- {note(result)}"]) + "\n"


def to_csv(result: TrainResult) -> str:
    return "epoch,loss,train_accuracy,val_accuracy\n" + "".join(
        f"{h.epoch},{h.loss},{h.train_accuracy},{'' if h.val_accuracy is None else h.val_accuracy}\n" for h in result.history)
