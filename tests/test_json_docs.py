"""Every JSON document tlplan writes names its schema, and docs/json.md documents every field of it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

DOC = Path(__file__).parent.parent / "docs" / "json.md"
#: sections whose "predicted" / "stored" objects hold plan costs (documented once, as <cost>)
COST_OBJECTS = {"tlplan.solve/1": ("predicted",), "tlplan.check/1": ("predicted", "stored"), "tlplan.train/1": ("predicted",)}


def documented() -> tuple[dict[str, set[str]], set[str]]:
    """{schema: field paths} from docs/json.md's tables, and the plan-cost names."""
    sections: dict[str, set[str]] = {}
    current = None
    for line in DOC.read_text(encoding="utf-8").splitlines():
        heading = re.match(r"## (tlplan\.[a-z]+/\d+|Plan costs)$", line)
        if heading:
            current = sections.setdefault(heading.group(1), set())
            continue
        field = re.match(r"\| `([^`]+)` \|", line)
        if field and current is not None:
            current.add(field.group(1))
    costs = sections.pop("Plan costs")
    return sections, costs


def paths(value, prefix: tuple[str, ...] = ()):
    """Every field's path, as a tuple of names (a network's name may hold a dot); lists as ``name[]``."""
    if isinstance(value, dict):
        for key, inner in value.items():
            path = (*prefix, key)
            yield path
            yield from paths(inner, path)
    elif isinstance(value, list):
        for inner in value:
            yield from paths(inner, (*prefix[:-1], prefix[-1] + "[]"))


def normalised(path: tuple[str, ...], schema: str, costs: set[str]) -> str:
    parts = list(path)
    for i in range(1, len(parts)):
        if parts[i - 1].endswith("per_network"):
            parts[i] = "<network>"
        elif parts[i - 1].endswith("per_runtime"):
            parts[i] = "<runtime>"
    if len(parts) == 2 and parts[0] in COST_OBJECTS.get(schema, ()) and parts[1] in costs:
        parts[1] = "<cost>"
    return ".".join(parts)


@pytest.fixture(scope="module")
def documents(tmp_path_factory) -> dict[str, list[dict]]:
    """Every command's JSON, produced the way a script gets it: ``tlplan ... --format json``."""
    import contextlib
    import io
    import os
    import sys
    import time

    from tlplan.cli import main
    from tlplan.predict.devices import resolve_device
    from tlplan.predict.evaluate import Case, Evaluation
    from tlplan.report.devices import calibration_json, evaluation_json

    folder = tmp_path_factory.mktemp("json")
    small = ["mcunet-5fps", "--resolution", "32"]
    commands = [
        ["profile", *small, "--repeats", "1"],  # measured here
        ["profile", *small, "--no-measure", "--device", "jetson-nano", "--scheme", "bias"],  # predicted
        ["compare", *small, "--schemes", "bias", "--repeats", "1", "--device", "jetson-nano"],
        ["solve", *small, "--ram", "4MB", "--device", "jetson-nano", "-o", "plan.yaml", "-q"],
        ["check", "plan.yaml", "--device", "jetson-nano"],
        ["solve", *small, "--ram", "4MB", "--pareto", "--points", "2", "--device", "jetson-nano"],
        ["train", "plan.yaml", "--data", "synthetic", "--steps", "1", "-q", "--run-dir", "run"],
        ["importance", *small, "--data", "synthetic", "--batches", "1", "--batch", "2", "-q"],
        ["devices"], ["zoo"], ["config"],
    ]
    found: dict[str, list[dict]] = {}
    here = os.getcwd()
    os.chdir(folder)  # plan.yaml and the run folder land there; no project settings apply
    argv = sys.argv
    try:
        for args in commands:
            out, err = io.StringIO(), io.StringIO()
            sys.argv = ["tlplan", *args, "--format", "json"]
            t0 = time.perf_counter()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    main()
                except SystemExit as exc:
                    assert not exc.code, (args, err.getvalue())
            print(args[0], f"{time.perf_counter() - t0:.1f}s")
            data = json.loads(out.getvalue())
            found.setdefault(data["schema"], []).append(data)
    finally:
        sys.argv = argv
        os.chdir(here)
    run_record = json.loads((folder / "run" / "run.json").read_text())
    found["tlplan.train/1"].append(run_record)
    device = resolve_device("host-x86-2c")
    added = {"ops": "relu6.mask", "date": "2026-12-01", "budget_s": 60.0, "elapsed_s": 50.0, "configs": 3, "rows": 6,
             "rechecked_configs": 2, "time_vs_profile": 1.02}
    found["tlplan.calibration/1"] = [json.loads(calibration_json(device, added, False))]
    cases = (Case("resnet18", "full", 1, 224, 10.0, 11.0), Case("mcunet-5fps", "bias", 8, 128, 4.0, 3.9, "tlplan"))
    found["tlplan.evaluation/1"] = [json.loads(evaluation_json(Evaluation("host-x86-2c", cases, 12.0), device))]
    return found


def test_every_schema_is_documented_and_produced(documents) -> None:
    sections, costs = documented()
    assert set(documents) == set(sections), "every documented schema is produced, every produced one documented"
    assert {"peak_bytes", "saved_bytes", "step_ms"} <= costs


def test_every_field_is_documented(documents) -> None:
    sections, costs = documented()
    missing = sorted({(schema, normalised(p, schema, costs)) for schema, docs in documents.items() for d in docs
                      for p in paths(d) if normalised(p, schema, costs) not in sections[schema]})
    assert not missing, f"fields missing from docs/json.md: {missing}"


def test_train_run_record_is_the_json_output(documents) -> None:
    printed, record = documents["tlplan.train/1"]
    assert record.keys() == printed.keys()
    assert record["history"] == printed["history"] and record["predicted"] == printed["predicted"]
    assert record["environment"]["steps_run"] == 1 and record["measured"]["saved_bytes"] > 0


def test_units_are_in_the_names(documents) -> None:
    """Byte counts are whole bytes (never KB), in fields named *_bytes."""
    for docs in documents.values():
        for d in docs:
            for path in paths(d):
                if path[-1].endswith("_bytes") and not {"sources", "ratio_to_full"} & set(path):  # words; ratios
                    value = _get(d, path)
                    assert all(v is None or isinstance(v, int) for v in value), path


def _get(doc, path: tuple[str, ...]) -> list:
    values = [doc]
    for part in path:
        key, many = (part[:-2], True) if part.endswith("[]") else (part, False)
        values = [v.get(key) for v in values if isinstance(v, dict)]
        if many:
            values = [item for v in values for item in (v or [])]
    return values
