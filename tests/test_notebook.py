"""tlplan's results in a notebook or REPL: a one-line repr, the CLI's table through rich and as HTML,
and ``to_dataframe()`` (pandas is optional)."""

from __future__ import annotations

import dataclasses
import html
import io
import subprocess
import sys
from dataclasses import fields

import pytest
from rich.console import Console
from rich.protocol import is_renderable

import tlplan
from corpus import SHAPE as TINY_SHAPE
from corpus import build
from tlplan.checking import CheckResult, check_plan
from tlplan.comparing import CompareReport, compare
from tlplan.costs.annotate import annotate
from tlplan.display import PANDAS_MISSING, Displayed, approx_count
from tlplan.plan.options import LayerOptions
from tlplan.plan.plan import Plan
from tlplan.profiling import ProfileReport
from tlplan.report import check as check_reporter
from tlplan.report import compare as compare_reporter
from tlplan.report import pareto as pareto_reporter
from tlplan.report import profile_rows as pr
from tlplan.report import solve as solve_reporter
from tlplan.report import text as profile_reporter
from tlplan.report import train as train_reporter
from tlplan.report import units
from tlplan.report.solve import SolveReport
from tlplan.solve import build_space, plan_of, solve_space
from tlplan.solve.pareto import Frontier, frontier
from tlplan.training import EpochStats, TrainResult

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")

SHAPE = (1, 3, 64, 64)
TINY = "squeezenet"  # a corpus model: solving it takes a fraction of a second (mcunet-5fps: seconds)


@pytest.fixture(scope="module")
def mcunet():
    return tlplan.load_model("mcunet-5fps")


@pytest.fixture(scope="module")
def profile_report(mcunet) -> ProfileReport:
    return tlplan.profile(mcunet, SHAPE, scheme="bias", model_name="mcunet-5fps", measure=False)


@pytest.fixture(scope="module")
def compare_report(mcunet) -> CompareReport:
    return compare(mcunet, SHAPE, ["bias", "blocks:2"], model_name="mcunet-5fps", measure=False)


@pytest.fixture(scope="module")
def space():
    return build_space(tlplan.trace_model(build(TINY), TINY_SHAPE, TINY), "tlplan", "fp32")


@pytest.fixture(scope="module")
def cheapest(space) -> int:
    """The least memory any plan of the tiny model needs (the classifier alone)."""
    return solve_space(space, 1 << 30, next_factor=None, refine=False).minimum_bytes


@pytest.fixture(scope="module")
def plan(cheapest) -> Plan:
    return tlplan.solve(build(TINY), TINY_SHAPE, int(cheapest * 1.3), model_name=TINY, runtime="tlplan")


@pytest.fixture(scope="module")
def solve_report(space, cheapest) -> SolveReport:
    # as ``tlplan solve`` builds it
    result = solve_space(space, int(cheapest * 1.3))
    solved = plan_of(result, space, TINY)
    return SolveReport(solved, result, annotate(space.graph, solved.layers, solved.runtime, solved.precision))


@pytest.fixture(scope="module")
def check_result(plan) -> CheckResult:
    return check_plan(plan, "plan.yaml", plan.predicted["peak_bytes"], model=build(TINY))


@pytest.fixture(scope="module")
def pareto(space, cheapest) -> Frontier:
    return frontier(space, cheapest * 2, points=2)


@pytest.fixture(scope="module")
def train_result(plan) -> TrainResult:
    # built, not trained: a real run takes over five seconds here (test_train.py runs them)
    history = (EpochStats(1, 1.61, 0.25, 0.3, 410.0), EpochStats(2, 1.32, 0.5, None, 455.5), EpochStats(3, 1.07, 0.75, 0.6, 460.2))
    measured = {"saved_bytes": plan.predicted["saved_bytes"], "peak_bytes": plan.predicted["peak_bytes"] + 512, "step_ms": 3.2}
    return TrainResult(plan, history, None, dict(plan.predicted), measured, {})


