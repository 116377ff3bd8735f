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
    classes = sorted(d.name for d in path.iterdir() if d.is_dir() and not d.name.startswith("."))
    files = [(f, i) for i, c in enumerate(classes) for f in sorted((path / c).iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES]
    if len(classes) < 2 or not files:
        raise BadInputError(
            f"data folder {path}: expected one sub-folder per class (at least two) holding images; found "
            f"{len(classes)} class folder(s) and {len(files)} image(s)"
        )
    images, labels = [], []
    for f, label in files:
        arr = _read_image(f, resolution, path)
        images.append((torch.from_numpy(arr).permute(2, 0, 1) - MEAN) / STD)
        labels.append(label)
    return Data(torch.stack(images), torch.tensor(labels), tuple(classes), str(path))


def _read_image(f: Path, resolution: int, folder: Path) -> np.ndarray:
    """An image as RGB floats in [0, 1] at ``resolution``: 8- and 16-bit, grayscale, palette and
    alpha images converted by what their pixels mean (a 16-bit PNG is not all white), and an image
    too large to be a photo (a decompression bomb) refused."""
    import warnings

    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(f) as im:
                im.load()
                if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
                    # 16-bit or 32-bit grayscale: scale by the format's range, then three channels
                    gray = np.asarray(im, dtype=np.float32)
                    if not np.isfinite(gray).all():
                        raise BadInputError(f"data folder {folder}: image {f} holds NaN or infinite values; fix or remove it")
                    if im.mode == "F":  # floats: taken as they are, in [0, 1]
                        top = 1.0
                    else:  # 16-bit, or 32-bit integers holding 16-bit values (how Pillow opens some PNGs)
                        top = 65535.0 if im.mode.startswith("I;16") or gray.max() <= 65535 else 2**31 - 1.0
                    resized = Image.fromarray(np.clip(gray / top, 0, 1).astype(np.float32), mode="F")
                    resized = resized.resize((resolution, resolution), Image.BILINEAR)
                    return np.repeat(np.asarray(resized, dtype=np.float32)[..., None], 3, axis=2)
                if im.mode in ("P", "PA", "LA", "RGBA") or "transparency" in im.info:
                    im = im.convert("RGBA")  # a palette's transparency too: then composited on black
                    background = Image.new("RGBA", im.size, (0, 0, 0, 255))
                    im = Image.alpha_composite(background, im)
                rgb = im.convert("RGB").resize((resolution, resolution), Image.BILINEAR)
                return np.asarray(rgb, dtype=np.float32) / 255.0
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise BadInputError(f"data folder {folder}: image {f} has more pixels than Pillow reads safely; shrink or remove it") from None
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError):
        raise BadInputError(f"data folder {folder}: cannot read image {f}; remove or replace it") from None


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
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise BadInputError(f"data file {path}: labels must be whole numbers (an integer array), not {labels.dtype}")
    if int(labels.min()) < 0:
        raise BadInputError(f"data file {path}: labels must be 0 or more; found {int(labels.min())}")
    images = images.float()
    if not bool(torch.isfinite(images).all()):
        raise BadInputError(f"data file {path}: images hold NaN or infinite values; clean the data first")
    if images.shape[-1] != resolution or images.shape[-2] != resolution:
        images = torch.nn.functional.interpolate(images, size=(resolution, resolution), mode="bilinear", align_corners=False)
    # the classes are the labels the data has (a gap, or a label of 2**40, adds no empty class)
    values, labels = torch.unique(labels.long(), return_inverse=True)
    if len(values) < 2:
        raise BadInputError(f"data file {path}: every label is {int(values[0])}; training needs two classes at least")
    return Data(images, labels, tuple(str(int(v)) for v in values), str(path))
