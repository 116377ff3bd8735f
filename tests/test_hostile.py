"""Hostile and broken input, case by case: a one-line error (exit 2, or the documented exit 1),
no traceback, no code run from a data file, nothing written outside the named outputs."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import tlplan
from tlplan.errors import BadInputError, UntrustedModelError
from tlplan.plan.plan import Plan


@pytest.fixture
def plan_file(tmp_path) -> Path:
    model = tlplan.load_model("mcunet-5fps", num_classes=10)
    path = tmp_path / "plan.yaml"
    tlplan.plan_from_scheme(model, (2, 3, 32, 32), "bias", model_name="mcunet-5fps", num_classes=10).save(path)
    plan = tlplan.load_plan(path)
    Plan(**{**plan.__dict__, "budget_bytes": 64 * 1024**2}).save(path)
    return path


def edited(path: Path, **fields) -> Path:
    doc = yaml.safe_load(path.read_text())
    doc.update(fields)
    path.write_text(yaml.safe_dump(doc))
    return path


def one_line_error(code: int, out: str, err: str, expected: int = 2) -> str:
    assert code == expected, (code, out, err)
    lines = err.strip().splitlines()  # warnings may come first; the error is one line, last
    assert "Traceback" not in err and lines and lines[-1].startswith("error: "), err
    return lines[-1]


# ---- model code named by a file runs only when allowed ------------------------------------------------


def test_plan_naming_sys_exit_never_passes_the_gate(run, plan_file) -> None:
    edited(plan_file, model="sys:exit")
    err = one_line_error(*run("check", str(plan_file)))
    assert "--trust-model-code" in err
    # allowed, a factory that exits is an error, never a success
    err = one_line_error(*run("check", str(plan_file), "--trust-model-code"))
    assert "SystemExit" in err


def test_plan_naming_a_side_effect_runs_nothing(run, plan_file, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path / "t"))
    (tmp_path / "t").mkdir()
    edited(plan_file, model="tempfile:mkdtemp")
    for command in (["check", str(plan_file)], ["train", str(plan_file), "--data", "synthetic", "--steps", "1",
                                                 "--out", str(tmp_path / "run")]):
        one_line_error(*run(*command))
    assert list((tmp_path / "t").iterdir()) == []


def test_zoo_names_and_the_projects_own_model_are_trusted(run, plan_file, tmp_path, monkeypatch) -> None:
    assert run("check", str(plan_file))[0] == 0  # a zoo name
    # a factory named by the project's own settings may run from a plan too
    (tmp_path / "mymodels.py").write_text("import tlplan\ndef net(num_classes=10):\n    return tlplan.load_model('mcunet-5fps', num_classes=num_classes)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    edited(plan_file, model="mymodels:net")
    one_line_error(*run("check", str(plan_file)))
    (tmp_path / "pyproject.toml").write_text('[tool.tlplan]\nmodel = "mymodels:net"\n')
    assert run("check", str(plan_file))[0] == 0


def test_library_refuses_untrusted_code() -> None:
    with pytest.raises(UntrustedModelError, match="trust_model_code"):
        tlplan.load_model("os:getcwd", trust_code=False)
    assert tlplan.load_model("mcunet-5fps", trust_code=False) is not None
    with pytest.raises(tlplan.TlplanError, match="SystemExit"):
        tlplan.load_model("sys:exit")


# ---- files that are not what they claim ---------------------------------------------------------------


def test_alias_bomb_is_refused_quickly(run, tmp_path) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"] + [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("version: 1\nmodel: mcunet-5fps\n" + "\n".join(lines) + "\nscheme: *a8\n")
    t0 = time.perf_counter()
    for command in (["check", str(bomb)], ["train", str(bomb), "--data", "synthetic", "--out", str(tmp_path / "r")]):
        one_line_error(*run(*command))
    assert time.perf_counter() - t0 < 10


@pytest.mark.parametrize("name", ["pyproject.toml", "tlplan.yaml"])
def test_settings_that_are_not_utf8(run, tmp_path, monkeypatch, name) -> None:
    (tmp_path / name).write_bytes(b"[tool.tlplan]\nmodel = '\xff\xfe'\n")
    monkeypatch.chdir(tmp_path)
    err = one_line_error(*run("profile", "mcunet-5fps", "--no-measure"))
    assert "not UTF-8" in err and name in err


@pytest.mark.parametrize("fields, words", [
    ({"device": 5}, "'device' must be text"),
    ({"budget_bytes": 10**400}, "budget_bytes"),
    ({"predicted": {"peak_bytes": "lots"}}, "predicted.peak_bytes"),
    ({"optimizer": {"name": "sgd", "lr": float("nan")}}, "lr must be a finite number"),
    ({"input_shape": [1, 3, 10**9, 32]}, "input_shape"),
    ({"layers": {}}, None),
])
def test_plan_fields_checked(run, plan_file, tmp_path, fields, words) -> None:
    edited(plan_file, **fields)
    if words is None:  # a plan that trains nothing checks, but does not train
        assert run("check", str(plan_file))[0] in (0, 1)
        err = one_line_error(*run("train", str(plan_file), "--data", "synthetic", "--steps", "1", "--out", str(tmp_path / "r")))
        assert "trains no parameter" in err
        return
    err = one_line_error(*run("check", str(plan_file)))
    assert words in err


def test_huge_sizes(run, tmp_path, monkeypatch) -> None:
    err = one_line_error(*run("solve", "mcunet-5fps", "--ram", "9" * 400, "--resolution", "32"))
    assert "larger than any device" in err and len(err) < 300
    (tmp_path / "pyproject.toml").write_text("[tool.tlplan]\nmodel = 'mcunet-5fps'\nram = " + "9" * 400 + "\n")
    monkeypatch.chdir(tmp_path)
    one_line_error(*run("solve", "--resolution", "32"))


# ---- outputs: through symlinks, never over devices, temp files cleaned --------------------------------


def test_output_writes_through_a_symlink(run, tmp_path) -> None:
    target = tmp_path / "real.json"
    target.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    code, _, err = run("profile", "mcunet-5fps", "--resolution", "32", "--no-measure", "--format", "json", "-o", str(link))
    assert code == 0, err
    assert link.is_symlink() and target.read_text().startswith("{")


def test_output_into_a_pipe_is_written_not_replaced(tmp_path) -> None:
    from tlplan.fileio import write_atomic

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    write_atomic(fifo, "hello")
    assert os.read(reader, 100) == b"hello" and fifo.is_fifo()
    os.close(reader)


def test_stale_temp_files_are_cleaned(tmp_path) -> None:
    from tlplan.fileio import write_atomic

    dead = 2**22 + 12345  # above Linux's default pid_max: no such process
    stale = tmp_path / f".plan.yaml.{dead}.abc123.tmp"
    stale.write_text("half a plan")
    write_atomic(tmp_path / "plan.yaml", "x: 1\n")
    assert not stale.exists() and (tmp_path / "plan.yaml").read_text() == "x: 1\n"


def test_train_out_onto_a_file_fails_before_setup(run, plan_file, tmp_path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("keep me")
    err = one_line_error(*run("train", str(plan_file), "--data", "synthetic", "--out", str(blocker)))
    assert "is a file" in err and blocker.read_text() == "keep me"


def test_two_runs_into_one_folder_are_refused(plan_file, tmp_path) -> None:
    import fcntl

    from tlplan import training
    from tlplan.data import load_data

    out = tmp_path / "run"
    out.mkdir()
    with open(out / ".lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another run holds the folder
        with pytest.raises(BadInputError, match="another tlplan train"):
            training.train(tlplan.load_plan(plan_file), load_data("synthetic", 32), out_dir=out, steps=1, measure=False)


# ---- datasets and weights ------------------------------------------------------------------------------


def test_dataset_labels_are_checked(tmp_path) -> None:
    from tlplan.data import load_data

    def data(labels, images=None):
        path = tmp_path / "d.pt"
        torch.save({"images": images if images is not None else torch.randn(len(labels), 3, 8, 8), "labels": labels}, path)
        return str(path)

    gapped = load_data(data(torch.tensor([0, 500, 2**40, 500])), 8)  # no hang, no 2**40 classes
    assert gapped.classes == ("0", "500", str(2**40)) and gapped.labels.tolist() == [0, 1, 2, 1]
    for labels, words in ((torch.tensor([-1, 0]), "0 or more"), (torch.tensor([0.0, 1.5]), "whole numbers"),
                          (torch.tensor([3, 3]), "two classes")):
        with pytest.raises(BadInputError, match=words):
            load_data(data(labels), 8)
    with pytest.raises(BadInputError, match="NaN"):
        load_data(data(torch.tensor([0, 1]), torch.full((2, 3, 8, 8), float("nan"))), 8)


def test_images_of_every_mode_convert_by_meaning(tmp_path) -> None:
    from PIL import Image

    from tlplan.data import MEAN, STD, load_data

    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
    Image.fromarray(np.full((16, 16), 32768, dtype=np.uint16)).save(tmp_path / "a" / "sixteen.png")  # mid grey
    Image.fromarray(np.full((16, 16, 4), 255, dtype=np.uint8), "RGBA").save(tmp_path / "b" / "clear.png")
    Image.fromarray(np.full((16, 16), 7, dtype=np.uint8), "L").convert("P").save(tmp_path / "b" / "palette.png")
    found = load_data(str(tmp_path), 8)
    raw = found.images * STD + MEAN
    assert torch.allclose(raw[0], torch.full_like(raw[0], 32768 / 65535), atol=1e-3)  # not all white
    assert torch.allclose(raw[1], torch.ones_like(raw[1]), atol=1e-3)  # opaque white RGBA
    assert torch.allclose(raw[2], torch.full_like(raw[2], 7 / 255), atol=1e-3)


def test_decompression_bomb_is_a_clear_error(tmp_path, monkeypatch) -> None:
    from PIL import Image

    from tlplan.data import load_data

    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        Image.new("RGB", (64, 64)).save(tmp_path / cls / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 64×64 is a "bomb" at this limit
    with pytest.raises(BadInputError, match="more pixels than Pillow reads safely"):
        load_data(str(tmp_path), 8)


def test_weights_that_load_nothing_are_refused(tmp_path) -> None:
    from tlplan.weights import load_weights

    model = tlplan.load_model("mcunet-5fps", num_classes=10)
    good = tmp_path / "good.pt"
    torch.save(tlplan.load_model("mcunet-5fps", num_classes=1000).state_dict(), good)
    done = load_weights(model, good, head="classifier")  # another head: expected, left as it is
    assert done.loaded == done.total - 2 and done.left == ("classifier.weight", "classifier.bias")
    for state, words in (({}, "at least one tensor"), ({"first_conv.conv.weight": torch.zeros(1)}, "no tensor of the file fits"),
                         ({"first_conv.conv.weight": torch.full((16, 3, 3, 3), float("nan"))}, "NaN"),
                         ({"first_conv.conv.weight": 3}, "not tensors")):
        path = tmp_path / "w.pt"
        torch.save(state, path)
        with pytest.raises(BadInputError, match=words):
            load_weights(model, path, head="classifier")
    partial = {k: v for k, v in model.state_dict().items() if not k.startswith("blocks.0.")}
    torch.save(partial, tmp_path / "partial.pt")
    with pytest.raises(BadInputError, match="weights_partial"):
        load_weights(model, tmp_path / "partial.pt", head="classifier")
    assert load_weights(model, tmp_path / "partial.pt", head="classifier", partial=True).left


# ---- profiles, configs, tables -----------------------------------------------------------------------


@pytest.mark.parametrize("field, value", [("layer_overhead_s", -1), ("peak_flops_fp32", 0), ("memory_bandwidth_bytes_per_s", -5)])
def test_device_profile_numbers_are_checked(tmp_path, field, value) -> None:
    import json

    from tlplan.predict.devices import load_device

    doc = json.loads((Path(__file__).parent.parent / "tlplan" / "profiles" / "rpi4" / "device.json").read_text())
    doc[field] = value
    (tmp_path / "device.json").write_text(json.dumps(doc))
    with pytest.raises(BadInputError, match=field):
        load_device(tmp_path / "device.json")


def test_backward_config_with_a_list_for_criteria(run, tmp_path) -> None:
    config = tmp_path / "bc.yaml"
    config.write_text("n_bias_update: 2\nweight_select_criteria: [magnitude+]\n")
    err = one_line_error(*run("profile", "mcunet-5fps", "--resolution", "32", "--no-measure", "--scheme", f"sparse:{config}"))
    assert "weight_select_criteria" in err


def test_importance_table_with_bom_and_unknown_layers(run, tmp_path) -> None:
    table = tmp_path / "imp.csv"
    table.write_bytes("\ufefflayer,option,importance\nclassifier,w1+b,1.0\n".encode())
    assert run("solve", "mcunet-5fps", "--resolution", "32", "--ram", "64MB", "--importance", str(table), "--quiet")[0] == 0
    table.write_text("layer,option,importance\nno.such.layer,w1,1.0\n")
    err = one_line_error(*run("solve", "mcunet-5fps", "--resolution", "32", "--ram", "64MB", "--importance", str(table)))
    assert "no.such.layer" in err


def test_a_model_with_no_layers(run) -> None:
    err = one_line_error(*run("profile", "torch.nn:Identity", "--no-measure"))
    assert "no layers" in err


# ---- found by a second review ------------------------------------------------------------------------


def test_a_fifo_named_as_a_plan_is_refused_not_waited_on(run, tmp_path) -> None:
    fifo = tmp_path / "plan.yaml"
    os.mkfifo(fifo)
    err = one_line_error(*run("check", str(fifo)))
    assert "not a regular file" in err


@pytest.mark.parametrize("text", ["budget_bytes: 1" + "0" * 5000, "device: 2020-13-45"])
def test_yaml_values_python_cannot_build(tmp_path, text) -> None:
    from tlplan.fileio import load_yaml

    with pytest.raises(BadInputError, match="a value it cannot read"):
        load_yaml("version: 1\n" + text + "\n", "plan p.yaml")


def test_output_through_a_link_to_a_pipe_writes_into_the_pipe(tmp_path) -> None:
    from tlplan.fileio import write_atomic

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    link = tmp_path / "out"
    link.symlink_to(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    write_atomic(link, "through")
    assert os.read(reader, 100) == b"through" and link.is_symlink() and fifo.is_fifo()
    os.close(reader)
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    with pytest.raises(BadInputError, match="cannot write"):
        write_atomic(loop, "x")


def test_weights_without_step_counters_load_whole(tmp_path) -> None:
    from tlplan.weights import load_weights

    model = tlplan.load_model("mcunet-5fps", num_classes=10)
    state = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "w.pt")
    done = load_weights(model, tmp_path / "w.pt", head="classifier")
    assert done.loaded == len(state) and done.left == ()


def test_profile_data_never_runs_code(tmp_path, monkeypatch) -> None:
    # GIVEN a shared profile folder whose steps.csv names a network as package.module:factory
    import shutil

    from tlplan.predict.devices import resolve_device
    from tlplan.predict.predictor import load_fitted

    (tmp_path / "evilnet.py").write_text("open(__file__ + '.ran', 'w').close()\ndef make(num_classes=10):\n    raise SystemExit\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    shared = tmp_path / "profiles"
    shutil.copytree(Path(tlplan.__file__).parent / "profiles" / "host-x86-2c-1t", shared / "box")
    with open(shared / "box" / "steps.csv", "a") as f:
        f.write("evilnet:make,full,1,32,5.0,0.0,eager\n")
    # fitting is what reads steps.csv: a fortieth of the layer rows and the small networks' steps fit in
    # seconds (every step is traced), the evil line last
    rows = (shared / "box" / "measurements.csv").read_text().splitlines(keepends=True)
    (shared / "box" / "measurements.csv").write_text("".join(rows[:1] + rows[1::40]))
    steps = (shared / "box" / "steps.csv").read_text().splitlines(keepends=True)
    (shared / "box" / "steps.csv").write_text("".join(steps[:1] + [r for r in steps[1:] if r.startswith(("mcunet", "evilnet"))]))
    doc = json.loads((shared / "box" / "device.json").read_text())
    doc["name"] = "box"
    (shared / "box" / "device.json").write_text(json.dumps(doc))
    monkeypatch.setenv("TLPLAN_PROFILES", str(shared))
    monkeypatch.setenv("TLPLAN_CACHE", str(tmp_path / "cache"))
    load_fitted(resolve_device("box"))
    assert not (tmp_path / "evilnet.py.ran").exists()


def test_a_broken_user_profile_hides_nothing_else(run, monkeypatch, tmp_path) -> None:
    user = Path(os.environ["XDG_DATA_HOME"]) / "tlplan" / "profiles" / "mine"
    user.mkdir(parents=True)
    (user / "device.json").write_text("{broken")
    code, out, err = run("devices", "--format", "json")
    assert code == 0 and "left out" in err and '"name": "rpi4"' in out
    assert run("profile", "mcunet-5fps", "--resolution", "32", "--no-measure", "--device", "rpi4")[0] == 0