#: every result kind, the fixture that builds it and its reporter (None: no CLI table)
RESULTS = {
    "profile_report": profile_reporter, "compare_report": compare_reporter, "solve_report": solve_reporter,
    "check_result": check_reporter, "train_result": train_reporter, "pareto": pareto_reporter, "plan": None,
}


@pytest.fixture(params=list(RESULTS))
def result(request):
    return request.getfixturevalue(request.param), RESULTS[request.param]


def _model_of(obj) -> str:
    return obj.model if hasattr(obj, "model") else obj.plan.model


def _printed(renderable, width: int = 300) -> str:
    out = io.StringIO()
    Console(file=out, width=width, no_color=True).print(renderable)
    return out.getvalue()


# --------------------------------------------------------------------------- repr


def test_repr_is_one_short_line_naming_the_result(result) -> None:
    obj, _ = result
    text = repr(obj)
    assert text.startswith(f"<{type(obj).__name__} ") and text.endswith(">") and f" {_model_of(obj)} · " in text
    assert "\n" not in text and len(text) <= 200
    assert type(obj).__repr__ is Displayed.__repr__  # the dataclass did not write its own over it


def test_profile_repr_names_the_report_and_its_numbers(profile_report) -> None:
    r, t = profile_report, profile_report.totals
    text = repr(r)
    assert text.startswith(f"<ProfileReport {r.model} · {units.shape(r.input_shape)} · scheme {r.scheme} · runtime {r.runtime}: ")
    assert f"{len(r.layers)} layers" in text
    assert f"{approx_count(t['params'])} params ({approx_count(t['trainable_params'])} trainable)" in text
    assert f"kept {units.human_bytes(t['saved_bytes'])}" in text
    assert f"peak {units.human_bytes(r.memory.peak_bytes)}" in text
    # the repr is a line, where the dataclass's was every layer's fields (29 KB for mobilenet_v2)
    assert len(text) < 200 < len(str(r.to_dict()))


def test_other_reprs_name_their_numbers(compare_report, solve_report, plan, check_result, pareto, train_result) -> None:
    text = repr(compare_report)
    assert all(row.scheme in text for row in compare_report.rows)
    peaks = sorted(row.peak_bytes for row in compare_report.rows)
    assert f"peak {units.human_bytes(peaks[0])}" in text and units.human_bytes(peaks[-1]) in text

    text, predicted = repr(solve_report), solve_report.plan.predicted
    assert f"budget {units.human_bytes(solve_report.result.budget_bytes)}" in text
    assert f"{len(solve_report.chosen())} layers trained" in text
    assert f"importance {predicted['importance']:.4f}" in text and f"peak {units.human_bytes(predicted['peak_bytes'])}" in text

    text = repr(plan)
    assert f"scheme {plan.scheme}" in text and f"{len(plan.layers)} layers set" in text
    assert f"budget {units.human_bytes(plan.budget_bytes)}" in text and units.human_bytes(plan.predicted["peak_bytes"]) in text

    assert repr(check_result).startswith(f"<CheckResult PASS {check_result.plan_path} · {check_result.model} ")
    over = check_plan(plan, "plan.yaml", plan.predicted["peak_bytes"] - 1, model=build(TINY))
    assert repr(over).startswith("<CheckResult FAIL (over budget) ")

    text = repr(pareto)
    assert f"{len(pareto.points)} solved points" in text and f"{len(pareto.schemes)} named schemes" in text
    assert f"{pareto.points[-1].importance:.4f}" in text

    text, history = repr(train_result), train_result.history
    assert f"{len(history)} epochs" in text and f"loss {history[0].loss:.4f} → {history[-1].loss:.4f}" in text
    assert f"peak {units.human_bytes(train_result.measured['peak_bytes'])} measured" in text


def test_repr_of_a_long_or_multiline_name_stays_one_short_line(profile_report, plan) -> None:
    for obj in (dataclasses.replace(profile_report, model="pkg.models:" + "x" * 400 + "\nfactory"),
                dataclasses.replace(plan, model="y" * 300, scheme="z" * 300, device="d" * 300)):
        text = repr(obj)
        assert "\n" not in text and len(text) <= 200 and text.endswith(">")


