"""A new recording's header: the groups and records :func:`~harness.recording.writer.create_recording`
writes before publishing the file, and its atomic publication."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np
import numpy.typing as npt

from harness import __version__
from harness.chip.protocol import Geometry
from harness.errors import RecordingError
from harness.programming.mapping import Layout
from harness.recording import integrity
from harness.recording.schema import (
    BUILTIN_EXTRAS,
    CHECKSUM_COLUMN,
    FORMAT_NAME,
    FORMAT_VERSION,
    MAX_CHUNK_BYTES,
    _create_meta,
    _dumps,
    _meta_dtype,
    _process_start_us,
    _put,
    _write_all,
)

if TYPE_CHECKING:
    from harness.programming.write_verify import ProgrammingResult
    from harness.sessions.schedule import SessionSpec


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
        if name in out or name in ("g", "cells", CHECKSUM_COLUMN):
            raise RecordingError(f"per-readout column {name!r} is built in; choose another name")
        if isinstance(spec, tuple):
            dtype, shape = np.dtype(spec[0]), tuple(int(s) for s in spec[1])
        else:
            dtype, shape = np.dtype(spec), ()
        if dtype.kind not in "biuf":
            raise RecordingError(f"per-readout column {name!r} has dtype {dtype}; use a numeric dtype")
        out[name] = (dtype, shape)
    out[CHECKSUM_COLUMN] = (np.dtype(np.uint32), ())
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
    # "levels" only where a layer has them: continuous layouts stay as older readers know them
    lay.attrs["layers_json"] = _dumps(
        [{k: v for k, v in asdict(p).items() if k != "levels" or v} for p in layout.layers]
    )
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
        s.attrs["readout_repeats"] = int(session.readout.repeats)
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
    # Version 4 appends the manifest's entries (see harness.recording.integrity), filled by
    # seal_header once the rest of the header is written.
    f.create_dataset("commit", data=np.array([0, -1, -1] + [0] * (integrity.COMMIT_LEN - 3), dtype=np.int64))
    # [pid, process start (µs since epoch), active, checksum]; lets status/resume tell a
    # live writer from a crashed one.
    f.create_dataset("writer", data=np.zeros(integrity.WRITER_LEN, dtype=np.int64))


def seal_header(f: h5py.File) -> None:
    """Write the version-4 commit and writer records of a header that is otherwise complete
    (no readouts yet): the header digest is computed here, over what the file now holds."""
    f.flush()
    header = integrity.header_digest(f)
    resumes = f.attrs.get(integrity.RESUME_LOG)
    m = integrity.Manifest(header, resumes=integrity.text_crc(None if resumes is None else str(resumes)))
    _write_all(f["commit"], m.record(0, (-1, -1)))
    _write_all(f["writer"], integrity.writer_record(header, os.getpid(), _process_start_us(os.getpid()), 1))
