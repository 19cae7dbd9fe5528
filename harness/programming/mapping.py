"""Weights → target conductances on the array, and conductances read back → weights.

Differential pairs (Nandakumar 2019; Joshi 2020): per layer, ``s = g_max / max|W|``. A positive weight
programs its G+ device to ``s·W`` and leaves G− RESET (target 0); a negative weight the
reverse. ``W = (G+ − G−) / s``.

Placement: a layer with weight matrix ``(out, fan_in)`` occupies a block of ``fan_in``
rows (inputs drive the source lines) by ``2·out`` columns (G+ and G− of output ``o`` sit in
adjacent columns ``2o`` and ``2o+1``). Blocks are packed left to right in shelves, in
layer order. Biases stay digital.

A block that does not fit the array that way is stored the way the AnalogNets paper's 90 nm chip
stores weights it only holds (AnalogNets §5: the chip stores the weights, the MVM is
simulated from the read-back conductances): **transposed** (``2·out`` rows × ``fan_in``
columns: G+ and G− of output ``o`` in adjacent rows ``2o``, ``2o+1``, input ``k`` in column
``k``), or, when that does not fit either, **split** into pieces of at most ``rows`` fan-in
rows each (each piece a normal block; on a computing array their partial sums would be
added digitally). When any layer needs this, all blocks are shelf-packed by decreasing
height (first fit). The layout records each layer's orientation and pieces
(:class:`LayerPlacement`); the flat device order never depends on placement.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from harness.chip.protocol import CellArray, FloatArray, Geometry
from harness.errors import MappingError
from harness.programming.levels import checked_level_set, level_index

if TYPE_CHECKING:
    from harness.models.model import Model


@dataclass(frozen=True)
class LayerPlacement:
    """Where one layer sits: block origin, size, orientation, and its weight→conductance scale.

    Attributes:
        name, out_features, fan_in: the layer and its ``(out, fan_in)`` matrix.
        row0, col0: origin of the layer's (first) block.
        weight_max: ``max|W|`` of the layer; ``scale_uS``: ``s``, µS per unit weight.
        transposed: the block is stored ``2·out`` rows × ``fan_in`` columns.
        pieces: for a layer split into row pieces, ``(k0, k1, row0, col0)`` per piece: fan-in
            rows ``k0 .. k1-1`` sit at rows ``row0 ..`` from column ``col0``. Empty: one block.
    """

    name: str
    out_features: int
    fan_in: int
    row0: int
    col0: int
    weight_max: float
    scale_uS: float  # s: µS per unit weight
    transposed: bool = False
    pieces: tuple[tuple[int, int, int, int], ...] = ()
    unipolar: bool = False  # one device per weight (all >= 0): the G− devices are not used
    # The layer's weight levels (ascending, weight units), empty for continuous weights; its
    # scale is then g_span / max|level| (harness.programming.levels). Left out of a recording's
    # layer list when empty, so older recordings and readers are unchanged.
    levels: tuple[float, ...] = ()

    @property
    def n_devices(self) -> int:
        """Devices the layer programs: ``out·fan_in`` if unipolar, else twice that."""
        return (1 if self.unipolar else 2) * self.out_features * self.fan_in

    def __post_init__(self) -> None:  # JSON gives lists; keep equality with tuples
        object.__setattr__(self, "pieces", tuple(tuple(int(v) for v in p) for p in self.pieces))
        object.__setattr__(self, "levels", tuple(float(v) for v in self.levels))

    @property
    def n_rows(self) -> int:
        """Rows of the layer's block (of its tallest piece when split)."""
        if self.transposed:
            return 2 * self.out_features
        return max((k1 - k0 for k0, k1, _, _ in self.pieces), default=self.fan_in)

    @property
    def n_cols(self) -> int:
        return self.fan_in if self.transposed else 2 * self.out_features

    @property
    def how(self) -> str:
        """``"normal"``, ``"transposed"`` or ``"split into N row pieces"``."""
        if self.transposed:
            return "transposed"
        return f"split into {len(self.pieces)} row pieces" if self.pieces else "normal"

    def blocks(self) -> list[tuple[int, int, int, int]]:
        """``(k0, k1, row0, col0)`` of every block of the layer (one unless split)."""
        return list(self.pieces) or [(0, self.fan_in, self.row0, self.col0)]


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


