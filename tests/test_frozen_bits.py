"""``--frozen-bits 8|32``: what the memory model counts each frozen parameter at, exact to the byte."""

from __future__ import annotations

import json

import pytest
import yaml

import tlplan
from tlplan.errors import BadInputError
from tlplan.plan.plan import Plan, load_plan

SHAPE = (2, 3, 64, 64)


@pytest.fixture(scope="module")
def model():
    return tlplan.load_model("mcunet-5fps", num_classes=10)


def _elements(model) -> tuple[int, int]:
    """(frozen elements, trained elements) of ``model`` when only the classifier trains."""
    head = {id(p) for p in model.classifier.parameters()}
    frozen = sum(p.numel() for p in model.parameters() if id(p) not in head)
    trained = sum(p.numel() for p in model.parameters() if id(p) in head)
    return frozen, trained


def test_frozen_parameters_at_8_bits_are_one_byte_an_element(model) -> None:
    m32 = tlplan.profile(model, SHAPE, scheme="last").memory
    m8 = tlplan.profile(model, SHAPE, scheme="last", frozen_bits=8).memory
    frozen, trained = _elements(model)
    assert (m32.frozen_bits, m8.frozen_bits) == (32, 8)
    assert m32.frozen_param_bytes == 4 * frozen and m8.frozen_param_bytes == frozen
    assert m32.param_bytes == 4 * (frozen + trained) and m8.param_bytes == frozen + 4 * trained
    # every moment of the step holds the parameters: resident and peak fall by exactly 3 bytes a frozen element
    assert m32.resident_bytes - m8.resident_bytes == 3 * frozen
    assert m32.peak_bytes - m8.peak_bytes == 3 * frozen
    assert (m32.grad_bytes, m32.saved_bytes, m32.activation_peak_bytes) == (m8.grad_bytes, m8.saved_bytes, m8.activation_peak_bytes)
    # TinyTL's figure is its own convention (frozen 8-bit, trained 32-bit) whatever --frozen-bits says
    assert m8.tinytl_activation_bytes == m32.tinytl_activation_bytes > 0
    assert m8.tinytl_bytes == m32.tinytl_bytes == frozen + 4 * trained + m32.tinytl_activation_bytes


def test_mcu_counts_frozen_weights_at_8_bits_in_flash(model) -> None:
    m = tlplan.profile(model, SHAPE, scheme="last", runtime="mcu").memory
    frozen, _ = _elements(model)
    assert m.frozen_bits == 8 and m.frozen_param_bytes == frozen
    assert m.param_bytes == tlplan.profile(model, SHAPE, scheme="last", runtime="mcu", frozen_bits=8).memory.param_bytes
    with pytest.raises(BadInputError, match="int8 engine"):
        tlplan.profile(model, SHAPE, scheme="last", runtime="mcu", frozen_bits=32)
    for bad in (16, 0, True, "8"):
        with pytest.raises(BadInputError, match="use 8 or 32"):
            tlplan.profile(model, SHAPE, scheme="last", frozen_bits=bad)


def test_plan_records_and_validates_frozen_bits(model, tmp_path) -> None:
    plan32 = tlplan.plan_from_scheme(model, SHAPE, "bias", model_name="mcunet-5fps", num_classes=10)
    plan8 = tlplan.plan_from_scheme(model, SHAPE, "bias", model_name="mcunet-5fps", num_classes=10, frozen_bits=8)
    assert plan32.to_dict()["frozen_bits"] == 32 and plan8.to_dict()["frozen_bits"] == 8
    frozen = plan32.predicted["param_bytes"] - plan32.predicted["trainable_param_bytes"]  # fp32 bytes of the frozen ones
    assert plan32.predicted["peak_bytes"] - plan8.predicted["peak_bytes"] == frozen - frozen // 4
    path = tmp_path / "plan.yaml"
    plan8.save(path)
    assert "frozen_bits: 8" in path.read_text()
    assert load_plan(path).frozen_bits == 8 and load_plan(path).to_dict() == plan8.to_dict()
    data = plan8.to_dict()
    del data["frozen_bits"]
    assert Plan.from_dict(data).frozen_bits_in_effect == 32  # an older plan: the runtime's own
    assert Plan.from_dict({**data, "runtime": "mcu"}).frozen_bits_in_effect == 8
    for bad in (16, "8", True, 8.0, -8):
        with pytest.raises(BadInputError, match="frozen_bits") as err:
            Plan.from_dict({**data, "frozen_bits": bad}, "plan p.yaml")
        assert "\n" not in str(err.value)
    with pytest.raises(BadInputError, match="mcu"):
        Plan.from_dict({**data, "runtime": "mcu", "frozen_bits": 32})


