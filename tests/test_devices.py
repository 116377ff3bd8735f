"""Tests of device profiles: ``profiles/<name>/device.json`` loading, listing and name resolution."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tlplan.errors import BadInputError, UnknownDeviceError
from tlplan.predict import devices as dev
from tlplan.predict.devices import list_devices, load_device, profiles_dir, resolve_device

SHIPPED = Path(dev.__file__).resolve().parents[1] / "profiles"

VALID = {
    "name": "board",
    "description": "a test board",
    "source": "measured",
    "ram_bytes": 262144,
    "runtime_overhead_bytes": 1024,
    "peak_flops_fp32": 1.5e9,
    "date": "2026-01-01",
}


def write(root: Path, folder: str, data) -> Path:
    (root / folder).mkdir(parents=True, exist_ok=True)
    path = root / folder / "device.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    monkeypatch.delenv("TLPLAN_PROFILES", raising=False)


# --------------------------------------------------------------------------- load_device


def test_load_valid(tmp_path):
    d = load_device(write(tmp_path, "board", VALID))
    assert d.name == "board" and d.description == "a test board" and d.source == "measured"
    assert d.ram_bytes == 262144 and d.runtime_overhead_bytes == 1024
    assert d.usable_ram_bytes == 262144 - 1024
    assert d.peak_flops_fp32 == 1.5e9 and d.date == "2026-01-01"
    assert d.peak_flops_fp16 is None and d.notes is None


def test_load_minimal(tmp_path):
    data = {k: VALID[k] for k in ("name", "description", "source", "ram_bytes")}
    d = load_device(write(tmp_path, "board", data))
    assert d.runtime_overhead_bytes == 0 and d.usable_ram_bytes == d.ram_bytes
    assert d.peak_flops_fp32 is None


@pytest.mark.parametrize(
    "content, problem",
    [
        ("{not json", "not valid JSON"),
        ("", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        ({**VALID, "colour": "blue"}, "unknown field 'colour'"),
        ({**VALID, "ram_bytes": "256KB"}, "'ram_bytes' has the wrong type (str)"),
        ({**VALID, "ram_bytes": 1.5e6}, "'ram_bytes' has the wrong type (float)"),
        ({**VALID, "ram_bytes": True}, "'ram_bytes' has the wrong type (bool)"),
        ({**VALID, "peak_flops_fp32": "fast"}, "'peak_flops_fp32' has the wrong type"),
        ({**VALID, "name": 7}, "'name' has the wrong type"),
        ({**VALID, "statistic": "mean"}, "statistic must be median or min"),
        ({**VALID, "threads": 0}, "threads must be at least 1"),
        ({k: v for k, v in VALID.items() if k != "ram_bytes"}, "missing field(s) ram_bytes"),
        ({k: v for k, v in VALID.items() if k not in ("name", "source")}, "missing field(s) name, source"),
        ({**VALID, "source": "guessed"}, "source must be one of measured, datasheet"),
        ({**VALID, "ram_bytes": 0}, "ram_bytes must be positive"),
        ({**VALID, "ram_bytes": -5}, "ram_bytes must be positive"),
    ],
    ids=[
        "bad-json", "empty", "array", "unknown-field", "ram-string", "ram-float", "ram-bool", "flops-string",
        "name-int", "bad-statistic", "no-threads", "missing-ram", "missing-two", "bad-source", "ram-zero", "ram-negative",
    ],
)
def test_load_invalid(tmp_path, content, problem):
    path = write(tmp_path, "board", content)
    with pytest.raises(BadInputError) as info:
        load_device(path)
    message = str(info.value)
    assert str(path) in message
    assert problem in message
    assert "\n" not in message  # one line for the CLI
    assert info.value.exit_code == 2


def test_load_missing_file(tmp_path):
    path = tmp_path / "nope" / "device.json"
    with pytest.raises(BadInputError, match="cannot read") as info:
        load_device(path)
    assert str(path) in str(info.value)


# --------------------------------------------------------------------------- list_devices


def test_list_devices_empty_or_missing(tmp_path):
    assert list_devices(tmp_path) == []
    assert list_devices(tmp_path / "does-not-exist") == []
    (tmp_path / "emptyfolder").mkdir()  # a folder without device.json is not a device
    assert list_devices(tmp_path) == []


def test_list_devices_sorted_and_strict(tmp_path):
    write(tmp_path, "zeta", {**VALID, "name": "zeta"})
    write(tmp_path, "alpha", {**VALID, "name": "alpha"})
    (tmp_path / "notes.json").write_text("{}")  # not <name>/device.json: ignored
    assert [d.name for d in list_devices(tmp_path)] == ["alpha", "zeta"]
    bad = write(tmp_path, "broken", "{")
    with pytest.raises(BadInputError, match=str(bad)):
        list_devices(tmp_path)


# --------------------------------------------------------------------------- resolve_device


@pytest.fixture
def root(tmp_path):
    for name in ("alpha-one", "alpha-two", "beta", "nano", "nano-2"):
        write(tmp_path, name, {**VALID, "name": name})
    return tmp_path


@pytest.mark.parametrize(
    "given, want",
    [
        ("beta", "beta"),
        ("BETA", "beta"),
        (" beta ", "beta"),
        ("bet", "beta"),
        ("alpha-o", "alpha-one"),
        ("alpha-t", "alpha-two"),
        ("nano", "nano"),  # an exact name wins over being a prefix of nano-2
        ("nano-", "nano-2"),
    ],
)
def test_resolve(root, given, want):
    assert resolve_device(given, root).name == want


def test_resolve_ambiguous(root):
    with pytest.raises(UnknownDeviceError) as info:
        resolve_device("alpha", root)
    message = str(info.value)
    assert "ambiguous" in message and "alpha-one" in message and "alpha-two" in message
    assert "beta" not in message
    assert isinstance(info.value, BadInputError) and info.value.exit_code == 2


@pytest.mark.parametrize("given", ["gamma", "", "betamax"])
def test_resolve_unknown(root, given):
    with pytest.raises(UnknownDeviceError) as info:
        resolve_device(given, root)
    message = str(info.value)
    assert "unknown device" in message
    for name in ("alpha-one", "alpha-two", "beta", "nano", "nano-2"):
        assert name in message
    assert "tlplan devices" in message


def test_resolve_with_no_profiles(tmp_path):
    with pytest.raises(UnknownDeviceError, match="none installed"):
        resolve_device("anything", tmp_path)


def test_every_loaded_profile_resolves_by_its_own_name(tmp_path):
    write(tmp_path, "beta", {**VALID, "name": "Beta"})
    try:
        found = list_devices(tmp_path)
    except BadInputError:
        return  # rejecting capitals when loading would be a fix as well
    for d in found:
        assert resolve_device(d.name, tmp_path).name == d.name


# --------------------------------------------------------------------------- shipped profiles and env


def test_profiles_dir_default(monkeypatch, tmp_path):
    # GIVEN no TLPLAN_PROFILES: new profiles go to the user's data folder; the shipped ones are read too
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert profiles_dir() == tmp_path / "tlplan" / "profiles"
    assert dev.shipped_profiles_dir() == SHIPPED and SHIPPED.is_dir()
    write(tmp_path / "tlplan" / "profiles", "mine", {**VALID, "name": "mine"})
    write(tmp_path / "tlplan" / "profiles", "rpi4", {**VALID, "name": "rpi4", "description": "my own rpi4"})
    found = {d.name: d for d in list_devices()}
    assert found["mine"].origin == "user" and found["jetson-nano"].origin == "shipped"
    assert found["rpi4"].description == "my own rpi4"  # the user's own profile hides the shipped one


def test_profiles_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv("TLPLAN_PROFILES", str(tmp_path))
    assert profiles_dir() == tmp_path
    write(tmp_path, "mine", {**VALID, "name": "mine"})
    assert [d.name for d in list_devices()] == ["mine"]
    assert resolve_device("mi").name == "mine"
    with pytest.raises(UnknownDeviceError):
        resolve_device("jetson-nano")


def test_shipped_profiles_load():
    files = sorted(SHIPPED.glob("*/device.json"))
    assert len(files) >= 6
    found = list_devices(SHIPPED)
    assert len(found) == len(files)
    for path, d in zip(files, found):
        assert d == load_device(path)
        assert d.name == path.parent.name  # the folder is named after the device
        assert d.source in dev.SOURCES
        assert 0 <= d.runtime_overhead_bytes < d.ram_bytes
        if d.source == "datasheet":
            assert d.peak_flops_fp32 and d.peak_flops_fp32 > 0
            assert d.references
    by_name = {d.name: d for d in found}
    assert {"jetson-nano", "stm32f746"} <= set(by_name)
    assert by_name["jetson-nano"].source == "datasheet"
    assert by_name["stm32f746"].source == "datasheet"
    assert by_name["stm32f746"].ram_bytes == 320 * 1024
    assert by_name["jetson-nano"].ram_bytes == 4 * 1024**3


def test_shipped_profiles_are_package_data():
    # GIVEN the wheel's package data ("profiles/*/*" of the tlplan package, pyproject.toml)
    import tomllib

    config = tomllib.loads((SHIPPED.parents[1] / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["tlplan"]
    assert patterns == ["profiles/*/*"]
    # THEN every file a profile needs sits where the pattern takes it (nothing nested deeper), and
    # every shipped profile loads from inside the package
    files = [p for p in SHIPPED.rglob("*") if p.is_file() and not p.name.startswith(".")]
    assert files and all(p.relative_to(SHIPPED).parts.__len__() == 2 for p in files)
    assert dev.shipped_profiles_dir().parent == Path(dev.__file__).resolve().parents[1]
    assert {d.name for d in list_devices(SHIPPED)} >= {"jetson-nano", "jetson-orin-nano", "rpi4", "stm32f746", "host-x86-2c"}
