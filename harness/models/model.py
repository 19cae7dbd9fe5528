"""The in-memory model: an immutable network of checked layer specs, float32 weights and DAC/ADC
ranges, and the analog layers it places on the array. Files: :mod:`harness.models.format`;
torch: :mod:`harness.models.torch_convert`. See ``docs/models.md``.
"""

from __future__ import annotations

import copy
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from harness.errors import ModelError
from harness.h5files import one_line
from harness.models.spec import ANALOG_LAYER_TYPES, PlanStep, analyse_architecture, iter_plan, positive_int_tuple
from harness.models.torch_build import build_torch

FloatArray32 = npt.NDArray[np.float32]


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


class Model:
    """An immutable network: architecture, float32 weights, converter ranges.

    Construct one with :func:`~harness.models.format.load_model`,
    :func:`~harness.models.torch_convert.from_torch` or the keyword constructor;
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
        weight_levels: per analog layer path, the discrete set of values its weights take
            (ascending floats, in weight units; e.g. ternary ``(-a, 0, a)``), written by
            ``harness train --weight-levels N``; mapping programs exactly these levels. Empty:
            continuous weights. Every weight of such a layer must be one of its levels, and a
            unipolar layer's levels must be ``>= 0`` (ModelError otherwise).
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
        "_weight_levels",
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
        weight_levels: Mapping[str, Sequence[float]] | None = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ModelError(f"model name must be a non-empty string, got {name!r}")
        if not isinstance(dataset, str) or not dataset:
            raise ModelError(f"model dataset must be a non-empty string, got {dataset!r}")
        self._name = name
        self._dataset = dataset
        self._path = None if path is None else Path(path)
        self._architecture = tuple(copy.deepcopy(dict(layer)) for layer in architecture)
        self._input_shape = positive_int_tuple(input_shape, "input_shape")
        if isinstance(n_classes, bool) or not isinstance(n_classes, int | np.integer) or n_classes < 2:
            raise ModelError(f"n_classes must be an integer >= 2, got {n_classes!r}")
        self._n_classes = int(n_classes)
        expected, self._plan = analyse_architecture(self._architecture, self._input_shape)
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
        for step in iter_plan(self._plan):
            if step.spec["type"] == "batchnorm" and np.any(self._weights[f"{step.path}.running_var"] < 0):
                raise ModelError(f"batch norm {step.path!r}: running_var has negative entries")
        self._ranges = _checked_ranges(ranges or {}, self._plan)
        self._metadata = _json_roundtrip(dict(metadata or {}), "metadata")
        self._unipolar = _checked_unipolar(unipolar_layers, self._plan)
        self._weight_levels = _checked_weight_levels(weight_levels or {}, self._plan, self._weights, self._unipolar)

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
    def weight_levels(self) -> dict[str, tuple[float, ...]]:
        """Per analog layer with discrete weights, its ascending level set (empty: all continuous)."""
        return dict(self._weight_levels)

    @property
    def plan(self) -> tuple[PlanStep, ...]:
        return self._plan

    # -- weights --------------------------------------------------------------------------
    def analog_layers(self) -> list[AnalogLayer]:
        """The linear and conv layers, in forward order, weights as dense ``(out, fan_in)`` copies."""
        layers = []
        for step in iter_plan(self._plan):
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
            self._weights[f"{s.path}.weight"].size for s in iter_plan(self._plan) if s.spec["type"] in ANALOG_LAYER_TYPES
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

    def with_weights(self, new: Mapping[str, npt.ArrayLike], *, keep_levels: bool = True) -> Model:
        """A copy with some or all tensors replaced (same architecture, ranges, metadata, unipolar
        layers, weight levels: new weights of a levelled layer must lie on its levels, unless
        ``keep_levels=False`` makes the copy continuous, e.g. a noise-perturbed copy).

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
            weight_levels=self._weight_levels if keep_levels else None,
        )

    def to_torch(self) -> nn.Sequential:
        """A float32 CPU ``torch.nn.Sequential`` in eval mode with these weights loaded.

        Its children are named after the layers (unnamed parameter-free layers as
        ``<type><i>``, ``i`` the position in their list), residual blocks are
        :class:`harness.models.layers.Residual`, so its ``state_dict()`` keys equal
        :meth:`weights` keys (plus batch norm's ``num_batches_tracked``). It takes a batch
        ``(n, *input_shape)``. Building it leaves torch's global RNG untouched.
        """
        net = build_torch(self._plan)
        state = {key: torch.from_numpy(value.copy()) for key, value in self._weights.items()}
        result = net.load_state_dict(state, strict=False)
        if result.unexpected_keys or any(not k.endswith("num_batches_tracked") for k in result.missing_keys):
            raise ModelError(f"internal: state dict mismatch {result}")  # pragma: no cover
        return net.eval()

    def __repr__(self) -> str:
        layers = ", ".join(f"{a.name}{tuple(a.weight.shape)}" for a in self.analog_layers())
        return f"Model(name={self._name!r}, dataset={self._dataset!r}, layers=[{layers}])"


