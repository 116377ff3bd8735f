"""How tlplan's results show in a notebook or REPL: a one-line repr, the CLI's table (rich and HTML), a DataFrame.

The result classes (``ProfileReport``, ``Plan``, ...) sit below ``tlplan.report`` in the layering:
the reporters import them, never the reverse. So a class names its reporter module as a string
(``_reporter = "tlplan.report.text"``) and reaches it only when it is drawn; importing a result
class never imports rich's table code or the reporters.

The result classes are frozen dataclasses declared with ``repr=False``: a generated ``__repr__``
would override this mixin's. Equality and hashing stay the dataclass's own (the mixin defines
neither).
"""

from __future__ import annotations

import copy
import importlib
import io
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from .sizes import human_bytes

if TYPE_CHECKING:
    from rich.console import Console, ConsoleOptions, RenderResult

#: the ImportError of ``to_dataframe`` without pandas (an optional dependency)
PANDAS_MISSING = "to_dataframe needs pandas: pip install 'tlplan[pandas]'"
#: columns of the console the HTML is drawn in: wide enough that no table loses a column (the
#: notebook scrolls it sideways), where the CLI's terminal would leave columns out
HTML_WIDTH = 2000
# rich's own notebook format (rich.jupyter): one <pre>, styles inline, so the HTML stands alone
HTML_FORMAT = ("<pre style=\"white-space:pre;overflow-x:auto;line-height:normal;"
               "font-family:Menlo,'DejaVu Sans Mono',consolas,'Courier New',monospace\">{code}</pre>")


class Displayed:
    """A short ``repr``, the CLI's table as ``__rich__`` and ``_repr_html_``.

    A class sets ``_reporter`` (the module whose ``render_table(obj, console)`` the CLI prints it
    with) or overrides :meth:`_render`, and writes :meth:`_summary`, the repr's text.
    """

    _reporter = ""

    def _summary(self) -> str:
        raise NotImplementedError

    def _render(self, console: Any) -> None:
        importlib.import_module(self._reporter).render_table(self, console)

    def __repr__(self) -> str:
        try:
            summary = self._summary()
        except Exception:  # noqa: BLE001 - a repr never raises: a hand-built result missing a number still shows
            return object.__repr__(self)
        # one line, whatever the names hold: a model spec or plan path may be long or hold newlines
        return f"<{type(self).__name__} {clip(summary, 190)}>"

    def __rich__(self) -> Printed:
        """What the CLI prints (the table, then its summary lines), as one rich renderable."""
        printed = Printed()
        self._render(printed)
        return printed

    def _repr_html_(self) -> str:
        from rich.console import Console

        # force_jupyter=False: in a notebook rich would otherwise display the output itself, twice
        console = Console(record=True, width=HTML_WIDTH, file=io.StringIO(), force_jupyter=False)
        console.print(self.__rich__())
        return console.export_html(inline_styles=True, code_format=HTML_FORMAT)


class Tabular(Displayed):
    """:class:`Displayed`, and ``to_dataframe()``: a class writes :meth:`_frame`, its columns and rows."""

    def _frame(self) -> tuple[Sequence[str], Iterable[dict[str, Any]]]:
        raise NotImplementedError

    def to_dataframe(self) -> Any:
        """A pandas DataFrame of the result's rows (pandas is optional: ``pip install 'tlplan[pandas]'``)."""
        pandas = need_pandas()
        columns, records = self._frame()
        # the columns named, so a result with no rows still has its fields
        return pandas.DataFrame.from_records(list(records), columns=list(columns))


def need_pandas() -> Any:
    try:
        import pandas
    except ModuleNotFoundError as exc:
        if exc.name != "pandas":  # pandas is there but broken (a dependency missing): that error says more
            raise
        raise ImportError(PANDAS_MISSING) from exc
    return pandas


class Printed:
    """A reporter's ``render_table`` output, kept to be drawn later: it stands in for the console.

    The reporters only call ``console.print``, one object at a time; this records each call and
    replays it into whatever console draws it, tables fitted to that console's width as the CLI
    fits them (whole columns left out, never a number cut short). The recorded tables are never
    changed, so it can be drawn again at another width.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def print(self, *objects: Any, **kwargs: Any) -> None:  # noqa: A003 - the console's name
        self.calls.append((objects, kwargs))

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        from rich.table import Table

        from .report.tables import fit

        for objects, kwargs in self.calls:
            if not objects:  # print(): an empty line
                yield console.render_str("")
            for obj in objects:
                if isinstance(obj, str):
                    yield console.render_str(obj, markup=kwargs.get("markup"), highlight=kwargs.get("highlight"),
                                             emoji=kwargs.get("emoji"))
                elif isinstance(obj, Table):
                    fitted = copy.copy(obj)
                    fitted.columns = list(obj.columns)  # fit() leaves columns out of its own list, not the recorded one
                    yield fit(fitted, console)
                else:
                    yield obj


# ---- the repr's numbers ---------------------------------------------------------------------------


def clip(text: str, limit: int) -> str:
    """``text`` on one line and at most ``limit`` characters (an ellipsis where it was cut)."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def approx_count(n: int | float) -> str:
    """3_504_872 → '3.5 M': a count to the repr's precision (the table has every digit)."""
    value, unit = float(n), ""
    for larger in ("k", "M", "G"):
        # compare the value as printed, so 999_960 reads 1.0 M and not 1,000.0 k
        if abs(round(value, 1 if unit else 0)) < 1000:
            break
        value, unit = value / 1000, larger
    return f"{value:,.1f} {unit}" if unit else f"{value:,.0f}"


def shape_text(shape: Sequence[int]) -> str:
    from .report.units import shape as units_shape  # the tables' own spelling, 8×3×224×224

    return units_shape(shape)


def size(n: int | float | None) -> str:
    return "-" if n is None else human_bytes(n)
