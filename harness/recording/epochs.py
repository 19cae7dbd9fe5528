"""Programming epochs: the refreshes of a refresh session (``[refresh]`` in its TOML).

Epoch 0 is the first programming (``/programming``); each refresh re-programs the layout's
cells and starts epoch ``e >= 1``, stored as row ``e - 1`` of the ``/refreshes`` group:

* ``table``: compound rows ``t_start_s``, ``t_end_s`` (chip clock, as ``programming``'s
  attributes), ``wall_s``, ``after_readout`` (index of the readout whose check fired it),
  ``rule`` (1 ``below_pp``, 2 ``every``) and ``pulses`` (write-verify iterations, summed);
* ``final_uS`` / ``iterations`` / ``converged``: ``(E, n_devices)``, the write-verify outcome of
  each programmed device in ``programming/cells`` order;
* ``state/<key>``: ``(E, n_devices)``, the chip's device state (virtual chip) at the layout's
  cells right after the refresh (a refresh pulses every layout cell, so the rest of the chip
  is the base state), for resuming inside a later epoch.

Every readout of a refresh session carries ``epoch`` (its programming epoch),
``monitor_accuracy`` (the monitor set's accuracy from that read, NaN when not computed) and
``epoch_crc`` (:func:`harness.recording.integrity.epoch_digest` of its epoch's row, 0 in
epoch 0) in ``readouts/meta``, so the integrity manifest's meta chain covers the epochs.
A refresh's row is written before the first readout of its epoch and becomes part of the
recording only with that readout's commit: rows beyond the last committed epoch are
leftovers of an interrupted refresh (ignored, and overwritten when the session resumes).
Files without the group read as one epoch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np
import numpy.typing as npt

from harness.recording import integrity
from harness.recording.schema import _write_all

if TYPE_CHECKING:
    from harness.programming.write_verify import ProgrammingResult

GROUP = "refreshes"
EPOCH_COLUMN = "epoch"
MONITOR_COLUMN = "monitor_accuracy"
DIGEST_COLUMN = "epoch_crc"
#: Per-readout columns of a refresh session (declared as extras at creation).
REFRESH_EXTRAS: dict[str, np.dtype[Any]] = {
    EPOCH_COLUMN: np.dtype(np.int64),
    MONITOR_COLUMN: np.dtype(np.float64),
    DIGEST_COLUMN: np.dtype(np.uint32),
}
TABLE_DTYPE = np.dtype([
    ("t_start_s", np.float64), ("t_end_s", np.float64), ("wall_s", np.float64),
    ("after_readout", np.int64), ("rule", np.int64), ("pulses", np.int64),
])
ARRAYS: dict[str, np.dtype[Any]] = {
    "final_uS": np.dtype(np.float64), "iterations": np.dtype(np.int32), "converged": np.dtype(np.uint8),
}
RULE_NAMES = {1: "below_pp", 2: "every"}


@dataclass(frozen=True)
class Epoch:
    """One programming epoch: ``t_origin_s`` is when its programming ended, in the readouts'
    time (s since the end of the first programming; 0 for epoch 0)."""

    index: int
    t_origin_s: float
    t_start_s: float
    t_end_s: float
    after_readout: int
    rule: str
    pulses: int
    converged_fraction: float
    error_std_uS: float

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def create_group(f: h5py.File, n_devices: int, state: Mapping[str, np.ndarray], state_keys: Sequence[str]) -> None:
    """The empty ``/refreshes`` group of a new refresh session's header (before SWMR: no
    dataset can be created later). ``state_keys``: the device-state keys saved per refresh."""
    g = f.create_group(GROUP)
    g.create_dataset("table", shape=(0,), maxshape=(None,), dtype=TABLE_DTYPE, chunks=(64,))
    width = max(1, n_devices)
    rows = max(1, min(64, (4 << 20) // (8 * width)))
    for name, dtype in ARRAYS.items():
        g.create_dataset(name, shape=(0, n_devices), maxshape=(None, n_devices), dtype=dtype, chunks=(rows, width))
    s = g.create_group("state")
    for key in sorted(state_keys):
        dtype = np.asarray(state[key]).dtype
        s.create_dataset(key, shape=(0, n_devices), maxshape=(None, n_devices), dtype=dtype, chunks=(rows, width))


def write_refresh(
    f: h5py.File,
    epoch: int,
    result: ProgrammingResult,
    *,
    after_readout: int,
    rule: int,
    state: Mapping[str, np.ndarray] | None,
) -> int:
    """Write epoch ``epoch``'s row (``epoch - 1``; anything after it is dropped) and flush;
    returns its digest, which the epoch's readouts carry in ``epoch_crc``. ``state``: the
    chip's full snapshot after the refresh (its device keys are taken at the programmed cells)."""
    g = f[GROUP]
    i = epoch - 1
    cells = np.asarray(f["programming/cells"][...], dtype=np.int64)
    row = np.zeros((), dtype=TABLE_DTYPE)
    row["t_start_s"], row["t_end_s"], row["wall_s"] = result.t_start_s, result.t_end_s, result.wall_s
    row["after_readout"], row["rule"] = after_readout, rule
    row["pulses"] = int(np.asarray(result.iterations, dtype=np.int64).sum())
    arrays = {name: np.asarray(getattr(result, name), dtype=dtype) for name, dtype in ARRAYS.items()}
    keys = sorted(g["state"].keys())
    for key in keys:
        arrays[f"state/{key}"] = np.asarray(np.asarray((state or {})[key])[cells], dtype=g["state"][key].dtype)
    for name in ["table", *arrays]:
        g[name].resize(epoch, axis=0)
    g["table"][i] = row
    for name, arr in arrays.items():
        g[name][i] = arr
    f.flush()
    return integrity.epoch_digest(row, [arrays[n] for n in sorted(arrays)])


