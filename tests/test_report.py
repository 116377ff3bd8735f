"""Tests of the profile reporters (table, JSON, CSV, markdown) and the number formatting they share."""

from __future__ import annotations

import csv
import io
import json
import re

import pytest
from rich.console import Console

import tlplan
from tlplan.report import profile_rows as pr
from tlplan.report import text, units

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")

SHAPE = (1, 3, 128, 128)


@pytest.fixture(scope="module")
def report():
    return tlplan.profile(tlplan.load_model("mcunet-5fps"), SHAPE, scheme="bias")


def _render(report, width: int = 300) -> str:
    buf = io.StringIO()
    text.render_table(report, Console(file=buf, width=width, no_color=True))
    return buf.getvalue()


# --------------------------------------------------------------------------- the report itself


def test_report_fields(report):
    assert report.scheme == "bias" and report.runtime == "tlplan" and report.device is None
    assert report.input_shape == SHAPE
    assert report.measured is None
    assert report.totals["params"] == sum(row.params for row in report.layers) == 630_224
    assert report.totals["trainable_params"] == sum(row.trainable_params for row in report.layers)
    assert report.totals["saved_bytes"] == sum(row.saved_bytes for row in report.layers)
    # bias: the classifier and every bias; no weight gradient anywhere but the classifier
    for row in report.layers:
        if row.name != "classifier":
            assert row.macs_bwd_weight == 0, row.name
    d = report.to_dict()
    assert d["layers"][0]["output_shape"] == list(report.layers[0].output_shape)
    assert d["totals"] == dict(report.totals)


# --------------------------------------------------------------------------- table


def test_render_table(report):
    out = _render(report)
    assert "\x1b[" not in out
    assert pr.title(report) in out
    lines = out.splitlines()
    rows = [ln for ln in lines if "│" in ln]
    assert len(rows) == len(report.layers) + 1
    for ln, row in zip(rows, report.layers):
        cells = [c.strip() for c in ln.split("│")[1:-1]]
        assert cells[0] == row.name
        assert cells[1] == row.op
        assert cells[2] == units.shape(row.output_shape)
        assert cells[7] == (units.kb(row.saved_bytes) if row.saved_bytes else "")
    total = [c.strip() for c in rows[-1].split("│")[1:-1]]
    assert total == pr.total_cells(report)
    assert total[3] == "630,224" and total[4] == f"{report.totals['trainable_params']:,}"
    for what, value, source in pr.summary_lines(report):
        assert f"{what}: {value}  ({source})" in out
    assert pr.KB_NOTE in out


def test_render_table_measured_columns(report):
    """The ms columns appear only when the report was measured, and then with the numbers."""
    import dataclasses

    fake = dataclasses.replace(
        report,
        layers=tuple(dataclasses.replace(r, latency_ms={"fwd": 0.5, "bwd": None}) for r in report.layers),
        totals={**report.totals, "latency_ms": {"fwd": 40.0, "bwd": 0.0}, "measured_step_ms": 12.5},
        measured={"host": "test host", "threads": 1, "repeats": 3, "statistic": "median after warm-up"},
    )
    assert "ms fwd" not in _render(report)
    out = _render(fake)
    assert "ms fwd" in out and "ms bwd" in out
    assert "training step 12.500 ms" in out
    assert "measured here: test host, median after warm-up of 3" in out
    rows = [ln for ln in out.splitlines() if "│" in ln]
    cells = [c.strip() for c in rows[0].split("│")[1:-1]]
    assert cells[-2:] == ["0.500", "-"]


# --------------------------------------------------------------------------- markdown


def test_to_markdown_structure(report):
    md = text.to_markdown(report)
    lines = md.splitlines()
    n_layers = len(report.layers)
    n_summary = len(pr.summary_lines(report))
    assert n_summary == 6  # params, MACs, kept for backward, memory, peak memory, TinyTL's convention (no timing, no device)
    # title, blank, header, separator, layers, totals, blank, summary items, KB note, warnings
    assert len(lines) == 2 + 2 + n_layers + 1 + 1 + n_summary + 1 + len(report.warnings)
    assert md.endswith("\n") and not md.endswith("\n\n")
    assert lines[0] == f"### {pr.title(report)}"
    table = lines[2 : 2 + 2 + n_layers + 1]
    assert all(ln.startswith("| ") or ln.startswith("|-") for ln in table)
    assert re.fullmatch(r"\|(---:?\|)+", table[1])
    width = table[0].count("|")
    assert width == len(pr.columns(report)) + 1
    assert all(len(re.findall(r"(?<!\\)\|", ln)) == width for ln in table)
    assert table[-1].startswith("| **total** |")
    assert f"**{units.kb(report.totals['saved_bytes'])}**" in table[-1]
    assert lines[-1] == f"- {pr.KB_NOTE}"
    # numeric columns right-aligned, text columns left
    aligns = table[1].strip("|").split("|")
    assert [a.endswith(":") for a in aligns] == [c in pr.NUMERIC for c in pr.columns(report)]


