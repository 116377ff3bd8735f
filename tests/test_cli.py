"""Tests of the ``tlplan`` command line, driven in-process through ``tlplan.cli.main()``.

Every test runs the real console entry point with a patched ``sys.argv`` and reads what it wrote
to stdout / stderr; ``main()`` ends with ``SystemExit`` (or returns, for exit code 0).
"""

from __future__ import annotations

import csv
import io
import json
import re
from functools import lru_cache

import pytest

import tlplan

MCU = "mcunet-5fps"
MCU_PARAMS = 630_224  # mcunet-5fps with 1000 classes
MCU_CLASSIFIER = 160 * 1000 + 1000

LAYER_FIELDS = {"name", "op", "output_shape", "params", "macs_fwd", "macs_bwd_input", "macs_bwd_weight", "saved_bytes"}
TOTAL_FIELDS = {"params", "trainable_params", "trainable_param_bytes", "macs_fwd", "macs_bwd", "saved_bytes", "peak_bytes"}
TOP_FIELDS = {"model", "input_shape", "runtime", "scheme", "device", "layers", "totals"}

# fvcore traces with torch.jit, which recent torch marks deprecated.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")


def run_json(run, *args: str) -> dict:
    code, out, err = run("profile", *args, "--format", "json")
    assert code == 0, err
    return json.loads(out)


@lru_cache(maxsize=None)
def mcu_layer_names() -> tuple[str, ...]:
    graph = tlplan.trace_model(tlplan.load_model(MCU), (1, 3, 128, 128))
    return tuple(layer.name for layer in graph.layers)


def assert_one_line_error(code: int, out: str, err: str, expected_code: int = 2) -> str:
    assert code == expected_code, (code, out, err)
    assert "Traceback" not in out and "Traceback" not in err
    lines = err.strip("\n").splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error:"), err
    return lines[0]


# --------------------------------------------------------------------------- table


def test_profile_table(run):
    code, out, err = run("profile", MCU, "--no-measure")
    assert code == 0, err
    assert "Traceback" not in err
    assert "mcunet-5fps · input 1×3×128×128 · scheme full · runtime tlplan" in out
    assert "\x1b[" not in out and "\x1b[" not in err  # stdout is not a terminal: no ANSI codes

    lines = out.splitlines()
    header = [ln for ln in lines if "┃" in ln and "layer" in ln]
    assert len(header) == 1
    n_bars = header[0].count("┃")
    assert n_bars == 9  # 8 columns without measurement
    rows = [ln for ln in lines if "│" in ln]
    # one line per layer plus the totals: nothing wrapped onto a second line
    assert len(rows) == len(mcu_layer_names()) + 1
    for ln in rows:
        assert ln.count("│") == n_bars, ln

    cells = [[c.strip() for c in ln.split("│")[1:-1]] for ln in rows]
    assert [c[0] for c in cells[:-1]] == list(mcu_layer_names())
    assert "first_conv.conv" in mcu_layer_names()
    total = cells[-1]
    assert total[0] == "total"
    assert total[3] == "630,224" and total[4] == "630,224"

    summary = {ln.split(":", 1)[0] for ln in lines if ":" in ln and "│" not in ln and "·" not in ln}
    assert {"params", "MACs", "kept for backward", "peak memory"} <= summary
    assert "KB = 1024 bytes" in out
    # not measured: no timing columns or time summary pretending to be measured
    assert "ms fwd" not in out and "measured here" not in out


