"""Small datasets shipped with the harness, in one HDF5 layout, loaded without pickle.

A dataset file holds a fixed train/test split of features in ``[0, 1]`` and integer labels:

- root attributes: ``format = "pcm-harness-dataset"``, ``format_version = 1``, ``name``,
  ``n_classes``, ``input_shape`` (int array, the shape of one sample), ``feature_levels``
  (int; features are stored as ``uint8`` level indices ``0 .. feature_levels`` and decoded as
  ``level / feature_levels``), ``source`` (free text provenance);
- datasets ``x_train``, ``x_test`` (``uint8``, ``(n, *input_shape)``), ``y_train``,
  ``y_test`` (``int64``, ``(n,)``).

The bundled ``"digits"`` set (8×8 handwritten digits, 1797 samples, 10 classes) is written
once by ``fixtures/build_models.py`` from scikit-learn's bundled copy of the UCI digits data;
the harness itself never imports scikit-learn.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import numpy.typing as npt

import harness
from harness.errors import ConfigError, ModelError
from harness.h5files import atomic_h5_file, one_line

DATASET_FORMAT = "pcm-harness-dataset"
DATASET_FORMAT_VERSION = 1

#: Bundled dataset names → file names inside :func:`fixtures_dir`.
BUNDLED_DATASETS: dict[str, str] = {"digits": "digits.h5"}

#: Largest number of feature levels a ``uint8`` level index can hold.
MAX_FEATURE_LEVELS = 255

_SPLITS = ("x_train", "y_train", "x_test", "y_test")


def fixtures_dir() -> Path:
    """The repository's ``fixtures/`` directory (shipped models, datasets, recordings)."""
    return Path(harness.__file__).resolve().parent.parent / "fixtures"


@dataclass(frozen=True, eq=False)
class Dataset:
    """A fixed train/test split.

    Attributes:
        x_train, x_test: ``float32`` features in ``[0, 1]``, shape ``(n, *input_shape)``.
        y_train, y_test: ``int64`` labels in ``[0, n_classes)``, shape ``(n,)``.
        name: the dataset's name (``"digits"``).
        n_classes: number of classes.
        input_shape: shape of one sample, e.g. ``(64,)``.

    The arrays are read-only; copy them before changing them.
    """

    x_train: npt.NDArray[np.float32]
    y_train: npt.NDArray[np.int64]
    x_test: npt.NDArray[np.float32]
    y_test: npt.NDArray[np.int64]
    name: str
    n_classes: int
    input_shape: tuple[int, ...]

    def __post_init__(self) -> None:
        _validate(self)
        for array in (self.x_train, self.y_train, self.x_test, self.y_test):
            array.setflags(write=False)


def _validate(ds: Dataset) -> None:
    for split in ("train", "test"):
        x = getattr(ds, f"x_{split}")
        y = getattr(ds, f"y_{split}")
        if x.dtype != np.float32 or y.dtype != np.int64:
            raise ConfigError(
                f"dataset {ds.name!r}: x_{split} must be float32 and y_{split} int64, "
                f"got {x.dtype} and {y.dtype}"
            )
        if x.shape[1:] != ds.input_shape or y.shape != (x.shape[0],):
            raise ConfigError(
                f"dataset {ds.name!r}: x_{split} has shape {x.shape} and y_{split} {y.shape}; "
                f"expected (n, *{ds.input_shape}) and (n,)"
            )
        if x.shape[0] == 0:
            raise ConfigError(f"dataset {ds.name!r}: the {split} split is empty")
        if not np.all(np.isfinite(x)) or x.min() < 0.0 or x.max() > 1.0:
            raise ConfigError(f"dataset {ds.name!r}: x_{split} has values outside [0, 1]")
        if y.min() < 0 or y.max() >= ds.n_classes:
            raise ConfigError(
                f"dataset {ds.name!r}: y_{split} has labels outside [0, {ds.n_classes})"
            )


def resolve_dataset_path(name_or_path: str | os.PathLike[str]) -> Path:
    """The file behind a bundled dataset name, or ``name_or_path`` itself when it is a path.

    Raises:
        ConfigError: a bare name that is not a bundled dataset.
    """
    text = os.fspath(name_or_path)
    if text in BUNDLED_DATASETS:
        return fixtures_dir() / BUNDLED_DATASETS[text]
    if os.sep in text or "/" in text or text.endswith((".h5", ".hdf5")):
        return Path(text)
    known = ", ".join(sorted(BUNDLED_DATASETS))
    raise ConfigError(
        f"unknown dataset {text!r}: bundled datasets are {known}; or give the path of an .h5 dataset file"
    )


def load_dataset(name_or_path: str | os.PathLike[str] = "digits") -> Dataset:
    """Load a bundled dataset by name (``"digits"``) or a dataset file by path.

    Returns:
        a :class:`Dataset` with ``float32`` features in ``[0, 1]`` and ``int64`` labels.

    Raises:
        ConfigError: an unknown bundled name.
        ModelError: the file is missing, not HDF5, truncated, of another format or version,
            or its contents are inconsistent. The message is one line naming the file.
    """
    path = resolve_dataset_path(name_or_path)
    if not path.is_file():
        raise ModelError(
            f"dataset file {path} does not exist; run `python fixtures/build_models.py` to rebuild it"
        )
    try:
        with h5py.File(path, "r") as f:
            return _read_dataset(f, path)
    except ModelError:
        raise
    except ConfigError as exc:
        raise ModelError(f"dataset file {path} is inconsistent: {one_line(exc)}") from exc
    except (OSError, KeyError, ValueError, TypeError, RuntimeError) as exc:
        raise ModelError(
            f"dataset file {path} is not a readable HDF5 dataset (corrupt or truncated?): {one_line(exc)}"
        ) from exc


