"""Property-based fuzzing of every file and argument a user (or a pull request) hands tlplan.

Each surface gets generated input, valid-looking and not: sizes, schemes, plan documents,
settings files, importance CSVs, device profiles, backward configs, datasets, and whole command
lines. Whatever comes in, tlplan answers with a result or a one-line ``TlplanError`` (on the
command line: exit 0, 1 or 2 and no traceback), within a few seconds, writing nothing but the
outputs it was asked for. ``CASES`` counts the generated cases (docs/development.md reports it).
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import signal
import sys
import traceback
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tlplan.errors import TlplanError

#: examples per surface; their sum is the number of cases one run generates
EXAMPLES = {
    "sizes": 400, "schemes": 300, "plans": 500, "plan_files": 150, "settings": 200, "importance": 200,
    "devices": 250, "backward_configs": 150, "datasets": 80, "cli": 40,
}
CASES = sum(EXAMPLES.values())
CASE_SECONDS = 15  # a case running longer is a hang


def fuzz(name: str):
    return settings(max_examples=EXAMPLES[name], deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                           HealthCheck.filter_too_much, HealthCheck.data_too_large])


@contextlib.contextmanager
def time_limit(seconds: int = CASE_SECONDS):
    def hang(signum, frame):
        raise TimeoutError(f"no answer within {seconds} s: a hang")

    old = signal.signal(signal.SIGALRM, hang)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def answers(fn, *args, **kwargs):
    """Call ``fn``: a result or a TlplanError are answers; anything else is a bug (a traceback)."""
    with time_limit():
        try:
            return fn(*args, **kwargs)
        except TlplanError as exc:
            message = str(exc)
            assert message and "\n" not in message and "Traceback" not in message, message
            return exc


# ---- values that break naive parsers -------------------------------------------------------------

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(10**30), max_value=10**30), st.integers(min_value=10**300, max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30), st.just(""), st.just("lots"),
)
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                        st.dictionaries(st.text(max_size=10), inner, max_size=4)), max_leaves=12)


@fuzz("sizes")
@given(st.one_of(st.text(max_size=40), st.from_regex(r"\s*[0-9.]{0,420}\s*(K|KB|KiB|M|MB|G|GiB|B|XB)?\s*", fullmatch=True)))
def test_sizes(text: str) -> None:
    from tlplan.sizes import parse_size

    got = answers(parse_size, text)
    assert isinstance(got, TlplanError) or 1 <= got <= 2**60


@pytest.fixture(scope="module")
def small_graph():
    import torch.nn as nn

    from tlplan.trace import trace_model

    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3, groups=8),
                          nn.ReLU6(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
    return trace_model(model, (2, 3, 12, 12), "small")


@fuzz("schemes")
@given(st.one_of(st.text(max_size=30), st.from_regex(r"(full|last|bias|blocks|mobiletl|layers|gradfilter|sparse|norm\+last)(:[-0-9a-z.]{0,6}){0,3}", fullmatch=True)))
def test_schemes(small_graph, text: str) -> None:
    from tlplan.costs import annotate
    from tlplan.plan.schemes import parse_scheme, scheme_options

    scheme = answers(parse_scheme, text)
    if isinstance(scheme, TlplanError) or scheme.kind in ("plan", "sparse"):
        return
    options = answers(scheme_options, small_graph, scheme)
    if not isinstance(options, TlplanError):
        assert annotate(small_graph, options, "tlplan").totals["saved_bytes"] >= 0


VALID_PLAN = {
    "version": 1, "model": "mcunet-5fps", "num_classes": 10, "input_shape": [1, 3, 32, 32], "runtime": "tlplan",
    "precision": "fp32", "optimizer": {"name": "sgd", "lr": 0.01, "momentum": 0.0, "weight_decay": 0.0},
    "scheme": "bias", "budget_bytes": 262144, "device": None,
    "layers": {"classifier": {"weight": 1.0, "bias": True}, "first_conv.act": {"mask": True}},
    "shapes": {"classifier": [1, 10]}, "predicted": {"peak_bytes": 1000, "step_ms_source": "x"},
}
PLAN_KEYS = [*VALID_PLAN, "layers.classifier", "optimizer.lr", "predicted.peak_bytes", "shapes.classifier", "unknown"]


def mutate(doc: dict, key: str, value) -> dict:
    doc = copy.deepcopy(doc)
    if "." in key:
        outer, inner = key.split(".", 1)
        if isinstance(doc.get(outer), dict):
            doc[outer][inner] = value
    else:
        doc[key] = value
    return doc


@fuzz("plans")
@given(st.lists(st.tuples(st.sampled_from(PLAN_KEYS), values), min_size=1, max_size=3))
def test_plan_documents(changes) -> None:
    from tlplan.plan.plan import Plan

    doc = VALID_PLAN
    for key, value in changes:
        doc = mutate(doc, key, value)
    plan = answers(Plan.from_dict, doc, "plan fuzz.yaml")
    if not isinstance(plan, TlplanError):  # what loads also round-trips
        assert Plan.from_dict(yaml.safe_load(yaml.safe_dump(plan.to_dict())), "again").to_dict() == plan.to_dict()


@fuzz("plan_files")
@given(st.one_of(st.binary(max_size=300), st.text(max_size=300).map(str.encode),
                 st.integers(min_value=2, max_value=9).map(lambda n: _alias_bomb(n).encode())))
def test_plan_files(tmp_path_factory, data: bytes) -> None:
    from tlplan.plan.plan import load_plan

    path = tmp_path_factory.mktemp("plans") / "plan.yaml"
    path.write_bytes(data)
    answers(load_plan, path)


def _alias_bomb(width: int) -> str:
    lines = [f"a0: &a0 [{', '.join(['x'] * width)}]"]
    for i in range(1, 9):
        lines.append(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]")
    return "version: 1\n" + "\n".join(lines) + "\n"


@fuzz("settings")
@given(st.dictionaries(st.sampled_from(["model", "ram", "resolution", "batch", "scheme", "runtime", "device", "bogus"]),
                       scalars, max_size=4), st.booleans(), st.binary(max_size=40))
def test_settings_files(tmp_path_factory, table: dict, as_toml: bool, noise: bytes) -> None:
    from tlplan.settings import find_settings

    folder = tmp_path_factory.mktemp("project")
    if as_toml:
        lines = ["[tool.tlplan]"] + [f"{k} = {json.dumps(v)}" for k, v in table.items()
                                     if isinstance(v, (str, int)) and not isinstance(v, bool) and abs(v if isinstance(v, int) else 0) < 2**63]
        (folder / "pyproject.toml").write_bytes("\n".join(lines).encode() + noise)
    else:
        (folder / "tlplan.yaml").write_bytes(yaml.safe_dump(table).encode() + noise)
    answers(find_settings, folder)


@fuzz("importance")
@given(st.lists(st.tuples(st.text(max_size=12), st.text(max_size=8), st.one_of(st.floats(), st.text(max_size=5))), max_size=5),
       st.booleans())
def test_importance_tables(tmp_path_factory, rows, bom: bool) -> None:
    from tlplan.solve.importance import load_importance

    path = tmp_path_factory.mktemp("imp") / "importance.csv"
    text = "layer,option,importance\n" + "".join(f"{a},{b},{c}\n" for a, b, c in rows)
    path.write_bytes(("\ufeff" if bom else "").encode() + text.encode("utf-8", "surrogatepass"))
    answers(load_importance, path)


DEVICE = json.loads((Path(__file__).parent.parent / "tlplan" / "profiles" / "rpi4" / "device.json").read_text())


@fuzz("devices")
@given(st.lists(st.tuples(st.sampled_from([*DEVICE, "bogus"]), values), min_size=1, max_size=3))
def test_device_profiles(tmp_path_factory, changes) -> None:
    from tlplan.predict.devices import load_device

    doc = copy.deepcopy(DEVICE)
    for key, value in changes:
        doc[key] = value
    folder = tmp_path_factory.mktemp("device")
    try:
        text = json.dumps(doc)
    except ValueError:
        return
    (folder / "device.json").write_text(text)
    device = answers(load_device, folder / "device.json")
    if not isinstance(device, TlplanError) and device.peak_flops_fp32:
        from tlplan.predict.roofline import roofline_ms

        assert device.peak_flops_fp32 > 0 and (device.layer_overhead_s or 0) >= 0


@fuzz("backward_configs")
@given(st.dictionaries(st.sampled_from(["n_bias_update", "manual_weight_idx", "weight_update_ratio",
                                        "weight_select_criteria", "pw1_weight_only", "bogus"]), values, max_size=4))
def test_backward_configs(small_graph, tmp_path_factory, config: dict) -> None:
    from tlplan.plan.schemes import load_backward_config, sparse_options

    path = tmp_path_factory.mktemp("bc") / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    loaded = answers(load_backward_config, path)
    if not isinstance(loaded, TlplanError):
        answers(sparse_options, small_graph, loaded)


@fuzz("datasets")
@given(st.integers(min_value=0, max_value=6), st.sampled_from([torch.int64, torch.int32, torch.float32, torch.bool, torch.uint8]),
       st.lists(st.integers(min_value=-3, max_value=2**41), min_size=0, max_size=6), st.booleans())
def test_datasets(tmp_path_factory, n: int, dtype, labels, nan: bool) -> None:
    from tlplan.data import load_data

    images = torch.randn(n, 3, 6, 6)
    if nan and n:
        images[0, 0, 0, 0] = float("nan")
    tensor = torch.tensor(labels[:n] + [0] * max(0, n - len(labels)), dtype=torch.int64).to(dtype) if dtype != torch.bool else torch.zeros(n, dtype=torch.bool)
    path = tmp_path_factory.mktemp("data") / "data.pt"
    torch.save({"images": images, "labels": tensor}, path)
    data = answers(load_data, str(path), 8)
    if not isinstance(data, TlplanError):
        assert data.num_classes >= 2 and int(data.labels.max()) < data.num_classes and int(data.labels.min()) >= 0
        assert bool(torch.isfinite(data.images).all())


# ---- whole command lines --------------------------------------------------------------------------


def run_cli(args: list[str]) -> tuple[int, str]:
    from tlplan.cli import main

    out, err = io.StringIO(), io.StringIO()
    old = sys.argv
    sys.argv = ["tlplan", *args]
    code, tb = 0, ""
    try:
        with time_limit(), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main()
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            except TimeoutError:
                raise
            except Exception:  # noqa: BLE001 - what a user would see as a traceback
                code, tb = 1, traceback.format_exc()
    finally:
        sys.argv = old
    return code, out.getvalue() + err.getvalue() + tb


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@fuzz("cli")
@given(st.sampled_from(["check", "profile", "solve", "compare"]),
       st.lists(st.tuples(st.sampled_from(PLAN_KEYS), values), max_size=2),
       st.sampled_from(["256KB", "1" * 60, "-1KB", "0.5MB", "lots", "64MB"]),
       st.sampled_from(["bias", "blocks:2", "gradfilter:2:2", "sys:exit", "tempfile:mkdtemp", "mobiletl:x"]))
def test_command_lines(tmp_path_factory, monkeypatch_session, command: str, changes, ram: str, scheme: str) -> None:
    folder = tmp_path_factory.mktemp("cli")
    monkeypatch_session.chdir(folder)
    doc = VALID_PLAN
    for key, value in changes:
        doc = mutate(doc, key, value)
    try:
        (folder / "plan.yaml").write_text(yaml.safe_dump(doc))
    except (yaml.YAMLError, ValueError):
        return
    before = tree(folder)
    if command == "check":
        args = ["check", "plan.yaml", "--ram", ram, "--format", "json"]
    elif command == "profile":
        args = ["profile", scheme if ":" in scheme and scheme.split(":")[0] in ("sys", "tempfile") else "mcunet-5fps",
                "--resolution", "32", "--scheme", scheme if ":" not in scheme or scheme.split(":")[0] not in ("sys", "tempfile") else "bias",
                "--no-measure", "--format", "csv", "-o", "out.csv"]
    elif command == "solve":
        args = ["solve", "mcunet-5fps", "--resolution", "32", "--ram", ram, "-o", "solved.yaml", "--quiet"]
    else:
        args = ["compare", "mcunet-5fps", "--resolution", "32", "--schemes", f"full,{scheme}", "--no-measure", "--format", "json"]
    code, text = run_cli(args)
    assert code in (0, 1, 2), (args, code, text[-2000:])
    assert "Traceback" not in text, (args, text[-3000:])
    after = tree(folder)
    changed = {name for name in set(before) | set(after) if before.get(name) != after.get(name)}
    assert changed <= {"out.csv", "solved.yaml"}, (args, changed)


@pytest.fixture(scope="module")
def monkeypatch_session():
    with pytest.MonkeyPatch.context() as mp:
        for var in ("COLUMNS", "GITHUB_STEP_SUMMARY", "TLPLAN_PROFILES"):
            mp.delenv(var, raising=False)
        yield mp
