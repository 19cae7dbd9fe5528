"""The integrity manifest of format version 4: one place computes it, one place checks it.

A version-4 recording's ``/commit`` record is the manifest, written atomically (one small
write, after the data it names) with every readout:

====  =====================================================================
 [0]  readouts committed, ``n``
 [1]  readouts covered by chip-state slot 0 (-1: empty)
 [2]  ... slot 1
 [3]  digest of slot 0's content (its ``present`` mask and present arrays)
 [4]  ... slot 1
 [5]  the header digest: SHA-256 (first 8 bytes) over everything else the file holds --
      every group, dataset and attribute, their names, dtypes and shapes, and the data
      of every dataset that is not appended to (layout, programming, session, readout
      cells, chip_state/base, ...), root attributes included, ``resumes_json`` excepted
 [6]  the meta chain: CRC-32 over the ``n`` committed ``readouts/meta`` records in order
 [7]  CRC-32 of the resume log ``resumes_json`` (0 when absent)
 [8]  CRC-32 of entries 0..7 (the record's own check)
====  =====================================================================

Each readout's ``meta.crc32`` covers its row and meta record (as in version 3), seeded
with the header digest and the readout's index, so a row moved to another position or
copied from another recording (another chip, another programming) fails its check; the
meta chain in the commit binds the records (times, checksums) and their number. The
``/writer`` record gets a fourth entry, the CRC-32 of the other three seeded the same way.

The version and the manifest are bound together: the header digest covers
``format_version``, and a file that claims an older version but has a version-4 commit or
writer record (9 or 4 entries) is refused as downgraded. Older versions are read as what
they are (their own checks only).

These are checksums: they detect corruption (flipped bits, truncation, a stray edit), not a
deliberate forger, who can recompute them (signing the manifest is future work).

Cost: the header digest is computed once when a file is created or recovered and once per
open (about 1 ms per MB); a readout adds one CRC over its row (as in version 3), one over
its meta record and one over the (small) runtime chip state it saves.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import h5py
import numpy as np

from harness.recording.crc import crc32

#: First format version with the manifest; its commit and writer record lengths.
MANIFEST_VERSION = 4
COMMIT_LEN = 9
WRITER_LEN = 4
#: Length of the records before version 4.
OLD_COMMIT_LEN = 3
OLD_WRITER_LEN = 3

#: Objects whose data is appended to or rewritten after the header is published: covered
#: by the commit record itself (rows: their checksums and the meta chain; slots: their
#: digests), not by the header digest, which still covers their names, dtypes and attributes.
DYNAMIC = frozenset({"/readouts/g", "/readouts/meta", "/commit", "/writer"})
DYNAMIC_GROUPS = frozenset({"/chip_state/slot0", "/chip_state/slot1", "/refreshes", "/refreshes/state"})
#: Root attribute rewritten by every resume; covered by its own CRC in the commit record.
RESUME_LOG = "resumes_json"

#: Elements read at a time while hashing (bounded memory whatever the dataset's size).
SLICE_BYTES = 8 << 20
#: Most attributes per object, and largest attribute, the digest reads.
MAX_ATTRS = 256
MAX_ATTR_BYTES = 1 << 22


class IntegrityError(ValueError):
    """The file is not what its manifest says (raised as one RecordingError by validate)."""


def _int64(x: int) -> int:
    """An unsigned 64-bit value as the int64 stored in the record."""
    v = x & 0xFFFFFFFFFFFFFFFF
    return v - (1 << 64) if v >> 63 else v  # two's complement, as numpy's cast (no numpy per entry)


def _crc(data: bytes | memoryview, start: int = 0) -> int:
    return crc32(data, start) & 0xFFFFFFFF


# ----------------------------------------------------------------------------- header


def _attr_bytes(value: Any) -> bytes:
    if isinstance(value, str):
        return b"s" + value.encode("utf-8", "surrogatepass")
    if isinstance(value, bytes):
        return b"b" + value
    if isinstance(value, (np.ndarray, np.generic)):
        a = np.asarray(value)
        return b"a" + a.dtype.str.encode() + repr(a.shape).encode() + (a.tobytes() if a.dtype.kind != "O" else repr(a.tolist()).encode())
    return b"r" + repr(value).encode()


def _attrs(h: Any, obj: h5py.HLObject, where: str) -> None:
    names = sorted(obj.attrs.keys())
    if len(names) > MAX_ATTRS:
        raise IntegrityError(f"{where} has {len(names)} attributes")
    for name in names:
        if where == "/" and name == RESUME_LOG:
            continue
        aid = h5py.h5a.open(obj.id, name.encode())
        if aid.get_storage_size() > MAX_ATTR_BYTES:
            raise IntegrityError(f"{where} attribute {name!r} is larger than {MAX_ATTR_BYTES} bytes")
        h.update(b"@" + name.encode() + b"\0" + _attr_bytes(obj.attrs[name]) + b"\0")


def slices(ds: h5py.Dataset) -> Iterator[np.ndarray]:
    """A dataset's data in bounded slices along its first axis (whole, for scalars)."""
    if ds.ndim == 0:
        yield np.asarray(ds[()])
        return
    row = max(1, ds.dtype.itemsize * int(np.prod(ds.shape[1:], dtype=np.int64)))
    step = max(1, SLICE_BYTES // row)
    for a in range(0, ds.shape[0], step):
        yield np.ascontiguousarray(ds[a : a + step])


def header_digest(f: h5py.File) -> int:
    """SHA-256 (first 8 bytes, as int64) over everything the file holds except the data of
    :data:`DYNAMIC` objects and the resume log; walked in sorted name order, every object
    once (a hard link to an object already hashed is hashed as a reference to it)."""
    h = hashlib.sha256(b"pcm-harness-recording manifest v4\0")
    seen: dict[Any, str] = {}
    stack: list[tuple[h5py.Group, str]] = [(f["/"], "/")]
    _attrs(h, f["/"], "/")
    while stack:
        grp, where = stack.pop()
        for name in sorted(grp.keys()):
            path = where.rstrip("/") + "/" + name
            obj = grp[name]
            if obj.id in seen:
                h.update(b"L" + path.encode() + b"=" + seen[obj.id].encode() + b"\0")
                continue
            seen[obj.id] = path
            if isinstance(obj, h5py.Group):
                h.update(b"G" + path.encode() + b"\0")
                _attrs(h, obj, path)
                stack.append((obj, path))
                continue
            dynamic = path in DYNAMIC or where in DYNAMIC_GROUPS
            h.update(b"D" + path.encode() + b"\0" + repr(obj.dtype.descr).encode() + b"\0")
            _attrs(h, obj, path)
            if dynamic:
                continue
            h.update(repr(obj.shape).encode() + b"\0")
            for part in slices(obj):
                h.update(memoryview(part).cast("B"))
    return _int64(int.from_bytes(h.digest()[:8], "little"))


# ----------------------------------------------------------------------------- records


def row_seed(header: int, index: int) -> int:
    """Start value of readout ``index``'s CRC: binds the row to this file and position."""
    return _crc(np.array([header, index], dtype=np.int64).tobytes())


def chain(prev: int, meta_records: np.ndarray) -> int:
    """The meta chain extended by ``meta_records`` (committed ``readouts/meta`` rows, in order)."""
    return _crc(np.ascontiguousarray(meta_records).tobytes(), prev)


def slot_digest(keys: Sequence[str], present: np.ndarray, arrays: Mapping[str, np.ndarray]) -> int:
    """CRC-32 of a chip-state slot: its ``present`` mask, then each present key's name,
    dtype, shape and bytes (arrays as stored)."""
    c = _crc(np.asarray(present, dtype=np.uint8).tobytes())
    for j, key in enumerate(keys):
        if not present[j]:
            continue
        a = np.ascontiguousarray(arrays[key])
        c = _crc(f"{key}\0{a.dtype.str}\0{a.shape}\0".encode(), c)
        c = _crc(memoryview(a).cast("B") if a.ndim else a.tobytes(), c)
    return c


def stored_slot_digest(f: h5py.File, slot: int) -> int:
    """:func:`slot_digest` of slot ``slot`` as stored in ``f``."""
    import json

    cs = f["chip_state"]
    keys = json.loads(cs.attrs["keys_json"])
    g = cs[f"slot{slot}"]
    present = g["present"][...]
    arrays = {k: g[k][()] for j, k in enumerate(keys) if present[j]}
    return slot_digest(keys, present, arrays)


def epoch_digest(row: np.ndarray, arrays: Sequence[np.ndarray]) -> int:
    """CRC-32 of one refresh's stored row (:mod:`harness.recording.epochs`): its table record,
    then each array's dtype, shape and bytes; its epoch's readouts carry it in ``epoch_crc``,
    so the meta chain covers the refresh."""
    c = _crc(np.ascontiguousarray(row).tobytes())
    for a in arrays:
        a = np.ascontiguousarray(a)
        c = _crc(f"{a.dtype.str}\0{a.shape}\0".encode(), c)
        c = _crc(a.tobytes(), c)
    return c


def text_crc(text: str | None) -> int:
    return 0 if text is None else _crc(str(text).encode("utf-8", "surrogatepass"))


def seal(entries: Sequence[int]) -> np.ndarray:
    """The commit record: entries 0..7 followed by their CRC-32."""
    head = np.array([_int64(int(e)) for e in entries], dtype=np.int64)
    if head.size != COMMIT_LEN - 1:
        raise ValueError(f"a commit record has {COMMIT_LEN - 1} entries before its check, not {head.size}")
    return np.append(head, _crc(head.tobytes()))


def writer_record(header: int, pid: int, start_us: int, active: int) -> np.ndarray:
    head = np.array([pid, start_us, active], dtype=np.int64)
    return np.append(head, _crc(head.tobytes(), row_seed(header, -1)))


class Manifest:
    """The running manifest a writer keeps: header digest, meta chain, slot digests and
    resume-log CRC; :meth:`record` gives the commit record for ``n`` readouts."""

    def __init__(self, header: int, meta_chain: int = 0, slots: Sequence[int] = (0, 0), resumes: int = 0) -> None:
        self.header = header
        self.meta_chain = meta_chain
        self.slots = list(slots)
        self.resumes = resumes

    @classmethod
    def from_record(cls, record: np.ndarray) -> Manifest:
        r = [int(x) for x in record]
        return cls(r[5], meta_chain=r[6] & 0xFFFFFFFF, slots=(r[3] & 0xFFFFFFFF, r[4] & 0xFFFFFFFF), resumes=r[7])

    def record(self, n: int, tags: Sequence[int]) -> np.ndarray:
        return seal([n, tags[0], tags[1], self.slots[0], self.slots[1], self.header, self.meta_chain, self.resumes])


# ----------------------------------------------------------------------------- check


def verify(f: h5py.File, version: int) -> Manifest | None:
    """The one check of a recording's manifest (run on open by :mod:`.validate`, after the
    structure checks, and on refresh): returns the verified manifest, None for a file of an
    older version (which must then carry no version-4 record).

    Raises:
        IntegrityError: naming what does not match.
    """
    commit = f["commit"]
    writer = f["writer"]
    if version < MANIFEST_VERSION:
        if commit.shape != (OLD_COMMIT_LEN,) or writer.shape != (OLD_WRITER_LEN,):
            raise IntegrityError(
                f"it claims format version {version} but carries a version-{MANIFEST_VERSION} integrity "
                "manifest (its commit record has been downgraded?); refusing to read it without its checks"
            )
        return None
    if commit.shape != (COMMIT_LEN,) or writer.shape != (WRITER_LEN,):
        raise IntegrityError(
            f"format version {version} requires its integrity manifest (a commit record of {COMMIT_LEN} and a writer "
            f"record of {WRITER_LEN} entries), found {commit.shape} and {writer.shape}"
        )
    rec = commit[...].astype(np.int64)
    if int(seal(rec[:-1])[-1]) != int(rec[-1]):
        raise IntegrityError("its commit record fails its own checksum")
    m = Manifest.from_record(rec)
    w = writer[...].astype(np.int64)
    if int(writer_record(m.header, int(w[0]), int(w[1]), int(w[2]))[-1]) != int(w[3]):
        raise IntegrityError("its writer record fails its checksum")
    got = header_digest(f)
    if got != m.header:
        raise IntegrityError(
            "its content does not match its integrity manifest (a dataset or attribute was changed after it was "
            "written: corrupted or edited)"
        )
    resumes = f.attrs.get(RESUME_LOG)
    if text_crc(None if resumes is None else str(resumes)) != m.resumes:
        raise IntegrityError("its resume log does not match its integrity manifest")
    n = int(rec[0])
    verify_meta(f, m, 0, n, 0)
    for slot in (0, 1):
        if int(rec[1 + slot]) == n and n > 0 and stored_slot_digest(f, slot) != m.slots[slot]:
            raise IntegrityError(f"its chip state (slot {slot}, saved with readout #{n}) does not match its manifest")
    return m


def verify_meta(f: h5py.File, m: Manifest, start: int, n: int, prev: int) -> int:
    """Check the meta chain over records ``start..n-1`` continuing from ``prev``; returns the
    chain at ``n``. Raises IntegrityError unless it equals the manifest's."""
    meta = f["readouts/meta"]
    step = max(1, SLICE_BYTES // max(1, meta.dtype.itemsize))
    c = prev
    for a in range(start, n, step):
        c = chain(c, meta[a : min(n, a + step)])
    if c != m.meta_chain:
        raise IntegrityError(f"its readout records (times, checksums, count {n}) do not match its integrity manifest")
    return c