def test_to_markdown_escapes_pipes(report):
    import dataclasses

    odd = dataclasses.replace(report, layers=(dataclasses.replace(report.layers[0], name="a|b"),) + report.layers[1:])
    md = text.to_markdown(odd)
    row = [ln for ln in md.splitlines() if "a\\|b" in ln]
    assert len(row) == 1
    header = md.splitlines()[2]
    assert len(re.findall(r"(?<!\\)\|", row[0])) == header.count("|")


# --------------------------------------------------------------------------- csv / json


def test_to_csv_round_trip(report):
    rows = list(csv.DictReader(io.StringIO(text.to_csv(report))))
    assert len(rows) == len(report.layers)
    for got, row in zip(rows, report.layers):
        assert got["name"] == row.name and got["op"] == row.op
        assert got["block"] == (row.block or "")
        assert got["output_shape"] == "x".join(map(str, row.output_shape))  # CSV is plain ASCII
        for key in ("params", "trainable_params", "macs_fwd", "macs_bwd_input", "macs_bwd_weight", "saved_bytes"):
            assert int(got[key]) == getattr(row, key), (row.name, key)
        assert got["latency_ms_fwd"] == "" and got["latency_ms_bwd"] == ""
    assert sum(int(r["saved_bytes"]) for r in rows) == report.totals["saved_bytes"]


def test_to_json_round_trip(report):
    s = text.to_json(report)
    assert s.endswith("\n")
    data = json.loads(s)
    assert data.pop("schema") == "tlplan.profile/1"  # the document names its shape and version first
    assert data == report.to_dict()
    d = json.loads(s)
    assert d["scheme"] == "bias" and d["input_shape"] == list(SHAPE)
    assert [r["saved_bytes"] for r in d["layers"]] == [r.saved_bytes for r in report.layers]


# --------------------------------------------------------------------------- units


@pytest.mark.parametrize(
    "n, want",
    [(1536, "1.5"), (0, "0.0"), (1024, "1.0"), (512, "0.5"), (1024 * 1024, "1,024.0"), (6_189_696, "6,044.6")],
)
def test_kb(n, want):
    assert units.kb(n) == want


@pytest.mark.parametrize(
    "n, want",
    [
        (0, "0 B"),
        (1000, "1,000 B"),  # 1024-based: 1000 bytes are not yet a KB
        (1023, "1,023 B"),
        (1024, "1.00 KB"),
        (1536, "1.50 KB"),
        (327_680, "320.00 KB"),  # STM32F746 SRAM as on its datasheet
        (1024**2, "1.00 MB"),
        (int(2.5 * 1024**2), "2.50 MB"),
        (1024**3, "1.00 GB"),
        (4 * 1024**3, "4.00 GB"),
        (2048 * 1024**3, "2,048.00 GB"),  # GB is the largest unit
    ],
)
def test_human_bytes(n, want):
    assert units.human_bytes(n) == want


def test_other_units():
    assert units.mmacs(22_613_504) == "22.61"
    assert units.mmacs(1_234_567_890) == "1,234.57"
    assert units.count(630_224) == "630,224"
    assert units.count(0) == "0"
    assert units.ms(None) == "-"
    assert units.ms(1.23456) == "1.235"
    assert units.ms(1234.5) == "1,234.500"
    assert units.shape((1, 3, 128, 128)) == "1×3×128×128"
    assert units.shape([1, 1000]) == "1×1000"


def test_narrow_logs_drop_columns_never_digits(run, monkeypatch) -> None:
    # GIVEN a CI log 80 columns wide (not a terminal)
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setenv("CI", "true")
    code, out, _ = run("compare", "mobilenet_v2", "--no-measure")
    assert code == 0
    # THEN no line is wider, no cell is cut ("…"), and the caption names what was left out
    assert max(len(line) for line in out.splitlines() if line[:1] in "┏┃┡│├└") <= 80
    assert "…" not in out and "left out at 80 columns" in out
    wide = run("compare", "mobilenet_v2", "--no-measure", "--format", "json")[1]
    import json

    full = next(r for r in json.loads(wide)["schemes"] if r["scheme"] == "full")
    assert f"{full['kept_eager_bytes'] / 1024:,.1f}" in out  # the numbers shown are whole


def test_small_front_door_fixes(run, tmp_path) -> None:
    # -h works like --help, and help shows its defaults (rich markup no longer eats "[default: 1]")
    code, out, _ = run("profile", "-h")
    assert code == 0 and "[default: 1]" in out
    # --plot writes the format its name asks for
    code, _, err = run("profile", "mcunet-5fps", "--resolution", "32", "--no-measure", "--plot", str(tmp_path / "k.svg"))
    assert code == 0, err
    assert b"<svg" in (tmp_path / "k.svg").read_bytes()[:500]
    # CSV is plain ASCII (shapes as 1x16x16x16)
    csv_text = run("profile", "mcunet-5fps", "--resolution", "32", "--no-measure", "--format", "csv")[1]
    assert csv_text.isascii() and ",1x16x16x16," in csv_text


