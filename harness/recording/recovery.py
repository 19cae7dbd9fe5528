"""Recovery: reopen a recording for appending, whatever state its last writer left it in."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from harness.errors import HarnessError, RecordingError
from harness.recording import integrity
from harness.recording.lock import RecordingLock
from harness.recording.reader import reading
from harness.recording.schema import (
    _PARTIAL_INFIX,
    _create_chip_state,
    _create_meta,
    _dumps,
    _process_start_us,
    _put,
    clean_stale_partials,
)
from harness.recording.writer import RecordingWriter


def recover_recording(
    path: str | Path, *, lock: RecordingLock | None = None, note: Mapping[str, Any] | None = None
) -> RecordingWriter:
    """Reopen a recording for appending, whatever state its last writer left it in.

    The committed content (header, readouts ``0..n-1``, the chip state for ``n``) is
    copied into ``path.partial-PID``, which then atomically replaces ``path``; readouts in
    flight when the writer died are dropped. ``path`` is untouched if anything fails, and
    the copy is removed. Copies left by recoveries that were killed are removed first.

    Args:
        lock: the writer lock of ``path`` if the caller holds it already (taken here
            otherwise); the returned writer releases it.
        note: a JSON-ready record of this reopening (who, which chip, whether the chip
            check was overridden), appended to the root attribute ``resumes_json``.

    Raises:
        RecordingError: not a readable recording, a writer process still runs on it, or
            there is no room for the copy (the message says how much is needed).
    """
    final = Path(path)
    own_lock = lock is None
    the_lock = RecordingLock.acquire(final) if lock is None else lock
    try:
        clean_stale_partials(final)
        writer = _recover(final, the_lock, note)
    except BaseException:
        if own_lock:
            the_lock.release()
        raise
    return writer


def _recover(final: Path, lock: RecordingLock, note: Mapping[str, Any] | None) -> RecordingWriter:
    with reading(final) as rec:
        if rec.writer_running:
            pid = rec.writer_info[0]
            raise RecordingError(f"{final} is still being written by process {pid}; stop it first or wait")
        n = rec.n_readouts
        state = rec.chip_state(n) if rec.has_chip_state else None
        resumes = rec.resumes
        manifest = rec.manifest
        need = final.stat().st_size
        tmp = final.with_name(f"{final.name}{_PARTIAL_INFIX}{os.getpid()}")
        _check_room(final, need)
        src = rec._f  # the format package copies its own files
        try:
            dst = h5py.File(tmp, "w", libver="latest")
        except OSError as exc:
            raise RecordingError(f"cannot write {tmp}: {exc}") from exc
        try:
            for key, value in src.attrs.items():
                if key != "resumes_json":
                    dst.attrs[key] = value
            if note is not None:
                dst.attrs["resumes_json"] = _dumps([*resumes, dict(note)])
            elif resumes:
                dst.attrs["resumes_json"] = _dumps(resumes)
            memo: dict[Any, str] = {}
            for name in ("provenance", "layout", "programming", "session", "refreshes"):
                if name in src:
                    _copy_tree(src[name], dst.create_group(name), memo)
            r = src["readouts"]
            dst_r = _copy_readout_group(dst, r, memo, n, v4=manifest is not None)
            for i in range(n):
                dst_r["g"][i] = rec.codes(i)  # checksum-verified
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
            if manifest is None:
                dst["commit"][...] = np.array([n, *tags], dtype=np.int64)
            else:
                _seal_copy(dst, manifest, n, tags)
            dst.flush()
        except BaseException as exc:
            with contextlib.suppress(Exception):
                dst.close()
            tmp.unlink(missing_ok=True)
            if isinstance(exc, HarnessError) or not isinstance(exc, Exception):
                raise
            _check_room(final, need, exc)
            raise RecordingError(f"{final} is damaged and cannot be resumed: {exc}") from exc
    try:
        os.replace(tmp, final)
        dst.swmr_mode = True
    except OSError as exc:
        dst.close()
        tmp.unlink(missing_ok=True)
        raise RecordingError(f"cannot replace {final}: {exc}") from exc
    return RecordingWriter(dst, final, lock)


def _seal_copy(dst: h5py.File, manifest: integrity.Manifest, n: int, tags: list[int]) -> None:
    """The version-4 commit and writer records of a recovery copy: the same header (so every
    readout's checksum stays valid), the verified meta chain, the new slot and resume log."""
    dst.flush()
    if integrity.header_digest(dst) != manifest.header:
        raise RecordingError(f"{dst.filename}: the copy's content differs from its original's manifest")
    resumes = dst.attrs.get(integrity.RESUME_LOG)
    slots = (integrity.stored_slot_digest(dst, 0) if tags[0] == n else 0, 0)
    m = integrity.Manifest(manifest.header, manifest.meta_chain, slots, integrity.text_crc(None if resumes is None else str(resumes)))
    dst["commit"][...] = m.record(n, tags)
    dst["writer"][...] = integrity.writer_record(m.header, os.getpid(), _process_start_us(os.getpid()), 1)


def _check_room(final: Path, need_bytes: int, exc: BaseException | None = None) -> None:
    """Refuse (before the copy, or to explain a failed one) when the directory lacks room
    for a copy of ``need_bytes``, or the process may not write a file that large."""
    import resource

    try:
        free = shutil.disk_usage(final.parent).free
    except OSError:
        return
    mb = 1 << 20
    needs = f"resuming {final} needs about {need_bytes / mb:.1f} MB free in {final.parent} for its copy"
    if free < need_bytes + mb:
        raise RecordingError(f"{needs}; only {free / mb:.1f} MB are free") from exc
    fsize = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if fsize != resource.RLIM_INFINITY and fsize < need_bytes + mb:
        raise RecordingError(f"{needs}; this process may write files of at most {fsize / mb:.1f} MB (ulimit -f)") from exc


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
    n: int,
    *,
    v4: bool,
) -> h5py.Group:
    """Create the readout datasets in ``dst`` like those of ``r``, sized to ``n`` committed readouts."""
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
    pad = integrity.COMMIT_LEN - 3 if v4 else 0
    dst.create_dataset("commit", data=np.array([n, -1, -1] + [0] * pad, dtype=np.int64))
    writer = [os.getpid(), _process_start_us(os.getpid()), 1] + [0] * (integrity.WRITER_LEN - 3 if v4 else 0)
    dst.create_dataset("writer", data=np.array(writer, dtype=np.int64))
    return out
