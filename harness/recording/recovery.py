"""Recovery: reopen a recording for appending, whatever state its last writer left it in."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from harness.errors import HarnessError, RecordingError
from harness.recording.reader import reading
from harness.recording.schema import (
    _PARTIAL_INFIX,
    _create_chip_state,
    _create_meta,
    _process_start_us,
    _put,
)
from harness.recording.writer import RecordingWriter


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
        src = rec._f  # the format package copies its own files
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
