"""Writing recordings: a new file's header (published atomically) and the SWMR readout writer."""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import h5py
import numpy as np
import numpy.typing as npt

from harness.chip.protocol import FloatArray, Geometry
from harness.errors import HarnessError, RecordingError
from harness.programming.mapping import Layout
from harness.recording import epochs, integrity
from harness.recording.header import _create_readouts, _extra_specs, _publish, _write_header, seal_header
from harness.recording.lock import RecordingLock
from harness.recording.schema import (
    _EXTRA_FILL,
    _PARTIAL_INFIX,
    CHECKSUM_COLUMN,
    ENCODINGS,
    _as_array,
    _create_chip_state,
    _write_all,
    readout_checksum,
)
from harness.recording.validate import validate_file

if TYPE_CHECKING:
    from harness.programming.write_verify import ProgrammingResult
    from harness.sessions.schedule import SessionSpec


def create_recording(
    path: str | Path,
    *,
    provenance: Mapping[str, Any],
    layout: Layout,
    programming: ProgrammingResult,
    session: SessionSpec | None = None,
    chip_state: Mapping[str, np.ndarray] | None = None,
    readout_cells: npt.ArrayLike | None = None,
    encoding: str | None = None,
    extras: Mapping[str, npt.DTypeLike | tuple[npt.DTypeLike, tuple[int, ...]]] | None = None,
    t_end_unix_s: float | None = None,
    overwrite: bool = False,
    lock: RecordingLock | None = None,
    refresh_state_keys: Sequence[str] = (),
) -> RecordingWriter:
    """Write a new recording's header and return a writer for its readouts.

    Args:
        path: the final file name; written as ``path.partial-PID`` until the header is whole.
        provenance: JSON-serializable dict (see :func:`harness.provenance.collect_provenance`).
        layout: the mapped model (cells, targets, layers, geometry).
        programming: the write-verify outcome; its ``t_end_s`` is the time origin of readouts.
        session: the session definition (its TOML text and timetable are stored), if any.
        chip_state: the chip's full state at the end of programming (virtual chip); later
            ``append_readout(chip_state=...)`` / ``save_chip_state`` calls may only use its keys.
        readout_cells: cells each readout reads (default: the session's choice, else the layout's).
        encoding: ``"adc_code"`` or ``"float64"`` (default: the session's, else ``adc_code``).
        extras: further per-readout columns, ``name -> dtype`` or ``name -> (dtype, shape)``.
        t_end_unix_s: wall time (Unix s) when programming ended (default: now).
        overwrite: replace an existing file at ``path`` (only once the new header is complete).
        lock: the writer lock of ``path``, if the caller already holds it (see
            :mod:`harness.recording.lock`); taken here otherwise. The writer releases it.
        refresh_state_keys: for a refresh session (``session.refresh``), the keys of
            ``chip_state`` saved at every refresh (:mod:`harness.recording.epochs`); such a
            session's readouts get the epoch columns.

    Raises:
        RecordingError: ``path`` exists (and not ``overwrite``), is being written by a live
            process (even with ``overwrite``), is not writable, or the inputs are
            inconsistent; nothing at ``path`` is touched in that case.
    """
    final = Path(path)
    if final.is_dir():
        raise RecordingError(f"recording path {final} is a directory; give a file name ending in .h5")
    if final.exists() and not overwrite:
        raise RecordingError(
            f"recording {final} already exists; choose another file, or resume it with "
            "'harness session resume', or pass --overwrite to replace it"
        )
    if not final.parent.is_dir():
        raise RecordingError(f"directory {final.parent} does not exist; create it or choose another --out")
    geometry = layout.geometry
    if encoding is None:
        encoding = session.readout.encoding if session is not None else "adc_code"
    if encoding not in ENCODINGS:
        raise RecordingError(f"unknown readout encoding {encoding!r}; use one of {', '.join(ENCODINGS)}")
    if readout_cells is None:
        if session is not None and session.readout.cells == "array":
            readout_cells = np.arange(geometry.n_cells, dtype=np.int64)
        else:
            readout_cells = layout.cells
    cells = np.array(readout_cells, dtype=np.int64).ravel()
    if cells.size and (cells.min() < 0 or cells.max() >= geometry.n_cells):
        raise RecordingError(f"readout cells must be on the {geometry.rows}x{geometry.cols} array")
    if np.unique(cells).size != cells.size:
        raise RecordingError("readout cells must name each cell once")
    refreshing = session is not None and session.refresh is not None
    extra_specs = _extra_specs({**(extras or {}), **(epochs.REFRESH_EXTRAS if refreshing else {})})
    own_lock = lock is None
    the_lock = RecordingLock.acquire(final) if lock is None else lock
    tmp = final.with_name(f"{final.name}{_PARTIAL_INFIX}{os.getpid()}")
    try:
        f = h5py.File(tmp, "w", libver="latest")
    except OSError as exc:
        if own_lock:
            the_lock.release()
        raise RecordingError(f"cannot create recording {final}: {exc}") from exc
    try:
        _write_header(f, provenance, layout, programming, session, t_end_unix_s)
        _create_readouts(f, cells, encoding, geometry, extra_specs)
        if chip_state is not None:
            _create_chip_state(f, chip_state)
        if refreshing:
            epochs.create_group(f, int(np.asarray(programming.cells).size), chip_state or {}, refresh_state_keys)
        seal_header(f)
        f.flush()
        validate_file(f, final)  # never publish a file the reader would refuse
        _publish(tmp, final, overwrite)
        f.swmr_mode = True
        writer = RecordingWriter(f, final, the_lock)
    except BaseException as exc:
        with contextlib.suppress(Exception):
            f.close()
        with contextlib.suppress(OSError):
            tmp.unlink()
        if own_lock:
            the_lock.release()
        if isinstance(exc, HarnessError) or not isinstance(exc, Exception):
            raise
        raise RecordingError(f"cannot write recording {final}: {exc}") from exc
    return writer