def place_layers(shapes: Sequence[tuple[str, int, int]], geometry: Geometry) -> list[tuple[int, int]]:
    """Shelf-pack blocks of ``fan_in`` rows × ``2·out`` cols in layer order; (row0, col0) per layer.

    Raises:
        MappingError: a block larger than the array, or the layers do not fit together.
    """
    origins: list[tuple[int, int]] = []
    x = y = shelf_h = 0
    for name, out_features, fan_in in shapes:
        h, w = fan_in, 2 * out_features
        if h > geometry.rows or w > geometry.cols:
            raise MappingError(
                f"layer {name!r} needs a {h}x{w} block (fan-in x 2*outputs) but the array is "
                f"{geometry.rows}x{geometry.cols}; use a larger chip or a smaller layer"
            )
        if x + w > geometry.cols:
            x, y, shelf_h = 0, y + shelf_h, 0
        if y + h > geometry.rows:
            raise MappingError(_no_room(name, y + h, shapes, geometry))
        origins.append((y, x))
        x += w
        shelf_h = max(shelf_h, h)
    return origins


def _no_room(name: str, end_row: int, shapes: Sequence[tuple[str, int, int]], geometry: Geometry) -> str:
    total = sum(2 * o * f for _, o, f in shapes)
    return (
        f"the model does not fit: layer {name!r} would end at row {end_row} of {geometry.rows} "
        f"({total} devices needed, {geometry.n_cells} on a {geometry.rows}x{geometry.cols} array)"
    )