def _read_dataset(f: h5py.File, path: Path) -> Dataset:
    fmt = _attr_str(f, "format", path)
    if fmt != DATASET_FORMAT:
        raise ModelError(f"{path} is not a pcm-harness dataset file (format={fmt!r})")
    version = _attr_int(f, "format_version", path)
    if version != DATASET_FORMAT_VERSION:
        raise ModelError(
            f"dataset file {path} has format_version {version}; this harness reads version "
            f"{DATASET_FORMAT_VERSION}"
        )
    name = _attr_str(f, "name", path)
    n_classes = _attr_int(f, "n_classes", path)
    levels = _attr_int(f, "feature_levels", path)
    if not 1 <= levels <= MAX_FEATURE_LEVELS or n_classes < 2:
        raise ModelError(f"dataset file {path}: feature_levels={levels} or n_classes={n_classes} is invalid")
    raw_shape = np.asarray(f.attrs.get("input_shape"))
    if raw_shape.dtype.kind not in "iu" or raw_shape.ndim != 1 or np.any(raw_shape <= 0):
        raise ModelError(f"dataset file {path}: attribute input_shape is not a list of positive ints")
    input_shape = tuple(int(v) for v in raw_shape)
    arrays: dict[str, np.ndarray] = {}
    for key in _SPLITS:
        node = f.get(key)
        if not isinstance(node, h5py.Dataset):
            raise ModelError(f"dataset file {path} has no dataset {key!r}")
        want_kind = "u" if key.startswith("x") else "iu"
        if node.dtype.kind not in want_kind:
            raise ModelError(f"dataset file {path}: {key} has dtype {node.dtype}, expected integers")
        arrays[key] = node[()]
    for key in ("x_train", "x_test"):
        if arrays[key].size and arrays[key].max() > levels:
            raise ModelError(f"dataset file {path}: {key} has levels above feature_levels={levels}")
        arrays[key] = arrays[key].astype(np.float32) / np.float32(levels)
    return Dataset(
        x_train=arrays["x_train"],
        y_train=arrays["y_train"].astype(np.int64),
        x_test=arrays["x_test"],
        y_test=arrays["y_test"].astype(np.int64),
        name=name,
        n_classes=n_classes,
        input_shape=input_shape,
    )


def save_dataset(
    dataset: Dataset, path: str | os.PathLike[str], *, feature_levels: int, source: str = ""
) -> None:
    """Write ``dataset`` to ``path`` (atomically: a temporary file, then ``os.replace``).

    Features are stored as ``uint8`` level indices, so every feature must be exactly
    ``k / feature_levels`` for an integer ``k`` (the digits pixels are ``k / 16``).

    Raises:
        ConfigError: ``feature_levels`` out of ``1..255`` or features not on that grid.
        ModelError: the file cannot be written.
    """
    if not 1 <= feature_levels <= MAX_FEATURE_LEVELS:
        raise ConfigError(f"feature_levels={feature_levels} is outside 1..{MAX_FEATURE_LEVELS}")
    encoded: dict[str, np.ndarray] = {}
    for key in ("x_train", "x_test"):
        x = getattr(dataset, key)
        levels = np.rint(x.astype(np.float64) * feature_levels)
        if not np.array_equal(levels / feature_levels, x.astype(np.float64)):
            raise ConfigError(f"{key} is not on a grid of {feature_levels} levels; cannot store it exactly")
        encoded[key] = levels.astype(np.uint8)
    with atomic_h5_file(path, what="dataset") as f:
        f.attrs["format"] = DATASET_FORMAT
        f.attrs["format_version"] = DATASET_FORMAT_VERSION
        f.attrs["name"] = dataset.name
        f.attrs["n_classes"] = dataset.n_classes
        f.attrs["input_shape"] = np.asarray(dataset.input_shape, dtype=np.int64)
        f.attrs["feature_levels"] = feature_levels
        f.attrs["source"] = source
        for key in _SPLITS:
            data = encoded[key] if key in encoded else getattr(dataset, key)
            # track_times=False: rebuilding the same data gives byte-identical files.
            f.create_dataset(key, data=data, compression="gzip", shuffle=True, track_times=False)


def _attr_str(f: h5py.File, key: str, path: Path) -> str:
    value = f.attrs.get(key)
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if not isinstance(value, str):
        raise ModelError(f"{path} is not a pcm-harness dataset file (attribute {key!r} missing or not text)")
    return value


def _attr_int(f: h5py.File, key: str, path: Path) -> int:
    value = f.attrs.get(key)
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value[()]
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | np.integer):
        raise ModelError(f"dataset file {path}: attribute {key!r} missing or not an integer")
    return int(value)