def test_profile_table_narrow_log_keeps_rows_whole(run, monkeypatch):
    monkeypatch.setenv("COLUMNS", "60")
    code, out, err = run("profile", "resnet18", "--resolution", "64", "--no-measure")
    assert code == 0, err
    report = tlplan.profile(tlplan.load_model("resnet18"), (1, 3, 64, 64))
    from tlplan.report.units import kb

    rows = [ln for ln in out.splitlines() if "│" in ln]
    assert len(rows) == len(report.layers) + 1  # the layers and the totals, one line each
    assert "total" in rows[-1]
    # 60 columns: whole columns are left out (and named), no cell is cut, no line is wider
    assert "left out at 60 columns" in out and "…" not in out
    assert max(len(ln) for ln in out.splitlines() if ln[:1] in "┏┃┡│├└") <= 60  # (summary lines soft-wrap whole)
    for ln, layer in zip(rows, report.layers):
        assert layer.name in ln, ln
    # wide enough, the kept-bytes column is there, whole, at the end of each row
    monkeypatch.setenv("COLUMNS", "200")
    rows = [ln for ln in run("profile", "resnet18", "--resolution", "64", "--no-measure")[1].splitlines() if "│" in ln]
    for ln, layer in zip(rows, report.layers):
        if layer.saved_bytes:
            assert ln.rstrip().endswith(f"{kb(layer.saved_bytes)} │"), ln


# --------------------------------------------------------------------------- json


def test_profile_json_contract(run):
    d = run_json(run, MCU, "--no-measure")
    assert TOP_FIELDS <= set(d)
    assert d["model"] == MCU
    assert d["input_shape"] == [1, 3, 128, 128]
    assert d["runtime"] == "tlplan" and d["scheme"] == "full" and d["device"] is None
    assert [row["name"] for row in d["layers"]] == list(mcu_layer_names())
    for row in d["layers"]:
        assert LAYER_FIELDS <= set(row), row
        assert isinstance(row["output_shape"], list) and row["output_shape"][0] == 1
        for key in LAYER_FIELDS - {"name", "op", "output_shape"}:
            assert isinstance(row[key], int) and row[key] >= 0, (row["name"], key)
        assert row.get("latency_ms") is None  # not measured, not predicted
    t = d["totals"]
    assert TOTAL_FIELDS <= set(t)
    assert sum(r["params"] for r in d["layers"]) == t["params"] == MCU_PARAMS
    assert t["trainable_params"] == MCU_PARAMS  # full
    assert t["trainable_param_bytes"] == 4 * MCU_PARAMS  # fp32
    assert sum(r["saved_bytes"] for r in d["layers"]) == t["saved_bytes"]
    assert sum(r["macs_fwd"] for r in d["layers"]) == t["macs_fwd"]
    assert sum(r["macs_bwd_input"] + r["macs_bwd_weight"] for r in d["layers"]) == t["macs_bwd"]
    assert t["peak_bytes"] >= t["saved_bytes"]
    assert "latency_ms" not in d["sources"]  # nothing claims to be measured
    first = d["layers"][0]
    assert first["name"] == "first_conv.conv" and first["output_shape"] == [1, 16, 64, 64]
    assert first["params"] == 3 * 16 * 3 * 3 + 16


def test_profile_json_measured(run):
    """The one test that times layers on this machine."""
    d = run_json(run, MCU, "--repeats", "1")
    for row in d["layers"]:
        lat = row["latency_ms"]
        assert lat is not None, row["name"]
        assert lat["fwd"] > 0, row["name"]
        assert lat["bwd"] is None or lat["bwd"] >= 0
    t = d["totals"]
    assert t["measured_step_ms"] > 0
    assert t["latency_ms"]["fwd"] > 0
    assert d["measured"] and d["measured"]["repeats"] == 1 and d["measured"]["host"]
    assert "measured here" in d["sources"]["latency_ms"]


# --------------------------------------------------------------------------- csv / markdown


def test_profile_csv(run):
    code, out, err = run("profile", MCU, "--no-measure", "--format", "csv")
    assert code == 0, err
    reader = csv.DictReader(io.StringIO(out))
    assert LAYER_FIELDS <= set(reader.fieldnames)
    rows = list(reader)
    assert [r["name"] for r in rows] == list(mcu_layer_names())
    assert sum(int(r["params"]) for r in rows) == MCU_PARAMS
    d = run_json(run, MCU, "--no-measure")
    assert [int(r["saved_bytes"]) for r in rows] == [r["saved_bytes"] for r in d["layers"]]


def _pipes(line: str) -> int:
    return len(re.findall(r"(?<!\\)\|", line))


