"""Model files: a small sequential network, its weights and its DAC/ADC ranges, in HDF5.

Loading never unpickles anything: no ``torch.load``, no ``pickle``, no ``np.load(allow_pickle)``.
The file is plain HDF5 read through h5py, and every attribute and dataset is type- and
shape-checked against the architecture before it is used (see ``docs/models.md``):

- root attributes: ``format = "pcm-harness-model"``, ``format_version = 1``, ``name``,
  ``architecture`` (JSON list of layer specs), ``input_shape`` (int array), ``n_classes``,
  ``dataset``, ``metadata`` (JSON object);
- group ``weights/``: one float32 dataset per tensor, named like the torch state-dict key
  (``fc1.weight`` ``(out, in)``, ``fc1.bias`` ``(out,)``, ``conv1.weight`` ``(out, in, kh, kw)``);
- optional group ``ranges/<layer>`` with float attributes ``dac_range`` and ``adc_range``.

Layer specs (``architecture``), applied in order to one sample of shape ``input_shape``:

- ``{"type": "linear", "name", "in_features", "out_features", "bias": bool}``
- ``{"type": "conv2d", "name", "in_channels", "out_channels", "kernel_size", "stride",
  "padding", "bias": bool}`` (sizes an int or a pair ``[h, w]``; input ``(C, H, W)``)
- ``{"type": "relu"}``, ``{"type": "flatten"}`` (an optional ``"name"`` each)

Linear and conv layers are *analog*: their weights go onto the array; biases stay digital.
"""

from __future__ import annotations

import copy
import json
import math
import os
import re
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import numpy.typing as npt
import torch
from torch import nn
from torch.nn.utils import skip_init

from harness.data import fixtures_dir
from harness.errors import ModelError
from harness.h5files import atomic_h5_file, one_line

MODEL_FORMAT = "pcm-harness-model"
MODEL_FORMAT_VERSION = 1

DEFAULT_MODEL_FILE = "digits_mlp.h5"
NOISE_AWARE_MODEL_FILE = "digits_mlp_noise_aware.h5"

ANALOG_LAYER_TYPES = ("linear", "conv2d")
_LAYER_KEYS: dict[str, frozenset[str]] = {
    "linear": frozenset({"type", "name", "in_features", "out_features", "bias"}),
    "conv2d": frozenset(
        {"type", "name", "in_channels", "out_channels", "kernel_size", "stride", "padding", "bias"}
    ),
    "relu": frozenset({"type", "name"}),
    "flatten": frozenset({"type", "name"}),
}
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

FloatArray32 = npt.NDArray[np.float32]


@dataclass(frozen=True, eq=False)
class AnalogLayer:
    """One weight matrix placed on the array.

    Attributes:
        name: the layer's name in the architecture (``"fc1"``).
        weight: ``float32 (out_features, fan_in)``; a conv kernel ``(out, in, kh, kw)`` is
            flattened to ``(out, in*kh*kw)`` (the im2col order of ``torch.nn.Unfold``).
        bias: ``float32 (out_features,)`` or ``None``; biases stay digital.
    """

    name: str
    weight: FloatArray32
    bias: FloatArray32 | None


@dataclass(frozen=True)
class LayerRanges:
    """Calibrated converter ranges of one analog layer, in the model's float units.

    Attributes:
        dac_range: largest ``|input|`` the DAC covers for this layer's input (> 0).
        adc_range: largest ``|W·x|`` (pre-bias MVM result) the ADC covers (> 0).
    """

    dac_range: float
    adc_range: float

    def __post_init__(self) -> None:
        for key in ("dac_range", "adc_range"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int | float) or not (
                math.isfinite(value) and value > 0.0
            ):
                raise ModelError(f"LayerRanges.{key}={value!r} must be a finite number > 0")


