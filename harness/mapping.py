"""Weights → target conductances on the array, and conductances read back → weights.

Differential pairs (REFERENCE §1): per layer, ``s = g_max / max|W|``. A positive weight
programs its G+ device to ``s·W`` and leaves G− RESET (target 0); a negative weight the
reverse. ``W = (G+ − G−) / s``.

Placement: a layer with weight matrix ``(out, fan_in)`` occupies a block of ``fan_in``
rows (inputs drive the source lines) by ``2·out`` columns (G+ and G− of output ``o`` sit in
adjacent columns ``2o`` and ``2o+1``). Blocks are packed left to right in shelves, in
layer order; a layer never splits across blocks. Biases stay digital.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from harness.chip import CellArray, FloatArray, Geometry
from harness.errors import MappingError


@dataclass(frozen=True)
class LayerPlacement:
    """Where one layer sits: block origin, size, and its weight→conductance scale."""

    name: str
    out_features: int
    fan_in: int
    row0: int
    col0: int
    weight_max: float
    scale_uS: float  # s: µS per unit weight
    unipolar: bool = False  # one device per weight (all weights >= 0), no G− column

    @property
    def n_rows(self) -> int:
        return self.fan_in

    @property
    def n_cols(self) -> int:
        return (1 if self.unipolar else 2) * self.out_features

    @property
    def n_devices(self) -> int:
        return self.n_rows * self.n_cols


@dataclass(frozen=True, eq=False)
class Layout:
    """Every device a model uses, with its target, in one flat order.

    Per device ``k``: ``cells[k]`` (flat address), ``target_uS[k]``, ``layer_index[k]``
    (index into ``layers``), ``sign[k]`` (+1 for G+, −1 for G−) and ``weight_index[k]``
    (flat index into that layer's ``(out, fan_in)`` weight). Within a layer the order is
    ``[G+ of every weight, G− of every weight]`` in row-major weight order.
    """

    geometry: Geometry
    layers: tuple[LayerPlacement, ...]
    cells: CellArray
    target_uS: FloatArray
    layer_index: npt.NDArray[np.int32]
    sign: npt.NDArray[np.int8]
    weight_index: npt.NDArray[np.int64]

    @property
    def n_devices(self) -> int:
        return int(self.cells.size)

    def layer_slice(self, i: int) -> slice:
        """Device range of layer ``i`` in the flat order (G+ block then G− block)."""
        start = sum(p.n_devices for p in self.layers[:i])
        return slice(start, start + self.layers[i].n_devices)

    def pair_conductances(self, g_uS: npt.ArrayLike, layer: int) -> tuple[FloatArray, FloatArray]:
        """(G+, G−) of one layer as ``(..., out, fan_in)`` arrays from flat per-device µS ``(..., n)``."""
        g = np.asarray(g_uS, dtype=np.float64)
        if g.shape[-1] != self.n_devices:
            raise MappingError(f"got {g.shape[-1]} conductances for a layout of {self.n_devices} devices")
        p = self.layers[layer]
        block = g[..., self.layer_slice(layer)]
        n = p.out_features * p.fan_in
        shape = g.shape[:-1] + (p.out_features, p.fan_in)
        if p.unipolar:  # W = (G − g_min)/s: the reference is the RESET level, held digitally
            return block.reshape(shape), np.full(shape, self.geometry.g_min_uS)
        return block[..., :n].reshape(shape), block[..., n:].reshape(shape)

    def to_weights(self, g_uS: npt.ArrayLike) -> dict[str, FloatArray]:
        """Weights ``(G+ − G−)/s`` per layer from flat µS ``(..., n_devices)``; leading dims kept."""
        out: dict[str, FloatArray] = {}
        for i, p in enumerate(self.layers):
            g_pos, g_neg = self.pair_conductances(g_uS, i)
            out[p.name] = (g_pos - g_neg) / p.scale_uS
        return out


def place_layers(
    shapes: Sequence[tuple[str, int, int]], geometry: Geometry, *, unipolar: frozenset[str] = frozenset()
) -> list[tuple[int, int]]:
    """Shelf-pack blocks of ``fan_in`` rows × ``2·out`` cols; returns (row0, col0) per layer.

    Raises:
        MappingError: a block larger than the array, or the layers do not fit together.
    """
    origins: list[tuple[int, int]] = []
    x = y = shelf_h = 0
    for name, out_features, fan_in in shapes:
        h, w = fan_in, (1 if name in unipolar else 2) * out_features
        if h > geometry.rows or w > geometry.cols:
            raise MappingError(
                f"layer {name!r} needs a {h}x{w} block (fan-in x 2*outputs) but the array is "
                f"{geometry.rows}x{geometry.cols}; use a larger chip or a smaller layer"
            )
        if x + w > geometry.cols:
            x, y, shelf_h = 0, y + shelf_h, 0
        if y + h > geometry.rows:
            total = sum((1 if n in unipolar else 2) * o * f for n, o, f in shapes)
            raise MappingError(
                f"the model does not fit: layer {name!r} would end at row {y + h} of {geometry.rows} "
                f"({total} devices needed, {geometry.n_cells} on a {geometry.rows}x{geometry.cols} array)"
            )
        origins.append((y, x))
        x += w
        shelf_h = max(shelf_h, h)
    return origins


def map_weights(
    weights: Mapping[str, npt.ArrayLike] | Sequence[tuple[str, npt.ArrayLike]],
    geometry: Geometry,
    *,
    unipolar: Sequence[str] = (),
) -> Layout:
    """Map 2-D weight matrices ``(out, fan_in)`` (in order) to target conductances and a layout.

    Layers named in ``unipolar`` (all weights >= 0, e.g. from the ``uniform --unipolar``
    training recipe) map onto single devices, ``G = g_min + s·W``, with no G− column: half
    the devices of a differential layer (Garcia-Redondo et al.); ``W = (G − g_min)/s``.

    Raises:
        MappingError: no layers, a non-2-D or non-finite weight, an all-zero layer, a
            negative weight in a unipolar layer, an unknown unipolar name, or no room.
    """
    single = frozenset(unipolar)
    unknown = single - {name for name, _ in (weights.items() if isinstance(weights, Mapping) else weights)}
    if unknown:
        raise MappingError(f"unipolar layers {sorted(unknown)} are not among the mapped layers")
    items = list(weights.items()) if isinstance(weights, Mapping) else list(weights)
    if not items:
        raise MappingError("the model has no analog layers to map")
    mats: list[tuple[str, FloatArray]] = []
    for name, w in items:
        arr = np.asarray(w, dtype=np.float64)
        if arr.ndim != 2 or 0 in arr.shape:
            raise MappingError(f"layer {name!r} weight has shape {arr.shape}; expected a non-empty (out, fan_in) matrix")
        if not np.all(np.isfinite(arr)):
            raise MappingError(f"layer {name!r} has NaN or infinite weights")
        if not np.any(arr):
            raise MappingError(f"layer {name!r} has only zero weights; nothing to scale to g_max")
        if name in single and arr.min() < 0:
            raise MappingError(f"layer {name!r} has negative weights (min {arr.min():.3g}); it cannot be unipolar")
        mats.append((name, arr))
    origins = place_layers([(n, a.shape[0], a.shape[1]) for n, a in mats], geometry, unipolar=single)

    placements, cells, targets, layer_idx, signs, w_idx = [], [], [], [], [], []
    g_span = geometry.g_max_uS - geometry.g_min_uS
    for i, ((name, w), (row0, col0)) in enumerate(zip(mats, origins)):
        out_f, fan_in = w.shape
        w_max = float(np.abs(w).max())
        scale = g_span / w_max
        placements.append(LayerPlacement(name, out_f, fan_in, row0, col0, w_max, scale, name in single))
        o, k = np.meshgrid(np.arange(out_f), np.arange(fan_in), indexing="ij")
        rows = (row0 + k).ravel()
        flat_w = w.ravel()
        g = scale * np.abs(flat_w)
        n = flat_w.size
        if name in single:
            cells.append(rows * geometry.cols + (col0 + o).ravel())
            targets.append(g + geometry.g_min_uS)
            layer_idx.append(np.full(n, i, dtype=np.int32))
            signs.append(np.ones(n, dtype=np.int8))
            w_idx.append(np.arange(n, dtype=np.int64))
            continue
        cols_pos = (col0 + 2 * o).ravel()
        g_pos = np.where(flat_w > 0, g, 0.0) + geometry.g_min_uS
        g_neg = np.where(flat_w < 0, g, 0.0) + geometry.g_min_uS
        cells += [rows * geometry.cols + cols_pos, rows * geometry.cols + cols_pos + 1]
        targets += [g_pos, g_neg]
        layer_idx.append(np.full(2 * n, i, dtype=np.int32))
        signs += [np.ones(n, dtype=np.int8), -np.ones(n, dtype=np.int8)]
        w_idx += [np.arange(n, dtype=np.int64)] * 2
    return Layout(
        geometry=geometry,
        layers=tuple(placements),
        cells=np.concatenate(cells).astype(np.int64),
        target_uS=np.concatenate(targets),
        layer_index=np.concatenate(layer_idx),
        sign=np.concatenate(signs),
        weight_index=np.concatenate(w_idx),
    )
