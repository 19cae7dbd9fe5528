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
    times = rec.times_s
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
        if g0 is None:
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
            mean_ratio = m / m[0] if m[0] > 0 else np.full(n, np.nan)
            lt = np.log(times / times[0]) if times[0] > 0 else np.full(n, np.nan)
            nu_eff = np.where(lt > 0, -np.log(mean_ratio) / lt, np.nan)
        nu_fit = math.nan
        if n >= 2 and not is_reset and times[0] > 0 and np.all(m > 0):
            x = np.log(times)
            y = np.log(m)
            nu_fit = float(-np.polyfit(x, y, 1)[0])
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
    }


__all__ = ["ReplayChip", "open_replay", "summarize_recording", "LEVEL_EDGES_US"]
