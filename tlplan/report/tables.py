"""The table and JSON shapes every reporter shares: the reporters say what goes in, these how it looks.

``align`` gives each column's side, ``l`` or ``r`` (numbers right, names left).
"""

from __future__ import annotations

import json
from typing import Any, Sequence

from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, RenderResult
from rich.measure import Measurement
from rich.segment import Segment
from rich.style import Style
from rich.table import Table
from rich.text import Text


def rich(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[str]], align: str, *,
         caption: str | None = None, wrap_left: bool = False) -> Table:
    """A rich table; right-aligned columns never wrap, left ones only with ``wrap_left``. Every
    text is taken as written: a layer named ``[red]x`` keeps its brackets (no rich markup)."""
    table = TextTable(title=plain(title), caption=plain(caption))
    for col, side in zip(columns, align, strict=True):
        table.add_text_column(col, justify="right" if side == "r" else "left", no_wrap=side == "r" or not wrap_left)
    for row in rows:
        table.add_text_row(row)
    return table


class TextTable(Table):
    """rich's ``Table`` of plain texts, drawn without rich's per-cell layout where none is needed.

    rich lays out every cell as a renderable (measure, wrap, pad, crop): about 0.1 ms a cell, so a
    150-layer profile took longer to draw than to compute. Where every cell is one printable line
    and the table fits, the widths are the cells' lengths and each row is one line; this draws
    those lines itself, as rich would draw them (same box, padding, alignment, styles). Anything
    else (a table too wide, so names fold; a cell with a newline; options this class does not
    draw) is left to rich. Cells are texts as written: no markup, no emoji codes.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._texts: dict[int, tuple[str, list[str]]] = {}  # id(column) -> (header, cells) as written

    def add_text_column(self, header: str, **kwargs: Any) -> None:
        self.add_column(Text(header), **kwargs)
        self._texts[id(self.columns[-1])] = (header, [])

    def add_text_row(self, cells: Sequence[str], *, style: str | None = None) -> None:
        if len(cells) != len(self.columns):
            raise ValueError(f"a row of {len(cells)} cells in a table of {len(self.columns)} columns")
        self.add_row(*(Text(c) for c in cells), style=style)
        for column, cell in zip(self.columns, cells):
            self._texts[id(column)][1].append(cell)

    def _plain_widths(self) -> list[int] | None:
        """Each column's width (cells' widest, padding not included), or None where rich must draw it."""
        if not (self.box and self.show_header and self.show_edge and self.pad_edge) or self.show_footer \
                or self.show_lines or self.leading or self.collapse_padding or self.expand or self.row_styles \
                or self.width is not None or self.min_width is not None or tuple(self.padding) != (0, 1, 0, 1):
            return None
        widths = []
        for column in self.columns:
            texts = self._texts.get(id(column))
            if texts is None or column.width is not None or column.max_width is not None \
                    or column.justify not in ("left", "right") or column.vertical != "top":
                return None
            header, cells = texts
            if len(cells) != len(self.rows) or not all(c.isprintable() for c in cells) or not header.isprintable():
                return None
            widest = max(map(cell_len, cells), default=0)
            widths.append(max(widest, cell_len(header), column.min_width or 0))
        return widths

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        widths = self._plain_widths()
        if not widths or sum(widths) + 2 * len(widths) > options.max_width - self._extra_width:
            return super().__rich_measure__(console, options)
        narrowest = []  # as rich measures a text: its longest word, at least the column's min_width
        for column in self.columns:
            header, cells = self._texts[id(column)]
            # a cell without words measures its full width, as rich measures a Text
            words = [max((cell_len(w) for w in cell.split()), default=cell_len(cell)) for cell in (header, *cells)]
            narrowest.append(max(max(words, default=0), column.min_width or 0))
        return Measurement(sum(narrowest) + 2 * len(widths) + self._extra_width,
                           sum(widths) + 2 * len(widths) + self._extra_width)

    def _calculate_column_widths(self, console: Console, options: ConsoleOptions) -> list[int]:
        widths = self._plain_widths()
        if widths and sum(widths) + 2 * len(widths) <= options.max_width:
            return [w + 2 for w in widths]
        return super()._calculate_column_widths(console, options)

    def _render(self, console: Console, options: ConsoleOptions, widths: list[int]) -> RenderResult:
        plain_widths = self._plain_widths()
        if plain_widths is None or widths != [w + 2 for w in plain_widths]:
            yield from super()._render(console, options, widths)
            return
        get_style = console.get_style
        border = get_style(self.style or "") + get_style(self.border_style or "")
        box = self.box.substitute(options, safe=console.safe_box if self.safe_box is None else self.safe_box)
        new_line = Segment.line()
        header_style = get_style(self.header_style or "")

        def line(cells: list[tuple[str, Style]], left: str, divider: str, right: str) -> RenderResult:
            yield Segment(left, border)
            for i, ((text, style), column, width) in enumerate(zip(cells, self.columns, plain_widths)):
                gap = " " * (width - cell_len(text))
                yield Segment(f" {text}{gap} " if column.justify == "left" else f" {gap}{text} ", style)
                if i < len(cells) - 1:
                    yield Segment(divider, border)
            yield Segment(right, border)
            yield new_line

        yield Segment(box.get_top(widths), border)
        yield new_line
        yield from line([(self._texts[id(c)][0], header_style + get_style(c.header_style or "")) for c in self.columns],
                        box.head_left, box.head_vertical, box.head_right)
        yield Segment(box.get_row(widths, "head", edge=True), border)
        yield new_line
        for index, row in enumerate(self.rows):
            last = index == len(self.rows) - 1
            row_style = get_style(row.style or "")
            cells = [(self._texts[id(c)][1][index], get_style(c.style or "") + row_style) for c in self.columns]
            if last:
                yield from line(cells, box.foot_left, box.foot_vertical, box.foot_right)
            else:
                yield from line(cells, box.mid_left, box.mid_vertical, box.mid_right)
                if row.end_section:
                    yield Segment(box.get_row(widths, "row", edge=True), border)
                    yield new_line
        yield Segment(box.get_bottom(widths), border)
        yield new_line


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
