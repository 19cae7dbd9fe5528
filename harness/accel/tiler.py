"""Layer-serial tiler: every analog layer of a model gets its own rectangle on the one array.

AON-CiM runs one layer at a time (AnalogNets §5.1), so all layers' weights sit on the same
array side by side (Figure 6): a layer of fan-in ``rows`` and ``cols`` outputs occupies a
``rows × cols`` rectangle (rows = DAC inputs, columns = outputs). Rectangles never overlap;
nothing runs concurrently, so any non-overlapping packing is valid and the packing does not
change the cost (see ``docs/accel.md``: the column mux is assumed selectable per ADC, so ``c``
contiguous columns need ``ceil(c / adcs)`` phases wherever they start).

Packing: bottom-left skyline, tallest first: each rectangle goes where its top edge is lowest
(leftmost on ties), so short layers fill the space under the tall ones. A model
that does not fit raises :class:`TilingError`; layers taller or wider than the array are split
only when asked (``split=True``: into equal row / column chunks, each run in turn, partial sums
of row chunks added digitally).

Depthwise (grouped) layers are placed in dense expanded form: one block-diagonal rectangle with
only ``1/groups`` of its cells used. ``max_gemm_cols`` splits such a layer into sequential GEMMs
of at most that many output columns, each holding only its own diagonal blocks: utilization
rises, latency grows with the number of GEMMs (Appendix D, Table 3; :func:`depthwise_tradeoff`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from harness.accel.hardware import Hardware
from harness.accel.workload import LayerWork, Workload
from harness.errors import AccelError, TilingError


@dataclass(frozen=True)
class Tile:
    """One rectangle on the array: part ``part`` of ``n_parts`` of a layer.

    ``row0``/``col0``: top-left cell; ``rows`` × ``cols``: its extent; ``nonzero``: cells that
    hold weights (< rows · cols for a block-diagonal depthwise tile). Each tile runs
    ``work.pixels`` matrix-vector products with its own slice of the input.
    """

    layer: int
    name: str
    part: int
    n_parts: int
    rows: int
    cols: int
    nonzero: int
    row0: int
    col0: int
    work: LayerWork

    @property
    def label(self) -> str:
        return self.name if self.n_parts == 1 else f"{self.name}[{self.part + 1}/{self.n_parts}]"


@dataclass(frozen=True)
class Placement:
    """The tiled model: its tiles (in execution order) on an array of ``rows`` × ``cols``."""

    workload: Workload
    tiles: tuple[Tile, ...]
    rows: int
    cols: int

    @property
    def used_cells(self) -> int:
        return sum(t.rows * t.cols for t in self.tiles)

    @property
    def nonzero_cells(self) -> int:
        return sum(t.nonzero for t in self.tiles)

    @property
    def area_fraction(self) -> float:
        """Fraction of the array covered by rectangles."""
        return self.used_cells / (self.rows * self.cols)

    @property
    def effective_utilization(self) -> float:
        """Weight-holding cells over allocated cells (Appendix D's "effective utilization")."""
        return self.nonzero_cells / self.used_cells

    @property
    def width_used(self) -> int:
        return max(t.col0 + t.cols for t in self.tiles)

    def as_dicts(self) -> list[dict[str, int | str]]:
        return [
            {"layer": t.name, "part": t.part, "n_parts": t.n_parts, "row0": t.row0, "col0": t.col0,
             "rows": t.rows, "cols": t.cols, "nonzero": t.nonzero}
            for t in self.tiles
        ]


@dataclass(frozen=True)
class _Piece:
    layer: int
    part: int
    n_parts: int
    rows: int
    cols: int
    nonzero: int
    work: LayerWork


def tile(
    workload: Workload,
    hw: Hardware,
    *,
    split: bool = False,
    max_gemm_cols: int | None = None,
) -> Placement:
    """Place every analog layer of ``workload`` on ``hw``'s array (see the module docstring).

    Args:
        split: allow splitting layers taller or wider than the array into chunks.
        max_gemm_cols: split grouped (depthwise) layers into block-diagonal GEMMs of at most
            this many columns (whole groups; at least one group per GEMM).

    Raises:
        TilingError: a layer exceeds the array and ``split`` is false, or the layers together
            do not fit; the message names the layer, its size and the array's.
    """
    if max_gemm_cols is not None and (isinstance(max_gemm_cols, bool) or max_gemm_cols < 1):
        raise AccelError(f"max_gemm_cols={max_gemm_cols!r} must be a positive integer")
    R, C = hw.array.rows, hw.array.cols
    pieces: list[_Piece] = []
    for i, layer in enumerate(workload.layers):
        pieces.extend(_pieces(i, layer, R, C, split, max_gemm_cols))
    return Placement(workload=workload, tiles=_pack(pieces, R, C, workload.name), rows=R, cols=C)


def _pieces(i: int, layer: LayerWork, R: int, C: int, split: bool, max_gemm_cols: int | None) -> list[_Piece]:
    if layer.groups > 1 and max_gemm_cols is not None:
        per_group_cols = layer.cols // layer.groups
        per_group_rows = layer.rows // layer.groups
        groups_per_gemm = max(1, max_gemm_cols // per_group_cols)
        sizes = _chunks(layer.groups, math.ceil(layer.groups / groups_per_gemm))
        return [
            _Piece(i, k, len(sizes), g * per_group_rows, g * per_group_cols,
                   g * per_group_rows * per_group_cols, layer)
            for k, g in enumerate(sizes)
        ]
    if layer.rows > R or layer.cols > C:
        if not split:
            raise TilingError(
                f"layer {layer.name} needs {layer.rows} rows × {layer.cols} columns but the array has "
                f"{R} × {C}; use split=True (--split) to run it in chunks, or make the layer smaller"
            )
        row_sizes = _chunks(layer.rows, math.ceil(layer.rows / R))
        col_sizes = _chunks(layer.cols, math.ceil(layer.cols / C))
        n = len(row_sizes) * len(col_sizes)
        density = layer.nonzero / (layer.rows * layer.cols)
        return [
            _Piece(i, k, n, r, c, round(r * c * density), layer)
            for k, (r, c) in enumerate((r, c) for r in row_sizes for c in col_sizes)
        ]
    return [_Piece(i, 0, 1, layer.rows, layer.cols, layer.nonzero, layer)]


def _chunks(total: int, n: int) -> list[int]:
    """``total`` split into ``n`` near-equal positive parts, larger ones first."""
    q, r = divmod(total, n)
    return [q + 1] * r + [q] * (n - r)


def _pack(pieces: Sequence[_Piece], R: int, C: int, model: str) -> tuple[Tile, ...]:
    # Bottom-left skyline packing: sky[c] = rows already used in column c (from the top). Each
    # rectangle, tallest first, goes where its top edge is lowest (leftmost on ties).
    sky = np.zeros(C, dtype=np.int64)
    placed: dict[tuple[int, int], tuple[int, int]] = {}
    order = sorted(range(len(pieces)), key=lambda k: (-pieces[k].rows, -pieces[k].cols, k))
    for k in order:
        p = pieces[k]
        tops = sliding_window_view(sky, p.cols).max(axis=1)
        col0 = int(np.argmin(tops))
        row0 = int(tops[col0])
        if row0 + p.rows > R:
            free = int(R * C - sum(q.rows * q.cols for q in pieces if (q.layer, q.part) in placed))
            raise TilingError(
                f"model {model} does not fit the {R} × {C} array: layer {p.work.name} "
                f"({p.rows} × {p.cols}) finds no free rectangle ({len(placed)} of {len(pieces)} placed, "
                f"{free} cells left in fragments); use a smaller model, --split, or a larger array"
            )
        placed[(p.layer, p.part)] = (row0, col0)
        sky[col0:col0 + p.cols] = row0 + p.rows
    tiles = []
    for p in pieces:
        row0, col0 = placed[(p.layer, p.part)]
        tiles.append(Tile(layer=p.layer, name=p.work.name, part=p.part, n_parts=p.n_parts, rows=p.rows,
                          cols=p.cols, nonzero=p.nonzero, row0=row0, col0=col0, work=p.work))
    return tuple(tiles)


def check_fits(placement: Placement) -> None:
    """Re-check a placement's invariants (inside the array, no overlaps); raises TilingError."""
    occupied: list[tuple[int, int, int, int, str]] = []
    for t in placement.tiles:
        if t.row0 < 0 or t.col0 < 0 or t.row0 + t.rows > placement.rows or t.col0 + t.cols > placement.cols:
            raise TilingError(f"tile {t.label} lies outside the {placement.rows} × {placement.cols} array")
        for r0, c0, r1, c1, other in occupied:
            if t.row0 < r1 and r0 < t.row0 + t.rows and t.col0 < c1 and c0 < t.col0 + t.cols:
                raise TilingError(f"tiles {t.label} and {other} overlap")
        occupied.append((t.row0, t.col0, t.row0 + t.rows, t.col0 + t.cols, t.label))
