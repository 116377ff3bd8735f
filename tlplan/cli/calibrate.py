"""``tlplan calibrate``: measure this machine into a device profile, or evaluate a measured profile."""

from __future__ import annotations

import enum
import sys
from contextlib import contextmanager
from typing import Annotated, Callable, Iterator, Optional

import typer

from ..errors import BadInputError
from . import output


@contextmanager
def _progress(quiet: bool) -> Iterator[Callable | None]:
    """A rich progress bar on stderr that names the phase (steps, layers, fitting ...) and its detail."""
    if quiet or not sys.stderr.isatty():
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("[bold]{task.fields[phase]}[/bold]"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.description}"), TimeElapsedColumn(),
        console=output.stderr_console(), transient=True,
    ) as bar:
        tasks: dict[str, int] = {}
        labels = {"steps": "whole steps", "layers": "layers", "fitting": "fitting",
                  "measuring": "steps measured", "rechecking": "profile configs re-timed", "writing": "writing",
                  "speed index": "speed index", "choosing": "choosing layers"}

        def update(p) -> None:
            if p.phase not in tasks:
                tasks[p.phase] = bar.add_task(p.detail, total=p.total, phase=labels.get(p.phase, p.phase))
            bar.update(tasks[p.phase], completed=p.done, total=p.total, description=p.detail)

        yield update


class TextFormat(str, enum.Enum):
    table = "table"  # sentences and a table (calibrate's output is not one list)
    json = "json"


def _names(text: Optional[str]) -> Optional[tuple[str, ...]]:
    if text is None:
        return None
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if not names:
        raise BadInputError("give at least one name in a comma-separated list")
    return names


