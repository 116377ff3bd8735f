"""Training data as users have it: an image folder, a tensor file, or ``synthetic`` for a smoke run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import BadInputError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
#: ImageNet statistics, as the zoo's pretrained weights expect
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


@dataclass(frozen=True)
class Data:
    images: torch.Tensor  # (N, 3, H, W), float32, normalised
    labels: torch.Tensor  # (N,), int64
    classes: tuple[str, ...]
    source: str

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def load_data(spec: str, resolution: int, *, num_classes: int = 10, samples: int = 64, seed: int = 0) -> Data:
    """Read ``spec``: a folder with one sub-folder per class, a ``.pt`` / ``.npz`` file holding
    ``images`` (or ``x``) and ``labels`` (or ``y``), or ``synthetic``."""
    if spec == "synthetic":
        g = torch.Generator().manual_seed(seed)
        images = torch.randn(samples, 3, resolution, resolution, generator=g)
        labels = torch.randint(0, num_classes, (samples,), generator=g)
        return Data(images, labels, tuple(str(i) for i in range(num_classes)), "synthetic")
    path = Path(spec)
    if path.is_dir():
        return _image_folder(path, resolution)
    if path.suffix in (".pt", ".pth", ".npz") and path.is_file():
        return _tensor_file(path, resolution)
    raise BadInputError(f"data {spec!r}: not a folder, a .pt/.npz file, or 'synthetic'")


def _image_folder(path: Path, resolution: int) -> Data:
    from PIL import Image, UnidentifiedImageError

    classes = sorted(d.name for d in path.iterdir() if d.is_dir() and not d.name.startswith("."))
    files = [(f, i) for i, c in enumerate(classes) for f in sorted((path / c).iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES]
    if len(classes) < 2 or not files:
        raise BadInputError(
            f"data folder {path}: expected one sub-folder per class (at least two) holding images; found "
            f"{len(classes)} class folder(s) and {len(files)} image(s)"
        )
    images, labels = [], []
    for f, label in files:
        try:
            with Image.open(f) as im:
                im = im.convert("RGB").resize((resolution, resolution), Image.BILINEAR)
                arr = np.asarray(im, dtype=np.float32) / 255.0
        except (OSError, UnidentifiedImageError):
            raise BadInputError(f"data folder {path}: cannot read image {f}; remove or replace it") from None
        images.append((torch.from_numpy(arr).permute(2, 0, 1) - MEAN) / STD)
        labels.append(label)
    return Data(torch.stack(images), torch.tensor(labels), tuple(classes), str(path))


def _tensor_file(path: Path, resolution: int) -> Data:
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                raw = {k: torch.from_numpy(z[k]) for k in z.files}
        else:
            raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt archives raise many kinds
        raise BadInputError(f"data file {path}: cannot read it ({type(exc).__name__}); expected images and labels arrays") from None
    if not isinstance(raw, dict):
        raise BadInputError(f"data file {path}: expected a mapping with 'images' and 'labels'")
    images = raw.get("images", raw.get("x"))
    labels = raw.get("labels", raw.get("y"))
    if not isinstance(images, torch.Tensor) or not isinstance(labels, torch.Tensor):
        raise BadInputError(f"data file {path}: expected arrays named 'images' (or 'x') and 'labels' (or 'y')")
    if images.dim() != 4 or images.shape[1] != 3 or labels.dim() != 1 or len(labels) != len(images) or not len(images):
        raise BadInputError(f"data file {path}: images must be (N, 3, H, W) and labels (N,), N > 0")
    images = images.float()
    if images.shape[-1] != resolution or images.shape[-2] != resolution:
        images = torch.nn.functional.interpolate(images, size=(resolution, resolution), mode="bilinear", align_corners=False)
    labels = labels.long()
    n = int(labels.max()) + 1
    return Data(images, labels, tuple(str(i) for i in range(n)), str(path))
