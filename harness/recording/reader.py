"""Reading recordings: open (normal or SWMR), validate, and decode readouts and state."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import h5py
import numpy as np
import numpy.typing as npt

from harness.chip.protocol import FloatArray
from harness.errors import HarnessError, RecordingError
from harness.programming.mapping import LayerPlacement, Layout
from harness.recording import integrity
from harness.recording.epochs import EpochReading, merge_state
from harness.recording.schema import CHECKSUM_COLUMN, readout_checksum, writer_alive
from harness.recording.validate import check_commit, validate_file

if TYPE_CHECKING:
    from harness.sessions.schedule import SessionSpec


@dataclass(frozen=True, eq=False)
class ProgrammingOutcome:
    """The stored write-verify outcome (arrays shape ``(n,)``); times on the chip clock."""

    cells: npt.NDArray[np.int64]
    target_uS: FloatArray
    final_uS: FloatArray
    iterations: npt.NDArray[np.int32]
    converged: npt.NDArray[np.bool_]
    params: dict[str, Any]
    t_start_s: float
    t_end_s: float
    wall_s: float
    t_end_unix_s: float

    @property
    def converged_fraction(self) -> float:
        return float(self.converged.mean()) if self.cells.size else 1.0

    @property
    def error_std_uS(self) -> float:
        e = (self.final_uS - self.target_uS)[self.target_uS > 0]
        return float(e.std()) if e.size else 0.0


_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def _superblock_eof(path: Path) -> int | None:
    """End-of-file address a version 2/3 superblock at offset 0 records (None if other)."""
    with open(path, "rb") as fh:
        head = fh.read(48)
    if len(head) < 48 or head[:8] != _HDF5_SIGNATURE or head[8] < 2 or head[9] != 8:
        return None
    base = int.from_bytes(head[12:20], "little")
    return base + int.from_bytes(head[28:36], "little")


#: Metadata read attempts of a SWMR reader. HDF5's default (100, with back-off sleeps
#: between them) made one flipped byte in an object header hang every reader for many
#: minutes; a reader of a live file re-reads on refresh anyway, so two attempts suffice.
SWMR_READ_ATTEMPTS = 2


def _hdf5_library() -> Any:
    """The HDF5 C library h5py uses (ctypes), for settings h5py does not expose; None if not found."""
    import ctypes
    import glob

    here = os.path.dirname(h5py.__file__)
    candidates = glob.glob(os.path.join(here, "..", "h5py.libs", "libhdf5-*.so*")) + glob.glob(
        os.path.join(here, ".dylibs", "libhdf5*.dylib")
    )
    if not candidates:
        with contextlib.suppress(OSError), open("/proc/self/maps") as fh:
            candidates = sorted({ln.split()[-1] for ln in fh if "/libhdf5." in ln or "/libhdf5-" in ln})
    for path in candidates:
        try:
            lib = ctypes.CDLL(path)
            fn = lib.H5Pset_metadata_read_attempts
        except (OSError, AttributeError):
            continue
        fn.argtypes = [ctypes.c_int64, ctypes.c_uint]
        fn.restype = ctypes.c_int
        return lib
    return None


def _open_swmr(path: Path) -> h5py.File:
    """Open a flagged file as a SWMR reader with bounded metadata retries (see above)."""
    lib = _hdf5_library()
    if lib is None:
        return h5py.File(path, "r", swmr=True)
    fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    fapl.set_libver_bounds(h5py.h5f.LIBVER_LATEST, h5py.h5f.LIBVER_LATEST)
    fapl.set_fclose_degree(h5py.h5f.CLOSE_STRONG)
    if lib.H5Pset_metadata_read_attempts(fapl.id, SWMR_READ_ATTEMPTS) < 0:
        return h5py.File(path, "r", swmr=True)
    fid = h5py.h5f.open(os.fsencode(path), h5py.h5f.ACC_RDONLY | h5py.h5f.ACC_SWMR_READ, fapl=fapl)
    return h5py.File(fid)


def _open_h5(path: Path) -> tuple[h5py.File, bool]:
    """Open read-only; fall back to SWMR mode for a file a writer has open or left flagged
    (then the second value is True).

    HDF5 checks a file's length against its superblock only in normal mode, and a SWMR
    reader sees zeros past the end of a truncated file, so that check is done here first.
    """
    if not path.exists():
        raise RecordingError(f"no recording at {path}: the file does not exist")
    if path.is_dir():
        raise RecordingError(f"{path} is a directory, not a recording")
    try:
        return h5py.File(path, "r"), False
    except FileNotFoundError as exc:
        raise RecordingError(f"no recording at {path}: the file does not exist") from exc
    except OSError as exc:
        msg = str(exc)
        if "already open for write" in msg:
            size = path.stat().st_size
            eof = _superblock_eof(path)
            if eof is not None and size < eof:
                raise RecordingError(
                    f"{path} is truncated: {size} bytes on disk, its header says {eof}; it cannot be read or resumed"
                ) from exc
            try:
                return _open_swmr(path), True
            except OSError as exc2:
                raise RecordingError(
                    f"{path} is damaged (left open by a crashed writer, and its metadata fails HDF5's checks): "
                    f"{str(exc2).splitlines()[0]}"
                ) from exc2
        if "signature not found" in msg:
            raise RecordingError(f"{path} is not an HDF5 file, so not a harness recording") from exc
        if "truncated" in msg:
            raise RecordingError(f"{path} is truncated ({path.stat().st_size} bytes on disk): {msg}") from exc
        raise RecordingError(f"{path} cannot be read as a recording: {msg}") from exc


class Recording(EpochReading):
    """A read-only view of a recording (usable while a writer appends; see :meth:`refresh`).

    Raises RecordingError on anything missing, foreign or inconsistent, when opened and
    when a part is read.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._f, self.open_for_write = _open_h5(self.path)
        try:
            self._validate()
        except BaseException:
            self._f.close()
            raise
        self._layout: Layout | None = None

    def _validate(self) -> None:
        header = validate_file(self._f, self.path)
        self.format_version = header.format_version
        self.encoding = header.encoding
        self.geometry = header.geometry
        self.readout_cells: npt.NDArray[np.int64] = header.readout_cells
        self.provenance: dict[str, Any] = header.provenance
        self.resumes: list[dict[str, Any]] = header.resumes
        self.has_checksums = header.has_checksums
        #: The verified integrity manifest (format version 4; None for older files).
        self.manifest: integrity.Manifest | None = header.manifest
        # validation verified the meta chain up to the commit it read
        self._chain_n = int(self._f["commit"][0]) if self.manifest is not None else 0
        self._chain = self.manifest.meta_chain if self.manifest is not None else 0
        self._check_commit()

    def _check_commit(self) -> None:
        n, tags, rec = check_commit(self._f)
        if self._f.swmr_mode and n > getattr(self, "_n_checked", 0):
            self._check_extent(n)
        if self.manifest is not None and n != self._chain_n:
            self._check_manifest(n, rec)
        self._n = n
        self._tags = tags

    def _check_manifest(self, n: int, rec: np.ndarray) -> None:
        """The committed records up to ``n`` against the (re-read) manifest: on open it was
        verified whole by validation; on refresh the meta chain is extended from where it was."""
        try:
            if int(integrity.seal(rec[:-1])[-1]) != int(rec[-1]):
                raise integrity.IntegrityError("its commit record fails its own checksum")
            m = integrity.Manifest.from_record(rec)
            if m.header != self.manifest.header:  # type: ignore[union-attr]
                raise integrity.IntegrityError("its commit record names another header")
            start, prev = (self._chain_n, self._chain) if n > self._chain_n else (0, 0)
            self._chain = integrity.verify_meta(self._f, m, start, n, prev)
        except integrity.IntegrityError as exc:
            raise RecordingError(f"{self.path} is not a valid recording: it fails its integrity check: {exc}") from None
        self.manifest = m
        self._chain_n = n

    def _check_extent(self, n: int) -> None:
        """Every committed readout's chunk lies inside the file (a SWMR reader would
        otherwise read zeros past the end of a truncated file)."""
        size = self.path.stat().st_size
        g = self._f["readouts/g"]
        n_col_chunks = -(-g.shape[1] // g.chunks[1]) if g.shape[1] else 0
        for i in range(getattr(self, "_n_checked", 0), n):
            for j in range(n_col_chunks):
                info = g.id.get_chunk_info_by_coord((i, j * g.chunks[1]))
                if info.byte_offset is None or info.byte_offset + info.size > size:
                    raise RecordingError(
                        f"{self.path} is truncated: readout #{i + 1} lies beyond the end of the file ({size} bytes)"
                    )
        self._n_checked = n

    # -- life cycle
    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def refresh(self) -> int:
        """See readouts appended since opening (SWMR); returns the number of readouts."""
        try:
            if self._f.swmr_mode:
                self._f["commit"].refresh()
                r = self._f["readouts"]
                for ds in (r["g"], r["meta"]):
                    ds.refresh()
                self._f["writer"].refresh()
            self._check_commit()
        except (OSError, KeyError) as exc:
            raise RecordingError(f"cannot refresh {self.path}: {exc}") from exc
        return self._n

    # -- header
    @property
    def n_readouts(self) -> int:
        """Committed readouts."""
        return self._n

    @property
    def n_cells(self) -> int:
        """Cells per readout."""
        return int(self.readout_cells.size)

    @property
    def layout(self) -> Layout:
        if self._layout is None:
            try:
                lay = self._f["layout"]
                layers = tuple(LayerPlacement(**d) for d in json.loads(lay.attrs["layers_json"]))
                self._layout = Layout(
                    geometry=self.geometry,
                    layers=layers,
                    cells=lay["cells"][...].astype(np.int64),
                    target_uS=lay["target_uS"][...].astype(np.float64),
                    layer_index=lay["layer_index"][...].astype(np.int32),
                    sign=lay["sign"][...].astype(np.int8),
                    weight_index=lay["weight_index"][...].astype(np.int64),
                )
            except (KeyError, ValueError, TypeError, OSError) as exc:
                raise RecordingError(f"{self.path}: the layout is damaged: {exc}") from exc
        return self._layout

    @property
    def programming(self) -> ProgrammingOutcome:
        try:
            p = self._f["programming"]
            return ProgrammingOutcome(
                cells=p["cells"][...],
                target_uS=p["target_uS"][...],
                final_uS=p["final_uS"][...],
                iterations=p["iterations"][...],
                converged=p["converged"][...],
                params=json.loads(p.attrs["params_json"]),
                t_start_s=float(p.attrs["t_start_s"]),
                t_end_s=float(p.attrs["t_end_s"]),
                wall_s=float(p.attrs["wall_s"]),
                t_end_unix_s=float(p.attrs["t_end_unix_s"]),
            )
        except (KeyError, ValueError, TypeError, OSError) as exc:
            raise RecordingError(f"{self.path}: the programming outcome is damaged: {exc}") from exc

    @property
    def t_end_s(self) -> float:
        """Chip time at the end of programming: readout times count from here."""
        return float(self._f["programming"].attrs["t_end_s"])

    @property
    def has_session(self) -> bool:
        return "session" in self._f

    @property
    def session_toml(self) -> str | None:
        return str(self._f["session"].attrs["toml"]) if self.has_session else None

    @property
    def session_name(self) -> str | None:
        return str(self._f["session"].attrs["name"]) if self.has_session else None

    @property
    def session(self) -> SessionSpec | None:
        """The session definition, re-parsed from its recorded TOML text."""
        if not self.has_session:
            return None
        from harness.sessions.schedule import parse_session

        s = self._f["session"]
        try:
            return parse_session(str(s.attrs["toml"]), source=str(s.attrs["source_path"]))
        except HarnessError as exc:
            raise RecordingError(f"{self.path}: the recorded session definition no longer parses: {exc}") from exc

    @property
    def scheduled_times_s(self) -> npt.NDArray[np.float64] | None:
        """The session's timetable as recorded (s since programming), or None without a session."""
        if not self.has_session:
            return None
        try:
            return self._f["session/times_s"][...]
        except (KeyError, OSError) as exc:
            raise RecordingError(f"{self.path}: the session timetable is damaged: {exc}") from exc

    @property
    def readout_repeats(self) -> int:
        """Reads taken back to back at every scheduled time (1 without a session, and in
        format-version-1 files, which predate repeats)."""
        if not self.has_session:
            return 1
        return int(self._f["session"].attrs.get("readout_repeats", 1))

    @property
    def n_scheduled(self) -> int | None:
        """Readouts the session plans: scheduled times × repeats (None without a session)."""
        t = self.scheduled_times_s
        return None if t is None else int(t.size) * self.readout_repeats

    @property
    def is_complete(self) -> bool:
        """Every scheduled readout is recorded (always true without a session)."""
        n = self.n_scheduled
        return n is None or self._n >= n

    @property
    def writer_info(self) -> tuple[int, int, bool]:
        """(pid, process start µs, active flag) of the process that last wrote the file."""
        w = self._f["writer"][...]
        return int(w[0]), int(w[1]), bool(w[2])

    @property
    def writer_running(self) -> bool:
        """True if the last writer marked itself active and that process still runs."""
        pid, start, active = self.writer_info
        return active and pid != os.getpid() and writer_alive(pid, start)

    # -- readouts
    @property
    def times_s(self) -> npt.NDArray[np.float64]:
        """Actual readout times, s since the end of programming, shape ``(n_readouts,)``."""
        return self.extra("t_s")

    def extra(self, name: str) -> np.ndarray:
        """A per-readout column (``t_s``, ``t_scheduled_s``, ``schedule_index``, ``wall_unix_s``, ...)."""
        meta = self._f["readouts/meta"]
        names = meta.dtype.names or ()
        if name not in names:
            raise RecordingError(f"{self.path} has no per-readout column {name!r}; it has {', '.join(names)}")
        return self._read(lambda: meta.fields(name)[: self._n])

    @property
    def extra_names(self) -> tuple[str, ...]:
        """Per-readout columns besides ``t_s``."""
        return tuple(n for n in (self._f["readouts/meta"].dtype.names or ()) if n not in ("t_s", CHECKSUM_COLUMN))

    def readout(self, i: int) -> FloatArray:
        """Readout ``i`` in µS (float64, bit-identical to what the chip returned)."""
        return self._decode(self.codes(i))

    def readouts(self, cells: npt.ArrayLike | None = None) -> FloatArray:
        """All committed readouts in µS, shape ``(n_readouts, n_cells)`` (or only columns
        ``cells``, positions into :attr:`readout_cells`); read one readout at a time, so
        memory is the result plus one row."""
        idx = None if cells is None else np.asarray(cells, dtype=np.int64)
        if idx is not None and idx.size and (idx.min() < -self.n_cells or idx.max() >= self.n_cells):
            raise RecordingError(f"readout column out of range; {self.path} reads {self.n_cells} cells")
        width = self.n_cells if idx is None else idx.size
        out = np.empty((self._n, width), dtype=np.float64)
        for i in range(self._n):
            row = self._decode(self.codes(i))
            out[i] = row if idx is None else row[idx]
        return out

    def codes(self, i: int) -> np.ndarray:
        """The stored form of readout ``i`` (ADC codes or float64 µS), checksum-verified."""
        i = int(i)
        if not -self._n <= i < self._n:
            raise RecordingError(f"readout index {i} (readout #{i + 1}) does not exist; {self.path} has {self._n} readouts")
        i %= self._n
        row = self._read(lambda: self._f["readouts/g"][i])
        if self.has_checksums:
            meta = self._read(lambda: self._f["readouts/meta"][i])
            want = int(meta[CHECKSUM_COLUMN])
            seed = integrity.row_seed(self.manifest.header, i) if self.manifest is not None else 0
            if readout_checksum(row, meta, seed) != want:
                raise RecordingError(
                    f"{self.path}: readout #{i + 1} is corrupted (its checksum does not match its data); "
                    "the file was damaged after it was written"
                    + (", or the readout was copied from another recording" if self.manifest is not None else "")
                )
        if self.encoding == "adc_code" and row.size and int(row.max()) >= 2**self.geometry.adc_bits:
            raise RecordingError(
                f"{self.path}: readout #{i + 1} holds ADC code {int(row.max())}, beyond the {self.geometry.adc_bits}-bit ADC"
            )
        return row

    def _decode(self, raw: np.ndarray) -> FloatArray:
        if self.encoding == "adc_code":
            return self.geometry.codes_to_uS(raw)
        return np.asarray(raw, dtype=np.float64)

    def _read(self, fn: Any) -> Any:
        try:
            return fn()
        except (OSError, KeyError, ValueError) as exc:
            raise RecordingError(f"{self.path} is damaged (truncated?): {exc}") from exc

    # -- chip state
    @property
    def has_chip_state(self) -> bool:
        return "chip_state" in self._f

    def chip_state(self, at_readouts: int | None = None) -> dict[str, np.ndarray] | None:
        """The chip's state after ``at_readouts`` readouts (default: all committed), as saved,
        merged over the base state; None if the recording holds no such state."""
        if not self.has_chip_state:
            return None
        k = self._n if at_readouts is None else int(at_readouts)
        cs = self._f["chip_state"]
        try:
            keys = json.loads(cs.attrs["keys_json"])
            state = {key: cs["base"][key][()] for key in keys}
            if k == 0:
                return state
            # a refresh session inside a later epoch: that epoch's device state over the base
            state = merge_state(self._f, state, int(self.readout_epochs[k - 1]))
            for slot, tag in enumerate(self._tags):
                if tag == k:
                    if self.manifest is not None and integrity.stored_slot_digest(self._f, slot) != self.manifest.slots[slot]:
                        raise RecordingError(
                            f"{self.path}: the chip state saved with readout #{k} does not match the file's "
                            "integrity manifest (corrupted or edited)"
                        )
                    g = cs[f"slot{slot}"]
                    present = g["present"][...]
                    for j, key in enumerate(keys):
                        if present[j]:
                            state[key] = g[key][()]
                    return state
        except (KeyError, ValueError, OSError) as exc:
            raise RecordingError(f"{self.path}: the chip state is damaged: {exc}") from exc
        return None

    def info(self) -> dict[str, Any]:
        """A JSON-ready description (for ``status`` and ``replay``)."""
        return {
            "path": str(self.path),
            "format_version": self.format_version,
            "session": self.session_name,
            "chip_uri": self.provenance.get("chip_uri"),
            "chip_identity": self.provenance.get("chip_identity"),
            "model": self.provenance.get("model"),
            "devices": self.layout.n_devices,
            "readout_cells": self.n_cells,
            "encoding": self.encoding,
            "readouts_done": self._n,
            "readouts_scheduled": self.n_scheduled,
            "complete": self.is_complete,
            **({"epochs": self.n_epochs} if self.has_epochs else {}),
        }


def open_recording(path: str | Path) -> Recording:
    """Open a recording read-only.

    Raises:
        RecordingError: missing, not HDF5, truncated, foreign (not a harness recording),
            from a newer format version, or internally inconsistent.
    """
    return Recording(path)


@contextlib.contextmanager
def reading(path: str | Path) -> Iterator[Recording]:
    """``with reading(path) as rec:`` — open_recording with guaranteed close."""
    rec = open_recording(path)
    try:
        yield rec
    finally:
        rec.close()