def test_profile_markdown(run):
    code, out, err = run("profile", "resnet18", "--resolution", "64", "--no-measure", "--format", "markdown")
    assert code == 0, err
    d = run_json(run, "resnet18", "--resolution", "64", "--no-measure")
    table = [ln for ln in out.splitlines() if ln.startswith("|")]
    header, sep = table[0], table[1]
    assert header.startswith("| layer |")
    assert re.fullmatch(r"[|:\-]+", sep), sep
    n = _pipes(header)
    assert n == 9
    for ln in table:
        assert _pipes(ln) == n, ln
    assert len(table) == 2 + len(d["layers"]) + 1
    assert "**total**" in table[-1] and "**11,689,512**" in table[-1]
    # a table must be one block of consecutive lines for GitHub to render it
    start = out.splitlines().index(header)
    assert out.splitlines()[start : start + len(table)] == table
    assert "KB = 1024 bytes" in out


# --------------------------------------------------------------------------- --output


def test_output_file_json(run, tmp_path):
    target = tmp_path / "report.json"
    code, out, err = run("profile", MCU, "--no-measure", "--format", "json", "--output", str(target))
    assert code == 0, err
    assert out == ""
    assert "wrote" in err
    first = json.loads(target.read_text())
    assert first["totals"]["params"] == MCU_PARAMS

    # over an existing (longer) file: replaced whole, not partly overwritten
    target.write_text("x" * 5_000_000)
    code, out, err = run("profile", MCU, "--no-measure", "--format", "json", "-o", str(target), "--quiet")
    assert code == 0, err
    assert out == "" and err == ""
    assert json.loads(target.read_text()) == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]  # no temp files left


def test_output_file_table(run, tmp_path):
    target = tmp_path / "table.txt"
    code, out, err = run("profile", MCU, "--no-measure", "-o", str(target), "-q")
    assert code == 0, err
    assert out == ""
    text = target.read_text()
    assert "\x1b[" not in text
    assert "first_conv.conv" in text and "630,224" in text and "KB = 1024 bytes" in text


@pytest.mark.parametrize("where", ["missing/dir/out.json", "."])
def test_output_unwritable_is_one_line_error(run, tmp_path, where):
    code, out, err = run("profile", MCU, "--no-measure", "--format", "json", "-o", str(tmp_path / where))
    assert code != 0
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), err


# --------------------------------------------------------------------------- schemes and batch


def test_schemes_change_the_numbers(run):
    full = run_json(run, MCU, "--no-measure")["totals"]
    last = run_json(run, MCU, "--no-measure", "--scheme", "last")
    blocks = run_json(run, MCU, "--no-measure", "--scheme", "blocks:2")
    bias = run_json(run, MCU, "--no-measure", "--scheme", "bias")["totals"]
    assert last["scheme"] == "last" and blocks["scheme"] == "blocks:2"
    last, blocks = last["totals"], blocks["totals"]

    for t in (last, blocks, bias):
        assert t["params"] == full["params"] == MCU_PARAMS
        assert t["macs_fwd"] == full["macs_fwd"]  # the forward pass does not depend on the scheme
    assert last["trainable_params"] == MCU_CLASSIFIER
    assert last["trainable_param_bytes"] == 4 * MCU_CLASSIFIER
    assert last["saved_bytes"] < blocks["saved_bytes"] < full["saved_bytes"]
    assert last["trainable_params"] < blocks["trainable_params"] < full["trainable_params"]
    assert last["macs_bwd"] < blocks["macs_bwd"] < full["macs_bwd"]
    assert last["peak_bytes"] < blocks["peak_bytes"] < full["peak_bytes"]

    model = tlplan.load_model(MCU)
    biases = sum(p.numel() for n, p in model.named_parameters() if n.endswith("bias"))
    assert bias["trainable_params"] == 160 * 1000 + biases  # classifier weight + every bias
    assert bias["macs_bwd"] < full["macs_bwd"]


def test_batch_scales_activations(run):
    one = run_json(run, MCU, "--no-measure")["totals"]
    four = run_json(run, MCU, "--no-measure", "--batch", "4")
    assert four["input_shape"] == [4, 3, 128, 128]
    four = four["totals"]
    # mcunet has no batch norm: everything kept for backward scales with the batch
    assert four["saved_bytes"] == 4 * one["saved_bytes"]
    assert four["macs_fwd"] == 4 * one["macs_fwd"]
    assert four["params"] == one["params"]
    assert four["trainable_param_bytes"] == one["trainable_param_bytes"]


