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
- optional group ``ranges/<analog layer path>`` with float attributes ``dac_range``, ``adc_range``.

Layer specs (``architecture``), applied in order to one sample of shape ``input_shape``:
``linear``, ``conv1d`` / ``conv2d`` (stride, padding as numbers or ``"same"``, dilation,
groups), ``batchnorm`` (eval mode, digital), ``relu``, ``relu6``, ``flatten`` (``start_dim``), ``unflatten`` (``dim``, ``sizes``),
``avgpool1d`` / ``avgpool2d``, ``global_avgpool``, ``residual`` (``body`` added to its input)
and ``sequential`` (a named group). Linear and conv layers are *analog*: their weights go onto
the array as ``(out, fan_in)`` matrices (a grouped / depthwise conv in its dense block-diagonal
form); biases, batch norm, activations and pooling stay digital.
"""

from __future__ import annotations

import copy
import json
import math
import os
import re
from collections import OrderedDict
from collections.abc import Mapping, Sequence
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
MODEL_FORMAT_VERSION = 2
#: Versions :func:`load_model` reads (version 1: the round-1 sequential format).
READABLE_FORMAT_VERSIONS = (1, 2)

DEFAULT_MODEL_FILE = "digits_mlp.h5"
NOISE_AWARE_MODEL_FILE = "digits_mlp_noise_aware.h5"

#: Layer types whose weights go on the array.
ANALOG_LAYER_TYPES = ("linear", "conv1d", "conv2d")
#: Layer types a format-1 file may hold.
V1_LAYER_TYPES = frozenset({"linear", "conv2d", "relu", "flatten"})
#: Layer types that contain a body of layers.
CONTAINER_TYPES = ("residual", "sequential")

_CONV_REQUIRED = frozenset(
    {"type", "name", "in_channels", "out_channels", "kernel_size", "stride", "padding", "bias"}
)
# (required keys, optional keys) per layer type.
_LAYER_KEYS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "linear": (frozenset({"type", "name", "in_features", "out_features", "bias"}), frozenset()),
    "conv1d": (_CONV_REQUIRED, frozenset({"dilation", "groups"})),
    "conv2d": (_CONV_REQUIRED, frozenset({"dilation", "groups"})),
    "batchnorm": (frozenset({"type", "name", "num_features", "eps"}), frozenset()),
    "relu": (frozenset({"type"}), frozenset({"name"})),
    "relu6": (frozenset({"type"}), frozenset({"name"})),
    "flatten": (frozenset({"type"}), frozenset({"name", "start_dim"})),
    "avgpool1d": (frozenset({"type", "kernel_size", "stride", "padding"}), frozenset({"name"})),
    "avgpool2d": (frozenset({"type", "kernel_size", "stride", "padding"}), frozenset({"name"})),
    "global_avgpool": (frozenset({"type"}), frozenset({"name"})),
    "unflatten": (frozenset({"type", "dim", "sizes"}), frozenset({"name"})),
    "residual": (frozenset({"type", "name", "body"}), frozenset()),
    "sequential": (frozenset({"type", "name", "body"}), frozenset()),
}
_BN_TENSORS = ("weight", "bias", "running_mean", "running_var")
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

FloatArray32 = npt.NDArray[np.float32]


@dataclass(frozen=True)
class ConvGeometry:
    """A conv layer's geometry, normalized: one entry per spatial dimension.

    Attributes:
        kernel, stride, dilation: per spatial dimension (1 for conv1d, 2 for conv2d).
        padding: ``(before, after)`` zeros per spatial dimension (``"same"`` resolved the way
            torch does: ``d·(k−1)`` in total, the smaller half before).
        groups: channel groups (``in_channels`` for a depthwise conv).
    """

    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    padding: tuple[tuple[int, int], ...]
    groups: int

    def out_size(self, size: tuple[int, ...]) -> tuple[int, ...]:
        """Output spatial size for input spatial ``size``."""
        return tuple(
            (n + before + after - d * (k - 1) - 1) // s + 1
            for n, (before, after), k, s, d in zip(size, self.padding, self.kernel, self.stride, self.dilation)
        )


def conv_geometry(spec: Mapping[str, Any]) -> ConvGeometry:
    """The :class:`ConvGeometry` of a ``conv1d`` / ``conv2d`` layer spec (already validated)."""
    dims = 1 if spec["type"] == "conv1d" else 2
    kernel = _ints(spec["kernel_size"], dims, spec, "kernel_size")
    stride = _ints(spec["stride"], dims, spec, "stride")
    dilation = _ints(spec.get("dilation", 1), dims, spec, "dilation")
    if spec["padding"] == "same":
        totals = [d * (k - 1) for k, d in zip(kernel, dilation)]
        padding = tuple((t // 2, t - t // 2) for t in totals)
    else:
        padding = tuple((p, p) for p in _ints(spec["padding"], dims, spec, "padding", low=0))
    return ConvGeometry(kernel, stride, dilation, padding, int(spec.get("groups", 1)))


def dense_weight(weight: npt.NDArray[Any], groups: int) -> FloatArray32:
    """A conv kernel ``(out, in/groups, *k)`` as the dense ``(out, in·prod(k))`` array matrix.

    With ``groups > 1`` (grouped or depthwise conv) the matrix is block-diagonal: output ``o``
    of group ``g`` has non-zero entries only in the columns of its group's input channels
    (im2col order ``c·prod(k) + tap``, as ``torch.nn.Unfold``). This is the form in which a
    depthwise layer goes onto the array (AnalogNets §4.1, Fig. 3); a fraction ``1/groups`` of
    the block holds weights.
    """
    out = weight.shape[0]
    flat = np.asarray(weight, dtype=np.float32).reshape(out, -1)
    if groups == 1:
        return flat.copy()
    per_group = out // groups
    k = flat.shape[1]
    dense = np.zeros((groups, per_group, groups, k), dtype=np.float32)
    idx = np.arange(groups)
    dense[idx, :, idx, :] = flat.reshape(groups, per_group, k)
    return dense.reshape(out, groups * k)


@dataclass(frozen=True, eq=False)
class AnalogLayer:
    """One weight matrix placed on the array.

    Attributes:
        name: the layer's path in the architecture (``"fc1"``, ``"block2.body.conv"``).
        weight: ``float32 (out_features, fan_in)``; a conv kernel ``(out, in/groups, *k)`` is
            flattened to ``(out, in·prod(k))`` in the im2col order of ``torch.nn.Unfold``, a
            grouped (depthwise) kernel in its dense block-diagonal form (:func:`dense_weight`).
        bias: ``float32 (out_features,)`` or ``None``; biases stay digital.
        kind: ``"linear"``, ``"conv1d"`` or ``"conv2d"``.
        groups: channel groups of a conv (1 for a dense layer).
        n_mvms: matrix-vector products per inference (one per output position of a conv).
    """

    name: str
    weight: FloatArray32
    bias: FloatArray32 | None
    kind: str = "linear"
    groups: int = 1
    n_mvms: int = 1

    @property
    def utilization(self) -> float:
        """Fraction of the layer's array block that holds weights (``1/groups``)."""
        return 1.0 / self.groups

    @property
    def macs(self) -> int:
        """Multiply-accumulates per inference that the layer needs (the zeros of a
        block-diagonal expansion excluded): ``n_mvms · out · fan_in / groups``."""
        return self.n_mvms * self.weight.shape[0] * self.weight.shape[1] // self.groups

    @property
    def array_macs(self) -> int:
        """Multiply-accumulates per inference the array performs (dense block):
        ``n_mvms · out · fan_in``."""
        return self.n_mvms * self.weight.size


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


