"""The recording format (HDF5): the one module that writes and reads it.

A recording holds provenance, the layout, the programming outcome, optionally a session
definition with its timetable and the chip's state, and readouts appended one at a time.
The layout is documented in ``docs/recording-format.md``; the version is the root
attribute ``format_version``.

Crash safety:

* A new file is written under a temporary name (``NAME.partial-PID``) and renamed to its
  final name only once the header (everything but the readouts) is complete and flushed,
  so a file under the final name always has a whole header. An existing file is never
  replaced unless ``overwrite=True``.
* Readouts are appended in single-writer/multiple-reader mode (SWMR: ``libver='latest'``,
  ``swmr_mode=True``): rows are written and flushed, then the commit record
  (``/commit``: number of readouts, and which chip-state slot holds which readout's
  state) is written and flushed. Readers trust only the committed count, so a crash
  loses at most the readout in flight, and another process can read while the file grows.
* The chip state (for continuing the virtual chip's physics on resume) has a ``base``
  (full snapshot at the end of programming) and two alternating ``slots`` for the state
  after each readout; a slot is written before the commit that names it, and the
  committed slot is never overwritten.
* A crashed writer leaves HDF5's "open for write" flag set; such a file is read in SWMR
  mode, and :func:`recover_recording` copies its committed content into a fresh file
  that atomically replaces it.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np
import numpy.typing as npt

from harness import __version__
from harness.chip import FloatArray, Geometry
from harness.errors import HarnessError, RecordingError
from harness.mapping import LayerPlacement, Layout

if TYPE_CHECKING:
    from harness.programming import ProgrammingResult
    from harness.schedule import SessionSpec

FORMAT_NAME = "pcm-harness-recording"
FORMAT_VERSION = 1

#: Readout encodings: ``adc_code`` stores the ADC code of every read (uint8 for <= 8-bit
#: ADCs, else uint16) and converts with ``Geometry.codes_to_uS`` on the way out, so the µS
#: values come back bit-identical to what the chip returned; ``float64`` stores µS as is
#: (for backends whose reads are not on an ADC grid).
ENCODINGS = ("adc_code", "float64")

#: Columns of ``readouts/meta`` recorded with every readout (a compound dataset, so one
#: readout's scalars are one write), before any declared extras.
BUILTIN_EXTRAS: dict[str, np.dtype[Any]] = {
    "t_s": np.dtype(np.float64),
    "t_scheduled_s": np.dtype(np.float64),
    "schedule_index": np.dtype(np.int64),
    "wall_unix_s": np.dtype(np.float64),
    "read_duration_s": np.dtype(np.float64),
}
_EXTRA_FILL = {"t_scheduled_s": math.nan, "schedule_index": -1, "read_duration_s": math.nan}

#: Largest chunk of the readout matrix (bytes); a row of up to this size is one chunk, so
#: one readout is one contiguous write.
MAX_CHUNK_BYTES = 8 << 20

_PARTIAL_INFIX = ".partial-"

#: Integer header arrays (addresses, indices, flags) of at least this many elements are
#: stored chunked with shuffle + gzip level 1: they shrink 3-10x, and gzip is in every HDF5
#: build. Float arrays (conductances, drift exponents) barely compress and stay raw.
COMPRESS_MIN_ELEMENTS = 1024
COMPRESS_CHUNK_ELEMENTS = 1 << 18


# ----------------------------------------------------------------------------- helpers


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if is_dataclass(obj) and not isinstance(obj, type):
        return asdict(obj)
    raise TypeError(f"cannot store {type(obj).__name__} in a recording's JSON attributes")


def _dumps(obj: Any) -> str:
    try:
        return json.dumps(obj, default=_json_default, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise RecordingError(f"cannot record {obj!r:.80}: {exc}") from exc


def _as_array(name: str, value: Any) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype.kind not in "biufc":
        raise RecordingError(f"chip state {name!r} has dtype {arr.dtype}; only numeric arrays can be recorded")
    return arr


def _put(group: h5py.Group, name: str, data: np.ndarray, links: dict[str, np.ndarray] | None = None) -> None:
    """Store a header array once: equal to an array already stored (``links``: path -> array)
    it becomes a hard link to it; large arrays are compressed."""
    arr = np.asarray(data)
    if links is not None:
        for path, other in links.items():
            if other.dtype == arr.dtype and other.shape == arr.shape and np.array_equal(other, arr):
                group[name] = group.file[path]
                return
    if arr.ndim == 1 and arr.size >= COMPRESS_MIN_ELEMENTS and arr.dtype.kind in "biu":
        group.create_dataset(
            name, data=arr, chunks=(min(arr.size, COMPRESS_CHUNK_ELEMENTS),), compression="gzip",
            compression_opts=1, shuffle=True,
        )
    else:
        group.create_dataset(name, data=arr)
    if links is not None:
        links[group[name].name] = arr


def _write_all(ds: h5py.Dataset, arr: np.ndarray) -> None:
    """Write a whole dataset with one low-level call (``arr`` already of its shape and dtype)."""
    ds.id.write(h5py.h5s.ALL, h5py.h5s.ALL, np.asarray(arr, dtype=ds.dtype, order="C"))


def partial_paths(path: str | Path) -> list[Path]:
    """Leftover temporary files of interrupted header writes for ``path`` (any process)."""
    p = Path(path)
    if not p.parent.is_dir():
        return []
    return sorted(p.parent.glob(p.name + _PARTIAL_INFIX + "*"))


def _process_start_us(pid: int) -> int:
    try:
        import psutil

        return int(psutil.Process(pid).create_time() * 1e6)
    except Exception:  # noqa: BLE001 - psutil missing or the process vanished: unknown start time
        return 0


def writer_alive(pid: int, start_us: int) -> bool:
    """True if process ``pid`` exists and (when known) started at ``start_us``."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if start_us == 0:
        return True
    now_start = _process_start_us(pid)
    return now_start == 0 or abs(now_start - start_us) < 1_000_000


