"""Commands as users type them: project settings, device names, tables in CI logs and job summaries."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest


def project(tmp_path, text: str, name: str = "pyproject.toml"):
    (tmp_path / name).write_text(text)
    return tmp_path


def test_pyproject_settings_solve_and_check(run, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(project(tmp_path, '[project]\nname = "mine"\n\n[tool.tlplan]\nmodel = "mcunet-5fps"\nruntime = "mcu"\n'))
    code, out, err = run("solve", "--ram", "256KB", "-o", "plan.yaml", "-q")
    assert code == 0, err
    assert "mcunet-5fps" in out and "runtime mcu" in out
    code, out, err = run("check", "plan.yaml")
    assert code == 0, err
    assert "PASS" in out


def test_settings_in_a_parent_folder_and_tlplan_yaml(run, tmp_path, monkeypatch) -> None:
    project(tmp_path, "model: mcunet-5fps\nruntime: mcu\nram: 256KB\n", "tlplan.yaml")
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    code, out, err = run("solve", "--format", "json", "-q")  # model, runtime and budget all from the file
    assert code == 0, err
    code, out, err = run("solve", "--runtime", "tlplan", "--ram", "64MB", "--format", "json", "-q")
    assert code == 0 and '"runtime": "tlplan"' in out  # the command line overrides the file


def test_config_says_where_values_come_from(run, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(project(tmp_path, '[tool.tlplan]\nmodel = "mcunet-5fps"\nbatch = 4\n'))
    code, out, err = run("config")
    assert code == 0, err
    assert re.search(r"model\s+│\s+mcunet-5fps\s+│\s+\S*pyproject\.toml", out)
    assert re.search(r"runtime\s+│\s+tlplan\s+│\s+tlplan default", out)


@pytest.mark.parametrize("body,needle", [
    ('[tool.tlplan]\nmodle = "mcunet-5fps"\n', "unknown key 'modle'"),
    ('[tool.tlplan]\nbatch = "eight"\n', "key 'batch' must be int"),
    ('[tool.tlplan]\nbatch = true\n', "key 'batch' must be int"),
])
def test_malformed_settings(run, tmp_path, monkeypatch, body, needle) -> None:
    monkeypatch.chdir(project(tmp_path, body))
    code, out, err = run("profile", "--no-measure")
    assert code == 2 and needle in err and "pyproject.toml" in err
    assert len(err.strip().splitlines()) == 1


def test_no_model_anywhere(run, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = run("profile", "--no-measure")
    assert code == 2 and "tlplan solve mcunet-5fps" in err and "[tool.tlplan]" in err


def test_jetson_anywhere(run, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = run("profile", "resnet50", "--device", "jetson", "--no-measure", "--resolution", "64")
    assert code == 0, err
    assert "jetson-orin-nano" in err


def test_ci_logs_and_job_summary(tmp_path) -> None:
    # GIVEN a CI job: no terminal, CI=true, a step summary file
    summary = tmp_path / "summary.md"
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "COLUMNS", "TERM")}
    env.update(CI="true", GITHUB_STEP_SUMMARY=str(summary))
    (tmp_path / "pyproject.toml").write_text('[tool.tlplan]\nmodel = "mcunet-5fps"\nruntime = "mcu"\n')
    commands = [
        ["profile", "--no-measure"],
        ["compare", "--schemes", "bias,blocks:2", "--no-measure"],
        ["solve", "--ram", "256KB", "-o", "plan.yaml"],
        ["check", "plan.yaml"],
    ]
    for args in commands:
        with open(tmp_path / "log.txt", "w") as log:
            done = subprocess.run([sys.executable, "-m", "tlplan", *args], cwd=tmp_path, env=env, stdout=log,
                                  stderr=subprocess.PIPE, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        text = (tmp_path / "log.txt").read_text()
        # THEN the log has no escape codes and every table row is whole (no number broken across lines)
        assert "\x1b[" not in text
        rows = [line for line in text.splitlines() if line.startswith(("│", "┃"))]
        assert rows and len({line.count("│") + line.count("┃") for line in rows}) == 1, args
    # AND the summary holds one markdown table per command
    md = summary.read_text()
    assert md.count("### ") == len(commands)
    tables = re.findall(r"(?:^\|.*\|\n)+", md, flags=re.M)
    assert len(tables) == len(commands)
    for table in tables:
        lines = table.strip().splitlines()
        assert re.fullmatch(r"\|(\s*-+:?\s*\|)+", lines[1].replace("---:", "---").replace(" ", "")) or set(lines[1]) <= set("|-: ")
        assert len({line.count("|") for line in lines}) == 1
