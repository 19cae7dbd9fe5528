"""The harness's dataset file: one HDF5 layout for every dataset, read without pickle.

Format 2 (``docs/data.md``; files of format 1 still load):

- root attributes: ``format = "pcm-harness-dataset"``, ``format_version = 2``, ``name``,
  ``n_classes``, ``input_shape`` (int array, one sample's shape, e.g. ``[49, 10]``),
  ``class_names`` (text array, ``n_classes`` entries, may be empty), ``source`` (free text
  provenance), ``metadata`` (JSON object: front-end parameters, axes, split rule, …) and
  ``feature_encoding``:

  * ``"levels"``: features stored as ``uint8`` level indices ``0 .. feature_levels`` (root
    attribute ``feature_levels``) and decoded as ``level / feature_levels`` (format 1's only
    encoding; the digits pixels are ``k / 16``);
  * ``"float16"`` / ``"float32"``: features stored as that float type, loaded as ``float32``
    (MFCCs are not in ``[0, 1]``).

- per split ``s`` in ``train``, ``val`` (optional) and ``test``: ``x_s`` ``(n, *input_shape)``,
  ``y_s`` (integers, ``(n,)``) and optionally ``subject_s`` (int ``(n,)``: the speaker or person
  each sample came from, so that a split can be checked to be subject-disjoint).

Format 1 is the same without ``class_names``, ``metadata``, ``feature_encoding`` (always
levels), ``val`` and ``subject_*``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import numpy.typing as npt

import harness
from harness.errors import ConfigError, DatasetError, ModelError
from harness.h5files import atomic_h5_file, one_line

DATASET_FORMAT = "pcm-harness-dataset"
DATASET_FORMAT_VERSION = 2
_READABLE_VERSIONS = (1, 2)

#: Bundled dataset names → file names inside :func:`fixtures_dir`.
BUNDLED_DATASETS: dict[str, str] = {"digits": "digits.h5", "kws": "kws.h5"}

#: How each bundled dataset is rebuilt (named in the "missing file" error).
_REBUILD_HINT: dict[str, str] = {
    "digits": "python fixtures/build_models.py",
    "kws": "python fixtures/build_kws_dataset.py",
}

#: Largest number of feature levels a ``uint8`` level index can hold.
MAX_FEATURE_LEVELS = 255

FEATURE_ENCODINGS = ("levels", "float16", "float32")
SPLITS = ("train", "val", "test")


def fixtures_dir() -> Path:
    """The repository's ``fixtures/`` directory (shipped models, datasets, recordings)."""
    return Path(harness.__file__).resolve().parent.parent / "fixtures"


@dataclass(frozen=True, eq=False)
class Dataset:
    """A fixed train / (validation) / test split of one kind of sample.

    Attributes:
        x_train, x_val, x_test: ``float32`` features, shape ``(n, *input_shape)``, finite.
            ``x_val`` / ``y_val`` are ``None`` when the dataset has no validation split.
        y_train, y_val, y_test: ``int64`` labels in ``[0, n_classes)``, shape ``(n,)``.
        name: the dataset's name (``"digits"``, ``"kws"``).
        n_classes: number of classes.
        input_shape: shape of one sample, e.g. ``(64,)`` or ``(49, 10)``.
        class_names: ``n_classes`` names in label order, or ``()`` when unnamed.
        metadata: JSON-able facts about the data (front-end parameters, axes, split rule).
        subject_train, subject_val, subject_test: optional ``int64`` ``(n,)`` speaker / person
            ids (``None`` when unknown).

    The arrays are read-only; copy them before changing them.
    """

    x_train: npt.NDArray[np.float32]
    y_train: npt.NDArray[np.int64]
    x_test: npt.NDArray[np.float32]
    y_test: npt.NDArray[np.int64]
    name: str
    n_classes: int
    input_shape: tuple[int, ...]
    x_val: npt.NDArray[np.float32] | None = None
    y_val: npt.NDArray[np.int64] | None = None
    class_names: tuple[str, ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)
    subject_train: npt.NDArray[np.int64] | None = None
    subject_val: npt.NDArray[np.int64] | None = None
    subject_test: npt.NDArray[np.int64] | None = None

    def __post_init__(self) -> None:
        _validate(self)
        for split in SPLITS:
            for kind in ("x", "y", "subject"):
                array = getattr(self, f"{kind}_{split}")
                if array is not None:
                    array.setflags(write=False)

    def splits(self) -> tuple[str, ...]:
        """The splits present, in order (``("train", "test")`` or ``("train", "val", "test")``)."""
        return tuple(s for s in SPLITS if getattr(self, f"x_{s}") is not None)

    def split(self, split: str) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """``(x, y)`` of one split.

        Raises:
            ConfigError: an unknown split or ``"val"`` on a dataset without one.
        """
        if split not in self.splits():
            raise ConfigError(f"dataset {self.name!r} has no {split!r} split; it has {', '.join(self.splits())}")
        x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
        return x, y


