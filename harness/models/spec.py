"""Architecture specs: the layer types a model may hold, their keys, and the check that turns an
architecture into a plan of layers with the sample shapes each one sees. See ``docs/models.md``.

Layer specs (``architecture``), applied in order to one sample of shape ``input_shape``:
``linear``, ``conv1d`` / ``conv2d`` (stride, padding as numbers or ``"same"``, dilation,
groups), ``batchnorm`` (eval mode, digital), ``relu``, ``relu6``, ``flatten`` (``start_dim``), ``unflatten`` (``dim``, ``sizes``),
``avgpool1d`` / ``avgpool2d``, ``global_avgpool``, ``residual`` (``body`` added to its input)
and ``sequential`` (a named group). Linear and conv layers are *analog*: their weights go onto
the array as ``(out, fan_in)`` matrices (a grouped / depthwise conv in its dense block-diagonal
form); biases, batch norm, activations and pooling stay digital.

Every check raises :class:`harness.errors.ModelError` with one line naming the layer. Plain
Python and numpy only: no torch, no h5py.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from harness.errors import ModelError

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
#: Tensors of a batch norm layer, each ``(num_features,)``.
BATCHNORM_TENSORS = ("weight", "bias", "running_mean", "running_var")
#: The pattern of a layer name (a torch child name and a state-dict key part).
LAYER_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


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


# -- architecture checks -------------------------------------------------------------------
def iter_plan(plan: tuple[PlanStep, ...]) -> list[PlanStep]:
    """Every :class:`PlanStep` of ``plan`` in forward order (containers before their bodies)."""
    out: list[PlanStep] = []
    for step in plan:
        out.append(step)
        out.extend(iter_plan(step.body))
    return out

def int_pair(value: Any) -> tuple[int, int]:
    """An int or a pair of ints (a 2-D pooling size, stride or padding) as a pair of ints."""
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


def positive_int_tuple(value: Any, what: str) -> tuple[int, ...]:
    """``value`` (a non-empty sequence of ints > 0, e.g. an ``input_shape``) as a tuple; ModelError naming ``what`` otherwise."""
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


def analyse_architecture(
    architecture: tuple[dict[str, Any], ...], input_shape: tuple[int, ...]
) -> tuple[dict[str, tuple[int, ...]], tuple[PlanStep, ...]]:
    """Check the architecture (keys, names, shape chain): the tensor shapes it needs and its plan.

    Returns ``(shapes, plan)``: ``shapes`` maps each state-dict key the architecture needs
    (``"fc1.weight"``, ``"bn1.running_var"``…) to its shape; ``plan`` is the layers as
    :class:`PlanStep` s. Raises ModelError for anything malformed, or an architecture without
    a linear or conv layer.
    """
    shapes: dict[str, tuple[int, ...]] = {}
    plan, _ = _analyse_list(architecture, input_shape, "", shapes, "architecture")
    if not any(s.spec["type"] in ANALOG_LAYER_TYPES for s in iter_plan(plan)):
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
        if not isinstance(name, str) or not LAYER_NAME_RE.match(name) or name in names:
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
        for tensor in BATCHNORM_TENSORS:
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
        sizes_t = positive_int_tuple(sizes if isinstance(sizes, list | tuple) else [sizes], f"{where}: sizes")
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