def stored_digest(f: h5py.File, epoch: int) -> int:
    """:func:`harness.recording.integrity.epoch_digest` of epoch ``epoch``'s stored row."""
    g = f[GROUP]
    i = epoch - 1
    names = sorted([*ARRAYS, *(f"state/{k}" for k in g["state"].keys())])
    return integrity.epoch_digest(g["table"][i], [g[n][i] for n in names])


def readout_epochs(meta: np.ndarray) -> npt.NDArray[np.int64]:
    """Epoch of each committed readout (zeros for a recording without epochs)."""
    names = meta.dtype.names or ()
    if EPOCH_COLUMN not in names:
        return np.zeros(meta.shape[0], dtype=np.int64)
    return np.asarray(meta[EPOCH_COLUMN], dtype=np.int64)


def check_epochs(f: h5py.File, n: int) -> None:
    """The epochs of the ``n`` committed readouts against ``/refreshes`` (run on open).

    Raises:
        integrity.IntegrityError: epochs that do not start at 0 and step by one, missing or
            misshapen rows, or a row whose digest differs from its readouts' ``epoch_crc``.
    """
    if GROUP not in f:
        return
    meta = f["readouts/meta"]
    names = meta.dtype.names or ()
    if any(c not in names for c in REFRESH_EXTRAS):
        raise integrity.IntegrityError(f"it has a /{GROUP} group but its readouts lack the epoch columns")
    g = f[GROUP]
    m = f["programming/cells"].shape[0]
    for name in ["table", *ARRAYS, *(f"state/{k}" for k in g["state"].keys())]:
        ds = g[name]
        if not isinstance(ds, h5py.Dataset) or (name != "table" and (ds.ndim != 2 or ds.shape[1] != m)):
            raise integrity.IntegrityError(f"/{GROUP}/{name} is not one row of {m} devices per refresh")
    if g["table"].shape[0] > n + 1:
        raise integrity.IntegrityError(f"/{GROUP} declares {g['table'].shape[0]} refreshes for {n} readouts")
    if n == 0:
        return
    rows = meta[:n]
    ep = np.asarray(rows[EPOCH_COLUMN], dtype=np.int64)
    steps = np.diff(ep)
    if ep[0] != 0 or np.any((steps != 0) & (steps != 1)):
        raise integrity.IntegrityError("its readouts' programming epochs do not count up from 0 one refresh at a time")
    last = int(ep[-1])
    if any(g[name].shape[0] < last for name in ["table", *ARRAYS]):
        raise integrity.IntegrityError(f"its readouts name {last} refreshes but /{GROUP} holds fewer")
    crc = np.asarray(rows[DIGEST_COLUMN], dtype=np.int64)
    if np.any(crc[ep == 0] != 0):
        raise integrity.IntegrityError("a readout of the first programming names a refresh digest")
    for e in range(1, last + 1):
        want = crc[ep == e]
        if np.any(want != want[0]) or stored_digest(f, e) != int(want[0]):
            raise integrity.IntegrityError(f"its refresh #{e} (programming epoch {e}) does not match its readouts' digest")


def read_epochs(f: h5py.File, n_epochs: int, target_uS: npt.NDArray[np.float64]) -> list[Epoch]:
    """Epochs ``1..n_epochs - 1`` (the refreshes), in order; ``target_uS`` in
    ``programming/cells`` order (for the error spread)."""
    if n_epochs <= 1:
        return []
    g = f[GROUP]
    table = g["table"][: n_epochs - 1]
    final = g["final_uS"][: n_epochs - 1]
    conv = g["converged"][: n_epochs - 1].astype(bool)
    t0 = float(f["programming"].attrs["t_end_s"])
    out = []
    for i in range(n_epochs - 1):
        err = final[i] - target_uS
        out.append(Epoch(
            index=i + 1, t_origin_s=float(table[i]["t_end_s"]) - t0, t_start_s=float(table[i]["t_start_s"]),
            t_end_s=float(table[i]["t_end_s"]), after_readout=int(table[i]["after_readout"]),
            rule=RULE_NAMES.get(int(table[i]["rule"]), "?"), pulses=int(table[i]["pulses"]),
            converged_fraction=float(conv[i].mean()) if conv.shape[1] else 1.0,
            error_std_uS=float(err.std()) if err.size else 0.0,
        ))
    return out