# ----------------------------------------------------------------------------- writing


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

    Raises:
        RecordingError: ``path`` exists (and not ``overwrite``), is not writable, or the
            inputs are inconsistent; nothing at ``path`` is touched in that case.
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
    extra_specs = _extra_specs(extras)
    tmp = final.with_name(f"{final.name}{_PARTIAL_INFIX}{os.getpid()}")
    try:
        f = h5py.File(tmp, "w", libver="latest")
    except OSError as exc:
        raise RecordingError(f"cannot create recording {final}: {exc}") from exc
    try:
        _write_header(f, provenance, layout, programming, session, t_end_unix_s)
        _create_readouts(f, cells, encoding, geometry, extra_specs)
        if chip_state is not None:
            _create_chip_state(f, chip_state)
        f.flush()
        _publish(tmp, final, overwrite)
        f.swmr_mode = True
        writer = RecordingWriter(f, final)
    except BaseException as exc:
        with contextlib.suppress(Exception):
            f.close()
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, HarnessError) or not isinstance(exc, Exception):
            raise
        raise RecordingError(f"cannot write recording {final}: {exc}") from exc
    return writer


def _publish(tmp: Path, final: Path, overwrite: bool) -> None:
    """Give the finished header its final name: atomic, and never clobbering unless asked."""
    if overwrite:
        os.replace(tmp, final)
        return
    try:
        os.link(tmp, final)  # fails if final exists: no window in which a file is clobbered
    except FileExistsError as exc:
        raise RecordingError(f"recording {final} appeared while the header was written; not replacing it") from exc
    except OSError:
        if final.exists():
            raise RecordingError(f"recording {final} already exists; not replacing it") from None
        os.replace(tmp, final)
        return
    tmp.unlink()