def test_num_classes_and_resolution(run):
    d = run_json(run, MCU, "--no-measure", "--num-classes", "10", "--resolution", "96")
    assert d["input_shape"] == [1, 3, 96, 96]
    assert d["layers"][-1]["output_shape"] == [1, 10]
    assert d["totals"]["params"] == MCU_PARAMS - MCU_CLASSIFIER + 160 * 10 + 10


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "args, needle",
    [
        (["resnet5"], "resnet50"),
        ([MCU, "--resolution", "0"], "--resolution"),
        ([MCU, "--resolution", "-5"], "--resolution"),
        (["foo:"], "foo:"),
        ([":bar"], ":bar"),
        (["no.such.module:f"], "no.such.module"),
        (["torch.nn:NoSuchThing"], "NoSuchThing"),
        ([MCU, "--scheme", "bogus"], "bogus"),
        ([MCU, "--scheme", "blocks:x"], "blocks:x"),
        ([MCU, "--scheme", "blocks:99"], "14 blocks"),
        ([MCU, "--batch", "0"], "--batch"),
        ([MCU, "--repeats", "0"], "--repeats"),
        ([MCU, "--num-classes", "0"], "--num-classes"),
        ([MCU, "--runtime", "bogus"], "bogus"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else None,
)
def test_bad_input_is_one_line_exit_2(run, args, needle):
    code, out, err = run("profile", *args, "--no-measure")
    line = assert_one_line_error(code, out, err)
    assert needle in line
    assert out == ""


def test_unknown_device_lists_known(run):
    code, out, err = run("profile", MCU, "--no-measure", "--device", "nosuchdevice")
    line = assert_one_line_error(code, out, err)
    assert "nosuchdevice" in line
    for name in ("jetson-nano", "stm32f746", "rpi4"):
        assert name in line
    assert "tlplan devices" in line


CLICK_BUG = (
    "BUG: tlplan.cli.app.main() does `import click` to handle usage errors, but typer 0.29 vendors click as "
    "typer._click and click is not installed: every usage error ends in ModuleNotFoundError, a traceback, exit 1"
)


@pytest.mark.parametrize(
    "args",
    [
        ["profile", MCU, "--frobnicate"],
        ["profile", MCU, "--format", "bogus"],
        ["profile", MCU, "--resolution", "abc"],
        ["profile"],
        ["nosuchcommand"],
    ],
    ids=" ".join,
)
def test_usage_error_exit_2(run, args):
    code, out, err = run(*args)
    assert code == 2
    assert "Traceback" not in out + err
    assert err.strip()


def test_no_arguments_shows_help(run):
    code, out, err = run()
    assert "Traceback" not in out + err
    assert "Usage" in out + err and "profile" in out + err
    assert code in (0, 2)


def test_version(run):
    code, out, err = run("--version")
    assert code == 0, err
    assert out.strip() == f"tlplan {tlplan.__version__}"


# --------------------------------------------------------------------------- devices / zoo / help


def test_devices_command(run):
    code, out, err = run("devices")
    assert code == 0, err
    assert "\x1b[" not in out
    lines = out.splitlines()
    for name in ("jetson-nano", "stm32f746"):
        row = [ln for ln in lines if re.search(rf"│ {re.escape(name)}\s+│", ln)]
        assert len(row) == 1, out
        assert "datasheet" in row[0]
    assert "320.00 KB" in out  # stm32f746 RAM, 1024-based
    assert "1024" in out  # the table says which KB it means


def test_devices_command_reads_tlplan_profiles(run, monkeypatch, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "device.json").write_text(
        json.dumps({"name": "mine", "description": "my board", "source": "measured", "ram_bytes": 65536})
    )
    monkeypatch.setenv("TLPLAN_PROFILES", str(tmp_path))
    code, out, err = run("devices")
    assert code == 0, err
    assert "mine" in out and "64.00 KB" in out and "jetson-nano" not in out
    d = run_json(run, MCU, "--no-measure", "--device", "mine")
    assert d["device"] == "mine"


def test_devices_command_broken_profile(run, monkeypatch, tmp_path):
    (tmp_path / "bad").mkdir()
    path = tmp_path / "bad" / "device.json"
    path.write_text("{not json")
    monkeypatch.setenv("TLPLAN_PROFILES", str(tmp_path))
    # one damaged profile is left out with a warning naming it; the others are still listed
    code, out, err = run("devices")
    assert code == 0 and "Traceback" not in err
    assert "left out" in err and str(path) in err.replace("\n", "")


def test_zoo_command(run):
    code, out, err = run("zoo")
    assert code == 0, err
    names = tlplan.zoo_names()
    assert len(names) >= 10
    for name in names:
        assert re.search(rf"│ {re.escape(name)}\s+│", out), name
    assert re.search(r"│ mcunet-5fps\s+│\s+128 │", out)


def test_profile_help(run):
    code, out, err = run("profile", "--help")
    assert code == 0, err
    assert "--no-measure" in out and "--format" in out
    assert "--output" in out and "--scheme" in out


# --------------------------------------------------------------------------- --device


def test_device_exact_name(run):
    d = run_json(run, MCU, "--no-measure", "--device", "jetson-nano")
    assert d["device"] == "jetson-nano"


@pytest.mark.parametrize("given", ["stm32f7", "STM32F746", "stm32f74"])
def test_device_unique_prefix_or_case(run, given):
    d = run_json(run, MCU, "--no-measure", "--device", given)
    assert d["device"] == "stm32f746"


def test_device_in_table_summary(run):
    code, out, err = run("profile", MCU, "--no-measure", "--device", "stm32f7")
    assert code == 0, err
    assert re.search(r"^device: stm32f746\b", out, re.M), out


def test_device_ambiguous_prefix(run):
    code, out, err = run("profile", MCU, "--no-measure", "--device", "jetson-")
    line = assert_one_line_error(code, out, err)
    assert "ambiguous" in line
    for name in ("jetson-nano", "jetson-orin-nano", "jetson-tx2"):
        assert name in line
    assert "stm32" not in line


def test_device_family_name_resolves_to_the_default_and_says_so(run):
    code, out, err = run("profile", MCU, "--no-measure", "--format", "json", "--device", "jetson")
    assert code == 0, err
    assert json.loads(out)["device"] == "jetson-orin-nano"
    assert err.strip() == "device 'jetson' is jetson-orin-nano (the default Jetson profile, datasheet)"


def test_device_prefix_says_which(run):
    code, out, err = run("profile", MCU, "--no-measure", "--format", "json", "--device", "rpi")
    assert code == 0, err
    assert json.loads(out)["device"] == "rpi4" and "device 'rpi' is rpi4" in err


def test_profile_on_mcu_plans_a_ten_class_task_as_solve_does(run, tmp_path) -> None:
    """A profile of what solve planned shows solve's figures: both default to the 256KB paper's
    10-class tasks on the mcu runtime (a 1000-class head alone is 160 KB of int8 weights)."""
    plan = tmp_path / "plan.yaml"
    code, _, _ = run("solve", "mcunet-5fps", "--ram", "256KB", "--runtime", "mcu", "-o", str(plan), "--quiet")
    assert code == 0
    import yaml

    solved = yaml.safe_load(plan.read_text())
    assert solved["num_classes"] == 10
    code, out, err = run("profile", "mcunet-5fps", "--scheme", "bias", "--runtime", "mcu", "--no-measure", "--format", "json")
    assert code == 0 and "10-class" in err
    classifier = next(row for row in json.loads(out)["layers"] if row["name"] == "classifier")
    assert classifier["params"] == 160 * 10 + 10
    code, out, _ = run("profile", "mcunet-5fps", "--scheme", "bias", "--runtime", "mcu", "--no-measure",
                       "--num-classes", "1000", "--format", "json")
    assert next(row for row in json.loads(out)["layers"] if row["name"] == "classifier")["params"] == 160 * 1000 + 1000