def final_uS(f: h5py.File, epoch: int) -> npt.NDArray[np.float64]:
    """Epoch ``epoch``'s final verify reads (``programming/cells`` order): the GDC reference
    of that epoch."""
    if epoch == 0:
        return np.asarray(f["programming/final_uS"][...], dtype=np.float64)
    return np.asarray(f[GROUP]["final_uS"][epoch - 1], dtype=np.float64)


def merge_state(f: h5py.File, state: dict[str, np.ndarray], epoch: int) -> dict[str, np.ndarray]:
    """``state`` (the base chip state) with epoch ``epoch``'s device state at the programmed cells."""
    if epoch <= 0 or GROUP not in f:
        return state
    s = f[GROUP]["state"]
    cells = np.asarray(f["programming/cells"][...], dtype=np.int64)
    for key in s.keys():
        arr = np.array(state[key], copy=True)
        arr[cells] = s[key][epoch - 1]
        state[key] = arr
    return state


__all__ = [
    "DIGEST_COLUMN", "EPOCH_COLUMN", "Epoch", "GROUP", "MONITOR_COLUMN", "REFRESH_EXTRAS", "check_epochs",
    "create_group", "final_uS", "merge_state", "read_epochs", "readout_epochs", "stored_digest", "write_refresh",
]


class EpochReading:
    """Epoch accessors of :class:`harness.recording.Recording` (which provides ``_f``, ``_n``,
    ``programming`` and ``extra``)."""

    _f: h5py.File
    _n: int

    @property
    def has_epochs(self) -> bool:
        """True for a refresh session's recording (it may still hold one epoch only)."""
        return GROUP in self._f

    @property
    def readout_epochs(self) -> npt.NDArray[np.int64]:
        """Programming epoch of each committed readout, ``(n_readouts,)`` (zeros without epochs)."""
        return readout_epochs(self._f["readouts/meta"][: self._n])

    @property
    def n_epochs(self) -> int:
        """Programming epochs the committed readouts span (1 + refreshes; 1 for any other file)."""
        ep = self.readout_epochs
        return int(ep[-1]) + 1 if ep.size else 1

    @property
    def epochs(self) -> list[Epoch]:
        """Every programming epoch of the committed readouts, epoch 0 (the first programming) first."""
        p = self.programming  # type: ignore[attr-defined]
        first = Epoch(0, 0.0, p.t_start_s, p.t_end_s, -1, "initial", int(np.asarray(p.iterations, dtype=np.int64).sum()),
                      p.converged_fraction, float((p.final_uS - p.target_uS).std()) if p.cells.size else 0.0)
        return [first, *read_epochs(self._f, self.n_epochs, np.asarray(p.target_uS, dtype=np.float64))]

    @property
    def epoch_origin_s(self) -> npt.NDArray[np.float64]:
        """Per committed readout, when its epoch's programming ended (s, the readouts' time axis):
        ``times_s - epoch_origin_s`` is the time since its devices were programmed."""
        origins = np.array([e.t_origin_s for e in self.epochs], dtype=np.float64)
        return origins[self.readout_epochs]

    @property
    def monitor_accuracy(self) -> npt.NDArray[np.float64] | None:
        """The monitor set's accuracy (0..1) at each committed readout; None without epochs."""
        if MONITOR_COLUMN not in (self._f["readouts/meta"].dtype.names or ()):
            return None
        return np.asarray(self.extra(MONITOR_COLUMN), dtype=np.float64)  # type: ignore[attr-defined]

    def epoch_outcome(self, epoch: int) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.int32]]:
        """Epoch ``epoch``'s (converged, iterations) per device, ``programming.cells`` order."""
        if epoch == 0:
            p = self.programming  # type: ignore[attr-defined]
            return np.asarray(p.converged, dtype=bool), np.asarray(p.iterations, dtype=np.int32)
        if not 0 < epoch < self.n_epochs:
            raise IndexError(f"epoch {epoch} is not in 0..{self.n_epochs - 1}")
        g = self._f[GROUP]
        return g["converged"][epoch - 1].astype(bool), g["iterations"][epoch - 1].astype(np.int32)

    def epoch_final_uS(self, epoch: int) -> npt.NDArray[np.float64]:
        """Epoch ``epoch``'s final verify reads in ``programming.cells`` order (its GDC reference)."""
        if not 0 <= epoch < self.n_epochs:
            raise IndexError(f"epoch {epoch} is not in 0..{self.n_epochs - 1}")
        return final_uS(self._f, epoch)
