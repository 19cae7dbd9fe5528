"""The Chip protocol: the one seam between the harness and every chip backend.

Everything that programs, schedules or evaluates types against :class:`Chip` and never
asks which backend it has. Backends (virtual, serial, VISA, replay) subclass
:class:`ChipBackend`, which checks the safety limits once, here, before a backend sees a
call: nothing out of range can reach hardware, whatever the backend.

Cells are addressed by flat index ``row * cols + col`` (``int64``), always in batches:
one call moves a whole array of cells, never one Python call per device.
"""

from __future__ import annotations

import abc
import functools
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from harness.errors import AddressError, ChipClosedError, ConfigError, SafetyLimitError

CellArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Geometry:
    """Shape, conductance range, ADC and safety limits of a chip.

    Attributes:
        rows, cols: array size; cells are ``0 .. rows*cols - 1``.
        g_min_uS, g_max_uS: the conductance range weights are mapped onto (µS).
        adc_bits: resolution of the read-out ADC.
        adc_min_uS, adc_max_uS: the ADC's full-scale range (µS); reads are clipped to it.
        max_set_amplitude: largest SET pulse amplitude the chip accepts, as a fraction of
            its full-scale SET current (dimensionless, > 0). A safety limit.
    """

    rows: int = 512
    cols: int = 2048
    g_min_uS: float = 0.0
    g_max_uS: float = 25.0
    adc_bits: int = 8
    adc_min_uS: float = 0.0
    adc_max_uS: float = 32.0
    max_set_amplitude: float = 1.0

    def __post_init__(self) -> None:
        if self.rows <= 0 or self.cols <= 0:
            raise ConfigError(f"array size {self.rows}x{self.cols} must be positive in both dimensions")
        if not 0.0 <= self.g_min_uS < self.g_max_uS:
            raise ConfigError(
                f"conductance range [{self.g_min_uS}, {self.g_max_uS}] µS must satisfy 0 <= g_min < g_max"
            )
        if not 1 <= self.adc_bits <= 16:
            raise ConfigError(f"ADC resolution {self.adc_bits} bits is outside 1..16 bits")
        if not self.adc_min_uS < self.adc_max_uS:
            raise ConfigError(f"ADC range [{self.adc_min_uS}, {self.adc_max_uS}] µS is empty")
        if not 0.0 < self.max_set_amplitude <= 1.0:
            raise ConfigError(
                f"max SET amplitude {self.max_set_amplitude} must be in (0, 1] (fraction of full scale)"
            )

    @property
    def n_cells(self) -> int:
        """Number of devices on the array."""
        return self.rows * self.cols

    @property
    def adc_lsb_uS(self) -> float:
        """Conductance step of one ADC code (µS)."""
        return (self.adc_max_uS - self.adc_min_uS) / (2**self.adc_bits - 1)

    def to_codes(
        self, g_uS: npt.ArrayLike, out: FloatArray | None = None, codes: npt.NDArray[np.uint16] | None = None
    ) -> npt.NDArray[np.uint16]:
        """Quantize conductances to ADC codes ``0 .. 2**adc_bits - 1`` (round to nearest, clip).

        ``out``: a float64 scratch array of ``g_uS``'s shape (may be ``g_uS`` itself, which is
        then overwritten) so a large read makes no temporaries; ``codes``: a uint16 array of
        that shape to write the codes into (returned). The codes are the same either way."""
        g = np.asarray(g_uS, dtype=np.float64)
        if self.adc_min_uS == 0.0 and out is not None:  # x − 0.0 is x: skip the pass
            step = np.divide(g, self.adc_lsb_uS, out=out)
        else:
            step = np.subtract(g, self.adc_min_uS, out=out)
            step /= self.adc_lsb_uS
        np.rint(step, out=step)
        np.clip(step, 0, 2**self.adc_bits - 1, out=step)
        if codes is None:
            return step.astype(np.uint16)
        np.copyto(codes, step, casting="unsafe")
        return codes

    def codes_to_uS(self, codes: npt.ArrayLike) -> FloatArray:
        """Conductance (µS) of ADC codes; every backend converts codes with this one function,
        so the same codes give bit-identical µS on every backend."""
        arr = np.asarray(codes)
        if arr.dtype == np.uint16:  # one gather from the table of every uint16 code: the same numbers
            return _code_table_uS(self.adc_min_uS, self.adc_lsb_uS).take(arr)
        return self.adc_min_uS + arr.astype(np.float64) * self.adc_lsb_uS


