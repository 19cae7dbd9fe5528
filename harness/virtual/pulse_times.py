"""Each device's last-pulse time, stored as an index into a small table of distinct times.

A chip pulses in batches, one chip time per batch: a write-verify loop of a million devices
leaves a few dozen distinct pulse times. Storing an index per device into the table of
those times lets a read evaluate everything that depends only on the age τ = t − t_pulse
(ln(τ/t0) of the drift, the 1/f time factor of the read noise) once per distinct time and
gather it per device, instead of two logarithms and a square root per device. The gathered
values are the very numbers a per-device evaluation gives (the same float operations on the
same float inputs), so readouts are bit-identical.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

#: Table size at which the times no device holds any more are dropped (the threshold doubles
#: when most are still held), so a long-lived chip's table stays small whatever it was pulsed.
COMPACT_AT = 4096


class PulseTimes:
    """Last-pulse time (s) of ``n`` devices, all ``initial_s`` until :meth:`set`."""

    def __init__(self, n: int, initial_s: float) -> None:
        # intp: numpy gathers with native indices fastest (a 16-bit index is converted per gather)
        self.index: npt.NDArray[np.intp] = np.zeros(n, dtype=np.intp)
        self._compact_at = COMPACT_AT
        self._times: list[float] = []
        self._slot: dict[float, int] = {}
        self._table: FloatArray | None = None
        self._reset_table([float(initial_s)])

    @property
    def table(self) -> FloatArray:
        """The distinct times; ``table[index[c]]`` is device ``c``'s last-pulse time."""
        if self._table is None:
            self._table = np.array(self._times, dtype=np.float64)
        return self._table

    def set(self, cells: npt.NDArray[np.intp] | slice, t_s: float) -> None:
        """Record one pulse time for ``cells`` (a batch pulsed together)."""
        self.index[cells] = self._slot_of(float(t_s))

    def set_all(self, t_pulse_s: FloatArray) -> None:
        """Replace every device's time (a restored snapshot)."""
        times, inverse = np.unique(np.asarray(t_pulse_s, dtype=np.float64), return_inverse=True)
        self.index = inverse.reshape(-1).astype(np.intp)
        self._reset_table(times.tolist())

    def of(self, cells: npt.NDArray[np.intp] | slice) -> FloatArray:
        """Last-pulse times of ``cells`` (a new array)."""
        return self.table.take(self.index[cells])

    def ages(self, cells: npt.NDArray[np.intp] | slice, t_s: float) -> FloatArray:
        """t_s − last-pulse time of ``cells``: the same numbers as ``t_s - of(cells)``, with
        the subtraction done once per distinct time."""
        return (t_s - self.table).take(self.index[cells])

    def _slot_of(self, t_s: float) -> int:
        slot = self._slot.get(t_s)
        if slot is not None:
            return slot
        if len(self._times) >= self._compact_at:
            self._compact()
        slot = len(self._times)
        self._times.append(t_s)
        self._slot[t_s] = slot
        self._table = None
        return slot

    def _compact(self) -> None:
        """Drop the times no device holds any more (renumbering the index)."""
        used = np.bincount(self.index, minlength=len(self._times)) > 0
        renumber = np.cumsum(used) - 1
        self.index = renumber[self.index]
        self._reset_table([t for t, u in zip(self._times, used) if u])
        if 2 * len(self._times) >= self._compact_at:
            self._compact_at *= 2

    def _reset_table(self, times: list[float]) -> None:
        self._times = times
        self._slot = {t: i for i, t in enumerate(times)}
        self._table = None