# ---- TextTable: rich's table, drawn line by line where rich's per-cell layout is not needed ------


def _rich_table(title, columns, rows, totals, numeric, caption):
    """The table as rich's own Table draws it (what the reporters built before TextTable)."""
    from rich.markup import escape
    from rich.table import Table

    from tlplan.report import tables

    table = Table(title=tables.plain(title), caption=caption, show_footer=False, header_style="bold")
    for i, col in enumerate(columns):
        widest = max([len(col), len(totals[i])] + [len(r[i]) for r in rows])
        table.add_column(escape(col), justify="right" if numeric[i] else "left", no_wrap=numeric[i],
                         min_width=widest if numeric[i] else None, overflow="fold")
    for row in rows:
        table.add_row(*(escape(c) for c in row))
    table.add_section()
    table.add_row(*totals, style="bold")
    return table


def _text_table(title, columns, rows, totals, numeric, caption):
    from tlplan.report import tables

    table = tables.TextTable(title=tables.plain(title), caption=caption, show_footer=False, header_style="bold")
    for i, col in enumerate(columns):
        widest = max([len(col), len(totals[i])] + [len(r[i]) for r in rows])
        table.add_text_column(col, justify="right" if numeric[i] else "left", no_wrap=numeric[i],
                              min_width=widest if numeric[i] else None, overflow="fold")
    for row in rows:
        table.add_text_row(row)
    table.add_section()
    table.add_text_row(totals, style="bold")
    return table


def _drawn(table, width: int, *, safe_box: bool = False):
    """Every character the console draws, line by line, with its style: what a reader sees."""
    from rich.segment import Segment
    from rich.style import Style

    from tlplan.report.tables import fit

    console = Console(width=width, force_terminal=True, color_system="truecolor", file=io.StringIO(), safe_box=safe_box)
    table = fit(table, console)  # as the CLI draws it: whole columns left out where the width runs out
    lines = Segment.split_lines(console.render(table, console.options))
    return [[(ch, seg.style or Style()) for seg in line for ch in seg.text] for line in lines], console.measure(table)


@pytest.mark.parametrize("width", [300, 150, 100, 80, 40])
def test_text_table_draws_what_rich_draws(report, width) -> None:
    cols, rows, totals = text._chosen(report, None)
    numeric = [c in pr.NUMERIC for c in cols]
    names = [["layer1.0.conv[red]x", "日本語の層", "a b  c", "x" * 70]]  # markup-like, wide, spaced, long enough to fold
    rows = rows + [[n] + r[1:] for n, r in zip(names[0], rows)]
    args = (pr.title(report), cols, rows, totals, numeric, pr.KB_NOTE)
    assert _drawn(_text_table(*args), width) == _drawn(_rich_table(*args), width)
    assert _drawn(_text_table(*args), width, safe_box=True) == _drawn(_rich_table(*args), width, safe_box=True)


def test_text_table_measures_as_rich_does() -> None:
    from rich.table import Table

    from tlplan.report import tables

    cells = [["   ", "1"], ["a  b", ""], ["日本", "12345"]]
    ours, theirs = tables.TextTable(), Table()
    for header in ("x", "y"):
        ours.add_text_column(header)
        theirs.add_column(header)
    for row in cells:
        ours.add_text_row(row)
        theirs.add_row(*row)
    console = Console(file=io.StringIO(), width=80)
    assert console.measure(ours) == console.measure(theirs)


def test_text_table_leaves_to_rich_what_it_does_not_draw() -> None:
    from tlplan.report import tables

    table = tables.TextTable(title="t")
    table.add_text_column("name")
    table.add_text_column("n", justify="right")
    table.add_text_row(["two\nlines", "1"])
    table.add_text_row([":smile: [b]x[/b]", "22"])
    drawn = _drawn(table, 80)[0]
    lines = ["".join(ch for ch, _ in line) for line in drawn]
    assert any("two" in line for line in lines) and any("lines" in line for line in lines)  # rich wrapped the cell
    assert any(":smile: [b]x[/b]" in line for line in lines)  # as written: no emoji, no markup
    assert table._plain_widths() is None  # a newline: rich draws it
    with pytest.raises(ValueError, match="2 columns"):
        table.add_text_row(["only one"])


def test_profile_table_is_drawn_line_by_line(report) -> None:
    """The profile's table draws every row itself (rich's per-cell layout is skipped) at a normal width."""
    from tlplan.report import tables

    seen = []
    original = tables.Table._render

    def spy(self, *args, **kwargs):
        seen.append(type(self).__name__)
        return original(self, *args, **kwargs)

    tables.Table._render = spy
    try:
        _render(report, width=300)
    finally:
        tables.Table._render = original
    assert seen == []  # TextTable's own _render drew it: rich's was never called