# -- checks ---------------------------------------------------------------------------------
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
    analog = {step.path for step in iter_plan(plan) if step.spec["type"] in ANALOG_LAYER_TYPES}
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
    analog = [s.path for s in iter_plan(plan) if s.spec["type"] in ANALOG_LAYER_TYPES]
    wanted = list(names)
    unknown = [n for n in wanted if not isinstance(n, str) or n not in analog]
    if unknown:
        raise ModelError(f"unipolar_layers {unknown!r:.80} are not analog layers of the model; analog layers: {analog}")
    return tuple(n for n in analog if n in set(wanted))


#: Relative tolerance of "this weight is that level" (float32 weights against float levels).
LEVEL_MATCH_RTOL = 1e-6


def _checked_weight_levels(
    levels: Mapping[str, Sequence[float]],
    plan: tuple[PlanStep, ...],
    weights: Mapping[str, FloatArray32],
    unipolar: tuple[str, ...],
) -> dict[str, tuple[float, ...]]:
    """``levels`` as ``{analog layer: ascending float tuple}``; ModelError for an unknown layer,
    fewer than 2 or repeated or non-finite levels, all-zero levels, negative levels on a unipolar
    layer, or a weight that is not one of its layer's levels (never silently continuous)."""
    if not isinstance(levels, Mapping):
        raise ModelError(f"weight_levels must map analog layer names to level lists, got {levels!r:.60}")
    analog = [s.path for s in iter_plan(plan) if s.spec["type"] in ANALOG_LAYER_TYPES]
    out: dict[str, tuple[float, ...]] = {}
    for name in analog:
        if name not in levels:
            continue
        raw = levels[name]
        try:
            values = np.asarray(raw, dtype=np.float64)
        except (TypeError, ValueError):
            raise ModelError(f"weight_levels[{name!r}] is not a list of numbers") from None
        if values.ndim != 1 or values.size < 2 or not np.all(np.isfinite(values)):
            raise ModelError(f"weight_levels[{name!r}] must list at least 2 finite levels, got {raw!r:.80}")
        if np.any(np.diff(values) <= 0):
            raise ModelError(f"weight_levels[{name!r}] must be strictly ascending (distinct levels), got {raw!r:.80}")
        if not np.any(values):
            raise ModelError(f"weight_levels[{name!r}] are all zero")
        if name in unipolar and values[0] < 0:
            raise ModelError(
                f"layer {name!r} is unipolar (one device per weight, G = g_min + s·W) but its level set has "
                f"negative levels (lowest {values[0]:.4g}); a single device cannot hold them"
            )
        w = np.asarray(weights[f"{name}.weight"], dtype=np.float64).ravel()
        idx = np.clip(np.searchsorted(values, w), 1, values.size - 1)
        nearest = np.where(np.abs(w - values[idx - 1]) <= np.abs(w - values[idx]), values[idx - 1], values[idx])
        off = np.abs(w - nearest) > LEVEL_MATCH_RTOL * float(np.abs(values).max())
        if np.any(off):
            raise ModelError(
                f"layer {name!r} has {int(off.sum())} weight(s) not on its {values.size} levels "
                f"(e.g. {w[off][0]:.6g}); levels {values.tolist()!r:.80}"
            )
        out[name] = tuple(float(v) for v in values)
    unknown = sorted(set(levels) - set(analog))
    if unknown:
        raise ModelError(f"weight_levels {unknown!r:.80} are not analog layers of the model; analog layers: {analog}")
    return out


def _json_roundtrip(value: Any, what: str) -> Any:
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise ModelError(f"{what} is not JSON-able: {one_line(exc)}") from exc