def test_repr_of_a_result_missing_its_numbers_does_not_raise() -> None:
    # a debugger or notebook shows whatever it is given: a half-built result falls back to the plain repr
    assert repr(TrainResult(None, (), None)).startswith("<tlplan.training.TrainResult object at ")


def test_equality_and_hashing_stay_the_dataclasses(profile_report, compare_report, plan, pareto) -> None:
    for obj in (profile_report, compare_report, plan, pareto):
        assert dataclasses.replace(obj) == obj
        assert dataclasses.replace(obj, model=obj.model + "-other") != obj
        assert "_reporter" not in {f.name for f in fields(obj)}  # the mixin adds no field
    # frozen and compared by value: equal results hash alike, as before
    for obj in (compare_report, pareto):
        assert hash(dataclasses.replace(obj)) == hash(obj)
    with pytest.raises(TypeError):  # a plan holds mappings: unhashable, as it was
        hash(plan)


# --------------------------------------------------------------------------- rich


def test_rich_prints_what_the_cli_prints(result) -> None:
    obj, reporter = result
    renderable = obj.__rich__()
    assert is_renderable(renderable)
    if reporter is None:
        return
    cli = io.StringIO()
    reporter.render_table(obj, Console(file=cli, width=300, no_color=True))
    assert _printed(obj) == cli.getvalue()


def test_rich_titles(profile_report, compare_report, check_result, pareto, plan) -> None:
    assert pr.title(profile_report) in _printed(profile_report)
    assert compare_reporter.title(compare_report) in _printed(compare_report)
    assert check_reporter.title(check_result) in _printed(check_result)
    assert "PASS" in _printed(check_result)
    assert f"{pareto.model} · runtime {pareto.runtime} · budget → importance" in _printed(pareto)
    out = _printed(plan)
    assert f"plan · {plan.model} · input {units.shape(plan.input_shape)}" in out
    assert all(name in out for name in plan.layers)


def test_rich_fits_the_width_as_the_cli_does_and_can_be_drawn_again(profile_report) -> None:
    renderable = profile_report.__rich__()
    narrow = _printed(renderable, width=80)
    table_lines = [line for line in narrow.splitlines() if "│" in line or "┃" in line]
    assert table_lines and all(len(line) <= 80 for line in table_lines)
    assert "left out at 80 columns" in narrow
    wide = _printed(renderable, width=300)  # the same object, wider: every column is back
    assert "left out" not in wide and "kept KB" in wide


# --------------------------------------------------------------------------- HTML


def test_html_holds_the_table(profile_report) -> None:
    page = profile_report._repr_html_()
    assert page.startswith("<pre") and page.rstrip().endswith("</pre>")
    assert html.escape(pr.title(profile_report)) in page
    for row, cells in zip(profile_report.layers, pr.layer_cells(profile_report)):
        assert row.name in page
        assert cells[7] in page  # the kept KB cell
    assert "<html" not in page and "<style" not in page  # a fragment with its styles inline: it stands alone


def test_html_escapes_names(profile_report) -> None:
    first = dataclasses.replace(profile_report.layers[0], name="<b>conv</b>")
    page = dataclasses.replace(profile_report, layers=(first, *profile_report.layers[1:]))._repr_html_()
    assert "&lt;b&gt;conv&lt;/b&gt;" in page and "<b>conv</b>" not in page


def test_every_result_has_html(result) -> None:
    obj, _ = result
    page = obj._repr_html_()
    assert page.startswith("<pre") and html.escape(_model_of(obj)) in page


def test_plan_html_lists_each_layer_and_what_it_trains(plan) -> None:
    page = plan._repr_html_()
    for name, options in plan.layers.items():
        assert name in page
        if options.weight:
            assert f"weight {options.weight:g}" in page


# --------------------------------------------------------------------------- DataFrames


