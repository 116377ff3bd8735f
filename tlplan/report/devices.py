"""Device reporters: the profile list, a calibration's result, an evaluation's accuracy (data in, text out)."""

from __future__ import annotations

from typing import Sequence

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..predict.drift import SpeedIndex
from . import units
from .rows import Rows


def _accuracy(d) -> str:
    acc = d.accuracy
    if not acc:
        return "not evaluated" if d.source == "measured" else "-"
    return f"MAPE {acc['mape']:.1f}%, {acc['within_10']:.0f}% within ±10%"


def devices_rows(devices: Sequence, roots: Sequence[tuple[str, str]]) -> Rows:
    """Name, source (measured / datasheet), where it came from, RAM and what training may use,
    peak, date, accuracy; ``roots``: (origin, folder) of every folder searched."""
    where = "; ".join(f"{origin}: {folder}" for origin, folder in roots)
    columns = ("name", "source", "from", "RAM", "usable RAM", "peak fp32 GFLOPS", "date", "accuracy", "description")
    cells = tuple((
        d.name, d.source + (f", adapted from {d.adapted['from']}" if d.adapted else ""), d.origin or "-", units.human_bytes(d.ram_bytes), units.human_bytes(d.usable_ram_bytes),
        f"{d.peak_flops_fp32 / 1e9:,.2f}" if d.peak_flops_fp32 else "-", d.date or "-", _accuracy(d), d.description,
    ) for d in devices)
    records = tuple({
        "name": d.name, "description": d.description, "source": d.source, "origin": d.origin,
        "folder": str(d.folder) if d.folder else None, "ram_bytes": d.ram_bytes,
        "usable_ram_bytes": d.usable_ram_bytes, "peak_flops_fp32": d.peak_flops_fp32, "date": d.date,
        "predicts_latency": d.predicts, "accuracy": dict(d.accuracy) if d.accuracy else None,
    } for d in devices)
    return Rows(
        schema="tlplan.devices/1", title="device profiles", columns=columns, align="lllrrrlll", cells=cells,
        records=records, key="devices", meta={"roots": [{"origin": origin, "folder": folder} for origin, folder in roots]},
        caption=f"from {where}. KB/MB/GB = 1024-based; usable RAM = RAM − runtime overhead (framework, "
                "CUDA context); accuracy: held-out networks' whole training step, leave-one-network-out",
    )


def render_calibrated(device, console: Console) -> None:
    c = device.calibration or {}
    console.print(f"[bold]wrote[/bold] {escape(str(device.folder))}: {c.get('configs', 0):,} layer configurations "
                  f"({c.get('rows', 0):,} timed passes) and {c.get('steps', 0)} whole steps, "
                  f"{c.get('elapsed_s', 0) / 60:.1f} min of measuring (measured here)", highlight=False)
    console.print(f"runtime overhead before any tensor: {units.human_bytes(device.runtime_overhead_bytes)} "
                  f"(measured here); usable RAM {units.human_bytes(device.usable_ram_bytes)}", highlight=False)
    _speed_change(c.get("speed_change"), console)
    console.print(f"next: tlplan calibrate --evaluate {device.name}  (how well it predicts networks it never saw)",
                  highlight=False)


def _speed_change(change, console: Console) -> None:
    from ..predict.calibration import speed_change_note

    note = speed_change_note(change)
    if note:
        console.print(f"[bold]note[/bold]: {escape(note)}", highlight=False)


#: fewer layer configurations than this in a quick adaptation: too few to trust (a busy machine)
FEW_CONFIGS = 100


