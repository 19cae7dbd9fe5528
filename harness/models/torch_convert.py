"""From torch to a :class:`~harness.models.model.Model`: capture a ``torch.nn.Sequential`` built
from the format's layer types, its architecture and weights. The way back is
:meth:`Model.to_torch <harness.models.model.Model.to_torch>`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from harness.errors import ModelError
from harness.models.model import LayerRanges, Model
from harness.models.spec import (
    ANALOG_LAYER_TYPES,
    BATCHNORM_TENSORS,
    LAYER_NAME_RE,
    analyse_architecture,
    int_pair,
    positive_int_tuple,
)

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
    weight_levels: Mapping[str, Sequence[float]] | None = None,
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
        _, plan = analyse_architecture(tuple(architecture), positive_int_tuple(input_shape, "input_shape"))
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
        weight_levels=weight_levels,
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
    weight_levels: Mapping[str, Sequence[float]] | None = None,
) -> Model:
    """:func:`from_torch` with every argument by keyword (the round-1 signature)."""
    return from_torch(
        module, input_shape, name=name, n_classes=n_classes, dataset=dataset, ranges=ranges, metadata=metadata,
        unipolar_layers=unipolar_layers, weight_levels=weight_levels,
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
            spec["name"] = child_name if LAYER_NAME_RE.match(child_name) else f"{_PREFIXES[kind]}{counters[counter]}"
        elif LAYER_NAME_RE.match(child_name):
            spec["name"] = child_name
        path = prefix + spec.get("name", "")
        if kind in ANALOG_LAYER_TYPES:
            weights[f"{path}.weight"] = _tensor(getattr(child, "weight", None))
            if getattr(child, "bias", None) is not None:
                weights[f"{path}.bias"] = _tensor(getattr(child, "bias", None))
        elif kind == "batchnorm":
            for tensor in BATCHNORM_TENSORS:
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
            return int(items[0]) if one_d else list(int_pair(items[0] if len(items) == 1 else list(items)))

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
