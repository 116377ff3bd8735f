"""Profile reporters: a rich table for terminals, and JSON / CSV / markdown strings for scripts and CI."""

from __future__ import annotations

import csv
import io

from rich.console import Console
from rich.markup import escape

from ..profiling import ProfileReport
from . import profile_rows as pr
from . import tables


def _chosen(report: ProfileReport, columns: tuple[str, ...] | None) -> tuple[list[str], list[list[str]], list[str]]:
    """Headers, layer rows and totals of the columns ``columns`` names (all when None)."""
    keep = pr.select(report, columns)
    pick = lambda cells: [cells[i] for i in keep]  # noqa: E731
    return pick(pr.columns(report)), [pick(r) for r in pr.layer_cells(report)], pick(pr.total_cells(report))


def render_table(report: ProfileReport, console: Console, columns: tuple[str, ...] | None = None) -> None:
    """Print the per-layer table, its totals row and the summary into ``console`` (``columns``:
    the ``--columns`` names to show, default all)."""
    table = tables.TextTable(title=tables.plain(pr.title(report)), caption=pr.KB_NOTE, show_footer=False, header_style="bold")
    cols, rows, totals = _chosen(report, columns)
    for i, col in enumerate(cols):
        numeric = col in pr.NUMERIC
        # numbers never shrink or wrap (where the width runs out, whole columns are left out); names may fold
        widest = max([len(col), len(totals[i])] + [len(r[i]) for r in rows])
        table.add_text_column(
            col, justify="right" if numeric else "left", no_wrap=numeric,
            min_width=widest if numeric else None, overflow="fold",
        )
    for cells in rows:
        table.add_text_row(cells)
    table.add_section()
    table.add_text_row(totals, style="bold")
    # the CLI's console fits the width by leaving out columns from the right, never by cutting numbers
    console.print(table)
    for what, value, source in pr.summary_lines(report):
        # soft wrap: a long line is left whole for the terminal to wrap, never broken inside a number
        console.print(f"[bold]{what}[/bold]: {escape(value)}  [dim]({escape(source)})[/dim]", highlight=False, soft_wrap=True)
    for note in report.warnings:
        console.print(f"[yellow]warning[/yellow]: {escape(note)}", highlight=False, soft_wrap=True)


def to_json(report: ProfileReport) -> str:
    return tables.json_text(report.to_dict(), "tlplan.profile/1")


def to_csv(report: ProfileReport) -> str:
    records = pr.as_records(report)
    out = io.StringIO()
    if records:
        writer = csv.DictWriter(out, fieldnames=list(records[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(records)
    return out.getvalue()


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def to_markdown(report: ProfileReport, columns: tuple[str, ...] | None = None) -> str:
    """A GitHub-flavoured markdown table (fit for a CI job summary) and the summary as a list."""
    cols, rows, totals = _chosen(report, columns)
    lines = [f"### {_md_escape(pr.title(report))}", ""]
    lines.append("| " + " | ".join(cols) + " |")
    lines.append("|" + "|".join("---:" if c in pr.NUMERIC else "---" for c in cols) + "|")
    for cells in rows:
        lines.append("| " + " | ".join(_md_escape(c) for c in cells) + " |")
    lines.append("| " + " | ".join(f"**{c}**" if c else "" for c in totals) + " |")
    lines.append("")
    for what, value, source in pr.summary_lines(report):
        lines.append(f"- **{what}**: {_md_escape(value)} _({source})_")
    lines.append(f"- {pr.KB_NOTE}")
    for note in report.warnings:
        lines.append(f"- warning: {_md_escape(note)}")
    return "\n".join(lines) + "\n"
