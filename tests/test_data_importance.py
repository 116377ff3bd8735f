"""Data as users have it, and importance measured from it."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from PIL import Image

import tlplan
from tlplan.data import load_data
from tlplan.errors import BadInputError
from tlplan.solve.measured import gradient_importance
from tlplan.trace import trace_model


def make_folder(root, classes=("cat", "dog"), per_class=4, size=24):
    rng = np.random.default_rng(0)
    for k, c in enumerate(classes):
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            arr = (rng.random((size, size, 3)) * 255).astype("uint8")
            arr[:, : size // 2, k % 3] = 255  # a class-dependent stripe
            Image.fromarray(arr).save(root / c / f"{i}.png")
    return root


def test_image_folder(tmp_path) -> None:
    data = load_data(str(make_folder(tmp_path / "imgs")), 32)
    assert data.images.shape == (8, 3, 32, 32) and data.images.dtype == torch.float32
    assert data.classes == ("cat", "dog") and data.labels.tolist() == [0] * 4 + [1] * 4


def test_tensor_files(tmp_path) -> None:
    x, y = torch.randn(5, 3, 16, 16), torch.tensor([0, 1, 2, 1, 0])
    torch.save({"images": x, "labels": y}, tmp_path / "d.pt")
    np.savez(tmp_path / "d.npz", x=x.numpy(), y=y.numpy())
    for name in ("d.pt", "d.npz"):
        data = load_data(str(tmp_path / name), 16)
        assert torch.equal(data.images, x) and data.num_classes == 3
    assert load_data(str(tmp_path / "d.pt"), 8).images.shape == (5, 3, 8, 8)  # resized to the plan's resolution


def test_synthetic() -> None:
    a, b = load_data("synthetic", 16, num_classes=3), load_data("synthetic", 16, num_classes=3)
    assert torch.equal(a.images, b.images) and a.num_classes == 3  # reproducible


@pytest.mark.parametrize("setup,message", [
    (lambda p: p.mkdir(), "at least two"),
    (lambda p: (p / "only").mkdir(parents=True), "at least two"),
    (lambda p: [ (p / c).mkdir(parents=True) for c in "ab"] and (p / "a" / "x.png").write_bytes(b"not a png"), "cannot read image"),
])
def test_bad_folders(tmp_path, setup, message) -> None:
    path = tmp_path / "data"
    setup(path)
    with pytest.raises(BadInputError, match=message):
        load_data(str(path), 16)


def test_bad_files(tmp_path) -> None:
    np.savez(tmp_path / "w.npz", a=np.zeros(3))
    with pytest.raises(BadInputError, match="named 'images'"):
        load_data(str(tmp_path / "w.npz"), 16)
    (tmp_path / "c.pt").write_bytes(b"garbage")
    with pytest.raises(BadInputError, match="cannot read"):
        load_data(str(tmp_path / "c.pt"), 16)
    with pytest.raises(BadInputError, match="not a folder"):
        load_data(str(tmp_path / "missing"), 16)


def test_gradient_importance() -> None:
    model = tlplan.load_model("mcunet-5fps", num_classes=3)
    graph = trace_model(model, (4, 3, 64, 64))
    table = gradient_importance(model, graph, load_data("synthetic", 64, num_classes=3, samples=8), batch=4, batches=2)
    assert max(table.values()) == 1.0 and min(table.values()) >= 0
    assert not any(layer == "classifier" for layer, _ in table)  # always trained, not a choice
    layer = "blocks.12.inverted_bottleneck.conv"
    ratios = [table[(layer, f"w{r:g}+b")] for r in (0.125, 0.25, 0.5, 1.0)]
    assert ratios == sorted(ratios) and ratios[0] < ratios[-1]  # more channels, more gain
    assert table[(layer, "b")] < table[(layer, "w1+b")]


def test_cli_importance_then_solve(run, tmp_path) -> None:
    folder = make_folder(tmp_path / "imgs")
    model = tlplan.load_model("mcunet-5fps", num_classes=2)
    torch.save(model.state_dict(), tmp_path / "w.pt")
    out = tmp_path / "imp.csv"
    code, _, err = run("importance", "mcunet-5fps", "--data", str(folder), "--weights", str(tmp_path / "w.pt"),
                       "--resolution", "64", "--batch", "4", "--batches", "2", "-o", str(out))
    assert code == 0, err
    rows = list(csv.DictReader(out.read_text().splitlines()))
    assert rows and set(rows[0]) == {"layer", "option", "importance"}
    code, out_, err = run("solve", "mcunet-5fps", "--ram", "256KB", "--runtime", "mcu", "--num-classes", "2",
                          "--importance", str(out), "-q")
    assert code == 0, err
    torch.save({"nope.weight": torch.zeros(1)}, tmp_path / "bad.pt")
    code, _, err = run("importance", "mcunet-5fps", "--data", str(folder), "--weights", str(tmp_path / "bad.pt"))
    assert code == 2 and "does not have" in err