def _orient(name: str, out_features: int, fan_in: int, geometry: Geometry, prefer_short: bool) -> tuple[bool, int]:
    """(transposed, number of row pieces) for one layer's block."""
    rows, cols = geometry.rows, geometry.cols
    normal = fan_in <= rows and 2 * out_features <= cols
    transposed = 2 * out_features <= rows and fan_in <= cols
    if normal and not (prefer_short and transposed and 2 * out_features < fan_in):
        return False, 1
    if transposed:
        return True, 1
    if 2 * out_features <= cols:
        return False, -(-fan_in // rows)
    raise MappingError(
        f"layer {name!r} needs a {fan_in}x{2 * out_features} block (fan-in x 2*outputs) but the array is "
        f"{rows}x{cols}; it fits neither transposed nor split into row pieces: use a larger chip or a smaller layer"
    )


def place_layers_anyhow(shapes: Sequence[tuple[str, int, int]], geometry: Geometry) -> list[LayerPlacement]:
    """Placements (scale fields zero) for layers that may need transposing or splitting.

    Tries, in order: every block normal in layer order (:func:`place_layers`, the round-1
    layout); then normal where it fits, else transposed, else split, shelf-packed by
    decreasing height; then the same preferring the shorter orientation of every block.

    Raises:
        MappingError: a block that fits no way, or the blocks do not fit together.
    """
    try:
        origins = place_layers(shapes, geometry)
        return [LayerPlacement(n, o, f, r, c, 0.0, 0.0) for (n, o, f), (r, c) in zip(shapes, origins)]
    except MappingError as exc:
        # Without its traceback: the frames it holds (up to the caller's, with its chip) would
        # otherwise stay alive in a reference cycle until the garbage collector runs.
        first_error = exc.with_traceback(None)
    for prefer_short in (False, True):
        plan = [_orient(n, o, f, geometry, prefer_short) for n, o, f in shapes]
        # One rectangle per block: (layer, piece, k0, k1, height, width).
        rects = []
        for i, ((_, o, f), (transposed, n_pieces)) in enumerate(zip(shapes, plan)):
            if transposed:
                rects.append((i, 0, 0, f, 2 * o, f))
                continue
            step = -(-f // n_pieces)
            for j, k0 in enumerate(range(0, f, step)):
                k1 = min(f, k0 + step)
                rects.append((i, j, k0, k1, k1 - k0, 2 * o))
        origins_by_rect = shelf_pack([(h, w) for *_, h, w in rects], geometry.rows, geometry.cols)
        if origins_by_rect is None:
            continue
        pieces: dict[int, list[tuple[int, int, int, int]]] = {}
        for (i, _, k0, k1, _, _), (r, c) in zip(rects, origins_by_rect):
            pieces.setdefault(i, []).append((k0, k1, r, c))
        out = []
        for i, ((n, o, f), (transposed, n_pieces)) in enumerate(zip(shapes, plan)):
            blocks = sorted(pieces[i])
            _, _, r, c = blocks[0]
            out.append(LayerPlacement(n, o, f, r, c, 0.0, 0.0, transposed, tuple(blocks) if n_pieces > 1 else ()))
        return out
    if "does not fit" not in str(first_error):
        devices = sum(2 * o * f for _, o, f in shapes)
        raise MappingError(
            f"the model does not fit: its {len(shapes)} blocks ({devices} devices) do not pack onto the "
            f"{geometry.rows}x{geometry.cols} array ({geometry.n_cells} cells), even transposed or split; "
            "use a larger chip"
        )
    raise first_error


def shelf_pack(sizes: Sequence[tuple[int, int]], rows: int, cols: int) -> list[tuple[int, int]] | None:
    """First-fit decreasing-height shelf packing of ``(height, width)`` rectangles into a
    ``rows × cols`` array; ``(row0, col0)`` per rectangle (input order), or None if they do not fit."""
    order = sorted(range(len(sizes)), key=lambda i: (-sizes[i][0], i))
    shelves: list[list[int]] = []  # [y, height, x used]
    origins: dict[int, tuple[int, int]] = {}
    for i in order:
        h, w = sizes[i]
        for shelf in shelves:
            if h <= shelf[1] and shelf[2] + w <= cols:
                origins[i] = (shelf[0], shelf[2])
                shelf[2] += w
                break
        else:
            y = shelves[-1][0] + shelves[-1][1] if shelves else 0
            if y + h > rows or w > cols:
                return None
            shelves.append([y, h, w])
            origins[i] = (y, 0)
    return [origins[i] for i in range(len(sizes))]


def map_weights(
    weights: Mapping[str, npt.ArrayLike] | Sequence[tuple[str, npt.ArrayLike]],
    geometry: Geometry,
    *,
    unipolar: Sequence[str] = (),
    levels: Mapping[str, Sequence[float]] | None = None,
) -> Layout:
    """Map 2-D weight matrices ``(out, fan_in)`` (in order) to target conductances and a layout.

    Layers are placed by :func:`place_layers_anyhow` (transposed or split only when needed).
    Layers named in ``unipolar`` (all weights >= 0, e.g. from the ``uniform --unipolar``
    training recipe; Garcia-Redondo et al.) use single devices, ``G = g_min + s·W``: only
    the G+ device of each weight is programmed, half the devices of a differential layer
    (the packer still reserves the pair's columns; ``W = (G − g_min)/s``).
    Layers named in ``levels`` (their weight level sets) are scaled by the level set,
    ``s = span / max|level|``, so each weight goes to exactly its level's conductance
    (:mod:`harness.programming.levels`); a weight off its levels is refused.

    Raises:
        MappingError: no layers, a non-2-D or non-finite weight, an all-zero layer, a
            negative weight in a unipolar layer, an unknown unipolar name, or no room; a
            level set with negative levels on a unipolar layer, a weight off its levels.
    """
    items = list(weights.items()) if isinstance(weights, Mapping) else list(weights)
    if not items:
        raise MappingError("the model has no analog layers to map")
    single = frozenset(unipolar)
    unknown = single - {name for name, _ in items}
    if unknown:
        raise MappingError(f"unipolar layers {sorted(unknown)} are not among the mapped layers")
    level_sets = dict(levels or {})
    unknown = set(level_sets) - {name for name, _ in items}
    if unknown:
        raise MappingError(f"weight levels given for {sorted(unknown)}, which are not among the mapped layers")
    level_arrays = {n: checked_level_set(n, v, unipolar=n in single) for n, v in level_sets.items()}
    for name, w in items:
        if name in level_arrays:
            level_index(name, w, level_arrays[name])
        if name in single and np.min(w) < 0:
            n_neg = int(np.count_nonzero(np.asarray(w) < 0))
            raise MappingError(
                f"layer {name!r} is marked unipolar (one device per weight) but has {n_neg} negative "
                f"weight(s) (min {np.min(w):.3g}); retrain it with --recipe uniform --unipolar, "
                "or deploy it differentially (a model file without it in unipolar_layers)"
            )
    mats: list[tuple[str, FloatArray]] = []
    for name, w in items:
        arr = np.asarray(w, dtype=np.float64)
        if arr.ndim != 2 or 0 in arr.shape:
            raise MappingError(f"layer {name!r} weight has shape {arr.shape}; expected a non-empty (out, fan_in) matrix")
        if not np.all(np.isfinite(arr)):
            raise MappingError(f"layer {name!r} has NaN or infinite weights")
        if not np.any(arr):
            raise MappingError(f"layer {name!r} has only zero weights; nothing to scale to g_max")
        mats.append((name, arr))
    shells = place_layers_anyhow([(n, a.shape[0], a.shape[1]) for n, a in mats], geometry)

    placements, cells, targets, layer_idx, signs, w_idx = [], [], [], [], [], []
    g_span = geometry.g_max_uS - geometry.g_min_uS
    for i, ((name, w), shell) in enumerate(zip(mats, shells)):
        out_f, fan_in = w.shape
        lv = level_arrays.get(name)
        # A levelled layer is scaled by its level set: its top level is g_max even if unused.
        w_max = float(np.abs(w).max()) if lv is None else float(np.abs(lv).max())
        scale = g_span / w_max
        place = LayerPlacement(
            name, out_f, fan_in, shell.row0, shell.col0, w_max, scale, shell.transposed, shell.pieces, name in single,
            () if lv is None else tuple(lv),
        )
        placements.append(place)
        o_grid, k_grid = np.meshgrid(np.arange(out_f), np.arange(fan_in), indexing="ij")
        o, k = o_grid.ravel(), k_grid.ravel()
        if place.transposed:
            rows_pos, rows_neg = place.row0 + 2 * o, place.row0 + 2 * o + 1
            cols_pos = cols_neg = place.col0 + k
        else:
            row_of = np.empty(fan_in, dtype=np.int64)
            col_of = np.empty(fan_in, dtype=np.int64)
            for k0, k1, r0, c0 in place.blocks():
                row_of[k0:k1] = r0 + np.arange(k1 - k0)
                col_of[k0:k1] = c0
            rows_pos = rows_neg = row_of[k]
            cols_pos, cols_neg = col_of[k] + 2 * o, col_of[k] + 2 * o + 1
        flat_w = w.ravel()
        g = np.minimum(scale * np.abs(flat_w), g_span)  # max|W|·(g_span/max|W|) can round above g_span
        g_pos = np.where(flat_w > 0, g, 0.0) + geometry.g_min_uS
        g_neg = np.where(flat_w < 0, g, 0.0) + geometry.g_min_uS
        n = flat_w.size
        if place.unipolar:
            cells.append(rows_pos * geometry.cols + cols_pos)
            targets.append(g_pos)
            layer_idx.append(np.full(n, i, dtype=np.int32))
            signs.append(np.ones(n, dtype=np.int8))
            w_idx.append(np.arange(n, dtype=np.int64))
            continue
        cells += [rows_pos * geometry.cols + cols_pos, rows_neg * geometry.cols + cols_neg]
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


def map_model(model: Model, geometry: Geometry) -> Layout:
    """Map a model's analog layers (:meth:`Model.analog_layers`, in order) onto ``geometry``.

    Layers in ``model.unipolar_layers`` go on single devices, the others on differential
    pairs (:func:`map_weights`); layers in ``model.weight_levels`` are programmed to exactly
    their levels' conductances. This is the one mapping every deployment path uses
    (``harness program``, ``session run``, ``evaluate``), so a recording's layout and a
    re-mapping of its model agree.

    Raises:
        MappingError: see :func:`map_weights` (e.g. a negative weight in a unipolar layer).
    """
    return map_weights(
        [(layer.name, layer.weight) for layer in model.analog_layers()], geometry, unipolar=model.unipolar_layers,
        levels=model.weight_levels,
    )