def _validate(ds: Dataset) -> None:
    if (ds.x_val is None) != (ds.y_val is None):
        raise ConfigError(f"dataset {ds.name!r}: give both x_val and y_val or neither")
    if ds.class_names and len(ds.class_names) != ds.n_classes:
        raise ConfigError(
            f"dataset {ds.name!r}: {len(ds.class_names)} class names for {ds.n_classes} classes"
        )
    try:
        json.dumps(dict(ds.metadata))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"dataset {ds.name!r}: metadata is not JSON-able: {one_line(exc)}") from exc
    for split in ds.splits():
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
        if not np.all(np.isfinite(x)):
            raise ConfigError(f"dataset {ds.name!r}: x_{split} has non-finite values")
        if y.min() < 0 or y.max() >= ds.n_classes:
            raise ConfigError(
                f"dataset {ds.name!r}: y_{split} has labels outside [0, {ds.n_classes})"
            )
        subject = getattr(ds, f"subject_{split}")
        if subject is not None and (subject.dtype != np.int64 or subject.shape != y.shape):
            raise ConfigError(
                f"dataset {ds.name!r}: subject_{split} must be int64 of shape {y.shape}, "
                f"got {subject.dtype} {subject.shape}"
            )
    for split in SPLITS:
        if getattr(ds, f"x_{split}") is None and getattr(ds, f"subject_{split}") is not None:
            raise ConfigError(f"dataset {ds.name!r}: subject_{split} given without a {split} split")


def check_dataset_fits(
    dataset: Dataset, *, input_shape: tuple[int, ...], n_classes: int, model_name: str
) -> None:
    """Check that ``dataset`` fits a model taking ``input_shape`` samples into ``n_classes``
    outputs: the one check wherever a dataset meets a model (training, evaluation).

    Raises:
        DatasetError: one line naming both shapes (or class counts) and what to do.
    """
    if tuple(dataset.input_shape) != tuple(input_shape):
        raise DatasetError(
            f"dataset {dataset.name!r} has samples of shape {_shape_text(dataset.input_shape)} but model "
            f"{model_name!r} takes inputs of shape {_shape_text(input_shape)}; use a dataset made for this "
            "model (e.g. 1x49x10 MFCCs for the KWS models) or a model built for this data"
        )
    if dataset.n_classes != n_classes:
        raise DatasetError(
            f"dataset {dataset.name!r} has {dataset.n_classes} classes but model {model_name!r} has "
            f"{n_classes} outputs"
        )


def _shape_text(shape: tuple[int, ...]) -> str:
    return "x".join(str(int(v)) for v in shape)


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
    """Load a bundled dataset by name (``"digits"``, ``"kws"``) or a dataset file by path.

    Returns:
        a :class:`Dataset` with ``float32`` features and ``int64`` labels.

    Raises:
        ConfigError: an unknown bundled name.
        DatasetError: the file is missing, not HDF5, truncated, of another format or version,
            or its contents are inconsistent. The message is one line naming the file.
    """
    path = resolve_dataset_path(name_or_path)
    if not path.is_file():
        hint = _REBUILD_HINT.get(os.fspath(name_or_path))
        what = f"; run `{hint}` to rebuild it" if hint else ""
        raise DatasetError(f"dataset file {path} does not exist{what}")
    with open(path, "rb") as head:
        if head.read(8) != b"\x89HDF\r\n\x1a\n":  # the HDF5 signature (at offset 0 in every file we write)
            raise DatasetError(
                f"{path} is not a dataset: it is not an HDF5 file (datasets are .h5 files written by "
                "'harness data kws|vww|har', or a bundled name: " + ", ".join(sorted(BUNDLED_DATASETS)) + ")"
            )
    try:
        with h5py.File(path, "r") as f:
            return _read_dataset(f, path)
    except ModelError:
        raise
    except ConfigError as exc:
        raise DatasetError(f"dataset file {path} is inconsistent: {one_line(exc)}") from exc
    except (OSError, KeyError, ValueError, TypeError, RuntimeError) as exc:
        raise DatasetError(
            f"dataset file {path} is not a readable HDF5 dataset (corrupt or truncated?): {one_line(exc)}"
        ) from exc


