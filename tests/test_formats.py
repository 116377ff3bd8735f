"""Every command's output formats, -o, --columns, literal text in tables, job summaries of failures,
and no profiler log lines on stderr."""

from __future__ import annotations

import csv
import io
import json

import pytest
import torch.nn as nn

import tlplan


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for var in ("COLUMNS", "GITHUB_STEP_SUMMARY", "TLPLAN_PROFILES", "FORCE_COLOR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)  # no project settings apply
    return tmp_path


@pytest.mark.parametrize("command", [["zoo"], ["devices"], ["config"]])
def test_list_commands_in_every_format(run, clean_env, command) -> None:
    code, table, err = run(*command)
    assert code == 0, err
    code, text, err = run(*command, "--format", "json")
    assert code == 0, err
    data = json.loads(text)
    assert data["schema"] == f"tlplan.{command[0]}/1"
    key = {"zoo": "models", "devices": "devices", "config": "settings"}[command[0]]
    records = data[key]
    assert records
    code, csv_text, err = run(*command, "--format", "csv")
    assert code == 0 and csv_text.isascii(), err
    rows = list(csv.DictReader(io.StringIO(csv_text)))
    assert len(rows) == len(records)
    first = next(iter(records[0]))  # the first field of every record: name or key
    assert [r[first] for r in rows] == [str(r[first]) for r in records]
    for record in records:  # the table shows every record's first field too
        assert str(record[first]) in table
    code, md, err = run(*command, "--format", "markdown")
    assert code == 0 and md.startswith("### "), err
    assert len([line for line in md.splitlines() if line.startswith("| ")]) == len(records) + 1  # header + rows


def test_zoo_json_lists_every_model(run, clean_env) -> None:
    data = json.loads(run("zoo", "--format", "json")[1])
    assert [m["name"] for m in data["models"]] == tlplan.zoo_names()
    assert all(isinstance(m["resolution"], int) for m in data["models"])


def test_output_writes_the_report_to_a_file(run, clean_env) -> None:
    target = clean_env / "zoo.json"
    code, out, err = run("zoo", "--format", "json", "-o", str(target))
    assert code == 0 and out == "", err
    assert json.loads(target.read_text())["schema"] == "tlplan.zoo/1"
    assert f"wrote {target}" in err
    code, out, err = run("zoo", "--format", "json", "-o", str(target), "-q")
    assert code == 0 and err == ""


def test_config_json_shows_the_project_settings(run, clean_env) -> None:
    (clean_env / "tlplan.yaml").write_text("model: mcunet-5fps\nram: 256KB\n")
    data = json.loads(run("config", "--format", "json")[1])
    values = {s["key"]: s for s in data["settings"]}
    assert values["model"]["value"] == "mcunet-5fps" and values["ram"]["value"] == "256KB"
    assert values["model"]["from"].endswith("tlplan.yaml") and data["source"].endswith("tlplan.yaml")
    assert values["batch"] == {"key": "batch", "value": 1, "from": "tlplan default"}


def test_profile_columns_choose_what_the_table_shows(run, clean_env) -> None:
    args = ("profile", "mcunet-5fps", "--resolution", "32", "--no-measure")
    code, out, err = run(*args, "--columns", "layer,kept")
    assert code == 0, err
    header = next(line for line in out.splitlines() if "layer" in line)
    assert "kept KB" in header and "params" not in header and "MMACs" not in header
    code, md, err = run(*args, "--columns", "layer,params", "--format", "markdown")
    assert code == 0, err
    assert md.splitlines()[2] == "| layer | params |"
    # csv keeps every field whatever --columns says
    code, csv_text, err = run(*args, "--columns", "layer", "--format", "csv")
    assert "saved_bytes" in csv_text.splitlines()[0]


def test_profile_columns_typo_is_bad_input(run, clean_env) -> None:
    code, out, err = run("profile", "mcunet-5fps", "--resolution", "32", "--no-measure", "--columns", "layer,parms")
    assert code == 2 and "did you mean params?" in err and len(err.strip().splitlines()) == 1


class Bracketed(nn.Module):
    """A model whose layer name looks like rich markup."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.add_module("[red]conv[/red]", nn.Conv2d(3, 4, 3))
        self.fc = nn.Linear(4, num_classes)

    def forward(self, x):
        return self.fc(getattr(self, "[red]conv[/red]")(x).mean((2, 3)))


def test_tables_print_names_as_written(run, clean_env, monkeypatch) -> None:
    monkeypatch.setattr(tlplan.zoo, "load_model", lambda *a, **k: Bracketed(), raising=True)
    code, out, err = run("profile", "mcunet-5fps", "--resolution", "8", "--no-measure")
    assert code == 0, err
    assert "[red]conv[/red]" in out


def test_a_failed_solve_writes_its_job_summary(run, clean_env, monkeypatch) -> None:
    summary = clean_env / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    code, out, err = run("solve", "mcunet-5fps", "--resolution", "32", "--ram", "1KB")
    assert code == 1
    text = summary.read_text()
    assert "tlplan solve mcunet-5fps --resolution 32 --ram 1KB: failed (exit 1)" in text
    assert err.split("error: ", 1)[1].strip() in text  # the same reason the log shows
    # bad input is summarised too
    code, _, err = run("profile", "no-such-model")
    assert code == 2 and "profile no-such-model: failed (exit 2)" in summary.read_text()


def test_a_failed_check_writes_one_section(run, clean_env, monkeypatch) -> None:
    """check writes its table with FAIL, and no second "failed" section."""
    code, _, err = run("solve", "mcunet-5fps", "--resolution", "32", "--ram", "4MB", "-o", "plan.yaml", "-q")
    assert code == 0, err
    summary = clean_env / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    code, _, err = run("check", "plan.yaml", "--ram", "1MB")
    assert code == 1, err
    text = summary.read_text()
    assert "**FAIL" in text and "failed (exit" not in text


def test_no_profiler_log_lines_reach_the_user(capfd) -> None:
    """torch.profiler's C++ side writes "USDT ... profiler_start" to file descriptor 2."""
    from tlplan.measure.peak import measure_peak

    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))
    result = measure_peak(model, (2, 3, 8, 8), tlplan.plan.plan.Optimizer())
    assert result.peak_bytes > 0
    out, err = capfd.readouterr()
    assert "USDT" not in err and "profiler_start" not in err and "STAGE:" not in err
