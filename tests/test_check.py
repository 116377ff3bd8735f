"""``tlplan check``: a plan held to a budget, as CI runs it."""

from __future__ import annotations

import json

import yaml

import tlplan


def solved(tmp_path, run):
    path = tmp_path / "plan.yaml"
    code, _, err = run("solve", "mcunet-5fps", "--ram", "256KB", "--runtime", "mcu", "-o", str(path), "-q")
    assert code == 0, err
    return path


def test_check_passes_and_fails(run, tmp_path) -> None:
    path = solved(tmp_path, run)
    code, out, err = run("check", str(path), "--format", "json")
    assert code == 0, err
    d = json.loads(out)
    assert d["passed"] and d["budget_bytes"] == 256 * 1024 and d["predicted"]["peak_bytes"] == d["stored"]["peak_bytes"]
    code, out, err = run("check", str(path), "--ram", "200KB", "--format", "markdown")
    assert code == 1 and "**FAIL: over budget by" in out
    assert err.strip().startswith("error: over budget") and len(err.strip().splitlines()) == 1
    lines = [l for l in out.splitlines() if l.startswith("|")]
    assert len({l.count("|") for l in lines}) == 1  # a well-formed table


def test_stale_prediction_fails(run, tmp_path) -> None:
    path = solved(tmp_path, run)
    data = yaml.safe_load(path.read_text())
    data["predicted"]["saved_bytes"] += 1
    path.write_text(yaml.safe_dump(data))
    code, out, err = run("check", str(path))
    assert code == 1 and "stale prediction: saved_bytes" in err


def test_check_refuses_what_does_not_fit_the_model(run, tmp_path) -> None:
    path = solved(tmp_path, run)
    data = yaml.safe_load(path.read_text())
    data["model"] = "mbv2-w0.35"
    path.write_text(yaml.safe_dump(data))
    # a model that no longer matches the plan is a failed check (stale, exit 1, with its table), not bad input
    code, out, err = run("check", str(path), "--format", "markdown")
    assert code == 1 and "stale prediction: the model changed" in err and "the plan was made for another model" in out
    code, out, _ = run("check", str(path), "--format", "json")
    assert code == 1 and '"stale": [\n    "model"\n  ]' in out and '"fits": null' in out
    data.pop("budget_bytes")
    data["model"] = "mcunet-5fps"
    path.write_text(yaml.safe_dump(data))
    code, out, err = run("check", str(path))
    assert code == 2 and "--ram" in err
    code, out, err = run("check", str(tmp_path / "nope.yaml"))
    assert code == 2 and "cannot read plan" in err


def test_library_check() -> None:
    from tlplan.checking import check_plan

    model = tlplan.load_model("mcunet-5fps")
    plan = tlplan.plan_from_scheme(model, (1, 3, 128, 128), "bias", model_name="mcunet-5fps")
    result = check_plan(plan, "memory", plan.predicted["peak_bytes"], model=model)
    assert result.passed and not result.stale
    assert not check_plan(plan, "memory", plan.predicted["peak_bytes"] - 1, model=model).fits


def test_check_gates_on_the_budget_in_effect(run, tmp_path, monkeypatch) -> None:
    # GIVEN a plan solved for 256 KB, in a project whose settings later lower the budget
    monkeypatch.chdir(tmp_path)
    assert run("solve", "mcunet-5fps", "--runtime", "mcu", "--ram", "256KB", "-o", "plan.yaml", "--quiet")[0] == 0
    (tmp_path / "pyproject.toml").write_text('[tool.tlplan]\nmodel = "mcunet-5fps"\nram = "100KB"\n')
    # THEN check fails against the settings' budget, and says where the budget came from
    code, out, _ = run("check", "plan.yaml", "--format", "markdown")
    assert code == 1 and "budget (pyproject.toml settings) | 100.00 KB" in out
    # the command line's budget comes first
    code, out, _ = run("check", "plan.yaml", "--ram", "300KB", "--format", "markdown")
    assert code == 0 and "budget (--ram) | 300.00 KB" in out
    (tmp_path / "pyproject.toml").write_text('[tool.tlplan]\nmodel = "mcunet-5fps"\n')
    code, out, _ = run("check", "plan.yaml", "--format", "json")
    assert code == 0 and '"budget_source": "the plan"' in out
