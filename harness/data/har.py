"""A local copy of the UCI Human Activity Recognition dataset → a harness dataset file.

UCI HAR (Anguita et al., ESANN 2013; UCI ML repository id 240): 30 subjects, smartphone at the
waist, 6 activities, 2.56 s windows (128 samples at 50 Hz, 50 % overlap), split by subject
into train (21) and test (9) by the authors. Its standard layout (``UCI HAR Dataset/``):

    activity_labels.txt               "1 WALKING" … "6 LAYING"
    train/X_train.txt                 561 engineered features per window (in [-1, 1])
    train/y_train.txt                 activity 1..6 per window
    train/subject_train.txt           subject 1..30 per window
    train/Inertial Signals/<signal>_train.txt   128 samples per window, 9 signals
    test/…                            the same with _test

``kind="features"`` gives the 561-feature vectors, shape ``(561,)`` (what a fully connected
HAR classifier such as ``har-fc`` takes); ``kind="windows"`` gives the raw windows, shape
``(9, 128)`` (signal × time, signals in :data:`INERTIAL_SIGNALS` order). Labels are the activity
ids minus one; ``subject_*`` holds the subject ids. No validation split is made: the authors'
split is train / test only.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import numpy.typing as npt

from harness.errors import ConfigError, DatasetError

N_FEATURES = 561
WINDOW_SAMPLES = 128
INERTIAL_SIGNALS: tuple[str, ...] = (
    "body_acc_x", "body_acc_y", "body_acc_z", "body_gyro_x", "body_gyro_y", "body_gyro_z",
    "total_acc_x", "total_acc_y", "total_acc_z",
)  # fmt: skip
HAR_KINDS = ("features", "windows")


def _read_matrix(path: Path, columns: int | None) -> npt.NDArray[np.float64]:
    if not path.is_file():
        raise DatasetError(f"UCI HAR copy is missing {path}; expected the standard 'UCI HAR Dataset' layout")
    try:
        data = np.loadtxt(path, dtype=np.float64, ndmin=2)
    except ValueError as exc:
        raise DatasetError(f"{path} is not a whitespace-separated table of numbers: {' '.join(str(exc).split())}") from exc
    if columns is not None and data.shape[1] != columns:
        raise DatasetError(f"{path} has {data.shape[1]} columns per row, expected {columns}")
    return data


def _read_ints(path: Path, n: int | None = None) -> npt.NDArray[np.int64]:
    column = _read_matrix(path, 1)[:, 0]
    if np.any(column != np.round(column)):
        raise DatasetError(f"{path} holds non-integers; expected one integer per line")
    if n is not None and column.shape[0] != n:
        raise DatasetError(f"{path} has {column.shape[0]} rows; expected one per window ({n})")
    return column.astype(np.int64)


def activity_names(root: str | os.PathLike[str]) -> tuple[str, ...]:
    """Class names from ``activity_labels.txt``, in label order."""
    path = Path(root) / "activity_labels.txt"
    if not path.is_file():
        raise DatasetError(f"UCI HAR copy is missing {path}; expected the standard 'UCI HAR Dataset' layout")
    rows = [line.split(maxsplit=1) for line in path.read_text().splitlines() if line.strip()]
    ids = [int(r[0]) for r in rows]
    if ids != list(range(1, len(rows) + 1)) or any(len(r) != 2 for r in rows):
        raise DatasetError(f"{path}: expected lines '1 NAME' … 'k NAME' in order")
    return tuple(r[1].strip() for r in rows)


def read_har_split(
    root: str | os.PathLike[str], split: str, kind: str = "features"
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """``(x, y, subject)`` of the ``train`` or ``test`` split.

    Raises:
        DatasetError: a file is missing or malformed, or the rows do not line up.
        ConfigError: an unknown split or kind.
    """
    if split not in ("train", "test"):
        raise ConfigError(f"UCI HAR split {split!r} is not train or test")
    if kind not in HAR_KINDS:
        raise ConfigError(f"UCI HAR kind {kind!r} is not one of {', '.join(HAR_KINDS)}")
    folder = Path(root) / split
    y = _read_ints(folder / f"y_{split}.txt") - 1
    n = y.shape[0]
    subject = _read_ints(folder / f"subject_{split}.txt", n)
    if kind == "features":
        x = _read_matrix(folder / f"X_{split}.txt", N_FEATURES)
    else:
        signals = [
            _read_matrix(folder / "Inertial Signals" / f"{name}_{split}.txt", WINDOW_SAMPLES) for name in INERTIAL_SIGNALS
        ]
        x = np.stack(signals, axis=1)  # (n, 9, 128)
    if x.shape[0] != n:
        raise DatasetError(f"UCI HAR {split}: {x.shape[0]} windows of {kind} but {n} labels")
    return x.astype(np.float32), y, subject


def build_har(
    root: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    kind: str = "features",
) -> dict[str, int]:
    """Read a local UCI HAR copy once and write a dataset file (float32 features).

    Returns:
        windows per split.

    Raises:
        DatasetError: see :func:`read_har_split`; labels outside the activity list.
    """
    from harness.data.dataset import Dataset, save_dataset

    base = Path(root)
    if not base.is_dir():
        raise DatasetError(f"UCI HAR directory {base} does not exist")
    names = activity_names(base)
    arrays: dict[str, npt.NDArray[np.generic]] = {}
    for split in ("train", "test"):
        x, y, subject = read_har_split(base, split, kind)
        if y.min() < 0 or y.max() >= len(names):
            raise DatasetError(f"UCI HAR {split}: activity ids outside 1..{len(names)} of activity_labels.txt")
        arrays.update({f"x_{split}": x, f"y_{split}": y, f"subject_{split}": subject})
    dataset = Dataset(
        name=f"uci-har-{kind}",
        n_classes=len(names),
        input_shape=(N_FEATURES,) if kind == "features" else (len(INERTIAL_SIGNALS), WINDOW_SAMPLES),
        class_names=names,
        metadata={
            "frontend": {
                "kind": kind,
                "window_samples": WINDOW_SAMPLES,
                "sample_rate_hz": 50,
                "signals": list(INERTIAL_SIGNALS) if kind == "windows" else None,
            },
            "axes": ["feature"] if kind == "features" else ["signal", "time"],
            "split": "the authors' subject split (train/test); subject_* = subject id",
        },
        **arrays,  # type: ignore[arg-type]
    )
    save_dataset(dataset, out, feature_dtype="float32", source=f"UCI HAR Dataset at {base.resolve()}")
    return {"train": int(arrays["y_train"].shape[0]), "test": int(arrays["y_test"].shape[0])}