def _read_dataset(f: h5py.File, path: Path) -> Dataset:
    fmt = _attr_str(f, "format", path)
    if fmt != DATASET_FORMAT:
        raise DatasetError(f"{path} is not a pcm-harness dataset file (format={fmt!r})")
    version = _attr_int(f, "format_version", path)
    if version not in _READABLE_VERSIONS:
        raise DatasetError(
            f"dataset file {path} has format_version {version}; this harness reads versions "
            f"{', '.join(map(str, _READABLE_VERSIONS))}"
        )
    name = _attr_str(f, "name", path)
    n_classes = _attr_int(f, "n_classes", path)
    if n_classes < 2:
        raise DatasetError(f"dataset file {path}: n_classes={n_classes} is invalid")
    raw_shape = np.asarray(f.attrs.get("input_shape"))
    if raw_shape.dtype.kind not in "iu" or raw_shape.ndim != 1 or np.any(raw_shape <= 0):
        raise DatasetError(f"dataset file {path}: attribute input_shape is not a list of positive ints")
    input_shape = tuple(int(v) for v in raw_shape)
    encoding = "levels" if version == 1 else _attr_str(f, "feature_encoding", path)
    if encoding not in FEATURE_ENCODINGS:
        raise DatasetError(
            f"dataset file {path}: feature_encoding {encoding!r} is not one of {', '.join(FEATURE_ENCODINGS)}"
        )
    levels = _attr_int(f, "feature_levels", path) if encoding == "levels" else 0
    if encoding == "levels" and not 1 <= levels <= MAX_FEATURE_LEVELS:
        raise DatasetError(f"dataset file {path}: feature_levels={levels} is invalid")
    class_names: tuple[str, ...] = ()
    metadata: dict[str, Any] = {}
    if version >= 2:
        class_names = _attr_str_list(f, "class_names", path)
        try:
            metadata = json.loads(_attr_str(f, "metadata", path))
        except json.JSONDecodeError as exc:
            raise DatasetError(f"dataset file {path}: attribute 'metadata' is not JSON: {one_line(exc)}") from exc
        if not isinstance(metadata, dict):
            raise DatasetError(f"dataset file {path}: attribute 'metadata' is not a JSON object")
    arrays: dict[str, np.ndarray | None] = {}
    for split in SPLITS:
        for kind in ("x", "y", "subject"):
            key = f"{kind}_{split}"
            node = f.get(key)
            # val and subject_* are optional (format 2 only); train and test are required.
            if node is None and (kind == "subject" or split == "val"):
                arrays[key] = None
                continue
            if not isinstance(node, h5py.Dataset):
                raise DatasetError(f"dataset file {path} has no dataset {key!r}")
            arrays[key] = _read_array(node, kind, encoding, levels, path, key)
    if (arrays["x_val"] is None) != (arrays["y_val"] is None):
        raise DatasetError(f"dataset file {path} has only one of x_val and y_val")
    return Dataset(
        x_train=arrays["x_train"],  # type: ignore[arg-type]
        y_train=arrays["y_train"],  # type: ignore[arg-type]
        x_val=arrays["x_val"],
        y_val=arrays["y_val"],
        x_test=arrays["x_test"],  # type: ignore[arg-type]
        y_test=arrays["y_test"],  # type: ignore[arg-type]
        name=name,
        n_classes=n_classes,
        input_shape=input_shape,
        class_names=class_names,
        metadata=metadata,
        subject_train=arrays["subject_train"],
        subject_val=arrays["subject_val"],
        subject_test=arrays["subject_test"],
    )


def _read_array(node: h5py.Dataset, kind: str, encoding: str, levels: int, path: Path, key: str) -> np.ndarray:
    if kind != "x":
        if node.dtype.kind not in "iu":
            raise DatasetError(f"dataset file {path}: {key} has dtype {node.dtype}, expected integers")
        return np.asarray(node[()]).astype(np.int64)
    if encoding == "levels":
        if node.dtype != np.uint8:
            raise DatasetError(f"dataset file {path}: {key} has dtype {node.dtype}, expected uint8 levels")
        raw = node[()]
        if raw.size and raw.max() > levels:
            raise DatasetError(f"dataset file {path}: {key} has levels above feature_levels={levels}")
        return raw.astype(np.float32) / np.float32(levels)
    if node.dtype != np.dtype(encoding):
        raise DatasetError(f"dataset file {path}: {key} has dtype {node.dtype}, expected {encoding}")
    return np.asarray(node[()]).astype(np.float32)