def test_cli_frozen_bits(run, tmp_path) -> None:
    code, out, err = run("profile", "mcunet-5fps", "--resolution", "64", "--batch", "2", "--num-classes", "10",
                         "--scheme", "last", "--no-measure", "--frozen-bits", "8", "--format", "json")
    assert code == 0, err
    memory = json.loads(out)["memory"]
    assert memory["frozen_bits"] == 8 and memory["frozen_param_bytes"] == _elements(tlplan.load_model("mcunet-5fps", num_classes=10))[0]
    code, out, err = run("profile", "mcunet-5fps", "--resolution", "64", "--no-measure", "--frozen-bits", "4")
    assert code == 2 and "use 8 or 32" in err and len(err.strip().splitlines()) == 1

    code, out, err = run("compare", "mcunet-5fps", "--resolution", "64", "--schemes", "bias", "--no-measure",
                         "--frozen-bits", "8", "--format", "json")
    assert code == 0, err
    assert json.loads(out)["frozen_bits"] == 8

    plan_path = tmp_path / "solved.yaml"
    code, out, err = run("solve", "mcunet-5fps", "--resolution", "64", "--num-classes", "10", "--ram", "4MB",
                         "--frozen-bits", "8", "-o", str(plan_path), "--format", "json", "--quiet")
    assert code == 0, err
    solved = json.loads(out)
    assert solved["frozen_bits"] == 8
    plan = load_plan(plan_path)
    assert plan.frozen_bits == 8 and plan.predicted["peak_bytes"] == solved["predicted"]["peak_bytes"] <= 4 * 2**20
    # the plan's own figures are at 8 bits: check recomputes the same, so it is not stale
    code, out, err = run("check", str(plan_path), "--format", "json")
    assert code == 0, err + out
    checked = json.loads(out)
    assert checked["frozen_bits"] == 8 and checked["stale"] == []
    assert checked["predicted"]["peak_bytes"] == plan.predicted["peak_bytes"]
    # counted at 32 bits instead: the peak grows by 3 bytes per frozen element, and is not called stale
    code, out, err = run("check", str(plan_path), "--format", "json", "--frozen-bits", "32")
    at32 = json.loads(out)
    frozen_fp32 = plan.predicted["param_bytes"] - plan.predicted["trainable_param_bytes"]
    assert at32["predicted"]["peak_bytes"] - checked["predicted"]["peak_bytes"] == 3 * frozen_fp32
    assert at32["stale"] == [] and any("not compared" in n for n in at32["notes"])

    # the frontier is the solver's own (32-bit frozen parameters): asking it at 8 is refused, not ignored
    code, out, err = run("solve", "mcunet-5fps", "--resolution", "64", "--ram", "4MB", "--pareto", "--frozen-bits", "8")
    assert code == 2 and "--pareto" in err

    # a plan file with a bad frozen_bits: one line, exit 2
    data = yaml.safe_load(plan_path.read_text())
    data["frozen_bits"] = 12
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data))
    code, out, err = run("check", str(bad))
    assert code == 2 and "frozen_bits 12" in err and len(err.strip().splitlines()) == 1
