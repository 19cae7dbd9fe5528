"""A local Visual-Wake-Words-style image folder → person / non-person, 50 × 50 grayscale.

Visual Wake Words (Chowdhery et al. 2019, arXiv:1906.05721) labels COCO images "person" or
"not person"; the MLPerf Tiny copy (``vw_coco2014_96``) ships it as two folders of images. Both
layouts are read (nothing is downloaded):

    DIR/person/*.{jpg,jpeg,png,bmp}     DIR/non_person/*…          (split here, see below)
    DIR/{train,val,test}/person/*…      DIR/{train,val,test}/non_person/*…   (split given)

Without split folders every image goes to a split chosen from the SHA-256 of its file name
(80 / 10 / 10 % train / val / test): stable across machines and when images are added.
Images are converted to grayscale, centre-cropped to a square and resized to 50 × 50 with
bilinear filtering (AnalogNet-VWW's input, AnalogNets §5: 50 × 50 grayscale), and stored as
8-bit pixel levels (``feature_levels = 255``, features ``pixel / 255`` in ``[0, 1]``), shape
``(1, 50, 50)``. Pillow is the optional extra ``pcm-harness[images]``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt

from harness.errors import ConfigError, DatasetError, MissingExtraError

#: Class names in label order (VWW: 1 = a person is present).
VWW_CLASSES: tuple[str, ...] = ("non_person", "person")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
DEFAULT_SIZE = 50
HASH_SPLIT_FRACTIONS = {"train": 0.8, "val": 0.1, "test": 0.1}


def require_pillow():  # type: ignore[no-untyped-def]
    """Import ``PIL.Image`` or raise a one-line error naming the extra."""
    try:
        from PIL import Image
    except ImportError as exc:
        raise MissingExtraError(
            "the image loader needs Pillow: install the images extra with `pip install -e '.[images]'`"
        ) from exc
    return Image


def hash_split(name: str) -> str:
    """The split of an image of a flat folder: from the SHA-256 of its file name."""
    u = int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "big") / 2.0**64
    edge = 0.0
    for split, fraction in HASH_SPLIT_FRACTIONS.items():
        edge += fraction
        if u < edge:
            return split
    return "test"


def plan_vww(root: str | os.PathLike[str]) -> dict[str, list[tuple[Path, int]]]:
    """``split → [(image path, label)]`` of a VWW-style folder (file names only, sorted).

    Raises:
        DatasetError: the folder, a class folder or a split's images are missing.
    """
    base = Path(root)
    if not base.is_dir():
        raise DatasetError(f"image folder {base} does not exist")
    presplit = all((base / s).is_dir() for s in ("train", "test"))
    out: dict[str, list[tuple[Path, int]]] = {"train": [], "val": [], "test": []}
    splits = [s for s in out if (base / s).is_dir()] if presplit else [""]
    for split in splits:
        for label, cls in enumerate(VWW_CLASSES):
            folder = base / split / cls
            if not folder.is_dir():
                raise DatasetError(
                    f"image folder {base} has no {(Path(split) / cls).as_posix()}/; expected "
                    f"{'<split>/' if presplit else ''}person/ and non_person/ folders of images"
                )
            for path in sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
                out[split or hash_split(f"{cls}/{path.name}")].append((path, label))
    for split in ("train", "test"):
        if not out[split]:
            raise DatasetError(f"image folder {base}: the {split} split has no images")
    return {s: v for s, v in out.items() if v}


def load_image(path: Path, size: int = DEFAULT_SIZE) -> npt.NDArray[np.uint8]:
    """One image as ``(size, size)`` 8-bit grayscale: centre square crop, bilinear resize.

    Raises:
        DatasetError: not a readable image.
        MissingExtraError: Pillow is missing.
    """
    image_mod = require_pillow()
    try:
        with image_mod.open(path) as img:
            gray = img.convert("L")
    except (OSError, ValueError) as exc:
        raise DatasetError(f"cannot read image {path}: {' '.join(str(exc).split())}") from exc
    w, h = gray.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    square = gray.crop((left, top, left + side, top + side))
    return np.asarray(square.resize((size, size), image_mod.BILINEAR), dtype=np.uint8)


def build_vww(
    root: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    size: int = DEFAULT_SIZE,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, int]:
    """Read every image once and write a dataset file of ``(1, size, size)`` grayscale samples.

    Returns:
        images per split.

    Raises:
        DatasetError: see :func:`plan_vww`, unreadable images.
        MissingExtraError: Pillow is missing.
        ConfigError: ``size`` < 1.
    """
    from harness.data.dataset import Dataset, save_dataset

    if size < 1:
        raise ConfigError(f"image size {size} must be at least 1 pixel")
    require_pillow()
    plan = plan_vww(root)
    total, done = sum(len(v) for v in plan.values()), 0
    arrays: dict[str, npt.NDArray[np.generic]] = {}
    for split, items in plan.items():
        x = np.empty((len(items), 1, size, size), dtype=np.float32)
        for i, (path, _) in enumerate(items):
            x[i, 0] = load_image(path, size).astype(np.float32) / np.float32(255.0)
            done += 1
            if progress is not None and (done % 256 == 0 or done == total):
                progress(done, total)
        arrays[f"x_{split}"] = x
        arrays[f"y_{split}"] = np.array([label for _, label in items], dtype=np.int64)
    split_rule = "train/val/test folders" if (Path(root) / "train").is_dir() else "SHA-256 of class/file name, 80/10/10"
    dataset = Dataset(
        name="vww",
        n_classes=len(VWW_CLASSES),
        input_shape=(1, size, size),
        class_names=VWW_CLASSES,
        metadata={
            "frontend": {"kind": "image", "mode": "grayscale", "crop": "centre square", "resize": "bilinear", "size": size},
            "axes": ["channel", "height", "width"],
            "split": split_rule,
        },
        **arrays,  # type: ignore[arg-type]
    )
    save_dataset(dataset, out, feature_levels=255, source=f"VWW-style image folder {Path(root).resolve()}")
    return {split: len(items) for split, items in plan.items()}
