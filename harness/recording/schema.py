"""The recording format's schema: its names and constants, and the structure the writer and
recovery create (meta table, chip-state groups, temporary header files, JSON attributes,
the per-readout checksum).

The layout is documented in ``docs/recording-format.md`` (the one description of the
format); the version is the root attribute ``format_version``. The check every reader runs
on open is :mod:`harness.recording.validate`, which reads these names.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Mapping
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from harness.errors import RecordingError
from harness.recording.crc import crc32

FORMAT_NAME = "pcm-harness-recording"
#: Version 2 added ``session.attrs["readout_repeats"]`` (k reads per scheduled time; a
#: version-1 file has none and reads as k = 1). Version 3 adds the per-readout checksum
#: column ``crc32`` and the resume log ``resumes_json``. Versions 1 and 2 are still read
#: (without checksums), and resumed in their own version. Version 4 adds the integrity
#: manifest over everything the file holds (:mod:`harness.recording.integrity`); versions
#: 1-3 are read as what they are and resumed in their own version.
FORMAT_VERSION = 4

#: The per-readout checksum column of ``readouts/meta`` (version >= 3), see
#: :func:`readout_checksum`.
CHECKSUM_COLUMN = "crc32"
#: First version whose readouts carry a checksum.
CHECKSUM_VERSION = 3

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


def clean_stale_partials(path: str | Path) -> list[Path]:
    """Delete temporary copies of ``path`` left by writers that died (killed while writing a
    header or a recovery copy); those of live processes are left alone."""
    removed = []
    for p in partial_paths(path):
        pid_text = p.name.rsplit(_PARTIAL_INFIX, 1)[-1]
        pid = int(pid_text) if pid_text.isdigit() else -1
        if pid != os.getpid() and not writer_alive(pid, 0):
            with contextlib.suppress(OSError):
                p.unlink()
                removed.append(p)
    return removed


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


# ----------------------------------------------------------------------------- checksum


def readout_checksum(row: np.ndarray, meta: np.ndarray, seed: int = 0) -> int:
    """CRC-32 of one readout: its stored row bytes, then its ``meta`` record with the
    checksum field zeroed (so a flipped bit in the values or the time is detected).
    ``seed``: the CRC's start value (version 4: :func:`harness.recording.integrity.row_seed`,
    binding the row to its file and position; 0 in version 3)."""
    m = np.array(meta, copy=True).reshape(())
    m[CHECKSUM_COLUMN] = 0
    # the CRC reads the array's buffer in place: no copy of the (megabyte) row per readout.
    return crc32(m.tobytes(), crc32(np.ascontiguousarray(row), seed)) & 0xFFFFFFFF
