"""A Chip backed by a recording (``replay:FILE.h5``), and the drift summary of a recording.

The replayed chip's clock is the recorded chip's clock: it starts at the end of
programming (``programming/t_end_s``), and ``wait_until`` jumps it forward (nothing
sleeps). A read at chip time ``t`` returns the conductances of the readout recorded at
``t``:

* ``match=exact`` (default): the readout whose actual time, or scheduled time, is within
  ``tol_s`` (default 1 ms) of ``t - t_end_s``; a session runner that waits for the
  scheduled times therefore sees exactly the recorded readouts. Between recorded times
  there is no data, and the read raises :class:`~harness.errors.ReplayError` naming the
  nearest recorded times.
* ``match=nearest``: the readout nearest in time, whatever the distance (documented
  sample-and-hold for plots; not physics).

Values are bit-identical to what the live chip returned (see docs/recording-format.md).
Reads take no chip time, so reads of different cell subsets at one time see one readout.
Cells that were not read in the recording raise ReplayError. RESET and SET pulses are
refused with ReplayError: a recording cannot be reprogrammed. The safety checks of
:class:`~harness.chip.protocol.ChipBackend` still run first.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
import numpy.typing as npt

from harness.chip.protocol import CellArray, ChipBackend, FloatArray
from harness.chip.clock import SimulatedClock
from harness.errors import ConfigError, RecordingError, ReplayError
from harness.recording import Recording, open_recording
from harness.chip.registry import ChipURI, take_params
from harness.units import format_duration

MATCH_MODES = ("exact", "nearest")
#: Default matching tolerance (s) between a read's time and a recorded readout time.
DEFAULT_TOL_S = 1e-3


class ReplayChip(ChipBackend):
    """Read-only Chip over a :class:`~harness.recording.Recording` (see module docstring)."""

    def __init__(self, recording: Recording, uri: str, *, match: str = "exact", tol_s: float = DEFAULT_TOL_S) -> None:
        if match not in MATCH_MODES:
            raise ConfigError(f"unknown replay match mode {match!r}; use one of {', '.join(MATCH_MODES)}")
        if not (math.isfinite(tol_s) and tol_s >= 0):
            raise ConfigError(f"replay tolerance tol_s={tol_s} must be a finite number of seconds >= 0")
        super().__init__(recording.geometry, uri)
        self._rec = recording
        self._match = match
        self._tol_s = float(tol_s)
        self._t_end_s = recording.t_end_s
        self._clock = SimulatedClock(self._t_end_s)
        pos = np.full(recording.geometry.n_cells, -1, dtype=np.int64)
        pos[recording.readout_cells] = np.arange(recording.n_cells)
        self._pos = pos
        self._cache: tuple[int, FloatArray] | None = None

    @property
    def identity(self) -> str:
        return f"replay of {self._rec.provenance.get('chip_identity', '?')} from {self._rec.path}"

    @property
    def recording(self) -> Recording:
        return self._rec

    @property
    def t_end_s(self) -> float:
        """Chip time at the end of the recorded programming."""
        return self._t_end_s

    def readout_times_s(self) -> npt.NDArray[np.float64]:
        """Chip times of the recorded readouts (absolute, on this chip's clock)."""
        return self._t_end_s + self._rec.times_s

    def now(self) -> float:
        return self._clock.now()

    def wait_until(self, t_s: float) -> None:
        self._ensure_open()
        self._clock.wait_until(t_s)

    def _reset(self, cells: CellArray) -> None:
        raise ReplayError(
            f"the replay chip {self.uri!r} is read-only: refusing to RESET {cells.size} cells "
            "(a recording cannot be reprogrammed; program a virtual or real chip instead)"
        )

    def _set_pulse(self, cells: CellArray, amplitude: FloatArray) -> None:
        raise ReplayError(
            f"the replay chip {self.uri!r} is read-only: refusing to SET-pulse {cells.size} cells "
            "(a recording cannot be reprogrammed; program a virtual or real chip instead)"
        )

    def _read(self, cells: CellArray) -> FloatArray:
        pos = self._pos[cells]
        missing = np.flatnonzero(pos < 0)
        if missing.size:
            raise ReplayError(
                f"cell {int(cells[missing[0]])} was not read in {self._rec.path} "
                f"({missing.size} of {cells.size} requested cells were not recorded)"
            )
        i = self._index_at(self._clock.now() - self._t_end_s)
        if self._cache is None or self._cache[0] != i:
            self._cache = (i, self._rec.readout(i))
        return self._cache[1][pos]

    def _index_at(self, t_rel: float) -> int:
        """Index of the readout that answers a read at ``t_rel`` s after programming."""
        times = self._rec.times_s
        if times.size == 0 and self._rec.refresh() > 0:
            times = self._rec.times_s
        if times.size == 0:
            raise ReplayError(f"{self._rec.path} holds no readouts to replay")
        dist = np.abs(times - t_rel)
        if self._match == "nearest":
            return int(np.argmin(dist))
        sched = self._rec.extra("t_scheduled_s")
        dist = np.minimum(dist, np.where(np.isfinite(sched), np.abs(sched - t_rel), np.inf))
        i = int(np.argmin(dist))
        if dist[i] <= self._tol_s:
            return i
        if self._rec.refresh() > times.size:  # a live recording may have grown since
            return self._index_at(t_rel)
        before = times[times <= t_rel]
        after = times[times > t_rel]
        near = ", ".join(format_duration(x) for x in (*before[-1:], *after[:1]))
        raise ReplayError(
            f"no readout recorded at t = {format_duration(t_rel)} after programming in {self._rec.path} "
            f"(tolerance {self._tol_s:g} s); nearest recorded: {near}. Wait until a recorded time, "
            "or open the chip with 'replay:FILE?match=nearest'"
        )

    def _close(self) -> None:
        self._rec.close()


def check_replay_uri(uri: ChipURI) -> None:
    """What :func:`open_replay` refuses without opening the file: no path, bad parameters,
    a file that does not exist."""
    if not uri.path:
        raise ConfigError("the replay chip URI needs a file: 'replay:runs/session.h5'")
    take_params(uri, {"match": (str, "exact"), "tol_s": (float, DEFAULT_TOL_S)})
    if not os.path.isfile(uri.path):
        raise ConfigError(f"replay chip URI {uri.raw!r}: no file {uri.path}")


def open_replay(uri: ChipURI) -> ReplayChip:
    """``replay:runs/x.h5[?match=exact|nearest&tol_s=0.001]``."""
    if not uri.path:
        raise ConfigError("the replay chip URI needs a file: 'replay:runs/session.h5'")
    p = take_params(uri, {"match": (str, "exact"), "tol_s": (float, DEFAULT_TOL_S)})
    try:
        rec = open_recording(uri.path)
    except RecordingError as exc:
        raise ReplayError(f"cannot replay {uri.path}: {exc}") from exc
    if rec.n_epochs > 1:
        n = rec.n_epochs
        rec.close()
        # its reads after a refresh are of re-programmed devices: a replayed "chip" programmed
        # once would mix epochs without saying so
        raise ReplayError(
            f"cannot replay {uri.path} as a chip: it holds {n} programming epochs (a refresh session); evaluate it "
            "with 'harness evaluate --recording FILE --epoch N'"
        )
    try:
        return ReplayChip(rec, uri.raw, match=p["match"], tol_s=p["tol_s"])
    except BaseException:
        rec.close()
        raise


# ----------------------------------------------------------------------------- summary

#: Edges (µS) of the target-conductance levels of the summary: the RESET level, then 5 µS
#: bins up to g_max (25 µS, Nandakumar 2019; Joshi 2020).
LEVEL_EDGES_US = (0.0, 0.5, 5.0, 10.0, 15.0, 20.0, 25.0 + 1e-9)


def summarize_recording(rec: Recording, edges_uS: tuple[float, ...] | None = None) -> dict[str, Any]:
    """Drift statistics of a recording, per target level and readout.

    For each level (devices of the layout whose target lies in ``[lo, hi)`` and that were
    read) and each readout ``i`` at ``t_i``: ``mean_uS``, ``std_uS``; ``mean_ratio`` =
    mean G(t_i) / mean G(t_0) (``t_0``: the first readout); ``ratio_std``: std over
    devices of G(t_i)/G(t_0) (devices with G(t_0) > 0); ``nu_eff`` =
    −ln(mean_ratio)/ln(t_i/t_0) for ``i > 0``; and per level ``nu_fit``, the least-squares
    slope −d ln(mean G)/d ln t over all readouts (NaN below two readouts or for the RESET
    level, whose ratio is noise). Reads one readout at a time.

    A refresh session's recording (several programming epochs): ``t`` is the time since the
    read's own epoch was programmed (``t_since_epoch_s``), ``t_0`` the first readout of that
    epoch, and ``nu_fit`` the common slope with one intercept per epoch.

    Raises:
        RecordingError: no readouts, or a damaged file.
    """
    n = rec.n_readouts
    if n == 0:
        raise RecordingError(f"{rec.path} holds no readouts to summarize")
    edges = np.asarray(edges_uS or LEVEL_EDGES_US, dtype=np.float64)
    lay = rec.layout
    target_of_cell = np.full(rec.geometry.n_cells, np.nan)
    target_of_cell[lay.cells] = lay.target_uS
    target = target_of_cell[rec.readout_cells]
    which = np.where(np.isfinite(target), np.digitize(np.nan_to_num(target, nan=-1.0), edges) - 1, -1)
    which[(which < 0) | (which >= edges.size - 1)] = -1
    n_lv = edges.size - 1
    counts = np.bincount(which[which >= 0], minlength=n_lv)
    sel = which >= 0
    w = which[sel]
    epoch = rec.readout_epochs
    times = rec.times_s - rec.epoch_origin_s  # time since each read's epoch was programmed
    first = np.searchsorted(epoch, epoch)  # index of the first readout of each one's epoch
    mean = np.zeros((n, n_lv))
    std = np.zeros((n, n_lv))
    rmean = np.full((n, n_lv), np.nan)
    rstd = np.full((n, n_lv), np.nan)
    g0 = None
    for i in range(n):
        g = rec.readout(i)[sel]
        s1 = np.bincount(w, weights=g, minlength=n_lv)
        s2 = np.bincount(w, weights=g * g, minlength=n_lv)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean[i] = s1 / counts
            std[i] = np.sqrt(np.maximum(s2 / counts - mean[i] ** 2, 0.0))
        if g0 is None or i == first[i]:
            g0 = g
        ok = g0 > 0
        ratio = np.divide(g, g0, out=np.zeros_like(g), where=ok)
        c = np.bincount(w[ok], minlength=n_lv)
        r1 = np.bincount(w[ok], weights=ratio[ok], minlength=n_lv)
        r2 = np.bincount(w[ok], weights=ratio[ok] ** 2, minlength=n_lv)
        with np.errstate(invalid="ignore", divide="ignore"):
            rm = r1 / c
            rmean[i] = rm
            rstd[i] = np.sqrt(np.maximum(r2 / c - rm**2, 0.0))
    levels = []
    for j in range(n_lv):
        if counts[j] == 0:
            continue
        is_reset = edges[j + 1] <= 0.5 + 1e-12
        m = mean[:, j]
        with np.errstate(invalid="ignore", divide="ignore"):
            m0, t0 = m[first], times[first]
            mean_ratio = np.where(m0 > 0, m / np.where(m0 > 0, m0, 1.0), np.nan)
            lt = np.where(t0 > 0, np.log(times / np.where(t0 > 0, t0, 1.0)), np.nan)
            nu_eff = np.where(lt > 0, -np.log(mean_ratio) / lt, np.nan)
        nu_fit = _nu_fit(times, m, epoch) if n >= 2 and not is_reset and np.all(times > 0) and np.all(m > 0) else math.nan
        levels.append(
            {
                "lo_uS": float(edges[j]),
                "hi_uS": float(min(edges[j + 1], rec.geometry.g_max_uS)),
                "reset_level": bool(is_reset),
                "n": int(counts[j]),
                "target_mean_uS": float(np.mean(target[which == j])),
                "mean_uS": mean[:, j].tolist(),
                "std_uS": std[:, j].tolist(),
                "mean_ratio": [None if not math.isfinite(v) else float(v) for v in mean_ratio],
                "ratio_std": [None if not math.isfinite(v) else float(v) for v in rstd[:, j]],
                "nu_eff": [None if not math.isfinite(v) else float(v) for v in nu_eff],
                "nu_fit": None if not math.isfinite(nu_fit) else nu_fit,
            }
        )
    return {
        **rec.info(),
        "t_s": times.tolist(),
        "t0_s": float(times[0]),
        "levels": levels,
        **({"epoch": epoch.tolist(), "session_t_s": rec.times_s.tolist()} if rec.has_epochs else {}),
    }


def _nu_fit(t_s: npt.NDArray[np.float64], g: npt.NDArray[np.float64], epoch: npt.NDArray[np.int64]) -> float:
    """−d ln G / d ln t by least squares, one intercept per programming epoch (the plain
    straight-line fit for one epoch)."""
    x, y = np.log(t_s), np.log(g)
    if epoch.size == 0 or epoch[-1] == epoch[0]:
        return float(-np.polyfit(x, y, 1)[0])
    counts = np.bincount(epoch)
    xd = x - (np.bincount(epoch, weights=x) / np.maximum(counts, 1))[epoch]
    yd = y - (np.bincount(epoch, weights=y) / np.maximum(counts, 1))[epoch]
    den = float(xd @ xd)
    return float(-(xd @ yd) / den) if den > 0 else math.nan


__all__ = ["ReplayChip", "open_replay", "summarize_recording", "LEVEL_EDGES_US"]
