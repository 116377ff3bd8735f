"""Reporters of ``tlplan train``: the epochs, then measured against predicted."""

from __future__ import annotations


from rich.console import Console

from ..training import RUN_SCHEMA, TrainResult
from . import tables, units

COLUMNS, ALIGN = ("", "predicted", "measured here", "measured/predicted"), "lrrr"
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
        name = result.predicted_here["on"].device
        rows.append([f"ms per step ({name})", units.ms(here), units.ms(step), "-" if step is None else f"{step / here:.3f}"])
    return rows


def note(result: TrainResult) -> str:
    extra = (f"; ms per step: {result.predicted_here['on']}, forward and backward (the optimizer step is measured, "
             "not predicted)") if result.predicted_here else ""
    if result.plan.frozen_bits_in_effect != 32:
        # PyTorch holds every frozen parameter as its fp32 tensor: predicted like that, to compare like for like
        extra += (f"; the plan counts frozen parameters at {result.plan.frozen_bits_in_effect} bits, PyTorch holds them "
                  "at 32 here: predicted at 32")
    return NOTE + extra


EPOCH_COLUMNS = ("epoch", "loss", "train acc", "val acc", "images/s")
EPOCH_NOTE = "loss, accuracy (held-out images for val) and images/s: measured here, during this run"


def _epoch_rows(result: TrainResult) -> list[list[str]]:
    return [[str(h.epoch), f"{h.loss:.4f}", f"{h.train_accuracy:.3f}", "-" if h.val_accuracy is None else f"{h.val_accuracy:.3f}",
             f"{h.images_per_s:,.1f}"] for h in result.history]


def _title(result: TrainResult) -> str:
    return f"training {result.plan.model} · {result.plan.scheme or 'plan'} · runtime {result.plan.runtime}"


def render_table(result: TrainResult, console: Console) -> None:
    console.print(tables.rich(_title(result), EPOCH_COLUMNS, _epoch_rows(result), "rrrrr", caption=EPOCH_NOTE))
    console.print(tables.rich("predicted vs measured", COLUMNS, _compare_rows(result), ALIGN, caption=note(result)))


def to_json(result: TrainResult) -> str:
    return tables.json_text(result.to_dict(), RUN_SCHEMA)


def to_markdown(result: TrainResult) -> str:
    lines = [f"### {_title(result)}", "", *tables.markdown(EPOCH_COLUMNS, _epoch_rows(result), "rrrrr"), "", f"- {EPOCH_NOTE}",
             "", "### predicted vs measured", "", *tables.markdown(COLUMNS, _compare_rows(result), ALIGN)]
    return "\n".join(lines + ["", f"- {note(result)}"]) + "\n"


def to_csv(result: TrainResult) -> str:
    return "epoch,loss,train_accuracy,val_accuracy,images_per_s\n" + "".join(
        f"{h.epoch},{h.loss},{h.train_accuracy},{'' if h.val_accuracy is None else h.val_accuracy},{h.images_per_s}\n"
        for h in result.history)
