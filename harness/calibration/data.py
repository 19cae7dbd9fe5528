"""A recording's readouts as the arrays a calibration fits: grouped by scheduled time (the
repeats of one time averaged, their within-time variance kept), aligned device by device with
the layout's targets and the write-verify outcome.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from harness.chip.protocol import Geometry
from harness.errors import CalibrationError
from harness.recording import Recording

FloatArray = npt.NDArray[np.float64]

#: Targets at or below this (µS) are RESET partners of differential pairs (the mapping gives
#: them exactly 0; any positive target is programmed by write-verify).
RESET_TARGET_MAX_US = 0.0


@dataclass(frozen=True)
class CalibrationData:
    """Readouts of the layout's devices, grouped by scheduled time (repeats averaged)."""

    t_g: FloatArray  # (G,) time of each group (s since programming)
    count_g: FloatArray  # (G,) reads in each group
    mean: FloatArray  # (G, n) mean of the repeats, µS
    var: FloatArray | None  # (G, n) within-group variance (None without repeats)
    target_uS: FloatArray  # (n,)
    final_uS: FloatArray  # (n,) last verify read
    converged: npt.NDArray[np.bool_]
    iterations: npt.NDArray[np.int64]
    lsb_uS: float
    g_max_uS: float
    repeats: int
    geometry: Geometry


def _positions(cells: npt.NDArray[np.int64], among: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Index of each of ``cells`` in ``among`` (−1 where it is absent)."""
    order = np.argsort(among, kind="stable")
    i = np.searchsorted(among, cells, sorter=order)
    i = np.minimum(i, among.size - 1)
    found = among[order[i]] == cells if among.size else np.zeros(cells.size, bool)
    return np.where(found, order[i], -1)


def calibration_epoch(rec: Recording, epoch: int | None = None) -> int:
    """The programming epoch a calibration of ``rec`` fits: ``epoch``, else (a refresh
    session's recording) the one with the most readouts, the earliest on a tie; 0 otherwise.

    Raises:
        CalibrationError: ``epoch`` is not one of the recording's.
    """
    n = rec.n_epochs
    if epoch is None:
        return int(np.argmax(np.bincount(rec.readout_epochs, minlength=n))) if n > 1 else 0
    if not 0 <= epoch < n:
        raise CalibrationError(f"epoch {epoch} is not one of the {n} programming epoch(s) of {rec.path} (0..{n - 1})")
    return int(epoch)


def load_data(rec: Recording, readouts: FloatArray | None = None, epoch: int | None = None) -> CalibrationData:
    """Group the recording's readouts by scheduled time; checks the bad inputs.

    A refresh session's recording holds several programming epochs: only the readouts of
    one (:func:`calibration_epoch`) are used, with times since that epoch's programming and
    its write-verify outcome, so the fits see one programming, as in any other recording.
    ``readouts``: every committed readout, if already in memory.

    Raises:
        CalibrationError: fewer than two readouts, no programming outcome for the layout.
    """
    where = str(rec.path)
    e = calibration_epoch(rec, epoch)
    rows = np.flatnonzero(rec.readout_epochs == e)
    n_read = int(rows.size)
    if n_read < 2:
        raise CalibrationError(f"{where} holds {n_read} readout(s); calibration needs at least 2 (a drift needs two times)")
    lay = rec.layout
    prog = rec.programming
    if prog.cells.size == 0:
        raise CalibrationError(f"{where} has no programming outcome (no device was programmed); record a session")
    pos = _positions(lay.cells, rec.readout_cells)
    ppos = _positions(lay.cells, prog.cells)
    keep = (pos >= 0) & (ppos >= 0)
    if not keep.any():
        raise CalibrationError(f"{where}: no device of the layout has both a programming outcome and readouts")
    y = rec.readouts() if readouts is None else readouts
    if rows.size != y.shape[0]:
        y = y[rows]
    cols = pos[keep]
    y = np.take(y, cols, axis=1) if cols.size != y.shape[1] or np.any(cols != np.arange(cols.size)) else y
    sched = rec.extra("schedule_index")[rows] if "schedule_index" in rec.extra_names else np.arange(n_read)
    if np.any(sched < 0):
        sched = np.arange(n_read)
    starts = np.flatnonzero(np.r_[True, np.diff(sched) != 0])
    counts = np.diff(np.r_[starts, n_read]).astype(np.float64)
    t = rec.times_s[rows] - rec.epoch_origin_s[rows]
    t_g = np.add.reduceat(t, starts) / counts
    repeats = int(counts.max())
    # one read per time (the usual session): the readouts are the means, no copy
    mean = y if repeats == 1 else np.add.reduceat(y, starts, axis=0) / counts[:, None]
    var = None
    if repeats >= 2:
        sq = np.add.reduceat(y * y, starts, axis=0) / counts[:, None]
        with np.errstate(invalid="ignore", divide="ignore"):
            var = np.where(counts[:, None] >= 2, (sq - mean * mean) * (counts / np.maximum(counts - 1, 1))[:, None], np.nan)
    geo = rec.geometry
    conv, iters = (prog.converged, prog.iterations) if e == 0 else rec.epoch_outcome(e)
    return CalibrationData(
        t_g=t_g, count_g=counts, mean=mean, var=var,
        target_uS=np.asarray(lay.target_uS, dtype=np.float64)[keep],
        final_uS=rec.epoch_final_uS(e)[ppos[keep]],
        converged=np.asarray(conv, dtype=bool)[ppos[keep]],
        iterations=np.asarray(iters, dtype=np.int64)[ppos[keep]],
        lsb_uS=geo.adc_lsb_uS, g_max_uS=geo.g_max_uS, repeats=repeats, geometry=geo,
    )
