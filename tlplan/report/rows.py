"""A plain list report (zoo, settings, devices, importance, ...): one frozen record of display cells
and typed values, rendered in every format the CLI offers.

The commands whose output is a simple list build a :class:`Rows`; the reporters below draw it as a
rich table, JSON (with its ``schema``), CSV or markdown, so every list command offers the same
``--format`` choices without a reporter of its own.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console

from . import tables


@dataclass(frozen=True)
class Rows:
    schema: str  # "tlplan.zoo/1": the JSON document's name and version
    title: str
    columns: tuple[str, ...]  # headers of the table and markdown
    align: str  # "l" or "r" per column
    cells: tuple[tuple[str, ...], ...]  # display text, one tuple per row
    records: tuple[dict[str, Any], ...]  # typed values per row (JSON and CSV), units in the keys
    key: str = "rows"  # the JSON field holding the records
    caption: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)  # more top-level JSON fields

    def to_dict(self) -> dict[str, Any]:
        return {**self.meta, self.key: [dict(r) for r in self.records]}


def render_table(rows: Rows, console: Console) -> None:
    console.print(tables.rich(rows.title, rows.columns, rows.cells, rows.align, caption=rows.caption))


def to_json(rows: Rows) -> str:
    return tables.json_text(rows.to_dict(), rows.schema)


def to_csv(rows: Rows) -> str:
    """One line per record; a nested record (a device's accuracy) spread over ``key_field``
    columns, its own nested parts left to the JSON; text in plain ASCII."""
    nested = {key for record in rows.records for key, value in record.items() if isinstance(value, dict)}
    flat = [_flatten({k: v for k, v in record.items() if not (k in nested and v is None)}) for record in rows.records]
    fields = list(dict.fromkeys(key for record in flat for key in record))
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n", restval="")
    writer.writeheader()
    writer.writerows(flat)
    return out.getvalue()


def _flatten(record: dict[str, Any]) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in record.items():
        if isinstance(value, dict):
            flat.update({f"{key}_{k}": _cell(v) for k, v in value.items() if not isinstance(v, (dict, list, tuple))})
        else:
            flat[key] = _cell(value)
    return flat


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return " ".join(str(v) for v in value)
    return tables.ascii_text(value) if isinstance(value, str) else value


def to_markdown(rows: Rows) -> str:
    lines = [f"### {rows.title}", "", *tables.markdown(rows.columns, [[c.replace("|", "\\|") for c in r] for r in rows.cells],
                                                       rows.align)]
    if rows.caption:
        lines += ["", f"- {rows.caption}"]
    return "\n".join(lines) + "\n"
