"""``tlplan train``: the plan runs, keeps what it predicted, resumes after an interruption."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import tlplan
from tlplan import training
from tlplan.data import load_data
from tlplan.errors import BadInputError
from tlplan.plan.plan import Optimizer


def shapes_folder(root: Path, per_class: int = 24, size: int = 64) -> Path:
    """A two-class image folder of generated shapes: bright circles and squares on a dark ground."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    for cls in ("circle", "square"):
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            img = (rng.random((size, size, 3)) * 60).astype("uint8")
            cx, cy = rng.integers(size // 3, 2 * size // 3, 2)
            r = int(rng.integers(size // 8, size // 4))
            inside = (xx - cx) ** 2 + (yy - cy) ** 2 < r * r if cls == "circle" else (abs(xx - cx) < r) & (abs(yy - cy) < r)
            img[inside] = 255
            Image.fromarray(img).save(root / cls / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return shapes_folder(tmp_path_factory.mktemp("data") / "shapes")


def test_solve_then_train_end_to_end(run, folder, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    # the commands, as typed: the plan runs and reports
    code, _, err = run("solve", "mobilenet_v2", "--ram", "64MB", "--batch", "8", "--resolution", "128", "-o", "plan.yaml", "-q")
    assert code == 0, err
    code, out, err = run("train", "plan.yaml", "--data", str(folder), "--epochs", "2", "--out", "run", "-q")
    assert code == 0, err
    assert "predicted vs measured" in out
    # the loss going down, from scratch (no weights can be downloaded): a plan for the task's 2 classes
    # with Adam; plain SGD at 0.01 barely moves a random mobilenet_v2 in a few epochs (plain PyTorch neither)
    code, _, err = run("solve", "mobilenet_v2", "--ram", "64MB", "--batch", "8", "--resolution", "128", "--num-classes", "2",
                       "--optimizer", "adam", "-o", "plan2.yaml", "-q")
    assert code == 0, err
    plan = tlplan.load_plan("plan2.yaml")
    torch.manual_seed(0)  # the model's random initial weights: not whatever earlier tests left the generator at
    result = training.train(plan, load_data(str(folder), 128), out_dir=tmp_path / "again", epochs=3, seed=1)
    losses = [h.loss for h in result.history]
    assert losses[-1] < losses[0]  # the loss goes down (seeds 0-3 and 5-7 measured: by 0.03 to 0.21)
    assert result.measured["saved_bytes"] == result.predicted["saved_bytes"]  # to the byte
    assert abs(result.measured["peak_bytes"] / result.predicted["peak_bytes"] - 1) <= 0.05
    assert (tmp_path / "run" / training.CHECKPOINT).exists()


def test_interrupted_run_resumes(folder, tmp_path) -> None:
    model = tlplan.load_model("mcunet-5fps", num_classes=2)
    plan = tlplan.plan_from_scheme(model, (4, 3, 64, 64), "blocks:2", model_name="mcunet-5fps", num_classes=2)
    data = load_data(str(folder), 64)
    calls = {"n": 0}

    def crash(epoch, step, total, loss):
        calls["n"] += 1
        if epoch == 1 and step == 2:  # killed in the middle of the second epoch
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        training.train(plan, data, out_dir=tmp_path, epochs=3, progress=crash, measure=False)
    saved = torch.load(tmp_path / training.CHECKPOINT, weights_only=True)
    assert saved["epoch"] == 1  # the checkpoint of the first epoch, whole
    assert not list(tmp_path.glob(".checkpoint.*"))  # no half-written file left
    result = training.train(plan, data, out_dir=tmp_path, epochs=3, measure=False)
    assert result.resumed_from == 1 and [h.epoch for h in result.history] == [1, 2, 3]


def test_checkpoint_of_another_plan_is_refused(folder, tmp_path) -> None:
    model = tlplan.load_model("mcunet-5fps", num_classes=2)
    data = load_data(str(folder), 64)
    a = tlplan.plan_from_scheme(model, (4, 3, 64, 64), "bias", model_name="mcunet-5fps", num_classes=2)
    training.train(a, data, out_dir=tmp_path, steps=1, measure=False)
    b = tlplan.plan_from_scheme(model, (4, 3, 64, 64), "last", model_name="mcunet-5fps", num_classes=2)
    with pytest.raises(BadInputError, match="another plan"):
        training.train(b, data, out_dir=tmp_path, steps=1, measure=False)


def test_mismatched_plan_and_bad_data(run, folder, tmp_path) -> None:
    model = tlplan.load_model("mcunet-5fps", num_classes=2)
    plan = tlplan.plan_from_scheme(model, (4, 3, 64, 64), "bias", model_name="mcunet-5fps", num_classes=2)
    path = tmp_path / "plan.yaml"
    plan.save(path)
    data = yaml.safe_load(path.read_text())
    data["model"] = "mbv2-w0.35"
    path.write_text(yaml.safe_dump(data))
    code, _, err = run("train", str(path), "--data", str(folder), "--steps", "1", "--out", str(tmp_path / "r"), "-q")
    assert code == 2 and "blocks." in err and "another model" in err  # the first mismatch, named
    plan.save(path)
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run("train", str(path), "--data", str(empty), "--steps", "1", "--out", str(tmp_path / "r"), "-q")
    assert code == 2 and "at least two" in err
    code, _, err = run("train", str(path), "--data", str(folder), "--steps", "1", "--epochs", "1", "-q")
    assert code == 2 and "not both" in err


def test_solved_plan_beats_last_on_a_transfer_task(run, tmp_path, monkeypatch) -> None:
    """Pretrain on one synthetic task (stripe colour), transfer to another (stripe orientation):
    under the same budget and epochs, the solved plan ends with higher held-out accuracy than
    training the classifier alone, because it can adapt the features."""
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    import transfer_task as task

    torch.save(task.pretrained(), tmp_path / "backbone.pt")
    data = task.stripes(TRANSFER_IMAGES, 2, "orientation")
    torch.save({"images": data.images, "labels": data.labels}, tmp_path / "task.pt")
    shape = (8, 3, task.RESOLUTION, task.RESOLUTION)
    momentum = Optimizer("sgd", 0.01, 0.9)
    last = tlplan.plan_from_scheme(tlplan.load_model("transfer_task:make", num_classes=2), shape, "last",
                                   model_name="transfer_task:make", num_classes=2, optimizer=momentum)
    budget = int(last.predicted["peak_bytes"] * TRANSFER_BUDGET_FACTOR)
    code, _, err = run("solve", "transfer_task:make", "--ram", str(budget), "--batch", "8", "--resolution", str(task.RESOLUTION),
                       "--num-classes", "2", "--optimizer", "momentum", "-o", str(tmp_path / "solved.yaml"), "-q")
    assert code == 0, err
    solved = tlplan.load_plan(tmp_path / "solved.yaml")
    assert last.predicted["peak_bytes"] <= budget and solved.predicted["peak_bytes"] <= budget
    assert sum(1 for o in solved.layers.values() if o.weight) > 1  # more than the classifier
    weights = torch.load(tmp_path / "backbone.pt", weights_only=True)
    found = load_data(str(tmp_path / "task.pt"), task.RESOLUTION)
    accuracy = {}
    for name, plan in (("last", last), ("solved", solved)):
        torch.manual_seed(0)  # the new classifier's initial weights: the same draw for both
        result = training.train(plan, found, out_dir=tmp_path / name, weights=weights, epochs=TRANSFER_EPOCHS, measure=False,
                                trust_model_code=True)  # the test's own model factory
        accuracy[name] = result.history[-1].val_accuracy
    # measured over four seeds: solved ends 0.15-0.30 above last (which stays near chance)
    assert accuracy["solved"] >= accuracy["last"] + 0.1, accuracy


TRANSFER_IMAGES, TRANSFER_EPOCHS, TRANSFER_BUDGET_FACTOR = 400, 6, 1.5  # 1.5x what the classifier alone needs
