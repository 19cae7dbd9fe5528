"""Model files: a network built from a small set of layer types, its weights and its DAC/ADC
ranges, in HDF5 (format version 2; version-1 files still load). See ``docs/models.md``.

Loading never unpickles anything: no ``torch.load``, no ``pickle``, no ``np.load(allow_pickle)``.
The file is plain HDF5 read through h5py, and every attribute and dataset is type- and
shape-checked against the architecture before it is used:

- root attributes: ``format = "pcm-harness-model"``, ``format_version = 2``, ``name``,
  ``architecture`` (JSON list of layer specs), ``input_shape`` (int array), ``n_classes``,
  ``dataset``, ``metadata`` (JSON object), optional ``unipolar_layers`` (JSON list of the
  analog layer paths deployed on single devices; absent: every layer differential);
- group ``weights/``: one float32 dataset per tensor, named like the torch state-dict key of
  :meth:`Model.to_torch` (``fc1.weight`` ``(out, in)``, ``conv1.weight`` ``(out, in/groups, *k)``,
  ``bn1.running_var`` ``(C,)``, ``block1.body.conv.weight``…);
- optional group ``ranges/<analog layer path>`` with float attributes ``dac_range``, ``adc_range``;
- format version 3 only: root attribute ``weight_levels`` (JSON object: analog layer path →
  ascending list of the values its weights take, e.g. ternary ``[-a, 0, a]``). A model with
  discrete weights is written as version 3 and every other model as version 2, byte-identical
  to before: a reader that predates levels refuses a version-3 file in one line (its
  ``format_version`` check) instead of deploying the weights as continuous.

The layer specs are described in :mod:`harness.models.spec`, the in-memory model in
:mod:`harness.models.model`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from harness.data import fixtures_dir
from harness.errors import ModelError
from harness.h5files import atomic_h5_file, one_line
from harness.models.model import LayerRanges, Model
from harness.models.spec import V1_LAYER_TYPES, analyse_architecture, positive_int_tuple

MODEL_FORMAT = "pcm-harness-model"
MODEL_FORMAT_VERSION = 2
#: The version of a model with discrete weight levels (``weight_levels``, issue 23).
LEVELS_FORMAT_VERSION = 3
#: Versions :func:`load_model` reads (version 1: the round-1 sequential format; 3: with levels).
READABLE_FORMAT_VERSIONS = (1, 2, 3)

DEFAULT_MODEL_FILE = "digits_mlp.h5"
NOISE_AWARE_MODEL_FILE = "digits_mlp_noise_aware.h5"


def default_model_path() -> Path:
    """The shipped plain digits MLP, ``fixtures/models/digits_mlp.h5``."""
    return fixtures_dir() / "models" / DEFAULT_MODEL_FILE


def noise_aware_model_path() -> Path:
    """The shipped noise-aware digits MLP, ``fixtures/models/digits_mlp_noise_aware.h5``."""
    return fixtures_dir() / "models" / NOISE_AWARE_MODEL_FILE


def save_model(model: Model, path: str | os.PathLike[str]) -> None:
    """Write ``model`` to ``path`` in the HDF5 layout of this module's docstring.

    Atomic: the file is written next to ``path`` under a temporary name and moved into
    place with ``os.replace``, so a reader never sees a half-written model.

    Raises:
        ModelError: the file cannot be written (directory missing, permissions…).
    """
    with atomic_h5_file(path, what="model") as f:
        f.attrs["format"] = MODEL_FORMAT
        f.attrs["format_version"] = LEVELS_FORMAT_VERSION if model.weight_levels else MODEL_FORMAT_VERSION
        f.attrs["name"] = model.name
        f.attrs["architecture"] = json.dumps(list(model.architecture))
        f.attrs["input_shape"] = np.asarray(model.input_shape, dtype=np.int64)
        f.attrs["n_classes"] = model.n_classes
        f.attrs["dataset"] = model.dataset
        f.attrs["metadata"] = json.dumps(model.metadata, sort_keys=True)
        if model.unipolar_layers:  # absent means all differential: older files stay byte-identical
            f.attrs["unipolar_layers"] = json.dumps(list(model.unipolar_layers))
        if model.weight_levels:
            f.attrs["weight_levels"] = json.dumps({k: list(v) for k, v in model.weight_levels.items()})
        group = f.create_group("weights", track_order=True)
        for key, value in model.weights().items():
            # track_times=False: saving the same model twice gives byte-identical files.
            group.create_dataset(key, data=value, track_times=False)
        if model.ranges:
            ranges = f.create_group("ranges", track_order=True)
            for name, layer_ranges in model.ranges.items():
                sub = ranges.create_group(name)
                sub.attrs["dac_range"] = float(layer_ranges.dac_range)
                sub.attrs["adc_range"] = float(layer_ranges.adc_range)


def load_model(path: str | os.PathLike[str]) -> Model:
    """Read a model file written by :func:`save_model`.

    Nothing in the file is executed or unpickled: attributes are read as text or numbers,
    JSON is parsed with ``json``, and each weight dataset's dtype and shape are checked
    against the architecture before it is read.

    Raises:
        ModelError: (one line, naming the file) the file is missing, not HDF5, truncated,
            of another format or format version, lacks a tensor, has a tensor of the wrong
            shape or dtype, holds non-finite weights, or has malformed attributes.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file {path} does not exist")
    try:
        with h5py.File(path, "r") as f:
            return _read_model(f, path)
    except ModelError as exc:
        message = str(exc)
        if str(path) not in message:
            message = f"model file {path}: {message}"
        raise ModelError(message) from exc
    except (OSError, KeyError, ValueError, TypeError, RuntimeError) as exc:
        raise ModelError(
            f"model file {path} is not a readable HDF5 model (corrupt or truncated?): {one_line(exc)}"
        ) from exc