def render_quick(result, console: Console) -> None:
    """``calibrate --quick``: what was timed, in how long, and the correction fitted on it."""
    d, r = result.device, result.record
    console.print(f"[bold]wrote[/bold] {escape(str(d.folder))}: {escape(r['from'])}'s models adapted to this machine "
                  f"on {r['configs']:,} layer configurations ({r['rows']:,} timed passes) and {r['steps']} whole steps "
                  f"of {escape(r['networks'])}, measured here in {r['elapsed_s']:.0f} s of a {r['budget_s']:.0f} s budget",
                  highlight=False)
    scales = sorted(r.get("scales", {}).values())
    spread = f", per op and pass {scales[0]:.2f}-{scales[-1]:.2f}" if scales else ""
    overhead = r.get("overhead_ms")
    refitted = (f"per-step overhead refitted on the steps: {overhead['per_step']:+.2f} ms a step, "
                f"{1000 * overhead['per_layer']:+.0f} µs a layer" if overhead else "per-step overhead scaled alike")
    console.print(f"correction (fitted, adapted from {escape(r['from'])}): residual models where 8 rows or more, "
                  f"else layer times × {r['default_scale']:.2f} (median{spread}); {refitted}", highlight=False)
    index = SpeedIndex.from_json(d.speed_index or {})
    varied = f"; the machine's speed strayed ±{100 * index.variation:.0f} % meanwhile" if index.variation is not None else ""
    console.print(f"speed index stored (the median of {r.get('speed_indices', 2)} timed through the run{varied}): "
                  f"predictions with {escape(d.name)} on this machine are scaled by its speed then, where it changed by "
                  f"more than {100 * index.tolerance:.0f} % (drift correction)", highlight=False)
    _speed_change(result.speed_change, console)
    if r["configs"] < FEW_CONFIGS:
        console.print(f"[bold]note[/bold]: only {r['configs']} layer configurations and {r['steps']} whole steps were "
                      f"timed in {r['elapsed_s']:.0f} s (a short budget, or one spent waiting for a quiet CPU): too few "
                      "for the correction to hold on other networks; give a larger --budget-s (300 s times about 600), "
                      "when the machine is quiet", highlight=False)
    console.print(f"next: tlplan calibrate --evaluate {escape(d.name)} --networks YOUR_NETWORKS  (networks outside "
                  "the adaptation set)", highlight=False)


def quick_json(result) -> str:
    """``calibrate --quick --format json`` (``schema``: ``tlplan.calibration/1``)."""
    from . import tables

    d = result.device
    adapted = dict(result.record)
    # a list of records (not an object keyed by op/pass): every field has a fixed name to document
    adapted["scales"] = [{"op": key.rpartition("/")[0], "pass": key.rpartition("/")[2], "scale": value}
                         for key, value in adapted.get("scales", {}).items()]
    return tables.json_text({
        "profile": d.name, "folder": str(d.folder) if d.folder else None, "adapted": adapted,
        "speed_change": result.speed_change, "runtime_overhead_bytes": d.runtime_overhead_bytes,
        "usable_ram_bytes": d.usable_ram_bytes,
    }, "tlplan.calibration/1")


def render_added(device, record: dict, dropped: bool, console: Console) -> None:
    console.print(f"[bold]added[/bold] to {escape(str(device.folder))}: {record['ops']}: {record['configs']:,} layer configurations "
                  f"({record['rows']:,} timed passes), {record['elapsed_s'] / 60:.1f} min of measuring (measured here)",
                  highlight=False)
    ratio = record.get("time_vs_profile")
    if ratio is not None:
        console.print(f"{record['rechecked_configs']} of the profile's configurations re-timed: they now take {ratio:.2f}× "
                      "their time in the profile (measured here; far from 1, the machine runs otherwise than at "
                      "calibration, and the new ops' times with it)", highlight=False)
    if dropped:
        console.print(f"the accuracy figures were dropped (plain-PyTorch predictions changed): "
                      f"tlplan calibrate --evaluate {device.name}", highlight=False)


