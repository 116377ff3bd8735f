"""The ``tlplan`` command: thin typer commands over the library; errors mapped to exit codes here."""

from __future__ import annotations

import enum
import sys
import warnings
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import BadInputError, TlplanError
from . import output
from .calibrate import calibrate as calibrate_command

app = typer.Typer(
    name="tlplan",
    help="What training a CNN costs on a small device, layer by layer, and what to train to fit.",
    no_args_is_help=True,
    add_completion=True,  # tlplan --install-completion: the shell's own completion of commands and options
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help text is plain: "[default: 1]" and "[tool.tlplan]" print as written
    context_settings={"help_option_names": ["-h", "--help"]},
)


class Format(str, enum.Enum):
    table = "table"
    json = "json"
    csv = "csv"
    markdown = "markdown"


# options several commands share
ModelArg = Annotated[Optional[str], typer.Argument(help="Zoo name (see `tlplan zoo`) or package.module:factory; default: the project's settings.", show_default=False)]
ResolutionOpt = Annotated[Optional[int], typer.Option(help="Input height and width (default: the model's own).")]
FormatOpt = Annotated[Format, typer.Option("--format", help="Output format.")]
TrustOpt = Annotated[bool, typer.Option(
    "--trust-model-code",
    help="Build a model the plan names as package.module:factory (code; by default only zoo names and the "
         "project's own model are built from a plan, since a plan may come from someone else).")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No notes or warnings on stderr.")]
OutputOpt = Annotated[Optional[Path], typer.Option("--output", "-o", help="Write to FILE (atomically) instead of stdout.")]
FrozenBitsOpt = Annotated[Optional[int], typer.Option(
    "--frozen-bits", help="Bits each frozen parameter is counted at in memory: 8 (TinyTL's quantised frozen weights) or 32.  "
                          "[default: 32; 8 on the mcu runtime]", show_default=False)]


ReorderOpt = Annotated[Optional[bool], typer.Option(
    "--reorder/--no-reorder", help="mcu: apply each gradient as soon as it is computed (the 256KB paper's operator "
                                   "reordering), or keep every one until the update.  [default: on for mcu; a plan's own]",
    show_default=False)]
AcceleratorOpt = Annotated[str, typer.Option(
    "--accelerator", metavar="auto|cpu|cuda",
    help="Where to time and measure: cpu, cuda (a GPU: CUDA events, the caching allocator's peak, the GPU's memory "
         "model), or auto (cuda when --device names a profile calibrated on cuda and a GPU is here; else cpu).")]


@app.command()
def profile(
    model: ModelArg = None,
    resolution: Annotated[Optional[int], typer.Option(help="Input height and width (default: the model's own, 224 or 128).")] = None,
    batch: Annotated[Optional[int], typer.Option(help="Batch size.  [default: 1]", show_default=False)] = None,
    num_classes: Annotated[Optional[int], typer.Option(help="Classes of the classifier (default 1000; 10 on the mcu runtime, as solve).", show_default=False)] = None,
    scheme: Annotated[Optional[str], typer.Option(help="What to train: full, last, bias, norm+last, blocks:K, mobiletl:K, layers:K, gradfilter:K:R, sparse:FILE, lite, lite+bias, lite:K, or a plan file.  [default: full]", show_default=False)] = None,
    runtime: Annotated[Optional[str], typer.Option(help="Memory accounting: tlplan (tlplan's runtime ops), eager (plain PyTorch autograd), mcu (an int8 engine).  [default: tlplan]", show_default=False)] = None,
    precision: Annotated[Optional[str], typer.Option(help="Activations the tlplan runtime keeps: fp32 or fp16.  [default: fp32]", show_default=False)] = None,
    device: Annotated[Optional[str], typer.Option(help="Device profile name or unique prefix (see `tlplan devices`).")] = None,
    no_measure: Annotated[bool, typer.Option("--no-measure", help="Skip timing the layers on this machine.")] = False,
    repeats: Annotated[int, typer.Option(help="Timed runs per layer (median reported).")] = 5,
    strict: Annotated[bool, typer.Option(help="Fail on ops that have no cost rule.")] = False,
    columns: Annotated[Optional[str], typer.Option(help="Table and markdown columns to show, comma-separated, from: layer, op, output, params, trained, macs-fwd, macs-bwd, kept, ms-fwd, ms-bwd, predicted-fwd, predicted-bwd (default: all there are; csv and json always have every field).", show_default=False)] = None,
    fmt: FormatOpt = Format.table,
    out: OutputOpt = None,
    plot: Annotated[Optional[Path], typer.Option(help="Also write a PNG (or SVG/PDF by its name): bytes kept per layer, by kind, against full.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar, no warnings.")] = False,
    frozen_bits: FrozenBitsOpt = None,
    reorder: ReorderOpt = None,
    accelerator: AcceleratorOpt = "auto",
) -> None:
    """Per-layer training cost: params, MACs forward/backward, bytes kept for backward, measured ms."""
    from .. import profiling, zoo
    from ..errors import UnsupportedOpError
    from ..report import text

    cfg = _resolve(model=model, resolution=resolution, batch=batch, num_classes=num_classes, scheme=scheme,
                   runtime=runtime, precision=precision, device=device,
                   defaults={"num_classes": None})  # none given: the runtime's default below
    model, scheme, runtime, precision, num_classes = cfg["model"], cfg["scheme"], cfg["runtime"], cfg["precision"], cfg["num_classes"]
    shape = _input_shape(model, cfg["resolution"], cfg["batch"])
    if num_classes is None:  # as solve: the 256KB paper's tasks are 10-class, and a 1000-class head
        # alone would fill an MCU's SRAM, so a profile of solve's plan would not show solve's figures
        num_classes = 10 if runtime == "mcu" else 1000
        if runtime == "mcu" and not quiet:
            output.stderr_console().print("note: mcu runtime: profiling for a 10-class task (--num-classes to change)")
    _positive(repeats=repeats, num_classes=num_classes)
    device = _device(cfg["device"], quiet)
    chosen = _columns(columns)
    net = zoo.load_model(model, num_classes=num_classes)
    with output.progress_bar("timing layers", quiet) as progress:
        report = profiling.profile(
            net, shape, scheme=scheme, runtime=runtime, device=device, precision=precision, frozen_bits=frozen_bits,
            model_name=model, measure=not no_measure and runtime != "mcu", repeats=repeats, progress=progress,
            reorder=reorder, accelerator=accelerator,
        )
    if strict and report.costs is not None and report.costs.unsupported:
        raise UnsupportedOpError(f"no cost rule for: {', '.join(report.costs.unsupported)} (drop --strict to count them as zero)")
    if plot is not None:
        from ..report.plot import plot_kept_bytes

        full = report if report.scheme == "full" else profiling.profile(net, shape, scheme="full", runtime=runtime,
                                                                         precision=precision, model_name=model,
                                                                         frozen_bits=frozen_bits)
        plot_kept_bytes(report, full, plot)
        if not quiet:
            output.stderr_console().print(f"wrote {plot}")
    if chosen is not None:
        import functools
        import types

        text = types.SimpleNamespace(render_table=functools.partial(text.render_table, columns=chosen),
                                     to_markdown=functools.partial(text.to_markdown, columns=chosen),
                                     to_json=text.to_json, to_csv=text.to_csv)
    _emit(report, text, fmt, out, quiet, summary=True)


def _columns(given: Optional[str]) -> Optional[tuple[str, ...]]:
    """``--columns`` checked against the profile table's column names."""
    if given is None:
        return None
    import difflib

    from ..report.profile_rows import COLUMN_NAMES

    names = tuple(n.strip().lower() for n in given.split(",") if n.strip())
    if not names:
        raise BadInputError(f"--columns: give column names, comma-separated, from {', '.join(COLUMN_NAMES)}")
    for name in names:
        if name not in COLUMN_NAMES:
            close = difflib.get_close_matches(name, COLUMN_NAMES, n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            raise BadInputError(f"--columns: no column {name!r}; {hint}the columns are {', '.join(COLUMN_NAMES)}")
    return names


def _emit(report, reporter, fmt: Format, out: Optional[Path], quiet: bool, summary: bool = False) -> None:
    """Render ``report`` with ``reporter`` (a module of render_table / to_json / to_csv / to_markdown);
    with ``summary``, also append its markdown to a GitHub job summary when there is one."""
    if summary:
        _step_summary(report, reporter)
    if fmt is Format.table:
        if out is None:
            reporter.render_table(report, output.stdout_console())
            return
        import io

        from rich.console import Console

        buf = io.StringIO()
        reporter.render_table(report, output.FittingConsole(file=buf, width=200, no_color=True, highlight=False))
        rendered = buf.getvalue()
    else:
        rendered = {Format.json: reporter.to_json, Format.csv: reporter.to_csv, Format.markdown: reporter.to_markdown}[fmt](report)
    if out is None:
        sys.stdout.write(rendered)
    else:
        output.write_atomic(out, rendered)
        if not quiet:
            output.stderr_console().print(f"wrote {out}")


@app.command()
def compare(
    model: ModelArg = None,
    schemes: Annotated[str, typer.Option(help="Comma-separated schemes; full is added as the reference.")] = "full,bias,blocks:5,mobiletl:5,gradfilter:4:2",
    resolution: ResolutionOpt = None,
    batch: Annotated[Optional[int], typer.Option(help="Batch size.  [default: 1]", show_default=False)] = None,
    num_classes: Annotated[Optional[int], typer.Option(help="Classes of the classifier.  [default: 1000]", show_default=False)] = None,
    device: Annotated[Optional[str], typer.Option(help="Device profile (name or unique prefix): each scheme's step predicted on it.")] = None,
    no_measure: Annotated[bool, typer.Option("--no-measure", help="Skip timing a training step per scheme.")] = False,
    repeats: Annotated[int, typer.Option(help="Timed training steps per scheme (median reported).")] = 3,
    fmt: FormatOpt = Format.table,
    out: OutputOpt = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    frozen_bits: FrozenBitsOpt = None,
) -> None:
    """One row per scheme: kept bytes (plain PyTorch and tlplan runtime), peak, params, MACs, ms; ratios to full."""
    from .. import comparing, zoo
    from ..report import compare as reporter

    cfg = _resolve(model=model, resolution=resolution, batch=batch, num_classes=num_classes, device=device)
    model, num_classes = cfg["model"], cfg["num_classes"]
    shape = _input_shape(model, cfg["resolution"], cfg["batch"])
    _positive(repeats=repeats, num_classes=num_classes)
    found = _device(cfg["device"], quiet)
    net = zoo.load_model(model, num_classes=num_classes)
    names = [s.strip() for s in schemes.split(",") if s.strip()]
    with output.progress_bar("measuring schemes", quiet or no_measure) as progress:
        report = comparing.compare(net, shape, names, model_name=model, measure=not no_measure, repeats=repeats,
                                   device=found, progress=progress, frozen_bits=32 if frozen_bits is None else frozen_bits)
    _emit(report, reporter, fmt, out, quiet, summary=True)


@app.command()
def solve(
    model: ModelArg = None,
    ram: Annotated[Optional[str], typer.Option(help="RAM budget: 256KB, 0.5MB, 1GiB or bytes (KB = 1024 bytes); default: the project's settings.", show_default=False)] = None,
    resolution: ResolutionOpt = None,
    batch: Annotated[Optional[int], typer.Option(help="Batch size.  [default: 1]", show_default=False)] = None,
    num_classes: Annotated[Optional[int], typer.Option(help="Classes of your task (default 1000; 10 on the mcu runtime).")] = None,
    runtime: Annotated[Optional[str], typer.Option(help="tlplan (runs here), mcu (an int8 engine's accounting) or eager.  [default: tlplan]", show_default=False)] = None,
    precision: Annotated[Optional[str], typer.Option(help="Activations the tlplan runtime keeps: fp32 or fp16.  [default: fp32]", show_default=False)] = None,
    optimizer: Annotated[Optional[str], typer.Option(help="sgd, momentum (SGD 0.9), adam (their state counts) or qas (the 256KB paper's quantization-aware scaling: SGD without momentum, no state).  [default: sgd]", show_default=False)] = None,
    importance: Annotated[Optional[Path], typer.Option(help="Your contribution table: CSV layer,option,importance.")] = None,
    device: Annotated[Optional[str], typer.Option(help="Device profile (name or unique prefix): the plan's step time is predicted on it and recorded in the plan.")] = None,
    max_step_ms: Annotated[Optional[float], typer.Option(help="With --device: only plans whose training step is predicted to take at most this many ms there.")] = None,
    pareto: Annotated[bool, typer.Option("--pareto", help="Sweep budgets and print the frontier with the named schemes.")] = False,
    plot: Annotated[Optional[Path], typer.Option(help="With --pareto: also write the frontier as a picture (PNG, or SVG/PDF by its name).")] = None,
    points: Annotated[int, typer.Option(help="With --pareto: budgets solved, log-spaced from the cheapest plan to --ram.")] = 8,
    fmt: FormatOpt = Format.table,
    out: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write the plan (YAML) to FILE, atomically; with --pareto, the frontier (in --format).")] = None,
    export: Annotated[Optional[str], typer.Option(help="backward-config: solve within the 256KB paper's form and write its fields instead of a plan.")] = None,
    reorder: ReorderOpt = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No notes.")] = False,
    frozen_bits: FrozenBitsOpt = None,
    lite: Annotated[bool, typer.Option("--lite", help="Also offer TinyTL's lite residual branch on every block: the plan adds and trains those it chooses.")] = False,
) -> None:
    """The most important blocks, biases, channels and filter settings whose predicted peak fits --ram."""
    from .. import zoo
    from ..costs.annotate import annotate, check_frozen_bits
    from dataclasses import replace

    from ..plan.plan import OPTIMIZER_PRESETS, RUNTIMES
    from ..report import solve as reporter
    from ..report.solve import SolveReport
    from ..sizes import parse_size
    from ..solve import build_space, device_time, load_importance, plan_of, solve_space
    from ..trace import trace_model

    cfg = _resolve(model=model, ram=ram, resolution=resolution, batch=batch, num_classes=num_classes, runtime=runtime,
                   precision=precision, optimizer=optimizer, device=device,
                   defaults={"num_classes": None})  # none given: the runtime's default below
    model, runtime, precision, optimizer, device = cfg["model"], cfg["runtime"], cfg["precision"], cfg["optimizer"], cfg["device"]
    num_classes = cfg["num_classes"]
    if cfg["ram"] is None:
        raise BadInputError("no budget: give --ram (e.g. --ram 256KB) or set ram in [tool.tlplan] of pyproject.toml / tlplan.yaml")
    budget = parse_size(str(cfg["ram"]))
    shape = _input_shape(model, cfg["resolution"], cfg["batch"])
    if runtime not in RUNTIMES:
        raise BadInputError(f"unknown runtime {runtime!r}; use tlplan, mcu or eager")
    if optimizer not in OPTIMIZER_PRESETS:
        raise BadInputError(f"unknown optimizer {optimizer!r}; use {', '.join(OPTIMIZER_PRESETS)}")
    frozen_bits = check_frozen_bits(runtime, frozen_bits)
    if lite:  # before anything is traced or noted
        from ..solve.lite import check_lite

        check_lite(runtime, export=export, device=device, max_step_ms=max_step_ms, pareto=pareto)
    if num_classes is None:
        num_classes = 10 if runtime == "mcu" else 1000
        if runtime == "mcu" and not quiet:
            output.stderr_console().print("note: mcu runtime: planning for a 10-class task (--num-classes to change)")
    _positive(num_classes=num_classes)
    found = _device(device, quiet)
    net = zoo.load_model(model, num_classes=num_classes)
    branches = None
    if lite:
        from ..solve.lite import candidate_branches

        graph, branches = candidate_branches(net, shape, model)
    else:
        graph = trace_model(net, shape, model)
    table = load_importance(importance) if importance is not None else None
    if export not in (None, "backward-config"):
        raise BadInputError(f"--export {export!r}: the one export is backward-config")
    if reorder and runtime != "mcu":
        raise BadInputError("--reorder is for --runtime mcu: PyTorch keeps every gradient until the optimizer's step")
    if runtime == "mcu":  # recorded in the plan: on unless --no-reorder
        chosen_optimizer = replace(OPTIMIZER_PRESETS[optimizer], reorder=reorder is not False)
    else:
        chosen_optimizer = OPTIMIZER_PRESETS[optimizer]
    space = build_space(graph, runtime, precision, chosen_optimizer, table, form=export, lite=branches)
    if max_step_ms is not None and not max_step_ms > 0:
        raise BadInputError(f"--max-step-ms must be a positive number of milliseconds, not {max_step_ms:g}")
    time = device_time(space, found, max_step_ms)
    if pareto:
        from ..costs.annotate import default_frozen_bits
        from ..report import pareto as pareto_report
        from ..solve.pareto import frontier

        if frozen_bits != default_frozen_bits(runtime):  # the frontier's peaks are the solver's own (32-bit frozen)
            raise BadInputError("--frozen-bits applies to a solved plan, not to --pareto's frontier; drop one of them")

        _positive(points=points)
        front = frontier(space, budget, points=max(points, 2), time=time, max_step_ms=max_step_ms)
        if plot is not None:
            pareto_report.plot(front, plot)
        # there is no single plan: -o writes the frontier, in --format (table: as text)
        _emit(front, pareto_report, fmt, out, quiet, summary=True)
        return
    result = solve_space(space, budget, time=time, max_step_ms=max_step_ms)
    plan = plan_of(result, space, model, num_classes, found.name if found else None)
    if branches is not None:  # costed from here on the model the plan runs on: the branches it trains
        from ..solve.lite import plan_graph

        graph, _ = plan_graph(branches, plan.layers, shape, model)
    if frozen_bits != plan.frozen_bits_in_effect:
        # the solver counted frozen parameters at 32 bits; the plan records its costs at the bits asked
        from dataclasses import replace

        from ..planning import predicted_costs

        now = predicted_costs(annotate(graph, plan.layers, plan.runtime, plan.precision, frozen_bits), plan.optimizer)
        plan = replace(plan, frozen_bits=frozen_bits).with_predicted({**plan.predicted, **now})
    report = SolveReport(plan, result, annotate(graph, plan.layers, plan.runtime, plan.precision, frozen_bits))
    if export is not None:
        from ..plan.backward_config import backward_config_yaml, export_backward_config

        # the form the paper's training code reads (dash-joined indices and ratios)
        text = backward_config_yaml(export_backward_config(graph, plan.layers), plan.optimizer)
        if out is None:
            sys.stdout.write(text)
            return
        output.write_atomic(out, text)
    elif out is not None:
        plan.save(out)
    if out is not None and not quiet:
        output.stderr_console().print(f"wrote {out}")
    _emit(report, reporter, fmt, None, quiet, summary=True)


@app.command()
def importance(
    model: ModelArg = None,
    data: Annotated[Optional[str], typer.Option(help="Image folder (one sub-folder per class), a .pt/.npz file, or synthetic.", show_default=False)] = None,
    weights: Annotated[Optional[Path], typer.Option(help="A state_dict file for the backbone (no downloads).")] = None,
    resolution: ResolutionOpt = None,
    batch: Annotated[int, typer.Option(help="Batch size.")] = 8,
    batches: Annotated[int, typer.Option(help="Batches to average the gradients over.")] = 4,
    runtime: Annotated[str, typer.Option(help="The runtime whose options are scored: tlplan, mcu or eager.")] = "tlplan",
    method: Annotated[str, typer.Option(help="gradient (first-order gain from a few batches' gradients) or contribution (the 256KB paper's: a short fine-tune per option, held-out loss against the classifier alone).")] = "gradient",
    steps: Annotated[int, typer.Option(help="With --method contribution: fine-tuning steps per option.")] = 20,
    fmt: Annotated[Format, typer.Option("--format", help="Output format; csv is what solve --importance reads.")] = Format.csv,
    out: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write to FILE (atomically) instead of stdout.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No notes, no progress bar.")] = False,
) -> None:
    """Importance of each layer and option measured on your data, as a CSV for `solve --importance`."""
    from .. import zoo
    from ..report import rows
    from ..data import load_data
    from ..solve.measured import gradient_importance
    from ..trace import trace_model

    if data is None:
        raise BadInputError("give --data: an image folder (one sub-folder per class), a .pt/.npz file, or synthetic")
    cfg = _resolve(model=model, resolution=resolution)
    model = cfg["model"]
    shape = _input_shape(model, cfg["resolution"], batch)
    _positive(batches=batches, steps=steps)
    if method not in ("gradient", "contribution"):
        raise BadInputError(f"unknown --method {method!r}; use gradient or contribution")
    found = load_data(data, shape[-1])
    net = zoo.load_model(model, num_classes=found.num_classes)
    _load_weights(net, weights, quiet, shape, partial=True)  # importance of a partly loaded model: said, not refused
    graph = trace_model(net, shape, model)
    if method == "gradient":
        table = gradient_importance(net, graph, found, batch=batch, batches=batches, runtime=runtime)
    else:
        from ..solve.contribution import contribution_importance

        with output.progress_bar("fine-tuning each option", quiet) as progress:
            table = contribution_importance(net, graph, found, batch=batch, steps=steps, runtime=runtime, progress=progress)
    ranked = [(layer, option, float(f"{value:.6g}")) for (layer, option), value in sorted(table.items(), key=lambda kv: -kv[1])]
    report = rows.Rows(
        schema="tlplan.importance/1", title=f"{model} · importance of each option, measured ({method}) on {found.source}",
        columns=("layer", "option", "importance"), align="llr",
        cells=tuple((layer, option, f"{value:.6g}") for layer, option, value in ranked),
        records=tuple({"layer": layer, "option": option, "importance": value} for layer, option, value in ranked),
        key="options", meta={"model": model, "method": method, "data": found.source, "runtime": runtime},
        caption="importance: the gain in task loss each option is measured to bring (higher: train it first)",
    )
    _emit(report, rows, fmt, out, quiet=True)
    if out is not None and not quiet:
        output.stderr_console().print(f"wrote {out}: {len(table)} options of {len(graph.layers)} layers, measured ({method}) on {found.source}")


def _load_weights(net, weights: Optional[Path], quiet: bool, shape: tuple[int, ...], partial: bool = False) -> None:
    """A backbone state_dict, checked (tlplan.weights); a classifier of another size is left as it
    is (a new task's head), and what was loaded is said."""
    from ..trace import trace_model
    from ..weights import load_weights

    if weights is None:
        if not quiet:
            output.stderr_console().print("warning: no --weights: the model starts from random weights (training from scratch)")
        return
    head = getattr(net, "tlplan_classifier", None) or trace_model(net, shape).classifier
    done = load_weights(net, weights, head=head, partial=partial)
    if not quiet:
        left = f"; left as initialised: {', '.join(done.left[:3])}{' ...' if len(done.left) > 3 else ''}" if done.left else ""
        output.stderr_console().print(f"weights: loaded {done.loaded} of the model's {done.total} tensors from {weights}{left}",
                                      highlight=False, markup=False)


@app.command()
def check(
    plan: Annotated[Path, typer.Argument(help="A plan file (from `tlplan solve -o`).")],
    ram: Annotated[Optional[str], typer.Option(help="Budget to hold the plan to (default: the one it was solved for).")] = None,
    device: Annotated[Optional[str], typer.Option(help="Device profile (name or unique prefix): also predict the step time there and hold it to the plan's --max-step-ms (default: the plan's device).")] = None,
    fmt: Annotated[Format, typer.Option("--format", help="Output format (markdown fits a CI job summary).")] = Format.table,
    trust_model_code: TrustOpt = False,
    out: OutputOpt = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No notes.")] = False,
    frozen_bits: Annotated[Optional[int], typer.Option("--frozen-bits", help="Count frozen parameters at 8 or 32 bits instead of the plan's frozen_bits (its recorded peak is then not compared).", show_default=False)] = None,
    reorder: Annotated[Optional[bool], typer.Option("--reorder/--no-reorder", help="mcu plans: recompute with operator reordering on or off instead of the plan's optimizer.reorder (its recorded peak and gradient bytes are then not compared where it differs).", show_default=False)] = None,
) -> None:
    """Recompute a plan's memory for the model it names; exit 1 when over budget or the plan is stale."""
    from ..checking import check_plan
    from ..errors import CheckFailed
    from ..plan.plan import load_plan
    from ..report import check as reporter
    from ..sizes import parse_size

    cfg = _resolve(ram=ram, device=device, need_model=False)
    # the budget in effect: the command line's, else the project's settings, else the plan's own
    # (a project that lowers its budget must not pass on a plan solved for the old one)
    budget, source = None, "the plan"
    if ram is not None:
        budget, source = parse_size(str(ram)), "--ram"
    elif cfg["ram"] is not None:
        from ..settings import find_settings

        budget, source = parse_size(str(cfg["ram"])), f"{find_settings().source.name} settings"
    found = _device(cfg["device"], quiet)
    loaded = load_plan(plan)
    result = check_plan(loaded, str(plan), budget, device=found, trust_model_code=_trusted(loaded.model, trust_model_code),
                        budget_source=source, frozen_bits=frozen_bits, reorder=reorder)
    _emit(result, reporter, fmt, out, quiet, summary=True)
    if not result.passed:
        raise CheckFailed(reporter.status(result).removeprefix("FAIL: ") + f" ({plan})")


def _trusted(plan_model: str, flag: bool) -> bool:
    """Whether the model code a plan names may run: allowed with the flag, or when it is the
    project's own model (its settings name the same spec)."""
    from ..settings import find_settings

    return flag or find_settings().get("model") == plan_model


DEFAULTS = {"batch": 1, "num_classes": 1000, "scheme": "full", "runtime": "tlplan", "precision": "fp32", "optimizer": "sgd"}


def _resolve(need_model: bool = True, defaults: Optional[dict] = None, **given):
    """Each value from the command line, else the project's settings, else tlplan's default
    (``defaults`` overrides tlplan's for this command)."""
    from ..settings import find_settings

    settings = find_settings()
    defaults = {**DEFAULTS, **(defaults or {})}
    values = {}
    for key, value in given.items():
        if value is not None:
            values[key] = value
        elif settings.get(key) is not None:
            values[key] = settings.get(key)
        else:
            values[key] = defaults.get(key)
    if need_model and "model" in given and not values.get("model"):
        raise BadInputError(
            "no model given: name one (tlplan solve mcunet-5fps --ram 256KB) or set model in [tool.tlplan] "
            "of pyproject.toml (or in tlplan.yaml)"
        )
    return values


def _step_summary(report, reporter) -> None:
    """On GitHub Actions, append the markdown table to the job summary as well."""
    output.append_step_summary(reporter.to_markdown(report))


@app.command("config")
def config_command(
    fmt: FormatOpt = Format.table,
    out: OutputOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """What the project's settings put in effect, and where each value comes from."""
    from ..report import rows
    from ..settings import KEYS, find_settings

    settings = find_settings()
    found = []
    for key in KEYS:
        if settings.get(key) is not None:
            found.append((key, settings.get(key), str(settings.source)))
        elif key in DEFAULTS:
            found.append((key, DEFAULTS[key], "tlplan default"))
        else:
            found.append((key, None, "unset (the model's own default, or give it on the command line)"))
    report = rows.Rows(
        schema="tlplan.config/1", title=f"settings in effect ({settings.source or 'no [tool.tlplan] or tlplan.yaml found'})",
        columns=("key", "value", "from"), align="lll",
        cells=tuple((key, "-" if value is None else str(value), where) for key, value, where in found),
        records=tuple({"key": key, "value": value, "from": where} for key, value, where in found),
        key="settings", meta={"source": str(settings.source) if settings.source else None},
    )
    _emit(report, rows, fmt, out, quiet)


@app.command()
def train(
    plan: Annotated[Path, typer.Argument(help="A plan file (from `tlplan solve -o`).")],
    data: Annotated[Optional[str], typer.Option(help="Image folder (one sub-folder per class), a .pt/.npz file, or synthetic.", show_default=False)] = None,
    weights: Annotated[Optional[Path], typer.Option(help="A state_dict file for the backbone (no downloads).")] = None,
    weights_partial: Annotated[bool, typer.Option("--weights-partial", help="Train from --weights that lack some of the model's tensors or have other shapes (those stay random, and are named).")] = False,
    epochs: Annotated[Optional[int], typer.Option(help="Epochs to train.  [default: 1]", show_default=False)] = None,
    steps: Annotated[Optional[int], typer.Option(help="Or: training steps.")] = None,
    run_dir: Annotated[Path, typer.Option("--run-dir", "--out", help="Folder for the checkpoint and run.json, the run's record (a run there resumes).")] = Path("tlplan-run"),
    device: Annotated[Optional[str], typer.Option(help="Measured profile of THIS machine to predict the step time with (default: one whose CPU, cores and threads match, if any).")] = None,
    fmt: FormatOpt = Format.table,
    out: OutputOpt = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar, no notes.")] = False,
    trust_model_code: TrustOpt = False,
    accelerator: AcceleratorOpt = "auto",
) -> None:
    """Fine-tune the model exactly as planned; then measured vs predicted memory and time."""
    from .. import training
    from ..data import load_data
    from ..plan.plan import load_plan
    from ..report import train as reporter

    if data is None:
        raise BadInputError("give --data: an image folder (one sub-folder per class), a .pt/.npz file, or synthetic")
    if epochs is not None and steps is not None:
        raise BadInputError("give --epochs or --steps, not both")
    _positive(**{k: v for k, v in (("epochs", epochs), ("steps", steps)) if v is not None})
    if accelerator.strip().lower() != "auto":  # a wrong --accelerator (cuda without CUDA) fails before any data is read
        from ..measure.accelerator import select_accelerator

        select_accelerator(accelerator)
    loaded = load_plan(plan)
    trusted = _trusted(loaded.model, trust_model_code)
    training.check_out_dir(run_dir)
    if not trusted:  # refused before any data is read
        from ..zoo import require_trusted

        require_trusted(loaded.model)
    found = load_data(data, loaded.input_shape[-1], num_classes=loaded.num_classes)
    state = None
    if weights is not None:
        from ..zoo import load_model

        net = load_model(loaded.model, num_classes=found.num_classes, trust_code=trusted)
        _load_weights(net, weights, quiet, loaded.input_shape, weights_partial)
        state = net.state_dict()
    elif not quiet:
        output.stderr_console().print("warning: no --weights: training from scratch (random backbone)")
    with output.progress_bar("training", quiet) as bar:
        progress = None
        if bar is not None:
            def progress(epoch: int, step: int, total: int, loss: float) -> None:
                bar(epoch * total + step, (epochs or 1) * total if steps is None else steps)
        result = training.train(loaded, found, out_dir=run_dir, weights=state, epochs=epochs, steps=steps, progress=progress,
                                device=_device(device, quiet), trust_model_code=trusted, accelerator=accelerator)
    if result.resumed_from and not quiet:
        output.stderr_console().print(f"resumed from the checkpoint after epoch {result.resumed_from} in {run_dir}")
    _emit(result, reporter, fmt, out, quiet, summary=True)


def _device(device: Optional[str], quiet: bool):
    """The profile ``device`` names (resolved once, passed on as a ``Device``), with a note on how."""
    if device is None:
        return None
    from ..predict.devices import resolution_note, resolve_device

    found = resolve_device(device)
    note = resolution_note(device, found)
    if note and not quiet:
        output.stderr_console().print(note)
    return found


def _input_shape(model: str, resolution: Optional[int], batch: int) -> tuple[int, int, int, int]:
    from .. import zoo

    if batch <= 0:
        raise BadInputError(f"--batch must be a positive whole number, not {batch}")
    res = resolution if resolution is not None else zoo.default_resolution(model) or 224
    if res <= 0:
        raise BadInputError(f"--resolution must be a positive number of pixels, not {res}")
    return (batch, 3, res, res)


def _positive(**values: int) -> None:
    for name, value in values.items():
        if value <= 0:
            raise BadInputError(f"--{name.replace('_', '-')} must be a positive whole number, not {value}")


@app.command()
def devices(
    fmt: FormatOpt = Format.table,
    out: OutputOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """List the device profiles: name, source (measured or datasheet), where it came from, RAM, peak, date, accuracy."""
    from ..predict.devices import list_devices, profile_roots
    from ..report import rows
    from ..report.devices import devices_rows

    roots = [(origin, str(folder)) for folder, origin in profile_roots()]
    broken: list[str] = []
    found = list_devices(broken=broken)
    for problem in broken if not quiet else ():  # one damaged profile does not hide the others
        output.stderr_console().print(f"warning: left out: {problem}")
    _emit(devices_rows(found, roots), rows, fmt, out, quiet)


@app.command("zoo")
def zoo_command(
    fmt: FormatOpt = Format.table,
    out: OutputOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """List the built-in models with their default resolution."""
    from ..report import rows
    from ..zoo import ZOO

    entries = list(ZOO.values())
    report = rows.Rows(
        schema="tlplan.zoo/1", title="tlplan zoo", columns=("name", "resolution", "description"), align="lrl",
        cells=tuple((e.name, str(e.resolution), e.description) for e in entries),
        records=tuple({"name": e.name, "resolution": e.resolution, "description": e.description} for e in entries),
        key="models", caption="resolution: the input height and width a model is profiled at unless --resolution says otherwise",
    )
    _emit(report, rows, fmt, out, quiet)


app.command("calibrate")(calibrate_command)


@app.callback(invoke_without_command=True)
def _root(
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
    no_drift_correction: Annotated[bool, typer.Option("--no-drift-correction", help="Predict with a measured profile of this machine as calibrated, not scaled by how much faster or slower the machine runs now (also: TLPLAN_DRIFT_CORRECTION=0).")] = False,
) -> None:
    output.summary_written = False  # a new command (tests run several in one process)
    if no_drift_correction or "tlplan.predict.drift" in sys.modules:  # not imported: at its default (torch is slow to import)
        from ..predict import drift

        drift.set_enabled(False if no_drift_correction else None)
    if version:
        from .. import __version__

        typer.echo(f"tlplan {__version__}")
        raise typer.Exit()


#: the library's argument names (in its error messages) → the flags that set them here
FLAGS = {
    "ram_bytes": "--ram", "max_step_ms": "--max-step-ms", "device": "--device", "runtime": "--runtime",
    "input_shape": "--batch / --resolution", "measure=False": "--no-measure", "schemes": "--schemes",
    "out": "--run-dir", "trust_model_code": "--trust-model-code", "weights_partial": "--weights-partial",
    "reorder": "--reorder/--no-reorder", "accelerator": "--accelerator", "lite": "--lite",
}


def main() -> None:
    """Console entry point: one line on stderr and an exit code for every TlplanError.

    Usage errors (unknown option, missing argument) are typer's own: a usage line, exit code 2.
    """
    warnings.filterwarnings("ignore", module="fvcore")
    try:
        app(standalone_mode=True)
    except TlplanError as exc:
        from rich.text import Text

        # the message is text, not markup: "[tool.tlplan]" must print as it is
        message = exc.message_for(FLAGS)
        output.stderr_console().print(Text("error", style="bold red") + Text(f": {message}"))
        if not output.summary_written:  # a failed CI step still says why in the job summary
            command = " ".join(["tlplan", *sys.argv[1:]])
            output.append_step_summary(f"### {command.replace('|', '/')}: failed (exit {exc.exit_code})\n\n- error: {message}\n")
        sys.exit(exc.exit_code)