@functools.lru_cache(maxsize=8)
def _code_table_uS(adc_min_uS: float, adc_lsb_uS: float) -> FloatArray:
    """adc_min + code · lsb for every uint16 code, as ``codes_to_uS`` computes it (read-only)."""
    table = adc_min_uS + np.arange(1 << 16, dtype=np.float64) * adc_lsb_uS
    table.flags.writeable = False
    return table


@runtime_checkable
class Clock(Protocol):
    """A source of time in seconds since the chip's epoch."""

    def now(self) -> float:
        """Current time (s)."""
        ...

    def wait_until(self, t_s: float) -> None:
        """Return once ``now() >= t_s``; returns at once if ``t_s`` is already past."""
        ...


@runtime_checkable
class Chip(Protocol):
    """A PCM compute-in-memory chip, driven in batches of cells.

    Safety: ``set_pulse`` never applies a pulse whose amplitude is outside
    ``(0, geometry.max_set_amplitude]`` and no call touches an address outside the array;
    such calls raise :class:`~harness.errors.SafetyLimitError` before anything is sent.
    All conductances are in µS and pass through the chip's ADC.
    """

    @property
    def geometry(self) -> Geometry:
        """Array size, conductance range, ADC and safety limits."""
        ...

    @property
    def uri(self) -> str:
        """The URI this chip was opened with (for provenance)."""
        ...

    @property
    def identity(self) -> str:
        """What the chip says it is (``*IDN?`` for instruments)."""
        ...

    def now(self) -> float:
        """Chip time in seconds (simulated on the virtual chip, wall time on hardware)."""
        ...

    def wait_until(self, t_s: float) -> None:
        """Block (or advance the simulated clock) until ``now() >= t_s``."""
        ...

    def reset(self, cells: npt.ArrayLike) -> None:
        """Apply one RESET pulse to each cell (brings it to its lowest conductance)."""
        ...

    def set_pulse(self, cells: npt.ArrayLike, amplitude: npt.ArrayLike) -> None:
        """Apply one SET pulse to each cell; ``amplitude`` is a scalar or one per cell."""
        ...

    def read(self, cells: npt.ArrayLike) -> FloatArray:
        """Read each cell through the ADC; returns µS, shape ``(len(cells),)``."""
        ...

    def close(self) -> None:
        """Release the chip (idempotent)."""
        ...


@runtime_checkable
class CodeReadingChip(Protocol):
    """A chip that can report a read as its ADC codes (what the ADC or the wire delivers).

    ``read_codes(cells)`` performs the same read as ``read`` and returns the codes whose
    ``geometry.codes_to_uS`` is what ``read`` would have returned. Recordings store codes,
    so a session takes them directly instead of converting µS back to codes.
    """

    def read_codes(self, cells: npt.ArrayLike) -> npt.NDArray[np.uint16]: ...