def _extra_specs(
    extras: Mapping[str, npt.DTypeLike | tuple[npt.DTypeLike, tuple[int, ...]]] | None,
) -> dict[str, tuple[np.dtype[Any], tuple[int, ...]]]:
    out: dict[str, tuple[np.dtype[Any], tuple[int, ...]]] = {k: (v, ()) for k, v in BUILTIN_EXTRAS.items()}
    for name, spec in (extras or {}).items():
        if name in out or name in ("g", "cells"):
            raise RecordingError(f"per-readout column {name!r} is built in; choose another name")
        if isinstance(spec, tuple):
            dtype, shape = np.dtype(spec[0]), tuple(int(s) for s in spec[1])
        else:
            dtype, shape = np.dtype(spec), ()
        if dtype.kind not in "biuf":
            raise RecordingError(f"per-readout column {name!r} has dtype {dtype}; use a numeric dtype")
        out[name] = (dtype, shape)
    return out


def _write_header(
    f: h5py.File,
    provenance: Mapping[str, Any],
    layout: Layout,
    programming: ProgrammingResult,
    session: SessionSpec | None,
    t_end_unix_s: float | None,
) -> None:
    f.attrs["format"] = FORMAT_NAME
    f.attrs["format_version"] = FORMAT_VERSION
    f.attrs["harness_version"] = __version__
    f.attrs["created_unix_s"] = time.time()

    g = f.create_group("provenance")
    g.attrs["json"] = _dumps(dict(provenance))
    for key in ("chip_uri", "chip_identity", "model"):
        if key in provenance and provenance[key] is not None:
            g.attrs[key] = str(provenance[key])

    lay = f.create_group("layout")
    lay.attrs["geometry_json"] = _dumps(asdict(layout.geometry))
    lay.attrs["layers_json"] = _dumps([asdict(p) for p in layout.layers])
    n = layout.n_devices
    for name, arr in (
        ("cells", layout.cells),
        ("target_uS", layout.target_uS),
        ("layer_index", layout.layer_index),
        ("sign", layout.sign),
        ("weight_index", layout.weight_index),
    ):
        a = np.asarray(arr)
        if a.shape != (n,):
            raise RecordingError(f"layout array {name!r} has shape {a.shape}, expected ({n},)")
        _put(lay, name, a)
    links = {"/layout/cells": np.asarray(layout.cells), "/layout/target_uS": np.asarray(layout.target_uS)}

    pr = f.create_group("programming")
    m = np.asarray(programming.cells).size
    for name, dtype in (
        ("cells", np.int64),
        ("target_uS", np.float64),
        ("final_uS", np.float64),
        ("iterations", np.int32),
        ("converged", np.bool_),
    ):
        a = np.asarray(getattr(programming, name), dtype=dtype)
        if a.shape != (m,):
            raise RecordingError(f"programming array {name!r} has shape {a.shape}, expected ({m},)")
        _put(pr, name, a, links if name in ("cells", "target_uS") else None)
    pr.attrs["params_json"] = _dumps(programming.params)
    pr.attrs["t_start_s"] = float(programming.t_start_s)
    pr.attrs["t_end_s"] = float(programming.t_end_s)
    pr.attrs["wall_s"] = float(programming.wall_s)
    pr.attrs["t_end_unix_s"] = float(time.time() if t_end_unix_s is None else t_end_unix_s)

    if session is not None:
        s = f.create_group("session")
        s.attrs["name"] = session.name
        s.attrs["description"] = session.description
        s.attrs["toml"] = session.source_text
        s.attrs["source_path"] = session.source_path
        s.attrs["schedule_kind"] = session.schedule.kind
        s.attrs["schedule_json"] = _dumps(dict(session.schedule.params))
        s.attrs["readout_cells"] = session.readout.cells
        s.attrs["model"] = session.program.model
        s.create_dataset("times_s", data=session.schedule.as_array())