def _read_model(f: h5py.File, path: Path) -> Model:
    fmt = _attr_str(f, "format")
    if fmt != MODEL_FORMAT:
        raise ModelError(f"{path} is not a pcm-harness model file (format={fmt!r})")
    version = _attr_int(f, "format_version")
    if version not in READABLE_FORMAT_VERSIONS:
        raise ModelError(
            f"model file {path} has format_version {version}; this harness reads versions "
            f"{', '.join(map(str, READABLE_FORMAT_VERSIONS))}"
        )
    architecture = _attr_json(f, "architecture")
    if not isinstance(architecture, list) or not all(isinstance(layer, dict) for layer in architecture):
        raise ModelError("attribute 'architecture' is not a JSON list of layer objects")
    if version == 1:
        newer = sorted({str(layer.get("type")) for layer in architecture} - V1_LAYER_TYPES)
        if newer:
            raise ModelError(f"format_version 1 has no layer type(s) {newer}; version 2 files do")
    metadata = _attr_json(f, "metadata")
    if not isinstance(metadata, dict):
        raise ModelError("attribute 'metadata' is not a JSON object")
    unipolar = _attr_json(f, "unipolar_layers") if "unipolar_layers" in f.attrs else []
    if not isinstance(unipolar, list) or not all(isinstance(n, str) for n in unipolar):
        raise ModelError("attribute 'unipolar_layers' is not a JSON list of layer names")
    if "weight_levels" in f.attrs and version < LEVELS_FORMAT_VERSION:
        raise ModelError(
            f"attribute 'weight_levels' needs format_version {LEVELS_FORMAT_VERSION}; the file says {version}"
        )
    weight_levels = _attr_json(f, "weight_levels") if "weight_levels" in f.attrs else {}
    if not isinstance(weight_levels, dict) or not all(isinstance(v, list) for v in weight_levels.values()):
        raise ModelError("attribute 'weight_levels' is not a JSON object of level lists")
    raw_shape = np.asarray(f.attrs.get("input_shape"))
    if raw_shape.dtype.kind not in "iu" or raw_shape.ndim != 1:
        raise ModelError("attribute 'input_shape' is not a list of ints")
    input_shape = positive_int_tuple(raw_shape.tolist(), "input_shape")
    n_classes = _attr_int(f, "n_classes")
    expected, _ = analyse_architecture(tuple(architecture), input_shape)
    group = f.get("weights")
    if not isinstance(group, h5py.Group):
        raise ModelError("group 'weights' is missing")
    weights: dict[str, np.ndarray] = {}
    for key, shape in expected.items():
        node = group.get(key)
        if not isinstance(node, h5py.Dataset):
            raise ModelError(f"tensor 'weights/{key}' is missing")
        if node.dtype.kind != "f":
            raise ModelError(f"tensor 'weights/{key}' has dtype {node.dtype}; expected float32")
        if node.shape != shape:
            raise ModelError(f"tensor 'weights/{key}' has shape {node.shape}; the architecture needs {shape}")
        weights[key] = node[()]
    extra = sorted(set(group) - set(expected))
    if extra:
        raise ModelError(f"group 'weights' holds tensors the architecture does not use: {extra}")
    ranges: dict[str, LayerRanges] = {}
    ranges_group = f.get("ranges")
    if ranges_group is not None:
        if not isinstance(ranges_group, h5py.Group):
            raise ModelError("'ranges' is not a group")
        for name in ranges_group:
            sub = ranges_group[name]
            ranges[name] = LayerRanges(
                dac_range=_attr_float(sub, "dac_range", f"ranges/{name}"),
                adc_range=_attr_float(sub, "adc_range", f"ranges/{name}"),
            )
    return Model(
        name=_attr_str(f, "name"),
        architecture=tuple(architecture),
        weights=weights,
        input_shape=input_shape,
        n_classes=n_classes,
        dataset=_attr_str(f, "dataset"),
        ranges=ranges,
        metadata=metadata,
        unipolar_layers=unipolar,
        path=path,
        weight_levels=weight_levels,
    )


def _attr_str(node: h5py.HLObject, key: str) -> str:
    value = node.attrs.get(key)
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            raise ModelError(f"attribute {key!r} is not UTF-8 text") from None
    if not isinstance(value, str):
        raise ModelError(f"attribute {key!r} is missing or not text; not a pcm-harness model file?")
    return value


def _attr_int(node: h5py.HLObject, key: str) -> int:
    value = node.attrs.get(key)
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value[()]
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | np.integer):
        raise ModelError(f"attribute {key!r} is missing or not an integer")
    return int(value)


def _attr_float(node: h5py.HLObject, key: str, where: str) -> float:
    value = node.attrs.get(key) if isinstance(node, h5py.Group) else None
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value[()]
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | float | np.integer | np.floating):
        raise ModelError(f"attribute '{where}/{key}' is missing or not a number")
    return float(value)


def _attr_json(node: h5py.HLObject, key: str) -> Any:
    text = _attr_str(node, key)
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ModelError(f"attribute {key!r} is not valid JSON: {one_line(exc)}") from exc