def calibrate(
    name: Annotated[Optional[str], typer.Option("--name", help="Profile to write: profiles/NAME/ (e.g. host-x86-2c).")] = None,
    budget_minutes: Annotated[float, typer.Option(help="Minutes this run may take, waiting for a quiet CPU included (past them, only one whole step and every op once are still timed).")] = 20.0,
    evaluate: Annotated[Optional[str], typer.Option("--evaluate", metavar="NAME", help="Instead: leave-one-network-out accuracy of measured profile NAME (re-measures the zoo's steps here), written into its device.json.")] = None,
    ops: Annotated[Optional[str], typer.Option(help="Only these calibration ops (comma-separated; default: all, or with --add those the profile lacks).")] = None,
    add: Annotated[bool, typer.Option("--add", help="Time ops into the existing profile NAME, keeping its other measurements and steps (default: the ops it has none of, e.g. the tlplan runtime's).")] = False,
    networks: Annotated[Optional[str], typer.Option(help="Zoo networks for the shape prior, whole steps and evaluation (comma-separated; default: the ten CNNs of the shipped profiles: resnet18/34/50, mobilenet_v2, mobilenet_v3_large/small, proxylessnas_mobile, mcunet-5fps, mbv2-w0.35, proxyless-w0.3).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the sampling.")] = 0,
    threads: Annotated[Optional[int], typer.Option(help="Framework (intra-op) threads while timing, recorded in the profile (default: torch's, one per core). The profile predicts training run with as many.")] = None,
    statistic: Annotated[Optional[str], typer.Option(help="How a timing's runs are summed up: min (the fastest run: repeats best on a shared machine; the default) or median.")] = None,
    max_foreign_cpu: Annotated[float, typer.Option(help="Largest share of the CPUs other processes may use while timing (0-1); busier timings are redone.")] = 0.05,
    quick: Annotated[bool, typer.Option("--quick", help="Instead: adapt the measured profile --from BASE to this machine in minutes (a few hundred layer configurations of --networks and a few whole steps, within --budget-s), as profile NAME.")] = False,
    base: Annotated[Optional[str], typer.Option("--from", metavar="BASE", help="With --quick: the measured profile to adapt (e.g. host-x86-2c-1t).")] = None,
    budget_s: Annotated[Optional[float], typer.Option("--budget-s", help="With --quick: seconds the run may take, all but loading BASE's models (seconds from the cache; minutes the first time).  [default: 300]", show_default=False)] = None,
    no_drift_correction: Annotated[bool, typer.Option("--no-drift-correction", help="With --evaluate: predict without scaling by the machine's speed now against at calibration.")] = False,
    accelerator: Annotated[str, typer.Option("--accelerator", metavar="auto|cpu|cuda", help="Time on the CPU or on a CUDA GPU (CUDA events after synchronisation; the profile records accelerator cuda and the GPU). auto: cpu; --add and --evaluate time on the profile's own.")] = "auto",
    fmt: Annotated[TextFormat, typer.Option("--format", help="Output format: json for scripts.")] = TextFormat.table,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Time layer configurations and whole training steps on THIS machine into a device profile.

    Run it on the device itself. Interrupted runs resume (same --name); the profile folder appears only when complete. With --evaluate NAME, measures how well profile NAME predicts networks held out of its fit. With --add, times the ops profile NAME lacks into it. With --quick --from BASE, adapts BASE to this machine in about five minutes.
    """  # noqa: E501 (typer keeps a docstring's line breaks)
    from ..predict import calibration
    from ..report import devices as report

    from ..measure.accelerator import select_accelerator

    console = output.stdout_console()
    wanted = accelerator.strip().lower()
    if wanted != "auto":
        chosen = select_accelerator(wanted)  # an unknown name, or cuda without CUDA: exit 2 before anything runs
        if quick or add or evaluate is not None:
            raise BadInputError("--accelerator is for a new calibration: --add and --evaluate time on the accelerator "
                                "the profile was timed on (its device.json), and --quick adapts on the CPU")
        wanted = chosen.kind
    if no_drift_correction:
        from ..predict import drift

        drift.set_enabled(False)
    if quick or base is not None or budget_s is not None:
        if not quick:
            raise BadInputError("--from and --budget-s go with --quick")
        if evaluate is not None or add or threads is not None or statistic is not None or ops is not None:
            raise BadInputError("--quick adapts --from BASE as BASE was timed (its threads, statistic and ops): "
                                "--evaluate, --add, --ops, --threads and --statistic do not go with it")
        if name is None or base is None:
            raise BadInputError("--quick needs --from BASE (a measured profile) and --name NAME (the profile to write)")
        _quick(name, base, budget_s, networks, max_foreign_cpu, fmt, quiet, console)
        return
    if (add or evaluate is not None) and (threads is not None or statistic is not None):
        raise BadInputError("--threads and --statistic are for a new calibration: --add and --evaluate time as the "
                            "profile was timed (its threads and statistic, in its device.json)")
    if evaluate is not None:
        from ..predict.devices import resolve_device
        from ..predict.evaluate import evaluate as run_evaluation, write_accuracy

        device = resolve_device(evaluate)
        with _progress(quiet) as progress:
            result = run_evaluation(device, networks=_names(networks), threshold=max_foreign_cpu, progress=progress)
        device = write_accuracy(device, result)

        def render() -> None:
            report.render_evaluation(result, console)
            console.print(f"written to {device.folder / 'device.json'} (accuracy) and {device.folder / 'evaluation.csv'}",
                          markup=False)

        _show(fmt, lambda: report.evaluation_json(result, device), render)
        return
    if name is None:
        raise BadInputError("give --name NAME for the profile to write (or --evaluate NAME to evaluate one)")
    if not 0 < max_foreign_cpu <= 1:
        raise BadInputError(f"--max-foreign-cpu must be a share between 0 and 1, not {max_foreign_cpu}")
    if not budget_minutes > 0:
        raise BadInputError(f"--budget-minutes must be positive, not {budget_minutes}")
    settings = calibration.Settings(name=calibration.check_name(name), budget_s=budget_minutes * 60, ops=_names(ops),
                                    networks=_names(networks), seed=seed, threshold=max_foreign_cpu, threads=threads,
                                    statistic=statistic or "min", accelerator="cpu" if wanted == "auto" else wanted)
    if add:
        with _progress(quiet) as progress:
            device, record, dropped = calibration.add_ops(settings, progress=progress)
        _show(fmt, lambda: report.calibration_json(device, record, dropped),
              lambda: report.render_added(device, record, dropped, console))
        return
    with _progress(quiet) as progress:
        device = calibration.calibrate(settings, progress=progress)
    _show(fmt, lambda: report.calibration_json(device), lambda: report.render_calibrated(device, console))


def _quick(name: str, base: str, budget_s: Optional[float], networks: Optional[str], threshold: float,
           fmt: TextFormat, quiet: bool, console) -> None:
    from ..predict import adapt
    from ..predict.calibration import check_name
    from ..report import devices as report

    if not 0 < threshold <= 1:
        raise BadInputError(f"--max-foreign-cpu must be a share between 0 and 1, not {threshold}")
    from ..predict.devices import resolve_device

    if getattr(resolve_device(base), "accelerator", "cpu") == "cuda":
        raise BadInputError(f"--from {base}: a profile timed on a GPU; --quick adapts CPU profiles only (calibrate the "
                            "GPU with --accelerator cuda instead)")
    settings = adapt.QuickSettings(name=check_name(name), base=base, budget_s=300.0 if budget_s is None else budget_s,
                                   networks=_names(networks), threshold=threshold)
    if not settings.budget_s > 0:
        raise BadInputError(f"--budget-s must be positive, not {settings.budget_s:g}")
    with _progress(quiet) as progress:
        result = adapt.quick(settings, progress=progress)
    _show(fmt, lambda: report.quick_json(result), lambda: report.render_quick(result, console))


def _show(fmt: TextFormat, as_json: Callable[[], str], render: Callable[[], None]) -> None:
    """What every calibrate mode ends with: its JSON on stdout, or its rendering on the console."""
    if fmt is TextFormat.json:
        sys.stdout.write(as_json())
    else:
        render()