def _create_readouts(
    f: h5py.File,
    cells: npt.NDArray[np.int64],
    encoding: str,
    geometry: Geometry,
    extras: Mapping[str, tuple[np.dtype[Any], tuple[int, ...]]],
) -> None:
    r = f.create_group("readouts")
    r.attrs["encoding"] = encoding
    r.attrs["time_origin"] = "seconds since the end of programming (programming/t_end_s on the chip clock)"
    _put(r, "cells", cells, {"/layout/cells": f["layout/cells"][...]})
    n = max(int(cells.size), 1)
    if encoding == "adc_code":
        dtype = np.dtype(np.uint8) if geometry.adc_bits <= 8 else np.dtype(np.uint16)
        r.attrs["adc_bits"] = geometry.adc_bits
        r.attrs["adc_min_uS"] = geometry.adc_min_uS
        r.attrs["adc_max_uS"] = geometry.adc_max_uS
    else:
        dtype = np.dtype(np.float64)
    chunk_cols = max(1, min(n, MAX_CHUNK_BYTES // dtype.itemsize))
    r.create_dataset("g", shape=(0, cells.size), maxshape=(None, cells.size), dtype=dtype, chunks=(1, chunk_cols))
    _create_meta(r, _meta_dtype(extras))
    # [n_readouts, readouts covered by chip-state slot 0, ... slot 1]; -1 = slot empty.
    f.create_dataset("commit", data=np.array([0, -1, -1], dtype=np.int64))
    # [pid, process start (µs since epoch), active]; lets status/resume tell a live writer
    # from a crashed one.
    f.create_dataset("writer", data=np.array([os.getpid(), _process_start_us(os.getpid()), 1], dtype=np.int64))


def _meta_dtype(extras: Mapping[str, tuple[np.dtype[Any], tuple[int, ...]]]) -> np.dtype[Any]:
    return np.dtype([(name, dt, shape) if shape else (name, dt) for name, (dt, shape) in extras.items()])


def _create_meta(r: h5py.Group, dtype: np.dtype[Any], n: int = 0) -> h5py.Dataset:
    rows = max(1, min(64, (1 << 20) // dtype.itemsize))
    return r.create_dataset("meta", shape=(n,), maxshape=(None,), dtype=dtype, chunks=(rows,))


def _create_chip_state(f: h5py.File, state: Mapping[str, Any]) -> None:
    cs = f.create_group("chip_state")
    base = cs.create_group("base")
    keys = sorted(state)
    cs.attrs["keys_json"] = _dumps(keys)
    for slot in ("slot0", "slot1"):
        g = cs.create_group(slot)
        g.create_dataset("present", data=np.zeros(len(keys), dtype=np.uint8))
    for key in keys:
        arr = _as_array(key, state[key])
        _put(base, key, arr)
        for slot in ("slot0", "slot1"):
            if arr.ndim == 0:
                cs[slot].create_dataset(key, shape=(), dtype=arr.dtype)
            else:
                cs[slot].create_dataset(
                    key,
                    shape=(0,) * arr.ndim,
                    maxshape=(None,) * arr.ndim,
                    dtype=arr.dtype,
                    chunks=tuple(max(1, min(s, 1 << 18)) for s in arr.shape),
                )


class RecordingWriter:
    """Appends readouts to an open recording (SWMR writer). Use as a context manager.

    Every :meth:`append_readout` is durable once it returns (flushed and committed).
    """

    def __init__(self, f: h5py.File, path: Path) -> None:
        self._f = f
        self.path = path
        r = f["readouts"]
        self._g = r["g"]
        self._meta = r["meta"]
        self._fields: tuple[str, ...] = tuple(self._meta.dtype.names or ())
        self._commit = f["commit"]
        self._writer = f["writer"]
        self.encoding: str = str(r.attrs["encoding"])
        self.cells: npt.NDArray[np.int64] = r["cells"][...]
        geom = json.loads(f["layout"].attrs["geometry_json"])
        self.geometry = Geometry(**geom)
        c = self._commit[...]
        self._n = int(c[0])
        self._tags = [int(c[1]), int(c[2])]
        self._state_keys: list[str] = json.loads(f["chip_state"].attrs["keys_json"]) if "chip_state" in f else []
        self._present: dict[int, np.ndarray] = {}
        # dataset handles, looked up once: a per-readout lookup costs more than the write
        self._slot_ds: list[dict[str, h5py.Dataset]] = (
            [{k: f["chip_state"][f"slot{i}"][k] for k in [*self._state_keys, "present"]} for i in (0, 1)]
            if self._state_keys
            else [{}, {}]
        )
        self._meta_mspace = h5py.h5s.create_simple((1,))
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
        return tuple(n for n in self._fields if n != "t_s")

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
        if c.size and int(c.max()) >= self._lut.size:
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
        i = self._n
        try:
            # 1. the rows (and the chip state into the slot not holding the committed state)
            for ds in (self._g, self._meta):
                if ds.shape[0] != i + 1:
                    ds.resize(i + 1, axis=0)
            self._write_row(i, row)
            fspace = self._meta.id.get_space()
            fspace.select_hyperslab((i,), (1,))
            self._meta.id.write(self._meta_mspace, fspace, meta.reshape(1))
            slot = None
            if state_arrays is not None:
                slot = self._free_slot()
                self._write_slot(slot, state_arrays)
            self._f.flush()
            # 2. the commit record, in one small write, after the data it points at
            tags = list(self._tags)
            if slot is not None:
                tags[slot] = i + 1
            _write_all(self._commit, np.array([i + 1, *tags], dtype=np.int64))
            self._f.flush()
        except (OSError, ValueError, RuntimeError) as exc:
            raise RecordingError(f"writing readout {i} to {self.path} failed: {exc}") from exc
        self._n = i + 1
        self._tags = tags
        self._t_last = t
        return i

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
            self._commit[...] = np.array([self._n, *tags], dtype=np.int64)
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
            self._writer[...] = w
            self._f.flush()
        finally:
            self._f.close()

    def __enter__(self) -> RecordingWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ----------------------------------------------------------------------------- reading


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


def _open_h5(path: Path) -> h5py.File:
    """Open read-only; fall back to SWMR mode for a file a writer has open or left flagged.

    HDF5 checks a file's length against its superblock only in normal mode, and a SWMR
    reader sees zeros past the end of a truncated file, so that check is done here first.
    """
    if not path.exists():
        raise RecordingError(f"no recording at {path}: the file does not exist")
    if path.is_dir():
        raise RecordingError(f"{path} is a directory, not a recording")
    try:
        return h5py.File(path, "r")
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
                return h5py.File(path, "r", swmr=True)
            except OSError as exc2:
                raise RecordingError(f"{path} cannot be read as a recording: {exc2}") from exc2
        if "signature not found" in msg:
            raise RecordingError(f"{path} is not an HDF5 file, so not a harness recording") from exc
        if "truncated" in msg:
            raise RecordingError(f"{path} is truncated ({path.stat().st_size} bytes on disk): {msg}") from exc
        raise RecordingError(f"{path} cannot be read as a recording: {msg}") from exc


class Recording:
    """A read-only view of a recording (usable while a writer appends; see :meth:`refresh`).

    Raises RecordingError on anything missing, foreign or inconsistent, when opened and
    when a part is read.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._f = _open_h5(self.path)
        try:
            self._validate()
        except BaseException:
            self._f.close()
            raise
        self._layout: Layout | None = None

    def _validate(self) -> None:
        f = self._f
        fmt = f.attrs.get("format")
        if isinstance(fmt, bytes):
            fmt = fmt.decode()
        if fmt != FORMAT_NAME:
            raise RecordingError(
                f"{self.path} is an HDF5 file but not a harness recording (root attribute format={fmt!r}, "
                f"expected {FORMAT_NAME!r})"
            )
        version = int(f.attrs.get("format_version", -1))
        if version > FORMAT_VERSION or version < 1:
            raise RecordingError(
                f"{self.path} has recording format version {version}; this harness reads version {FORMAT_VERSION} "
                "(upgrade the harness)"
            )
        self.format_version = version
        try:
            for name in ("provenance", "layout", "programming", "readouts", "commit", "writer"):
                if name not in f:
                    raise RecordingError(f"{self.path} is incomplete: it has no '{name}' (not a finished header)")
            r = f["readouts"]
            for name in ("cells", "g", "meta"):
                if name not in r:
                    raise RecordingError(f"{self.path} is incomplete: it has no 'readouts/{name}'")
            self.encoding = str(r.attrs["encoding"])
            if self.encoding not in ENCODINGS:
                raise RecordingError(f"{self.path} has unknown readout encoding {self.encoding!r}")
            self.geometry = Geometry(**json.loads(f["layout"].attrs["geometry_json"]))
            self.readout_cells: npt.NDArray[np.int64] = r["cells"][...]
            if r["g"].shape[1:] != (self.readout_cells.size,):
                raise RecordingError(
                    f"{self.path} is inconsistent: readouts have {r['g'].shape[1:]} values for "
                    f"{self.readout_cells.size} cells"
                )
            self.provenance: dict[str, Any] = json.loads(f["provenance"].attrs["json"])
            self._check_commit()
        except HarnessError:
            raise
        except (KeyError, ValueError, TypeError, OSError) as exc:
            raise RecordingError(f"{self.path} is damaged or not a complete recording: {exc}") from exc

    def _check_commit(self) -> None:
        c = self._f["commit"][...]
        if c.shape != (3,):
            raise RecordingError(f"{self.path} has a malformed commit record {c!r}")
        n = int(c[0])
        r = self._f["readouts"]
        rows = min(r["g"].shape[0], r["meta"].shape[0])
        if n < 0 or n > rows:
            raise RecordingError(
                f"{self.path} is inconsistent: {n} readouts committed but only {rows} stored (truncated file?)"
            )
        if self._f.swmr_mode and n > getattr(self, "_n_checked", 0):
            self._check_extent(n)
        self._n = n
        self._tags = (int(c[1]), int(c[2]))

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
                        f"{self.path} is truncated: readout {i} lies beyond the end of the file ({size} bytes)"
                    )
        self._n_checked = n

    # -- life cycle
    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> Recording:
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
        from harness.schedule import parse_session

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
    def n_scheduled(self) -> int | None:
        t = self.scheduled_times_s
        return None if t is None else int(t.size)

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
        return tuple(n for n in (self._f["readouts/meta"].dtype.names or ()) if n != "t_s")

    def readout(self, i: int) -> FloatArray:
        """Readout ``i`` in µS (float64, bit-identical to what the chip returned)."""
        if not -self._n <= i < self._n:
            raise RecordingError(f"readout {i} does not exist; {self.path} has {self._n} readouts")
        i = i % self._n
        return self._decode(self._read(lambda: self._f["readouts/g"][i]))

    def readouts(self, cells: npt.ArrayLike | None = None) -> FloatArray:
        """All committed readouts in µS, shape ``(n_readouts, n_cells)`` (or only columns
        ``cells``, positions into :attr:`readout_cells`)."""
        ds = self._f["readouts/g"]
        if cells is None:
            raw = self._read(lambda: ds[: self._n])
        else:
            idx = np.asarray(cells, dtype=np.int64)
            raw = self._read(lambda: ds[: self._n][:, idx])
        return self._decode(raw)

    def codes(self, i: int) -> np.ndarray:
        """The stored form of readout ``i`` (ADC codes or float64 µS)."""
        return self._read(lambda: self._f["readouts/g"][i])

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
            for slot, tag in enumerate(self._tags):
                if tag == k:
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


# ----------------------------------------------------------------------------- recovery


def recover_recording(path: str | Path) -> RecordingWriter:
    """Reopen a recording for appending, whatever state its last writer left it in.

    The committed content (header, readouts ``0..n-1``, the chip state for ``n``) is
    copied into ``path.partial-PID``, which then atomically replaces ``path``; readouts in
    flight when the writer died are dropped. ``path`` is untouched if anything fails.

    Raises:
        RecordingError: not a readable recording, or a writer process still runs on it.
    """
    final = Path(path)
    with reading(final) as rec:
        if rec.writer_running:
            pid = rec.writer_info[0]
            raise RecordingError(f"{final} is still being written by process {pid}; stop it first or wait")
        n = rec.n_readouts
        state = rec.chip_state(n) if rec.has_chip_state else None
        tmp = final.with_name(f"{final.name}{_PARTIAL_INFIX}{os.getpid()}")
        src = rec._f  # noqa: SLF001 - the format module copies its own files
        try:
            dst = h5py.File(tmp, "w", libver="latest")
        except OSError as exc:
            raise RecordingError(f"cannot write {tmp}: {exc}") from exc
        try:
            for key, value in src.attrs.items():
                dst.attrs[key] = value
            memo: dict[Any, str] = {}
            for name in ("provenance", "layout", "programming", "session"):
                if name in src:
                    _copy_tree(src[name], dst.create_group(name), memo)
            r = src["readouts"]
            dst_r = _copy_readout_group(dst, r, memo)
            for i in range(n):
                dst_r["g"][i] = r["g"][i]
            if n:
                dst_r["meta"][:] = r["meta"][:n]
            tags = [-1, -1]
            if state is not None:
                base = {k: src["chip_state/base"][k][()] for k in json.loads(src["chip_state"].attrs["keys_json"])}
                _create_chip_state(dst, base)
                if n > 0:
                    g = dst["chip_state/slot0"]
                    keys = json.loads(src["chip_state"].attrs["keys_json"])
                    present = np.zeros(len(keys), dtype=np.uint8)
                    for j, key in enumerate(keys):
                        arr = np.asarray(state[key])
                        if arr.shape == np.shape(base[key]) and np.array_equal(arr, base[key]):
                            continue  # unchanged since programming: the base holds it
                        if arr.ndim:
                            g[key].resize(arr.shape)
                        g[key][...] = arr
                        present[j] = 1
                    g["present"][...] = present
                    tags = [n, -1]
            elif rec.has_chip_state:
                # committed readouts but no state saved for the last of them
                base = {k: src["chip_state/base"][k][()] for k in json.loads(src["chip_state"].attrs["keys_json"])}
                _create_chip_state(dst, base)
            dst["commit"][...] = np.array([n, *tags], dtype=np.int64)
            dst.flush()
        except HarnessError:
            dst.close()
            tmp.unlink(missing_ok=True)
            raise
        except (OSError, KeyError, ValueError) as exc:
            dst.close()
            tmp.unlink(missing_ok=True)
            raise RecordingError(f"{final} is damaged and cannot be resumed: {exc}") from exc
    try:
        os.replace(tmp, final)
        dst.swmr_mode = True
    except OSError as exc:
        dst.close()
        tmp.unlink(missing_ok=True)
        raise RecordingError(f"cannot replace {final}: {exc}") from exc
    return RecordingWriter(dst, final)


def _copy_tree(src: h5py.Group, dst: h5py.Group, memo: dict[Any, str]) -> None:
    """Copy a group's attributes and datasets (filters kept); an object reached twice
    through hard links is linked again, not duplicated (``memo``: object id -> dst path)."""
    for key, value in src.attrs.items():
        dst.attrs[key] = value
    for name, obj in src.items():
        if isinstance(obj, h5py.Group):
            _copy_tree(obj, dst.create_group(name), memo)
            continue
        ident = obj.id
        if ident in memo:
            dst[name] = dst.file[memo[ident]]
        else:
            src.copy(obj, dst, name=name)
            memo[ident] = dst[name].name


def _copy_readout_group(
    dst: h5py.File,
    r: h5py.Group,
    memo: dict[Any, str],
) -> h5py.Group:
    """Create the readout datasets in ``dst`` like those of ``r``, sized to ``commit``."""
    n = int(r.file["commit"][0])
    cells = r["cells"][...]
    out = dst.create_group("readouts")
    for key, value in r.attrs.items():
        out.attrs[key] = value
    if r["cells"].id in memo:
        out["cells"] = dst[memo[r["cells"].id]]
    else:
        _put(out, "cells", cells)
    g = r["g"]
    out.create_dataset("g", shape=(n, cells.size), maxshape=(None, cells.size), dtype=g.dtype, chunks=g.chunks)
    _create_meta(out, r["meta"].dtype, n)
    dst.create_dataset("commit", data=np.array([n, -1, -1], dtype=np.int64))
    dst.create_dataset("writer", data=np.array([os.getpid(), _process_start_us(os.getpid()), 1], dtype=np.int64))
    return out
