"""Cells per weight and weight storage of a model file (issue 23: discrete weight levels).

What a deployed weight costs in devices depends on how it is mapped
(:func:`harness.programming.mapping.map_model`), not on the architecture: a differential
weight takes a pair of devices, a unipolar one a single device, and a weight with ``N``
discrete levels needs devices with ``m + 1`` conductance levels (signed, ``N = 2m + 1``) or
``N`` levels (unipolar). No weight spans several significance-weighted devices
(:mod:`harness.programming.levels` says why), so a weight is always one or two devices.

Where it matters: the devices a model occupies on a storage chip (the 512 × 2048 virtual chip
counts devices), and the information a weight holds (``log2 N`` bits for ``N`` levels) against
a digital copy. AON-CiM's array cost (:mod:`harness.accel.cost`) is per unit cell — one
differential cell per weight whatever its levels — so its energy and latency do not change.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from harness.models.model import Model


@dataclass(frozen=True)
class LayerCells:
    """One analog layer's storage.

    Attributes:
        name: layer path. weights: array weights (dense block, depthwise expanded).
        devices_per_weight: 2 (differential pair) or 1 (unipolar single device).
        weight_levels: distinct weight values (None: continuous, analog).
        device_levels: conductance levels each device needs (None: continuous).
        devices: ``weights · devices_per_weight``.
        bits_per_weight: ``log2(weight_levels)`` (None: continuous).
    """

    name: str
    weights: int
    devices_per_weight: int
    weight_levels: int | None
    device_levels: int | None
    devices: int
    bits_per_weight: float | None


def model_cells(model: Model) -> list[LayerCells]:
    """:class:`LayerCells` for every analog layer of ``model``, in forward order."""
    out = []
    unipolar = set(model.unipolar_layers)
    levels = model.weight_levels
    for layer in model.analog_layers():
        per = 1 if layer.name in unipolar else 2
        n = len(levels[layer.name]) if layer.name in levels else None
        if n is None:
            dev = None
        elif layer.name in unipolar:
            dev = n
        else:  # distinct magnitudes of the signed levels, RESET (zero) included
            dev = len({abs(v) for v in levels[layer.name]} | {0.0})
        out.append(
            LayerCells(
                name=layer.name, weights=int(layer.weight.size), devices_per_weight=per, weight_levels=n,
                device_levels=dev, devices=int(layer.weight.size) * per,
                bits_per_weight=None if n is None else math.log2(n),
            )
        )
    return out


def cells_summary(model: Model) -> dict[str, Any]:
    """JSON-able totals: devices, weights, and the weight storage in bits where every levelled
    layer counts ``log2 N`` bits per weight (None if any layer is continuous)."""
    layers = model_cells(model)
    bits = None
    if all(c.bits_per_weight is not None for c in layers):
        bits = sum(c.weights * float(c.bits_per_weight or 0.0) for c in layers)
    return {
        "weights": sum(c.weights for c in layers),
        "devices": sum(c.devices for c in layers),
        "weight_storage_bits": bits,
        "layers": [asdict(c) for c in layers],
    }


def cells_for_spec(spec: str) -> dict[str, Any] | None:
    """:func:`cells_summary` of the model file ``spec`` (what ``harness accel --model`` takes);
    None for a zoo name (an architecture alone has no level sets or unipolar marks)."""
    from pathlib import Path

    from harness.models import list_models
    from harness.models.format import load_model

    if spec in list_models():
        return None
    return cells_summary(load_model(Path(spec)))