class Model:
    """An immutable sequential network: architecture, float32 weights, converter ranges.

    Construct one with :func:`load_model`, :func:`model_from_torch` or the keyword
    constructor; every constructor validates the weights against the architecture
    (names, shapes, finiteness) and raises :class:`ModelError` when they disagree.
    Weights are stored as read-only copies; accessors return copies.

    Attributes (read-only):
        name: the model's name.
        path: the file it was loaded from, or ``None``.
        architecture: tuple of layer specs (JSON-able dicts; see the module docstring).
        input_shape: shape of one input sample, e.g. ``(64,)``.
        n_classes: number of output classes (the last layer's output size).
        dataset: the bundled dataset it is evaluated on (``"digits"``).
        ranges: per analog layer name, its :class:`LayerRanges` (may be empty).
        metadata: JSON-able provenance (seed, epochs, noise eta, float test accuracy…).
    """

    __slots__ = (
        "_architecture",
        "_dataset",
        "_input_shape",
        "_metadata",
        "_n_classes",
        "_name",
        "_path",
        "_ranges",
        "_weights",
    )

    def __init__(
        self,
        *,
        name: str,
        architecture: tuple[dict[str, Any], ...] | list[dict[str, Any]],
        weights: Mapping[str, npt.ArrayLike],
        input_shape: tuple[int, ...],
        n_classes: int,
        dataset: str,
        ranges: Mapping[str, LayerRanges] | None = None,
        metadata: Mapping[str, Any] | None = None,
        path: str | os.PathLike[str] | None = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ModelError(f"model name must be a non-empty string, got {name!r}")
        if not isinstance(dataset, str) or not dataset:
            raise ModelError(f"model dataset must be a non-empty string, got {dataset!r}")
        self._name = name
        self._dataset = dataset
        self._path = None if path is None else Path(path)
        self._architecture = tuple(copy.deepcopy(dict(layer)) for layer in architecture)
        self._input_shape = _positive_int_tuple(input_shape, "input_shape")
        if isinstance(n_classes, bool) or not isinstance(n_classes, int | np.integer) or n_classes < 2:
            raise ModelError(f"n_classes must be an integer >= 2, got {n_classes!r}")
        self._n_classes = int(n_classes)
        expected = _expected_weight_shapes(self._architecture, self._input_shape, self._n_classes)
        missing = sorted(set(expected) - set(weights))
        extra = sorted(set(weights) - set(expected))
        if missing or extra:
            raise ModelError(
                f"weights do not match the architecture: missing {missing or 'none'}, unexpected {extra or 'none'}"
            )
        self._weights = {key: _checked_tensor(key, weights[key], shape) for key, shape in expected.items()}
        self._ranges = _checked_ranges(ranges or {}, self._architecture)
        self._metadata = _json_roundtrip(dict(metadata or {}), "metadata")

    # -- read-only attributes -------------------------------------------------------------
    @property
    def name(self) -> str:
        return self._name

    @property
    def path(self) -> Path | None:
        return self._path

    @property
    def architecture(self) -> tuple[dict[str, Any], ...]:
        return tuple(copy.deepcopy(layer) for layer in self._architecture)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self._input_shape

    @property
    def n_classes(self) -> int:
        return self._n_classes

    @property
    def dataset(self) -> str:
        return self._dataset

    @property
    def ranges(self) -> dict[str, LayerRanges]:
        return dict(self._ranges)

    @property
    def metadata(self) -> dict[str, Any]:
        return copy.deepcopy(self._metadata)

    # -- weights --------------------------------------------------------------------------
    def analog_layers(self) -> list[AnalogLayer]:
        """The linear and conv layers, in forward order, weights as ``(out, fan_in)`` copies."""
        layers = []
        for spec in self._architecture:
            if spec["type"] not in ANALOG_LAYER_TYPES:
                continue
            weight = self._weights[f"{spec['name']}.weight"]
            bias = self._weights.get(f"{spec['name']}.bias")
            layers.append(
                AnalogLayer(
                    name=spec["name"],
                    weight=weight.reshape(weight.shape[0], -1).copy(),
                    bias=None if bias is None else bias.copy(),
                )
            )
        return layers

    def weights(self) -> dict[str, FloatArray32]:
        """Every tensor by state-dict key (``"fc1.weight"``, ``"fc1.bias"``…), as writable copies."""
        return {key: value.copy() for key, value in self._weights.items()}

    def n_weights(self) -> int:
        """Number of analog weights (elements of all linear/conv weight tensors; biases excluded).

        Each analog weight occupies one differential pair, i.e. two devices, on the array.
        """
        return sum(layer.weight.size for layer in self.analog_layers())

    def n_parameters(self) -> int:
        """Number of all parameters, analog weights and digital biases."""
        return sum(value.size for value in self._weights.values())

    def with_weights(self, new: Mapping[str, npt.ArrayLike]) -> Model:
        """A copy with some or all tensors replaced (same architecture, ranges, metadata).

        ``new`` maps state-dict keys to arrays of exactly the stored shapes (conv weights in
        their 4-D shape); keys not given keep their values. The caller's arrays are copied,
        never changed. The result has ``path=None``. Ranges are kept as they are: they were
        calibrated for the original weights.

        Raises:
            ModelError: an unknown key, a shape mismatch, or a non-finite value.
        """
        unknown = sorted(set(new) - set(self._weights))
        if unknown:
            raise ModelError(f"with_weights: unknown tensor(s) {unknown}; known: {sorted(self._weights)}")
        merged: dict[str, npt.ArrayLike] = dict(self._weights)
        merged.update(new)
        return Model(
            name=self._name,
            architecture=self._architecture,
            weights=merged,
            input_shape=self._input_shape,
            n_classes=self._n_classes,
            dataset=self._dataset,
            ranges=self._ranges,
            metadata=self._metadata,
        )

    def to_torch(self) -> nn.Sequential:
        """A float32 CPU ``torch.nn.Sequential`` in eval mode with these weights loaded.

        Its children are named after the layers (unnamed ReLU/Flatten as ``relu<i>`` /
        ``flatten<i>``, ``i`` the position in the architecture), so its ``state_dict()``
        keys equal :meth:`weights` keys. It takes a batch ``(n, *input_shape)``.
        """
        modules: OrderedDict[str, nn.Module] = OrderedDict()
        for index, spec in enumerate(self._architecture):
            kind = spec["type"]
            module: nn.Module
            if kind == "linear":
                # skip_init: no random init (the weights are loaded below), so building the
                # network leaves the caller's global torch RNG untouched.
                module = skip_init(nn.Linear, spec["in_features"], spec["out_features"], bias=spec["bias"])
            elif kind == "conv2d":
                module = skip_init(
                    nn.Conv2d,
                    spec["in_channels"],
                    spec["out_channels"],
                    kernel_size=_pair(spec["kernel_size"]),
                    stride=_pair(spec["stride"]),
                    padding=_pair(spec["padding"]),
                    bias=spec["bias"],
                )
            elif kind == "relu":
                module = nn.ReLU()
            else:
                module = nn.Flatten()
            modules[_module_name(spec, index)] = module
        net = nn.Sequential(modules)
        state = {key: torch.from_numpy(value.copy()) for key, value in self._weights.items()}
        net.load_state_dict(state, strict=True)
        return net.eval()

    def __repr__(self) -> str:
        layers = ", ".join(
            f"{s['name']}{tuple(self._weights[s['name'] + '.weight'].shape)}"
            for s in self._architecture
            if s["type"] in ANALOG_LAYER_TYPES
        )
        return f"Model(name={self._name!r}, dataset={self._dataset!r}, layers=[{layers}])"


# -- architecture checks -------------------------------------------------------------------
def _pair(value: Any) -> tuple[int, int]:
    if isinstance(value, bool):
        raise ModelError(f"expected an int or a pair of ints, got {value!r}")
    if isinstance(value, int | np.integer):
        return (int(value), int(value))
    if isinstance(value, list | tuple) and len(value) == 2 and all(
        isinstance(v, int | np.integer) and not isinstance(v, bool) for v in value
    ):
        return (int(value[0]), int(value[1]))
    raise ModelError(f"expected an int or a pair of ints, got {value!r}")


def _positive_int_tuple(value: Any, what: str) -> tuple[int, ...]:
    try:
        items = tuple(value)
    except TypeError:
        raise ModelError(f"{what} must be a sequence of positive ints, got {value!r}") from None
    if not items or any(
        isinstance(v, bool) or not isinstance(v, int | np.integer) or v <= 0 for v in items
    ):
        raise ModelError(f"{what} must be a non-empty sequence of positive ints, got {value!r}")
    return tuple(int(v) for v in items)


def _module_name(spec: Mapping[str, Any], index: int) -> str:
    return str(spec.get("name") or f"{spec['type']}{index}")


def _positive_int(spec: Mapping[str, Any], key: str, *, allow_zero: bool = False) -> int:
    value = spec.get(key)
    low = 0 if allow_zero else 1
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise ModelError(f"layer {spec.get('name', spec.get('type'))!r}: {key}={value!r} must be an int >= {low}")
    return int(value)


def _expected_weight_shapes(
    architecture: tuple[dict[str, Any], ...], input_shape: tuple[int, ...], n_classes: int
) -> dict[str, tuple[int, ...]]:
    """Check the architecture (keys, names, shape chain) and return the tensor shapes it needs."""
    if not architecture:
        raise ModelError("architecture is empty")
    shapes: dict[str, tuple[int, ...]] = {}
    names: set[str] = set()
    shape = input_shape
    for index, spec in enumerate(architecture):
        kind = spec.get("type")
        if kind not in _LAYER_KEYS:
            raise ModelError(f"layer {index}: unknown type {kind!r}; known: {sorted(_LAYER_KEYS)}")
        unknown = set(spec) - _LAYER_KEYS[kind]
        missing = (_LAYER_KEYS[kind] - {"name"} if kind in ("relu", "flatten") else _LAYER_KEYS[kind]) - set(spec)
        if unknown or missing:
            raise ModelError(
                f"layer {index} ({kind}): unknown keys {sorted(unknown) or 'none'}, missing keys {sorted(missing) or 'none'}"
            )
        name = _module_name(spec, index)
        if not _NAME_RE.match(name) or name in names:
            raise ModelError(f"layer {index}: name {name!r} is not a unique identifier")
        names.add(name)
        if kind in ANALOG_LAYER_TYPES and not isinstance(spec["bias"], bool):
            raise ModelError(f"layer {name!r}: bias must be true or false, got {spec['bias']!r}")
        if kind == "linear":
            fan_in = _positive_int(spec, "in_features")
            out = _positive_int(spec, "out_features")
            if shape != (fan_in,):
                raise ModelError(f"layer {name!r} expects input ({fan_in},) but receives {shape}")
            shapes[f"{name}.weight"] = (out, fan_in)
            shape = (out,)
        elif kind == "conv2d":
            c_in = _positive_int(spec, "in_channels")
            c_out = _positive_int(spec, "out_channels")
            kh, kw = _pair(spec["kernel_size"])
            sh, sw = _pair(spec["stride"])
            ph, pw = _pair(spec["padding"])
            if min(kh, kw, sh, sw) < 1 or min(ph, pw) < 0:
                raise ModelError(f"layer {name!r}: kernel/stride must be >= 1 and padding >= 0")
            if len(shape) != 3 or shape[0] != c_in:
                raise ModelError(f"layer {name!r} expects input ({c_in}, H, W) but receives {shape}")
            h_out = (shape[1] + 2 * ph - kh) // sh + 1
            w_out = (shape[2] + 2 * pw - kw) // sw + 1
            if h_out < 1 or w_out < 1:
                raise ModelError(f"layer {name!r}: kernel {kh}x{kw} does not fit input {shape}")
            shapes[f"{name}.weight"] = (c_out, c_in, kh, kw)
            shape = (c_out, h_out, w_out)
        elif kind == "flatten":
            shape = (int(np.prod(shape)),)
        if kind in ANALOG_LAYER_TYPES and spec["bias"]:
            shapes[f"{name}.bias"] = (shapes[f"{name}.weight"][0],)
    if shape != (n_classes,):
        raise ModelError(f"the network's output shape {shape} does not match n_classes={n_classes}")
    if not any(spec["type"] in ANALOG_LAYER_TYPES for spec in architecture):
        raise ModelError("architecture has no linear or conv2d layer")
    return shapes


def _checked_tensor(key: str, value: npt.ArrayLike, shape: tuple[int, ...]) -> FloatArray32:
    array = np.asarray(value)
    if array.dtype.kind not in "fiu":
        raise ModelError(f"tensor {key!r} has dtype {array.dtype}; expected float32")
    if array.shape != shape:
        raise ModelError(f"tensor {key!r} has shape {array.shape}; the architecture needs {shape}")
    out = np.array(array, dtype=np.float32, copy=True)
    if not np.all(np.isfinite(out)):
        raise ModelError(f"tensor {key!r} contains non-finite values (NaN or inf)")
    out.setflags(write=False)
    return out


def _checked_ranges(
    ranges: Mapping[str, LayerRanges], architecture: tuple[dict[str, Any], ...]
) -> dict[str, LayerRanges]:
    analog = {spec["name"] for spec in architecture if spec["type"] in ANALOG_LAYER_TYPES}
    out: dict[str, LayerRanges] = {}
    for name, value in ranges.items():
        if name not in analog:
            raise ModelError(f"ranges given for {name!r}, which is not an analog layer; analog: {sorted(analog)}")
        if not isinstance(value, LayerRanges):
            raise ModelError(f"ranges[{name!r}] must be a LayerRanges, got {type(value).__name__}")
        out[name] = value
    return out


def _json_roundtrip(value: Any, what: str) -> Any:
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise ModelError(f"{what} is not JSON-able: {one_line(exc)}") from exc


# -- files ---------------------------------------------------------------------------------
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
        f.attrs["format_version"] = MODEL_FORMAT_VERSION
        f.attrs["name"] = model.name
        f.attrs["architecture"] = json.dumps(list(model.architecture))
        f.attrs["input_shape"] = np.asarray(model.input_shape, dtype=np.int64)
        f.attrs["n_classes"] = model.n_classes
        f.attrs["dataset"] = model.dataset
        f.attrs["metadata"] = json.dumps(model.metadata, sort_keys=True)
        group = f.create_group("weights", track_order=True)
        for key, value in model.weights().items():
            # track_times=False: saving the same model twice gives byte-identical files.
            group.create_dataset(key, data=value, track_times=False)
        if model.ranges:
            ranges = f.create_group("ranges", track_order=True)
            for name, value in model.ranges.items():
                sub = ranges.create_group(name)
                sub.attrs["dac_range"] = float(value.dac_range)
                sub.attrs["adc_range"] = float(value.adc_range)


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
    if version != MODEL_FORMAT_VERSION:
        raise ModelError(
            f"model file {path} has format_version {version}; this harness reads version {MODEL_FORMAT_VERSION}"
        )
    architecture = _attr_json(f, "architecture")
    if not isinstance(architecture, list) or not all(isinstance(layer, dict) for layer in architecture):
        raise ModelError("attribute 'architecture' is not a JSON list of layer objects")
    metadata = _attr_json(f, "metadata")
    if not isinstance(metadata, dict):
        raise ModelError("attribute 'metadata' is not a JSON object")
    raw_shape = np.asarray(f.attrs.get("input_shape"))
    if raw_shape.dtype.kind not in "iu" or raw_shape.ndim != 1:
        raise ModelError("attribute 'input_shape' is not a list of ints")
    input_shape = _positive_int_tuple(raw_shape.tolist(), "input_shape")
    n_classes = _attr_int(f, "n_classes")
    expected = _expected_weight_shapes(tuple(architecture), input_shape, n_classes)
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
        path=path,
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


# -- torch ---------------------------------------------------------------------------------
def model_from_torch(
    module: nn.Module,
    *,
    name: str,
    input_shape: tuple[int, ...],
    n_classes: int,
    dataset: str,
    ranges: Mapping[str, LayerRanges] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Model:
    """Capture a ``torch.nn.Sequential`` of Linear, Conv2d, ReLU and Flatten as a :class:`Model`.

    Layer names are the Sequential's child names when they are identifiers (an
    ``OrderedDict``-built Sequential), else ``fc<k>`` / ``conv<k>`` (``k`` counting analog
    layers from 1). Weights are copied to float32; the module is not changed.

    Raises:
        ModelError: a module that is not a Sequential, a child of another type (fold
            batch-norm into the preceding layer first), a Conv2d with groups, dilation or
            non-zero padding mode, a Flatten other than ``Flatten(1, -1)``, or weights
            that do not fit ``input_shape`` / ``n_classes``.
    """
    if not isinstance(module, nn.Sequential):
        raise ModelError(f"model_from_torch needs a torch.nn.Sequential, got {type(module).__name__}")
    architecture: list[dict[str, Any]] = []
    weights: dict[str, np.ndarray] = {}
    n_analog = 0
    for child_name, child in module.named_children():
        named = bool(_NAME_RE.match(child_name))
        if isinstance(child, nn.Linear | nn.Conv2d):
            n_analog += 1
            prefix = "fc" if isinstance(child, nn.Linear) else "conv"
            layer_name = child_name if named else f"{prefix}{n_analog}"
            if isinstance(child, nn.Linear):
                spec: dict[str, Any] = {
                    "type": "linear",
                    "name": layer_name,
                    "in_features": child.in_features,
                    "out_features": child.out_features,
                    "bias": child.bias is not None,
                }
            else:
                if child.groups != 1 or tuple(child.dilation) != (1, 1) or child.padding_mode != "zeros":
                    raise ModelError(f"conv layer {child_name!r}: groups, dilation and padding modes are not supported")
                if isinstance(child.padding, str):
                    raise ModelError(f"conv layer {child_name!r}: give padding as numbers, not {child.padding!r}")
                spec = {
                    "type": "conv2d",
                    "name": layer_name,
                    "in_channels": child.in_channels,
                    "out_channels": child.out_channels,
                    "kernel_size": list(child.kernel_size),
                    "stride": list(child.stride),
                    "padding": list(child.padding),
                    "bias": child.bias is not None,
                }
            weights[f"{layer_name}.weight"] = child.weight.detach().cpu().numpy().astype(np.float32)
            if child.bias is not None:
                weights[f"{layer_name}.bias"] = child.bias.detach().cpu().numpy().astype(np.float32)
            architecture.append(spec)
        elif isinstance(child, nn.ReLU):
            architecture.append({"type": "relu", "name": child_name} if named else {"type": "relu"})
        elif isinstance(child, nn.Flatten):
            if (child.start_dim, child.end_dim) != (1, -1):
                raise ModelError(f"flatten layer {child_name!r}: only Flatten(1, -1) is supported")
            architecture.append({"type": "flatten", "name": child_name} if named else {"type": "flatten"})
        else:
            raise ModelError(
                f"layer {child_name!r} is a {type(child).__name__}; supported: Linear, Conv2d, ReLU, Flatten"
            )
    return Model(
        name=name,
        architecture=tuple(architecture),
        weights=weights,
        input_shape=tuple(input_shape),
        n_classes=n_classes,
        dataset=dataset,
        ranges=ranges,
        metadata=metadata,
    )