def save_dataset(
    dataset: Dataset,
    path: str | os.PathLike[str],
    *,
    feature_levels: int | None = None,
    feature_dtype: str = "float32",
    source: str = "",
) -> None:
    """Write ``dataset`` to ``path`` in format 2 (atomically: a temporary file, then ``os.replace``).

    With ``feature_levels`` the features are stored as ``uint8`` level indices, so every
    feature must be exactly ``k / feature_levels`` for an integer ``k``. Without it they are
    stored as ``feature_dtype`` (``"float16"`` or ``"float32"``), and every feature must be
    exactly representable in that type (round with ``x.astype(np.float16).astype(np.float32)``
    first): nothing is rounded silently. Datasets are written with ``track_times=False`` and
    fixed gzip settings, so the same data gives byte-identical files.

    Raises:
        ConfigError: ``feature_levels`` out of ``1..255``, an unknown ``feature_dtype``, or
            features not exactly storable.
        ModelError: the file cannot be written.
    """
    if feature_levels is not None:
        if not 1 <= feature_levels <= MAX_FEATURE_LEVELS:
            raise ConfigError(f"feature_levels={feature_levels} is outside 1..{MAX_FEATURE_LEVELS}")
        encoding = "levels"
    elif feature_dtype in ("float16", "float32"):
        encoding = feature_dtype
    else:
        raise ConfigError(f"feature_dtype {feature_dtype!r} is not float16 or float32")
    encoded: dict[str, np.ndarray] = {}
    for split in dataset.splits():
        key = f"x_{split}"
        x = getattr(dataset, key)
        if feature_levels is not None:
            level = np.rint(x.astype(np.float64) * feature_levels)
            # exact when reading decodes it back to the same float32 (``level / levels`` in float32)
            if not np.array_equal(level.astype(np.float32) / np.float32(feature_levels), x):
                raise ConfigError(f"{key} is not on a grid of {feature_levels} levels; cannot store it exactly")
            encoded[key] = level.astype(np.uint8)
        else:
            stored = x.astype(encoding)
            if not np.array_equal(stored.astype(np.float32), x):
                raise ConfigError(f"{key} is not exactly representable as {encoding}; round it first")
            encoded[key] = stored
    with atomic_h5_file(path, what="dataset") as f:
        f.attrs["format"] = DATASET_FORMAT
        f.attrs["format_version"] = DATASET_FORMAT_VERSION
        f.attrs["name"] = dataset.name
        f.attrs["n_classes"] = dataset.n_classes
        f.attrs["input_shape"] = np.asarray(dataset.input_shape, dtype=np.int64)
        f.attrs["class_names"] = np.asarray(dataset.class_names, dtype=h5py.string_dtype())
        f.attrs["feature_encoding"] = encoding
        if feature_levels is not None:
            f.attrs["feature_levels"] = feature_levels
        f.attrs["source"] = source
        f.attrs["metadata"] = json.dumps(dict(dataset.metadata), sort_keys=True)
        for split in dataset.splits():
            for kind in ("x", "y", "subject"):
                key = f"{kind}_{split}"
                data = encoded[key] if kind == "x" else getattr(dataset, key)
                if data is None:
                    continue
                # track_times=False: rebuilding the same data gives byte-identical files.
                f.create_dataset(key, data=data, compression="gzip", shuffle=True, track_times=False)


def _attr_str(f: h5py.File, key: str, path: Path) -> str:
    value = f.attrs.get(key)
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if not isinstance(value, str):
        raise DatasetError(f"{path} is not a pcm-harness dataset file (attribute {key!r} missing or not text)")
    return value


def _attr_str_list(f: h5py.File, key: str, path: Path) -> tuple[str, ...]:
    value = f.attrs.get(key)
    if value is None:
        raise DatasetError(f"dataset file {path}: attribute {key!r} missing")
    array = np.asarray(value)
    if array.ndim != 1 or array.dtype.kind not in "OSU":
        raise DatasetError(f"dataset file {path}: attribute {key!r} is not a list of text")
    return tuple(v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in array.tolist())


def _attr_int(f: h5py.File, key: str, path: Path) -> int:
    value = f.attrs.get(key)
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value[()]
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | np.integer):
        raise DatasetError(f"dataset file {path}: attribute {key!r} missing or not an integer")
    return int(value)