@dataclass(frozen=True)
class PlanStep:
    """One layer of a checked architecture with the sample shapes it sees.

    Attributes:
        path: the layer's dotted path (its torch module path; unnamed parameter-free layers
            get ``<type><index>``).
        spec: the layer spec (do not modify).
        in_shape, out_shape: one sample's shape before and after the layer.
        body: the steps of a ``residual`` / ``sequential`` body, else empty.
    """

    path: str
    spec: Mapping[str, Any]
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    body: tuple[PlanStep, ...] = ()


class Model:
    """An immutable network: architecture, float32 weights, converter ranges.

    Construct one with :func:`load_model`, :func:`from_torch` or the keyword constructor;
    every constructor validates the weights against the architecture (names, shapes,
    finiteness) and raises :class:`ModelError` when they disagree. Weights are stored as
    read-only copies; accessors return copies.

    Attributes (read-only):
        name: the model's name.
        path: the file it was loaded from, or ``None``.
        architecture: tuple of layer specs (JSON-able dicts; see ``docs/models.md``).
        input_shape: shape of one input sample, e.g. ``(64,)``.
        n_classes: number of output classes (the last layer's output size).
        dataset: the dataset it is evaluated on (``"digits"``).
        ranges: per analog layer path, its :class:`LayerRanges` (may be empty).
        metadata: JSON-able provenance (seed, epochs, noise eta, float test accuracy…).
        unipolar_layers: analog layer paths (in forward order) to deploy on one device per
            weight instead of a differential pair (:func:`harness.programming.mapping.map_model`); empty
            for an all-differential model. Their weights should be ``>= 0``: mapping refuses
            a negative one (``MappingError``), loading does not.
        plan: the checked architecture as :class:`PlanStep` s with shapes.
    """

    __slots__ = (
        "_architecture",
        "_dataset",
        "_input_shape",
        "_metadata",
        "_n_classes",
        "_name",
        "_path",
        "_plan",
        "_ranges",
        "_unipolar",
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
        unipolar_layers: Sequence[str] = (),
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
        expected, self._plan = _analyse(self._architecture, self._input_shape)
        out_shape = self._plan[-1].out_shape
        if out_shape != (self._n_classes,):
            raise ModelError(f"the network's output shape {out_shape} does not match n_classes={self._n_classes}")
        missing = sorted(set(expected) - set(weights))
        extra = sorted(set(weights) - set(expected))
        if missing or extra:
            raise ModelError(
                f"weights do not match the architecture: missing {missing or 'none'}, unexpected {extra or 'none'}"
            )
        self._weights = {key: _checked_tensor(key, weights[key], shape) for key, shape in expected.items()}
        for step in _walk(self._plan):
            if step.spec["type"] == "batchnorm" and np.any(self._weights[f"{step.path}.running_var"] < 0):
                raise ModelError(f"batch norm {step.path!r}: running_var has negative entries")
        self._ranges = _checked_ranges(ranges or {}, self._plan)
        self._metadata = _json_roundtrip(dict(metadata or {}), "metadata")
        self._unipolar = _checked_unipolar(unipolar_layers, self._plan)

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

    @property
    def unipolar_layers(self) -> tuple[str, ...]:
        return self._unipolar

    @property
    def plan(self) -> tuple[PlanStep, ...]:
        return self._plan

    # -- weights --------------------------------------------------------------------------
    def analog_layers(self) -> list[AnalogLayer]:
        """The linear and conv layers, in forward order, weights as dense ``(out, fan_in)`` copies."""
        layers = []
        for step in _walk(self._plan):
            kind = step.spec["type"]
            if kind not in ANALOG_LAYER_TYPES:
                continue
            weight = self._weights[f"{step.path}.weight"]
            bias = self._weights.get(f"{step.path}.bias")
            groups = int(step.spec.get("groups", 1)) if kind != "linear" else 1
            n_mvms = int(np.prod(step.out_shape[1:])) if kind != "linear" else 1
            layers.append(
                AnalogLayer(
                    name=step.path,
                    weight=dense_weight(weight, groups),
                    bias=None if bias is None else bias.copy(),
                    kind=kind,
                    groups=groups,
                    n_mvms=n_mvms,
                )
            )
        return layers

    def weights(self) -> dict[str, FloatArray32]:
        """Every tensor by state-dict key (``"fc1.weight"``, ``"bn1.running_var"``…), as writable copies."""
        return {key: value.copy() for key, value in self._weights.items()}

    def n_weights(self) -> int:
        """Number of analog weights (elements of all linear/conv weight tensors; biases excluded).

        A grouped conv counts its stored kernel, not the zeros of its dense expansion; see
        :meth:`n_array_weights` for the weights the array holds.
        """
        return sum(
            self._weights[f"{s.path}.weight"].size for s in _walk(self._plan) if s.spec["type"] in ANALOG_LAYER_TYPES
        )

    def n_array_weights(self) -> int:
        """Number of weights on the array (dense blocks): each is one differential pair."""
        return sum(layer.weight.size for layer in self.analog_layers())

    def n_parameters(self) -> int:
        """Number of all trainable parameters: analog weights, biases, batch-norm scale and shift
        (batch-norm running statistics are not counted)."""
        return sum(
            value.size
            for key, value in self._weights.items()
            if not key.endswith((".running_mean", ".running_var"))
        )

    def n_mvms(self) -> int:
        """Matrix-vector products on the array per inference."""
        return sum(layer.n_mvms for layer in self.analog_layers())

    def n_macs(self) -> int:
        """Multiply-accumulates of the analog layers per inference (see :attr:`AnalogLayer.macs`)."""
        return sum(layer.macs for layer in self.analog_layers())

    def with_weights(self, new: Mapping[str, npt.ArrayLike]) -> Model:
        """A copy with some or all tensors replaced (same architecture, ranges, metadata, unipolar layers).

        ``new`` maps state-dict keys to arrays of exactly the stored shapes (conv weights in
        their torch shape); keys not given keep their values. The caller's arrays are copied,
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
            unipolar_layers=self._unipolar,
        )

    def to_torch(self) -> nn.Sequential:
        """A float32 CPU ``torch.nn.Sequential`` in eval mode with these weights loaded.

        Its children are named after the layers (unnamed parameter-free layers as
        ``<type><i>``, ``i`` the position in their list), residual blocks are
        :class:`harness.models.layers.Residual`, so its ``state_dict()`` keys equal
        :meth:`weights` keys (plus batch norm's ``num_batches_tracked``). It takes a batch
        ``(n, *input_shape)``. Building it leaves torch's global RNG untouched.
        """
        net = _build_torch(self._plan)
        state = {key: torch.from_numpy(value.copy()) for key, value in self._weights.items()}
        result = net.load_state_dict(state, strict=False)
        if result.unexpected_keys or any(not k.endswith("num_batches_tracked") for k in result.missing_keys):
            raise ModelError(f"internal: state dict mismatch {result}")  # pragma: no cover
        return net.eval()

    def __repr__(self) -> str:
        layers = ", ".join(f"{a.name}{tuple(a.weight.shape)}" for a in self.analog_layers())
        return f"Model(name={self._name!r}, dataset={self._dataset!r}, layers=[{layers}])"


# -- architecture checks -------------------------------------------------------------------
def _walk(plan: tuple[PlanStep, ...]) -> list[PlanStep]:
    """Every step in forward order, containers before their bodies."""
    out: list[PlanStep] = []
    for step in plan:
        out.append(step)
        out.extend(_walk(step.body))
    return out


def iter_plan(plan: tuple[PlanStep, ...]) -> list[PlanStep]:
    """Every :class:`PlanStep` of ``plan`` in forward order (containers before their bodies)."""
    return _walk(plan)


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


def _ints(value: Any, dims: int, spec: Mapping[str, Any], key: str, *, low: int = 1) -> tuple[int, ...]:
    """An int or a list of ``dims`` ints, each ``>= low``, as a tuple of ``dims`` ints."""
    where = f"layer {spec.get('name', spec.get('type'))!r}"
    if isinstance(value, int | np.integer) and not isinstance(value, bool):
        items: tuple[Any, ...] = (int(value),) * dims
    elif isinstance(value, list | tuple) and len(value) == dims:
        items = tuple(value)
    else:
        raise ModelError(f"{where}: {key}={value!r} must be an int or a list of {dims} ints")
    if any(isinstance(v, bool) or not isinstance(v, int | np.integer) or v < low for v in items):
        raise ModelError(f"{where}: {key}={value!r} must be ints >= {low}")
    return tuple(int(v) for v in items)


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


def _positive_int(spec: Mapping[str, Any], key: str, *, allow_zero: bool = False) -> int:
    value = spec.get(key)
    low = 0 if allow_zero else 1
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise ModelError(f"layer {spec.get('name', spec.get('type'))!r}: {key}={value!r} must be an int >= {low}")
    return int(value)


def _analyse(
    architecture: tuple[dict[str, Any], ...], input_shape: tuple[int, ...]
) -> tuple[dict[str, tuple[int, ...]], tuple[PlanStep, ...]]:
    """Check the architecture (keys, names, shape chain): the tensor shapes it needs and its plan."""
    shapes: dict[str, tuple[int, ...]] = {}
    plan, _ = _analyse_list(architecture, input_shape, "", shapes, "architecture")
    if not any(s.spec["type"] in ANALOG_LAYER_TYPES for s in _walk(plan)):
        raise ModelError("architecture has no linear or conv layer")
    return shapes, plan


def _analyse_list(
    layers: Any, shape: tuple[int, ...], prefix: str, shapes: dict[str, tuple[int, ...]], where: str
) -> tuple[tuple[PlanStep, ...], tuple[int, ...]]:
    if not isinstance(layers, list | tuple) or not layers:
        raise ModelError(f"{where} is empty or not a list of layers")
    names: set[str] = set()
    steps = []
    for index, spec in enumerate(layers):
        if not isinstance(spec, dict):
            raise ModelError(f"{where}[{index}] is not a layer object")
        kind = spec.get("type")
        if kind not in _LAYER_KEYS:
            raise ModelError(f"{where}[{index}]: unknown type {kind!r}; known: {sorted(_LAYER_KEYS)}")
        required, optional = _LAYER_KEYS[kind]
        unknown = set(spec) - required - optional
        missing = required - set(spec)
        if unknown or missing:
            raise ModelError(
                f"{where}[{index}] ({kind}): unknown keys {sorted(unknown) or 'none'}, "
                f"missing keys {sorted(missing) or 'none'}"
            )
        name = spec.get("name", f"{kind}{index}")
        if not isinstance(name, str) or not _NAME_RE.match(name) or name in names:
            raise ModelError(f"{where}[{index}]: name {name!r} is not a unique identifier")
        names.add(name)
        path = prefix + name
        step = _analyse_layer(spec, kind, path, shape, shapes)
        steps.append(step)
        shape = step.out_shape
    return tuple(steps), shape


def _analyse_layer(
    spec: dict[str, Any], kind: str, path: str, shape: tuple[int, ...], shapes: dict[str, tuple[int, ...]]
) -> PlanStep:
    where = f"layer {path!r}"
    body: tuple[PlanStep, ...] = ()
    if kind in ANALOG_LAYER_TYPES and not isinstance(spec["bias"], bool):
        raise ModelError(f"{where}: bias must be true or false, got {spec['bias']!r}")
    if kind == "linear":
        fan_in = _positive_int(spec, "in_features")
        out = _positive_int(spec, "out_features")
        if shape != (fan_in,):
            raise ModelError(f"{where} expects input ({fan_in},) but receives {shape}")
        shapes[f"{path}.weight"] = (out, fan_in)
        out_shape: tuple[int, ...] = (out,)
    elif kind in ("conv1d", "conv2d"):
        dims = 1 if kind == "conv1d" else 2
        c_in = _positive_int(spec, "in_channels")
        c_out = _positive_int(spec, "out_channels")
        groups = _positive_int(spec, "groups") if "groups" in spec else 1
        if c_in % groups or c_out % groups:
            raise ModelError(f"{where}: groups={groups} must divide in_channels={c_in} and out_channels={c_out}")
        if spec["padding"] == "same" and any(s != 1 for s in _ints(spec["stride"], dims, spec, "stride")):
            raise ModelError(f"{where}: padding 'same' needs stride 1")
        geometry = conv_geometry(spec)
        if len(shape) != dims + 1 or shape[0] != c_in:
            pattern = "(C, L)" if dims == 1 else "(C, H, W)"
            raise ModelError(f"{where} expects input {pattern} with C={c_in} but receives {shape}")
        size = geometry.out_size(shape[1:])
        if min(size) < 1:
            raise ModelError(f"{where}: kernel {geometry.kernel} does not fit input {shape}")
        shapes[f"{path}.weight"] = (c_out, c_in // groups, *geometry.kernel)
        out_shape = (c_out, *size)
    elif kind == "batchnorm":
        features = _positive_int(spec, "num_features")
        eps = spec["eps"]
        if isinstance(eps, bool) or not isinstance(eps, int | float) or not (math.isfinite(eps) and eps > 0):
            raise ModelError(f"{where}: eps={eps!r} must be a number > 0")
        if not 1 <= len(shape) <= 3 or shape[0] != features:
            raise ModelError(f"{where} expects input with {features} channels first but receives {shape}")
        for tensor in _BN_TENSORS:
            shapes[f"{path}.{tensor}"] = (features,)
        out_shape = shape
    elif kind in ("relu", "relu6"):
        out_shape = shape
    elif kind == "flatten":
        start = spec.get("start_dim", 1)
        if isinstance(start, bool) or not isinstance(start, int) or not 1 <= start <= len(shape):
            raise ModelError(f"{where}: start_dim={start!r} must be an int in 1..{len(shape)} for input {shape}")
        out_shape = shape[: start - 1] + (int(np.prod(shape[start - 1 :])),)
    elif kind in ("avgpool1d", "avgpool2d"):
        dims = 1 if kind == "avgpool1d" else 2
        kernel = _ints(spec["kernel_size"], dims, spec, "kernel_size")
        stride = _ints(spec["stride"], dims, spec, "stride")
        padding = _ints(spec["padding"], dims, spec, "padding", low=0)
        if any(2 * p > k for p, k in zip(padding, kernel)):
            raise ModelError(f"{where}: padding {padding} must be at most half the kernel {kernel}")
        if len(shape) != dims + 1:
            raise ModelError(f"{where} expects a {dims}-D input with channels but receives {shape}")
        size = tuple((n + 2 * p - k) // s + 1 for n, p, k, s in zip(shape[1:], padding, kernel, stride))
        if min(size) < 1:
            raise ModelError(f"{where}: kernel {kernel} does not fit input {shape}")
        out_shape = (shape[0], *size)
    elif kind == "unflatten":
        dim, sizes = spec["dim"], spec["sizes"]
        if isinstance(dim, bool) or not isinstance(dim, int) or not 1 <= dim <= len(shape):
            raise ModelError(f"{where}: dim={dim!r} must be an int in 1..{len(shape)} for input {shape}")
        sizes_t = _positive_int_tuple(sizes if isinstance(sizes, list | tuple) else [sizes], f"{where}: sizes")
        if int(np.prod(sizes_t)) != shape[dim - 1]:
            raise ModelError(f"{where}: sizes {list(sizes_t)} do not multiply to {shape[dim - 1]} (input {shape})")
        out_shape = shape[: dim - 1] + sizes_t + shape[dim:]
    elif kind == "global_avgpool":
        if len(shape) not in (2, 3):
            raise ModelError(f"{where} expects (C, L) or (C, H, W) but receives {shape}")
        out_shape = (shape[0],) + (1,) * (len(shape) - 1)
    else:  # residual, sequential
        body, out_shape = _analyse_list(spec["body"], shape, f"{path}.{'body.' if kind == 'residual' else ''}",
                                        shapes, f"{where} body")
        if kind == "residual" and out_shape != shape:
            raise ModelError(
                f"residual block {path!r}: its body's output {out_shape} does not add to its input {shape}"
            )
    if kind in ANALOG_LAYER_TYPES and spec["bias"]:
        shapes[f"{path}.bias"] = (shapes[f"{path}.weight"][0],)
    return PlanStep(path=path, spec=spec, in_shape=shape, out_shape=out_shape, body=body)


def _build_torch(plan: tuple[PlanStep, ...]) -> nn.Sequential:
    from harness.models.layers import Residual

    modules: OrderedDict[str, nn.Module] = OrderedDict()
    for step in plan:
        spec = step.spec
        kind = spec["type"]
        module: nn.Module
        # skip_init: no random init (the weights are loaded afterwards), so building the
        # network leaves the caller's global torch RNG untouched.
        if kind == "linear":
            module = skip_init(nn.Linear, spec["in_features"], spec["out_features"], bias=spec["bias"])
        elif kind in ("conv1d", "conv2d"):
            cls = nn.Conv1d if kind == "conv1d" else nn.Conv2d
            g = conv_geometry(spec)
            padding: Any = "same" if spec["padding"] == "same" else tuple(p for p, _ in g.padding)
            module = skip_init(
                cls, spec["in_channels"], spec["out_channels"], kernel_size=g.kernel, stride=g.stride,
                padding=padding, dilation=g.dilation, groups=g.groups, bias=spec["bias"],
            )
        elif kind == "batchnorm":
            bn = nn.BatchNorm1d if len(step.in_shape) < 3 else nn.BatchNorm2d
            module = bn(spec["num_features"], eps=float(spec["eps"]))
        elif kind == "relu":
            module = nn.ReLU()
        elif kind == "relu6":
            module = nn.ReLU6()
        elif kind == "flatten":
            module = nn.Flatten(start_dim=spec.get("start_dim", 1))
        elif kind == "unflatten":
            module = nn.Unflatten(spec["dim"], tuple(spec["sizes"]))
        elif kind == "avgpool1d":
            module = nn.AvgPool1d(spec["kernel_size"], spec["stride"], spec["padding"])
        elif kind == "avgpool2d":
            module = nn.AvgPool2d(_pair(spec["kernel_size"]), _pair(spec["stride"]), _pair(spec["padding"]))
        elif kind == "global_avgpool":
            module = nn.AdaptiveAvgPool1d(1) if len(step.in_shape) == 2 else nn.AdaptiveAvgPool2d(1)
        elif kind == "residual":
            module = Residual(_build_torch(step.body))
        else:
            module = _build_torch(step.body)
        modules[step.path.rsplit(".", 1)[-1]] = module
    return nn.Sequential(modules)


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


def _checked_ranges(ranges: Mapping[str, LayerRanges], plan: tuple[PlanStep, ...]) -> dict[str, LayerRanges]:
    analog = {step.path for step in _walk(plan) if step.spec["type"] in ANALOG_LAYER_TYPES}
    out: dict[str, LayerRanges] = {}
    for name, value in ranges.items():
        if name not in analog:
            raise ModelError(f"ranges given for {name!r}, which is not an analog layer; analog: {sorted(analog)}")
        if not isinstance(value, LayerRanges):
            raise ModelError(f"ranges[{name!r}] must be a LayerRanges, got {type(value).__name__}")
        out[name] = value
    return out


def _checked_unipolar(names: Any, plan: tuple[PlanStep, ...]) -> tuple[str, ...]:
    """``names`` as analog layer paths in forward order; ModelError for anything else."""
    if isinstance(names, str) or not isinstance(names, Sequence | frozenset | set):
        raise ModelError(f"unipolar_layers must be a list of analog layer names, got {names!r:.60}")
    analog = [s.path for s in _walk(plan) if s.spec["type"] in ANALOG_LAYER_TYPES]
    wanted = list(names)
    unknown = [n for n in wanted if not isinstance(n, str) or n not in analog]
    if unknown:
        raise ModelError(f"unipolar_layers {unknown!r:.80} are not analog layers of the model; analog layers: {analog}")
    return tuple(n for n in analog if n in set(wanted))


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
        if model.unipolar_layers:  # absent means all differential: older files stay byte-identical
            f.attrs["unipolar_layers"] = json.dumps(list(model.unipolar_layers))
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
    raw_shape = np.asarray(f.attrs.get("input_shape"))
    if raw_shape.dtype.kind not in "iu" or raw_shape.ndim != 1:
        raise ModelError("attribute 'input_shape' is not a list of ints")
    input_shape = _positive_int_tuple(raw_shape.tolist(), "input_shape")
    n_classes = _attr_int(f, "n_classes")
    expected, _ = _analyse(tuple(architecture), input_shape)
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
_PREFIXES = {"linear": "fc", "conv1d": "conv", "conv2d": "conv", "batchnorm": "bn", "residual": "res", "sequential": "seq"}


def from_torch(
    module: nn.Module,
    input_shape: tuple[int, ...],
    *,
    name: str = "model",
    n_classes: int | None = None,
    dataset: str = "unspecified",
    ranges: Mapping[str, LayerRanges] | None = None,
    metadata: Mapping[str, Any] | None = None,
    unipolar_layers: Sequence[str] = (),
) -> Model:
    """Capture a ``torch.nn.Sequential`` built from the format's layer types as a :class:`Model`.

    Supported children (nested ``Sequential`` and :class:`harness.models.layers.Residual`
    included): ``Linear``, ``Conv1d``, ``Conv2d`` (stride, numeric or ``"same"``/``"valid"``
    padding, dilation, groups; zero padding mode), ``BatchNorm1d``/``2d`` (affine, with running
    statistics), ``ReLU``, ``ReLU6``, ``Flatten`` (``end_dim=-1``), ``Unflatten``, ``AvgPool1d``/``2d``
    (``ceil_mode=False``, ``count_include_pad=True``), ``AdaptiveAvgPool1d``/``2d`` with output
    size 1 (global average pool). Subclasses of these count as them (their weights are taken).

    Layer names are the child names when they are identifiers (an ``OrderedDict``-built
    Sequential), else ``fc<k>`` / ``conv<k>`` (``k`` counting analog layers from 1), ``bn<k>``,
    ``res<k>``, ``seq<k>``. ``n_classes`` defaults to the output size. Weights are copied to
    float32; the module is not changed.

    Raises:
        ModelError: a module that is not a Sequential, a child of another type or with
            unsupported options, a residual body whose output does not add to its input, or
            weights that do not fit ``input_shape`` / ``n_classes``.
    """
    if not isinstance(module, nn.Sequential):
        raise ModelError(f"from_torch needs a torch.nn.Sequential, got {type(module).__name__}")
    weights: dict[str, np.ndarray] = {}
    counters: dict[str, int] = {}
    architecture = _capture(module, "", weights, counters)
    if n_classes is None:
        _, plan = _analyse(tuple(architecture), _positive_int_tuple(input_shape, "input_shape"))
        out = plan[-1].out_shape
        if len(out) != 1:
            raise ModelError(f"the network's output per sample has shape {out}; it must be a vector of class scores")
        n_classes = out[0]
    return Model(
        name=name,
        architecture=tuple(architecture),
        weights=weights,
        input_shape=tuple(input_shape),
        n_classes=n_classes,
        dataset=dataset,
        ranges=ranges,
        metadata=metadata,
        unipolar_layers=unipolar_layers,
    )


def model_from_torch(
    module: nn.Module,
    *,
    name: str,
    input_shape: tuple[int, ...],
    n_classes: int,
    dataset: str,
    ranges: Mapping[str, LayerRanges] | None = None,
    metadata: Mapping[str, Any] | None = None,
    unipolar_layers: Sequence[str] = (),
) -> Model:
    """:func:`from_torch` with every argument by keyword (the round-1 signature)."""
    return from_torch(
        module, input_shape, name=name, n_classes=n_classes, dataset=dataset, ranges=ranges, metadata=metadata,
        unipolar_layers=unipolar_layers,
    )


def _capture(
    container: nn.Module, prefix: str, weights: dict[str, np.ndarray], counters: dict[str, int]
) -> list[dict[str, Any]]:
    from harness.models.layers import Residual

    architecture: list[dict[str, Any]] = []
    for child_name, child in container.named_children():
        spec = _capture_layer(child, child_name, Residual)
        kind = spec["type"]
        if kind in _PREFIXES:
            counter = "analog" if kind in ANALOG_LAYER_TYPES else kind
            counters[counter] = counters.get(counter, 0) + 1
            spec["name"] = child_name if _NAME_RE.match(child_name) else f"{_PREFIXES[kind]}{counters[counter]}"
        elif _NAME_RE.match(child_name):
            spec["name"] = child_name
        path = prefix + spec.get("name", "")
        if kind in ANALOG_LAYER_TYPES:
            weights[f"{path}.weight"] = _tensor(getattr(child, "weight", None))
            if getattr(child, "bias", None) is not None:
                weights[f"{path}.bias"] = _tensor(getattr(child, "bias", None))
        elif kind == "batchnorm":
            for tensor in _BN_TENSORS:
                weights[f"{path}.{tensor}"] = _tensor(getattr(child, tensor))
        elif kind == "residual":
            body = child.body
            if not isinstance(body, nn.Sequential):
                raise ModelError(f"residual block {child_name!r}: its body must be a torch.nn.Sequential")
            spec["body"] = _capture(body, f"{path}.body.", weights, counters)
        elif kind == "sequential":
            spec["body"] = _capture(child, f"{path}.", weights, counters)
        architecture.append(spec)
    return architecture


def _tensor(value: Any) -> np.ndarray:
    if not isinstance(value, torch.Tensor):
        raise ModelError("batch norm without affine parameters or running statistics is not supported")
    return value.detach().cpu().numpy().astype(np.float32)


def _capture_layer(child: nn.Module, child_name: str, residual: type) -> dict[str, Any]:
    where = f"layer {child_name!r}"
    if isinstance(child, nn.Linear):
        return {
            "type": "linear",
            "in_features": child.in_features,
            "out_features": child.out_features,
            "bias": child.bias is not None,
        }
    if isinstance(child, nn.Conv1d | nn.Conv2d):
        if child.padding_mode != "zeros":
            raise ModelError(f"{where}: padding mode {child.padding_mode!r} is not supported (zeros only)")
        if isinstance(child, nn.ConvTranspose1d | nn.ConvTranspose2d):
            raise ModelError(f"{where}: transposed convolutions are not supported")
        one_d = isinstance(child, nn.Conv1d)
        padding: Any = child.padding
        if padding == "valid":
            padding = 0
        elif padding != "same":
            padding = int(padding[0]) if one_d else [int(p) for p in padding]

        def size(value: tuple[int, ...]) -> Any:
            return int(value[0]) if one_d else [int(v) for v in value]

        return {
            "type": "conv1d" if one_d else "conv2d",
            "in_channels": child.in_channels,
            "out_channels": child.out_channels,
            "kernel_size": size(child.kernel_size),
            "stride": size(child.stride),
            "padding": padding,
            "dilation": size(child.dilation),
            "groups": child.groups,
            "bias": child.bias is not None,
        }
    if isinstance(child, nn.BatchNorm1d | nn.BatchNorm2d):
        if not child.affine or not child.track_running_stats:
            raise ModelError(f"{where}: batch norm needs affine=True and track_running_stats=True")
        return {"type": "batchnorm", "num_features": child.num_features, "eps": float(child.eps)}
    if type(child) is nn.ReLU:
        return {"type": "relu"}
    if type(child) is nn.ReLU6:
        return {"type": "relu6"}
    if isinstance(child, nn.Flatten):
        if child.end_dim != -1 or child.start_dim < 1:
            raise ModelError(f"{where}: only Flatten(start_dim >= 1, end_dim=-1) is supported")
        return {"type": "flatten", "start_dim": child.start_dim} if child.start_dim != 1 else {"type": "flatten"}
    if isinstance(child, nn.Unflatten):
        sizes = child.unflattened_size
        if not isinstance(child.dim, int) or child.dim < 1 or not all(isinstance(v, int) for v in sizes):
            raise ModelError(f"{where}: only Unflatten(dim >= 1, sizes as ints) is supported")
        return {"type": "unflatten", "dim": child.dim, "sizes": [int(v) for v in sizes]}
    if isinstance(child, nn.AvgPool1d | nn.AvgPool2d):
        if child.ceil_mode or not child.count_include_pad or getattr(child, "divisor_override", None):
            raise ModelError(f"{where}: average pooling needs ceil_mode=False, count_include_pad=True, no divisor_override")
        one_d = isinstance(child, nn.AvgPool1d)

        def pool(value: Any) -> Any:
            items = (value,) if isinstance(value, int) else tuple(value)
            return int(items[0]) if one_d else list(_pair(items[0] if len(items) == 1 else list(items)))

        return {
            "type": "avgpool1d" if one_d else "avgpool2d",
            "kernel_size": pool(child.kernel_size),
            "stride": pool(child.stride),
            "padding": pool(child.padding),
        }
    if isinstance(child, nn.AdaptiveAvgPool1d | nn.AdaptiveAvgPool2d):
        size_out: Any = child.output_size
        items = (size_out,) if isinstance(size_out, int) else tuple(size_out)
        if any(v != 1 for v in items):
            raise ModelError(f"{where}: adaptive average pooling is supported with output size 1 only (global pool)")
        return {"type": "global_avgpool"}
    if isinstance(child, residual):
        return {"type": "residual"}
    if type(child) is nn.Sequential:
        return {"type": "sequential"}
    raise ModelError(
        f"{where} is a {type(child).__name__}; supported: Linear, Conv1d, Conv2d, BatchNorm1d/2d, ReLU, ReLU6, "
        "Flatten, Unflatten, AvgPool1d/2d, AdaptiveAvgPool1d/2d(1), Residual, Sequential"
    )