def test_profile_dataframe_one_row_per_layer(profile_report) -> None:
    df = profile_report.to_dataframe()
    assert list(df.columns) == list(pr.as_records(profile_report)[0])  # the CSV's fields
    assert len(df) == len(profile_report.layers)
    assert df["name"].tolist() == [row.name for row in profile_report.layers]
    assert df["output_shape"].tolist() == [row.output_shape for row in profile_report.layers]
    t = profile_report.totals
    assert df["saved_bytes"].sum() == t["saved_bytes"]
    assert df["params"].sum() == t["params"] and df["trainable_params"].sum() == t["trainable_params"]
    assert (df["macs_bwd_input"] + df["macs_bwd_weight"]).sum() == t["macs_bwd"]
    assert df["latency_ms_fwd"].isna().all()  # not measured: missing, not an empty string


def test_compare_dataframe_one_row_per_scheme(compare_report) -> None:
    df = compare_report.to_dataframe()
    assert len(df) == len(compare_report.rows)
    assert df.set_index("scheme")["peak_bytes"].to_dict() == {r.scheme: r.peak_bytes for r in compare_report.rows}
    assert df["kept_tlplan_bytes"].tolist() == [r.kept_tlplan_bytes for r in compare_report.rows]
    assert df["step_ms"].isna().all()


def test_solve_dataframe_one_row_per_trained_layer(solve_report) -> None:
    df = solve_report.to_dataframe()
    assert df.to_dict("records") == solve_report.chosen()
    assert set(df["layer"]) <= set(solve_report.plan.layers)
    assert df["trainable_params"].sum() == solve_report.plan.predicted["trainable_params"]


def test_frontier_dataframe_one_row_per_point(pareto) -> None:
    df = pareto.to_dataframe()
    points = (*pareto.points, *pareto.schemes)
    assert len(df) == len(points)
    assert df["plan"].tolist() == [p.label for p in points]
    assert df["importance"].tolist() == [p.importance for p in points]
    assert df["peak_bytes"].tolist() == [p.peak_bytes for p in points]
    assert df["budget_bytes"].iloc[: len(pareto.points)].tolist() == [p.budget_bytes for p in pareto.points]


def test_train_dataframe_one_row_per_epoch(train_result) -> None:
    df = train_result.to_dataframe()
    assert list(df.columns) == [f.name for f in fields(EpochStats)]
    assert df["epoch"].tolist() == [h.epoch for h in train_result.history]
    assert df["loss"].tolist() == [h.loss for h in train_result.history]
    assert df["val_accuracy"].isna().tolist() == [h.val_accuracy is None for h in train_result.history]


def test_plan_dataframe_one_row_per_layer(plan) -> None:
    df = plan.to_dataframe()
    assert df["layer"].tolist() == list(plan.layers)
    option_names = [f.name for f in fields(LayerOptions)]
    for record in df.to_dict("records"):
        assert LayerOptions(**{k: record[k] for k in option_names}) == plan.layers[record["layer"]]
        assert record["output_shape"] == plan.shapes.get(record["layer"])


def test_dataframe_of_no_rows_keeps_its_columns(train_result) -> None:
    df = dataclasses.replace(train_result, history=()).to_dataframe()
    assert len(df) == 0 and list(df.columns) == [f.name for f in fields(EpochStats)]


def test_dataframe_without_pandas_names_the_extra(profile_report, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "pandas", None)  # what an environment without pandas does on import
    with pytest.raises(ImportError) as raised:
        profile_report.to_dataframe()
    assert str(raised.value) == PANDAS_MISSING == "to_dataframe needs pandas: pip install 'tlplan[pandas]'"


# --------------------------------------------------------------------------- layering


def test_importing_tlplan_imports_no_reporter() -> None:
    """The result classes reach their reporters only when drawn (the reporters import them)."""
    code = "import sys, tlplan, tlplan.checking, tlplan.training, tlplan.comparing, tlplan.solve.pareto; " \
           "print(sorted(m for m in sys.modules if m.startswith('tlplan.report')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