class RecordingWriter:
    """Appends readouts to an open recording (SWMR writer). Use as a context manager.

    Every :meth:`append_readout` is durable once it returns (flushed and committed).
    """

    def __init__(self, f: h5py.File, path: Path, lock: RecordingLock | None = None) -> None:
        self._f = f
        self.path = path
        self._lock = lock
        r = f["readouts"]
        self._g = r["g"]
        self._meta = r["meta"]
        self._fields: tuple[str, ...] = tuple(self._meta.dtype.names or ())
        self._checksums = CHECKSUM_COLUMN in self._fields
        self._commit = f["commit"]
        self._writer = f["writer"]
        self.encoding: str = str(r.attrs["encoding"])
        self.cells: npt.NDArray[np.int64] = r["cells"][...]
        geom = json.loads(f["layout"].attrs["geometry_json"])
        self.geometry = Geometry(**geom)
        c = self._commit[...]
        self._n = int(c[0])
        self._tags = [int(c[1]), int(c[2])]
        # Version 4: the running manifest, continued from the committed record (which the
        # caller opened through validation: create_recording or recovery).
        self._manifest = integrity.Manifest.from_record(c) if c.shape == (integrity.COMMIT_LEN,) else None
        self._state_keys: list[str] = json.loads(f["chip_state"].attrs["keys_json"]) if "chip_state" in f else []
        self._present: dict[int, np.ndarray] = {}
        # dataset handles, looked up once: a per-readout lookup costs more than the write
        self._slot_ds: list[dict[str, h5py.Dataset]] = (
            [{k: f["chip_state"][f"slot{i}"][k] for k in [*self._state_keys, "present"]} for i in (0, 1)]
            if self._state_keys
            else [{}, {}]
        )
        self._meta_mspace = h5py.h5s.create_simple((1,))
        # Per-append costs that are not the data's: the compound memory type made once (h5py
        # would build it from the dtype at every write), the row extents tracked here (one
        # dataset-space query each otherwise).
        self._meta_mtype = h5py.h5t.py_create(self._meta.dtype)
        self._int64_mtype = h5py.h5t.py_create(np.dtype(np.int64))
        self._rows = [int(self._g.shape[0]), int(self._meta.shape[0])]
        self._tails = (tuple(self._g.shape[1:]), ())
        self._row_buf = np.zeros(self.n_cells, dtype=self._g.dtype)
        self._t_last = float(self._meta[self._n - 1]["t_s"]) if self._n else -math.inf
        lut = self.geometry.codes_to_uS(np.arange(2**self.geometry.adc_bits))
        self._lut: FloatArray = lut
        self._closed = False

    # -- properties
    @property
    def n_readouts(self) -> int:
        """Readouts committed so far."""
        return self._n

    @property
    def n_cells(self) -> int:
        return int(self.cells.size)

    @property
    def t_end_s(self) -> float:
        """Chip time at the end of programming: the origin of readout times."""
        return float(self._f["programming"].attrs["t_end_s"])

    @property
    def t_end_unix_s(self) -> float:
        return float(self._f["programming"].attrs["t_end_unix_s"])

    @property
    def extra_names(self) -> tuple[str, ...]:
        """Per-readout columns besides ``t_s``."""
        return tuple(n for n in self._fields if n not in ("t_s", CHECKSUM_COLUMN))

    @property
    def stores_codes(self) -> bool:
        """True if readouts are stored as ADC codes (``append_codes`` is the direct path)."""
        return self.encoding == "adc_code"

    # -- writing
    def encode(self, g_uS: npt.ArrayLike) -> np.ndarray:
        """The stored form of one readout; raises RecordingError if it would not round-trip."""
        g = np.asarray(g_uS, dtype=np.float64)
        if g.shape != (self.n_cells,):
            raise RecordingError(f"readout has shape {g.shape}; this recording reads {self.n_cells} cells")
        if self.encoding == "float64":
            return g
        geom = self.geometry
        with np.errstate(invalid="ignore"):
            codes = np.rint((g - geom.adc_min_uS) * (1.0 / geom.adc_lsb_uS))
            ok = np.isfinite(codes) & (codes >= 0) & (codes < self._lut.size)
        c = np.where(ok, codes, 0).astype(self._g.dtype)
        # Accept only if decoding gives back exactly the µS the chip returned: the lookup
        # table is Geometry.codes_to_uS of every code, so this is the replay-side conversion.
        back = self._lut[c]
        if not (ok.all() and np.array_equal(back, g)):
            bad = int(np.flatnonzero(~ok | (back != g))[0])
            raise RecordingError(
                f"read value {g[bad]!r} µS of cell {int(self.cells[bad])} is not on the chip's {geom.adc_bits}-bit "
                f"ADC grid; record this chip with encoding = \"float64\" in the session's [readout] table"
            )
        return c

    def append_codes(
        self, t_s: float, codes: npt.ArrayLike, *, chip_state: Mapping[str, Any] | None = None, **extras: Any
    ) -> int:
        """Like :meth:`append_readout` for a chip that reports ADC codes (the stored form):
        the readout in µS is ``geometry.codes_to_uS(codes)``, by the Chip contract."""
        if self.encoding != "adc_code":
            return self.append_readout(t_s, self.geometry.codes_to_uS(codes), chip_state=chip_state, **extras)
        c = np.asarray(codes)
        if c.shape != (self.n_cells,) or c.dtype.kind not in "ui":
            raise RecordingError(f"ADC codes must be {self.n_cells} unsigned integers, got {c.dtype} {c.shape}")
        # (codes of a dtype narrower than the ADC, e.g. uint8 of an 8-bit ADC, need no check)
        if c.size and np.iinfo(c.dtype).max >= self._lut.size and int(c.max()) >= self._lut.size:
            raise RecordingError(f"ADC code {int(c.max())} is beyond the {self.geometry.adc_bits}-bit ADC range")
        if c.dtype != self._g.dtype:
            # one reused buffer: no fresh allocation (and page faults) per readout
            np.copyto(self._row_buf, c, casting="unsafe")
            c = self._row_buf
        return self._append(t_s, c, chip_state, extras)

    def append_readout(
        self,
        t_s: float,
        g_uS: npt.ArrayLike,
        *,
        chip_state: Mapping[str, Any] | None = None,
        **extras: Any,
    ) -> int:
        """Append one readout at ``t_s`` (seconds since programming ended) and commit it.

        ``g_uS``: µS of every readout cell, shape ``(n_cells,)``. ``chip_state``: the chip's
        state right after this read (keys from the base state), committed atomically with
        the readout. ``extras``: values of declared per-readout columns (``t_scheduled_s``,
        ``schedule_index``, ``read_duration_s`` and those given to ``create_recording``).
        Returns the readout's index.

        Raises:
            RecordingError: wrong shape, a non-finite or earlier time, an unknown column,
                a value off the ADC grid, or a write failure.
        """
        return self._append(t_s, self.encode(g_uS), chip_state, extras)

    def _append(self, t_s: float, row: np.ndarray, chip_state: Mapping[str, Any] | None, extras: Mapping[str, Any]) -> int:
        self._ensure_open()
        t = float(t_s)
        if not math.isfinite(t):
            raise RecordingError(f"readout time {t_s!r} is not a finite number of seconds")
        if t < self._t_last:
            raise RecordingError(f"readout time {t:g} s is before the previous readout at {self._t_last:g} s")
        unknown = sorted(set(extras) - set(self.extra_names))
        if unknown:
            raise RecordingError(
                f"unknown per-readout column {unknown[0]!r}; declared: {', '.join(self.extra_names)}"
            )
        meta = np.zeros((), dtype=self._meta.dtype)
        meta["t_s"] = t
        for name in self.extra_names:
            if name in extras:
                value = extras[name]
            elif name == "wall_unix_s":
                value = time.time()
            else:
                value = _EXTRA_FILL.get(name, 0)
            try:
                meta[name] = value
            except (ValueError, TypeError) as exc:
                raise RecordingError(f"per-readout column {name!r}: bad value {value!r}: {exc}") from exc
        state_arrays = self._check_state(chip_state) if chip_state is not None else None
        row = np.ascontiguousarray(row, dtype=self._g.dtype)
        i = self._n
        m = self._manifest
        if self._checksums:
            seed = integrity.row_seed(m.header, i) if m is not None else 0
            meta[CHECKSUM_COLUMN] = readout_checksum(row, meta, seed)
        prev_chain = m.meta_chain if m is not None else 0
        try:
            # 1. the rows (and the chip state into the slot not holding the committed state)
            for k, ds in enumerate((self._g, self._meta)):
                if self._rows[k] != i + 1:
                    ds.id.set_extent((i + 1, *self._tails[k]))
                    self._rows[k] = i + 1
            self._write_row(i, row)
            fspace = self._meta.id.get_space()
            fspace.select_hyperslab((i,), (1,))
            self._meta.id.write(self._meta_mspace, fspace, meta.reshape(1), mtype=self._meta_mtype)
            slot = None
            if state_arrays is not None:
                slot = self._free_slot()
                self._write_slot(slot, state_arrays)
            self._f.flush()
            # 2. the commit record, in one small write, after the data it points at
            tags = list(self._tags)
            if slot is not None:
                tags[slot] = i + 1
            if m is not None:
                m.meta_chain = integrity.chain(prev_chain, meta.reshape(1))
            self._write_commit(i + 1, tags)
            self._f.flush()
        except (OSError, ValueError, RuntimeError) as exc:
            if m is not None:
                m.meta_chain = prev_chain
            self._rows = [int(self._g.shape[0]), int(self._meta.shape[0])]
            raise RecordingError(f"writing readout {i} to {self.path} failed: {exc}") from exc
        self._n = i + 1
        self._tags = tags
        self._t_last = t
        return i

    def _write_commit(self, n: int, tags: list[int]) -> None:
        """The commit record for ``n`` readouts (version 4: the sealed manifest)."""
        record = np.array([n, *tags], dtype=np.int64) if self._manifest is None else self._manifest.record(n, tags)
        # the record is int64 like the dataset: one low-level write with the type made once
        self._commit.id.write(h5py.h5s.ALL, h5py.h5s.ALL, np.ascontiguousarray(record, dtype=np.int64), mtype=self._int64_mtype)

    def _write_row(self, i: int, row: np.ndarray) -> None:
        """Write readout row ``i`` chunk by chunk, bypassing h5py's selection machinery (the
        row is already in the stored dtype and the dataset is unfiltered)."""
        width = self._g.chunks[1]
        data = np.ascontiguousarray(row, dtype=self._g.dtype)
        for start in range(0, data.size, width):
            part = data[start : start + width]
            if part.size < width:  # a partial last chunk is still stored whole
                part = np.concatenate([part, np.zeros(width - part.size, dtype=data.dtype)])
            self._g.id.write_direct_chunk((i, start), memoryview(part))

    def record_refresh(
        self, epoch: int, result: ProgrammingResult, *, after_readout: int, rule: int,
        chip_state: Mapping[str, np.ndarray] | None = None,
    ) -> int:
        """Store programming epoch ``epoch``'s refresh (:func:`harness.recording.epochs.write_refresh`);
        it is part of the recording once a readout of that epoch, carrying the returned digest
        in ``epoch_crc``, is committed."""
        self._ensure_open()
        if epochs.GROUP not in self._f:
            raise RecordingError(f"recording {self.path} is not a refresh session's; it has no programming epochs")
        try:
            return epochs.write_refresh(self._f, epoch, result, after_readout=after_readout, rule=rule, state=chip_state)
        except (OSError, ValueError, RuntimeError, KeyError) as exc:
            raise RecordingError(f"writing refresh #{epoch} to {self.path} failed: {exc}") from exc

    def save_chip_state(self, chip_state: Mapping[str, Any]) -> None:
        """Record the chip's state as of the last committed readout (same keys as the base)."""
        self._ensure_open()
        arrays = self._check_state(chip_state)
        slot = self._free_slot()
        try:
            self._write_slot(slot, arrays)
            self._f.flush()
            tags = list(self._tags)
            tags[slot] = self._n
            self._write_commit(self._n, tags)
            self._f.flush()
        except (OSError, ValueError, RuntimeError) as exc:
            raise RecordingError(f"writing the chip state to {self.path} failed: {exc}") from exc
        self._tags = tags

    def _check_state(self, state: Mapping[str, Any]) -> dict[str, np.ndarray]:
        if not self._state_keys:
            raise RecordingError(
                f"recording {self.path} was created without a chip state; pass chip_state= to create_recording"
            )
        unknown = sorted(set(state) - set(self._state_keys))
        if unknown:
            raise RecordingError(f"chip state key {unknown[0]!r} was not in the state given at creation")
        out = {}
        for key, value in state.items():
            arr = _as_array(key, value)
            ds = self._slot_ds[0][key]
            if arr.ndim != ds.ndim:
                raise RecordingError(f"chip state {key!r} has {arr.ndim} dimensions, the base state {ds.ndim}")
            out[key] = np.asarray(arr, dtype=ds.dtype, order="C")
        return out

    def _free_slot(self) -> int:
        """The slot not holding the state of the latest committed readout."""
        return 1 if self._tags[0] == self._n else 0

    def _write_slot(self, slot: int, arrays: Mapping[str, np.ndarray]) -> None:
        handles = self._slot_ds[slot]
        present = np.zeros(len(self._state_keys), dtype=np.uint8)
        for j, key in enumerate(self._state_keys):
            if key not in arrays:
                continue
            arr = arrays[key]
            ds = handles[key]
            if arr.ndim and ds.shape != arr.shape:
                ds.resize(arr.shape)
            if arr.size:
                _write_all(ds, arr)
            present[j] = 1
        if self._manifest is not None:
            self._manifest.slots[slot] = integrity.slot_digest(self._state_keys, present, arrays)
        if slot not in self._present or not np.array_equal(self._present[slot], present):
            _write_all(handles["present"], present)
            self._present[slot] = present

    # -- closing
    def _ensure_open(self) -> None:
        if self._closed:
            raise RecordingError(f"recording {self.path} is closed")

    def close(self) -> None:
        """Mark the writer inactive and close the file (idempotent)."""
        if self._closed:
            return
        self._closed = True
        try:
            w = self._writer[...]
            w[2] = 0
            if self._manifest is not None:
                w = integrity.writer_record(self._manifest.header, int(w[0]), int(w[1]), 0)
            self._writer[...] = w
            self._f.flush()
        finally:
            try:
                self._f.close()
            finally:
                if self._lock is not None:
                    self._lock.release()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
