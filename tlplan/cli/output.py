"""Where CLI output goes: consoles, progress bars and atomic file writes."""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from typing import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ..fileio import write_atomic  # noqa: F401  (re-exported for the commands)


#: whether this command has written its job-summary section (a failure then adds none of its own)
summary_written = False


def append_step_summary(markdown: str) -> None:
    """On GitHub Actions (``GITHUB_STEP_SUMMARY`` set), append ``markdown`` to the job summary."""
    global summary_written
    path = os.environ.get("GITHUB_STEP_SUMMARY")
    if not path:
        return
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(markdown.rstrip("\n") + "\n\n")
        summary_written = True
    except OSError as exc:
        stderr_console().print(f"warning: cannot append to GITHUB_STEP_SUMMARY {path}: {exc.strerror or exc}")


class FittingConsole(Console):
    """Tables printed here fit the width by leaving out columns, never by cutting numbers."""

    def print(self, *objects, **kwargs) -> None:  # noqa: A003 - rich's name
        from rich.table import Table

        from ..report.tables import fit

        super().print(*(fit(o, self) if isinstance(o, Table) else o for o in objects), **kwargs)


def stdout_console() -> Console:
    """A terminal gets rich's own width; a log or pipe gets ``$COLUMNS`` or room for any table."""
    width = None
    if not sys.stdout.isatty():
        try:
            width = int(os.environ.get("COLUMNS", "")) or None
        except ValueError:
            width = None
        width = width or 240
    return FittingConsole(highlight=False, soft_wrap=False, width=width)


def stderr_console() -> Console:
    # one message, one line; notes are plain text (file names may hold brackets)
    return Console(stderr=True, highlight=False, soft_wrap=True, markup=False)


@contextmanager
def progress_bar(description: str, quiet: bool) -> Iterator[Callable[[int, int], None] | None]:
    """A rich progress bar on stderr, only for an interactive terminal and not ``--quiet``."""
    if quiet or not sys.stderr.isatty():
        yield None
        return
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=stderr_console(), transient=True,
    ) as progress:
        task = progress.add_task(description, total=None)

        def update(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        yield update
