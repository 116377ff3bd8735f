"""The table and JSON shapes every reporter shares: the reporters say what goes in, these how it looks.

``align`` gives each column's side, ``l`` or ``r`` (numbers right, names left).
"""

from __future__ import annotations

import json
from typing import Any, Sequence

from rich.console import Console
from rich.measure import Measurement
from rich.markup import escape
from rich.table import Table
from rich.text import Text


def rich(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[str]], align: str, *,
         caption: str | None = None, wrap_left: bool = False) -> Table:
    """A rich table; right-aligned columns never wrap, left ones only with ``wrap_left``. Every
    text is taken as written: a layer named ``[red]x`` keeps its brackets (no rich markup)."""
    table = Table(title=plain(title), caption=plain(caption))
    for col, side in zip(columns, align, strict=True):
        table.add_column(escape(col), justify="right" if side == "r" else "left", no_wrap=side == "r" or not wrap_left)
    for row in rows:
        table.add_row(*(escape(cell) for cell in row))
    return table


def plain(text: str | None) -> Text | None:
    """``text`` as rich prints it literally (titles, captions: rich would read brackets as markup)."""
    return None if text is None else Text(text)


def fit(table: Table, console: Console) -> Table:
    """``table`` narrowed to the console's width by leaving out whole columns from the right (the
    caption says which), never by cutting a number short: a wide table on an 80-column log keeps
    every digit it shows."""
    dropped: list[str] = []
    unbounded = console.options.update(max_width=1 << 20)  # the table's own width, not clamped to the console's
    while len(table.columns) > 1 and Measurement.get(console, unbounded, table).maximum > console.width:
        dropped.append(str(table.columns.pop().header).strip() or "(unnamed)")
    if dropped:
        note = (f"left out at {console.width} columns: {', '.join(reversed(dropped))} "
                "(a wider terminal, or --format csv / json, shows them)")
        caption = table.caption if isinstance(table.caption, Text) else plain(table.caption and str(table.caption))
        table.caption = Text.assemble(caption, "\n", note) if caption else Text(note)
    return table


def markdown(columns: Sequence[str], rows: Sequence[Sequence[str]], align: str) -> list[str]:
    """A markdown table's lines: header, alignment row, one line per row."""
    sides = {"l": "---", "r": "---:"}
    header = "|" + "|".join(f" {c.strip()} " if c.strip() else " " for c in columns) + "|"
    lines = [header, "|" + "|".join(sides[a] for a in align) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def json_text(data: dict[str, Any], schema: str) -> str:
    """A JSON document that names its shape and version first (``"schema": "tlplan.profile/1"``):
    scripts can tell what they read, and a changed shape gets a new version (docs/json.md)."""
    return json.dumps({"schema": schema, **data}, indent=2) + "\n"


# CSV is plain ASCII (spreadsheets and old tools read it in any locale): the few symbols the tables use
_ASCII = str.maketrans({"×": "x", "±": "+/-", "−": "-", "–": "-", "—": "-", "·": "-", "≥": ">=", "≤": "<=", "…": "...",
                        "→": "->", "µ": "u"})


def ascii_text(text: str) -> str:
    """``text`` in plain ASCII: known symbols spelled out, anything else as a ``?``."""
    return text.translate(_ASCII).encode("ascii", "replace").decode("ascii")