def render_evaluation(evaluation, console: Console) -> None:
    """Per held-out network and overall: MAPE and share within ±10 % of the measured step."""
    table = Table(title=f"{evaluation.device}: whole training step, predicted without the network vs measured here",
                  caption=" and ".join(evaluation.held_out) + ": each network's samples and steps left out of the fit "
                          "that predicts it, or never in it")
    for col in ("held-out network", "cases", "MAPE %", "within ±10 %", "worst error %"):
        table.add_column(col, justify="left" if col == "held-out network" else "right")
    for net, figures in evaluation.per_network.items():
        worst = max((c for c in evaluation.cases if c.network == net), key=lambda c: abs(c.error))
        table.add_row(net, str(figures["cases"]), f"{figures['mape']:.1f}", f"{figures['within_10']:.0f}%",
                      f"{100 * worst.error:+.1f}")
    overall = evaluation.overall
    table.add_section()
    runtimes = evaluation.per_runtime
    if len(runtimes) > 1:
        for runtime, figures in runtimes.items():
            worst = max((c for c in evaluation.cases if c.runtime == runtime), key=lambda c: abs(c.error))
            table.add_row(f"all, {runtime} runtime", str(figures["cases"]), f"{figures['mape']:.1f}",
                          f"{figures['within_10']:.0f}%", f"{100 * worst.error:+.1f}")
    table.add_row("all", str(overall["cases"]), f"{overall['mape']:.1f}", f"{overall['within_10']:.0f}%", "", style="bold")
    console.print(table)
    how = " and ".join(evaluation.held_out)
    console.print(f"MAPE {overall['mape']:.1f}%, {overall['within_10']:.0f}% of {overall['cases']} predictions within ±10% "
                  f"(predicted, {how}; measured here), {evaluation.seconds / 60:.1f} min", highlight=False)
    noise = evaluation.noise
    if noise is not None:
        console.print(f"noise floor: two measurements of the same step, minutes apart, agree to MAPE {noise['mape']:.1f}%, "
                      f"{noise['within_10']:.0f}% within ±10% (measured here, {noise['cases']} steps)", highlight=False)
    applied = [d.ratio for d in evaluation.drifts if not d.within]
    if applied:
        console.print(f"drift-corrected: predicted times scaled by {_span(applied)} (the machine's speed now against "
                      "at calibration)", highlight=False)
    unapplied = [d.measured_ratio for d in evaluation.drifts if d.within]
    if unapplied:
        console.print(f"drift: {'elsewhere, ' if applied else ''}the reference workload took {_span(unapplied)}× its "
                      f"time at calibration; within ±{100 * (evaluation.drift_tolerance or 0.0):.0f} % (its noise, or "
                      "the machine's own variation during calibration), predicted times were not scaled", highlight=False)
    _speed_change(evaluation.speed_change, console)
    if evaluation.skipped:
        console.print(f"left out: {len(evaluation.skipped)} case(s) whose scheme does not apply, e.g. "
                      f"{escape(evaluation.skipped[0])}", highlight=False)


def calibration_json(device, added: dict | None = None, accuracy_dropped: bool = False) -> str:
    """``calibrate --format json``: the profile written (``schema``: ``tlplan.calibration/1``)."""
    from . import tables

    data = {
        "profile": device.name, "folder": str(device.folder) if device.folder else None,
        "calibration": dict(device.calibration or {}), "runtime_overhead_bytes": device.runtime_overhead_bytes,
        "usable_ram_bytes": device.usable_ram_bytes,
    }
    if added is not None:
        data.update(added=dict(added), accuracy_dropped=accuracy_dropped)
    return tables.json_text(data, "tlplan.calibration/1")


def evaluation_json(evaluation, device) -> str:
    """``calibrate --evaluate --format json``: figures and every case (``schema``: ``tlplan.evaluation/1``)."""
    from dataclasses import asdict

    from . import tables

    return tables.json_text({
        "device": evaluation.device, "folder": str(device.folder) if device.folder else None,
        "seconds": round(evaluation.seconds, 1), "accuracy": evaluation.accuracy_field(),
        "per_network": evaluation.per_network, "per_runtime": evaluation.per_runtime,
        "noise": evaluation.noise, "held_out": list(evaluation.held_out),
        "drift_ratios": list(evaluation.drift_ratios), "drift_measured": list(evaluation.drift_measured),
        "drift_tolerance": evaluation.drift_tolerance, "speed_change": evaluation.speed_change,
        "skipped": list(evaluation.skipped),
        "cases": [{**asdict(c), "error": c.error} for c in evaluation.cases],
    }, "tlplan.evaluation/1")


def _span(values) -> str:
    low, high = min(values), max(values)
    return f"{low:.2f}" if high - low < 0.005 else f"{low:.2f}-{high:.2f}"
