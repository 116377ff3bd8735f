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
    add_completion=False,
    pretty_exceptions_enable=False,
)


class Format(str, enum.Enum):
    table = "table"
    json = "json"
    csv = "csv"
    markdown = "markdown"


@app.command()
def profile(
    model: Annotated[str, typer.Argument(help="Zoo name (see `tlplan zoo`) or package.module:factory.")],
    resolution: Annotated[Optional[int], typer.Option(help="Input height and width (default: the model's own, 224 or 128).")] = None,
    batch: Annotated[int, typer.Option(help="Batch size.")] = 1,
    num_classes: Annotated[int, typer.Option(help="Classes of the classifier.")] = 1000,
    scheme: Annotated[str, typer.Option(help="What to train: full, last, bias, norm+last, blocks:K.")] = "full",
    runtime: Annotated[str, typer.Option(help="Memory accounting: eager (plain PyTorch autograd).")] = "eager",
    device: Annotated[Optional[str], typer.Option(help="Device profile name or unique prefix (see `tlplan devices`).")] = None,
    no_measure: Annotated[bool, typer.Option("--no-measure", help="Skip timing the layers on this machine.")] = False,
    repeats: Annotated[int, typer.Option(help="Timed runs per layer (median reported).")] = 5,
    strict: Annotated[bool, typer.Option(help="Fail on ops that have no cost rule.")] = False,
    fmt: Annotated[Format, typer.Option("--format", help="Output format.")] = Format.table,
    out: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write to FILE (atomically) instead of stdout.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar, no warnings.")] = False,
) -> None:
    """Per-layer training cost: params, MACs forward/backward, bytes kept for backward, measured ms."""
    from .. import profiling, zoo
    from ..errors import UnsupportedOpError
    from ..report import text

    if batch <= 0:
        raise BadInputError(f"--batch must be a positive whole number, not {batch}")
    if repeats <= 0:
        raise BadInputError(f"--repeats must be a positive whole number, not {repeats}")
    if num_classes <= 0:
        raise BadInputError(f"--num-classes must be positive, not {num_classes}")
    res = resolution if resolution is not None else zoo.default_resolution(model) or 224
    if res <= 0:
        raise BadInputError(f"--resolution must be a positive number of pixels, not {res}")
    if device is not None:
        from ..predict.devices import resolution_note, resolve_device

        found = resolve_device(device)
        note = resolution_note(device, found)
        if note and not quiet:
            output.stderr_console().print(note)
        device = found.name
    net = zoo.load_model(model, num_classes=num_classes)
    with output.progress_bar("timing layers", quiet) as progress:
        report = profiling.profile(
            net, (batch, 3, res, res), scheme=scheme, runtime=runtime, device=device,
            model_name=model, measure=not no_measure, repeats=repeats, progress=progress,
        )
    if strict and report.costs is not None and report.costs.unsupported:
        raise UnsupportedOpError(f"no cost rule for: {', '.join(report.costs.unsupported)} (drop --strict to count them as zero)")
    _emit(report, fmt, out, quiet)


def _emit(report, fmt: Format, out: Optional[Path], quiet: bool) -> None:
    from ..report import text

    if fmt is Format.table:
        if out is None:
            text.render_table(report, output.stdout_console())
            return
        from rich.console import Console
        import io

        buf = io.StringIO()
        text.render_table(report, Console(file=buf, width=200, no_color=True, highlight=False))
        rendered = buf.getvalue()
    else:
        rendered = {Format.json: text.to_json, Format.csv: text.to_csv, Format.markdown: text.to_markdown}[fmt](report)
    if out is None:
        sys.stdout.write(rendered)
    else:
        output.write_atomic(out, rendered)
        if not quiet:
            output.stderr_console().print(f"wrote {out}")


@app.command()
def devices() -> None:
    """List the device profiles: name, source (measured or datasheet), RAM, peak, date, accuracy."""
    from ..predict.devices import list_devices, profiles_dir
    from ..report.devices import devices_table

    output.stdout_console().print(devices_table(list_devices(), str(profiles_dir())))


@app.command("zoo")
def zoo_command() -> None:
    """List the built-in models with their default resolution."""
    from rich.table import Table

    from ..zoo import ZOO

    table = Table(title="tlplan zoo")
    for col in ("name", "resolution", "description"):
        table.add_column(col)
    for entry in ZOO.values():
        table.add_row(entry.name, str(entry.resolution), entry.description)
    output.stdout_console().print(table)


app.command("calibrate")(calibrate_command)


@app.callback(invoke_without_command=True)
def _root(
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    if version:
        from .. import __version__

        typer.echo(f"tlplan {__version__}")
        raise typer.Exit()


def main() -> None:
    """Console entry point: one line on stderr and an exit code for every TlplanError.

    Usage errors (unknown option, missing argument) are typer's own: a usage line, exit code 2.
    """
    warnings.filterwarnings("ignore", module="fvcore")
    try:
        app(standalone_mode=True)
    except TlplanError as exc:
        output.stderr_console().print(f"[bold red]error[/bold red]: {exc}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