def check_cells(cells: npt.ArrayLike, geometry: Geometry, *, unique: bool = False) -> CellArray:
    """Validate flat cell addresses and return them as a new 1-D ``int64`` array.

    Raises:
        AddressError: non-integer, not 1-D, off the array, or (``unique=True``) repeated.
    """
    arr = np.asarray(cells)
    if arr.ndim != 1:
        raise AddressError(f"cell addresses must be a 1-D array, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise AddressError(f"cell addresses must be integers, got dtype {arr.dtype}")
    out = arr.astype(np.int64, copy=True)
    if out.size:
        lo, hi = int(out.min()), int(out.max())
        if lo < 0 or hi >= geometry.n_cells:
            bad = lo if lo < 0 else hi
            raise AddressError(
                f"cell address {bad} is off the array: valid addresses are 0..{geometry.n_cells - 1} "
                f"({geometry.rows} rows x {geometry.cols} cols)"
            )
        if unique and _first_duplicate(out, geometry.n_cells) is not None:
            dup = _first_duplicate(out, geometry.n_cells)
            raise AddressError(f"cell {dup} appears more than once in one pulse call; pulse each cell once per call")
    return out


def _first_duplicate(cells: npt.NDArray[np.int64], n_cells: int) -> int | None:
    """The smallest address that occurs more than once in ``cells`` (on the array), or None.
    A count over the whole array costs O(n_cells) whatever the batch: a small batch (the late
    rounds of a write-verify loop) is sorted instead."""
    if cells.size < 2 or bool(np.all(cells[1:] > cells[:-1])):  # ascending (the usual batch): none
        return None
    if cells.size * 16 >= n_cells:
        counts = np.bincount(cells, minlength=0)
        return int(np.flatnonzero(counts > 1)[0]) if counts.max() > 1 else None
    s = np.sort(cells)
    rep = s[1:][s[1:] == s[:-1]]
    return int(rep[0]) if rep.size else None


def check_amplitude(amplitude: npt.ArrayLike, n_cells: int, geometry: Geometry) -> FloatArray:
    """Validate SET amplitudes (scalar or one per cell) and return a new float64 array.

    Raises:
        SafetyLimitError: shape mismatch, non-finite, ``<= 0`` or above ``max_set_amplitude``.
    """
    amp = np.asarray(amplitude, dtype=np.float64)
    if amp.ndim == 0:
        amp = np.full(n_cells, float(amp))
    elif amp.shape != (n_cells,):
        raise SafetyLimitError(f"got {amp.shape} amplitudes for {n_cells} cells; give one per cell or a scalar")
    else:
        amp = amp.copy()
    if amp.size:
        if not np.all(np.isfinite(amp)):
            raise SafetyLimitError("SET amplitude is NaN or infinite; refusing to pulse")
        lo, hi = float(amp.min()), float(amp.max())
        if lo <= 0.0:
            raise SafetyLimitError(f"SET amplitude {lo:g} must be > 0 (fraction of full-scale SET current)")
        if hi > geometry.max_set_amplitude:
            raise SafetyLimitError(
                f"SET amplitude {hi:g} exceeds the safety limit {geometry.max_set_amplitude:g} "
                "(fraction of full-scale SET current); lower the amplitude or the programming gain"
            )
    return amp


class ChipBackend(abc.ABC):
    """Base class of every backend: checks the seam, then calls the backend's ``_`` methods.

    Subclasses implement ``_reset``, ``_set_pulse``, ``_read``, ``now``, ``wait_until`` and
    may override ``_close``. They receive validated, copied ``int64`` cells and float64
    amplitudes, so they never re-check limits.
    """

    def __init__(self, geometry: Geometry, uri: str) -> None:
        self._geometry = geometry
        self._uri = uri
        self._closed = False

    @property
    def geometry(self) -> Geometry:
        return self._geometry

    @property
    def uri(self) -> str:
        return self._uri

    @property
    def identity(self) -> str:
        return type(self).__name__

    @property
    def closed(self) -> bool:
        return self._closed

    def _ensure_open(self) -> None:
        if self._closed:
            raise ChipClosedError(f"chip {self._uri!r} is closed; open it again")

    def reset(self, cells: npt.ArrayLike) -> None:
        self._ensure_open()
        c = check_cells(cells, self._geometry, unique=True)
        if c.size:
            self._reset(c)

    def set_pulse(self, cells: npt.ArrayLike, amplitude: npt.ArrayLike) -> None:
        self._ensure_open()
        c = check_cells(cells, self._geometry, unique=True)
        a = check_amplitude(amplitude, c.size, self._geometry)
        if c.size:
            self._set_pulse(c, a)

    def read(self, cells: npt.ArrayLike) -> FloatArray:
        self._ensure_open()
        c = check_cells(cells, self._geometry)
        if not c.size:
            return np.empty(0, dtype=np.float64)
        return self._read(c)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._close()

    def __enter__(self) -> ChipBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @abc.abstractmethod
    def now(self) -> float: ...

    @abc.abstractmethod
    def wait_until(self, t_s: float) -> None: ...

    @abc.abstractmethod
    def _reset(self, cells: CellArray) -> None: ...

    @abc.abstractmethod
    def _set_pulse(self, cells: CellArray, amplitude: FloatArray) -> None: ...

    @abc.abstractmethod
    def _read(self, cells: CellArray) -> FloatArray: ...

    def _close(self) -> None:  # noqa: B027 - optional hook
        """Release backend resources; called once."""


def cells_from_rc(rows: npt.ArrayLike, cols: npt.ArrayLike, geometry: Geometry) -> CellArray:
    """Flat addresses of (row, col) pairs; raises AddressError off the array."""
    r = np.asarray(rows, dtype=np.int64)
    c = np.asarray(cols, dtype=np.int64)
    if r.shape != c.shape:
        raise AddressError(f"rows {r.shape} and cols {c.shape} differ in shape")
    if r.size and (r.min() < 0 or r.max() >= geometry.rows or c.min() < 0 or c.max() >= geometry.cols):
        raise AddressError(f"(row, col) off the {geometry.rows}x{geometry.cols} array")
    return (r * geometry.cols + c).ravel()
