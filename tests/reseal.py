"""Test helper: recompute a version-4 recording's integrity manifest after an edit.

What a writer that legitimately recorded the edited content would have written (a dead chip's
all-zero readouts, a write-verify that converged nowhere, ...), or what a deliberate forger
would do: the manifest then no longer tells the edit apart, so such files test the checks
*behind* the manifest (structure, the consumers' own guards).
"""

from __future__ import annotations

from pathlib import Path

import h5py

from harness.recording.schema import CHECKSUM_COLUMN, readout_checksum

try:
    from harness.recording import integrity
except ImportError:  # a harness before format version 4 (the "fails on old main" runs): no manifest
    integrity = None  # type: ignore[assignment]


def reseal(path: Path, *, rows: bool = False) -> bool:
    """Recompute ``path``'s manifest (and, with ``rows``, every readout's checksum); False if
    the file is not a version-4 recording h5py can open for writing (left as it is)."""
    if not h5py.is_hdf5(path):
        return False
    try:
        with h5py.File(path, "r+") as f:
            if integrity is None or f["commit"].shape != (integrity.COMMIT_LEN,):
                return _reseal_v3(f) if rows else False
            if f["writer"].shape != (integrity.WRITER_LEN,):
                return False
            header = integrity.header_digest(f)
            c = f["commit"][...]
            n, tags = int(c[0]), [int(c[1]), int(c[2])]
            meta_ds = f["readouts/meta"]
            meta = meta_ds[: min(n, meta_ds.shape[0])]
            if rows and CHECKSUM_COLUMN in (meta.dtype.names or ()):
                g = f["readouts/g"]
                for i in range(meta.size):
                    meta[i][CHECKSUM_COLUMN] = readout_checksum(g[i], meta[i], integrity.row_seed(header, i))
                meta_ds[: meta.size] = meta
            slots = [0, 0]
            if "chip_state" in f:
                for s in (0, 1):
                    if tags[s] >= 0:
                        slots[s] = integrity.stored_slot_digest(f, s)
            resumes = f.attrs.get(integrity.RESUME_LOG)
            m = integrity.Manifest(header, integrity.chain(0, meta), slots,
                                   integrity.text_crc(None if resumes is None else str(resumes)))
            f["commit"][...] = m.record(n, tags)
            w = f["writer"][...]
            f["writer"][...] = integrity.writer_record(header, int(w[0]), int(w[1]), int(w[2]))
        return True
    except (OSError, KeyError, ValueError, TypeError, IndexError, RuntimeError):
        return False


def _reseal_v3(f: h5py.File) -> bool:
    """Version 3: recompute every committed readout's (unseeded) checksum."""
    meta_ds = f["readouts/meta"]
    if CHECKSUM_COLUMN not in (meta_ds.dtype.names or ()):
        return True
    n = min(int(f["commit"][0]), meta_ds.shape[0])
    meta = meta_ds[:n]
    for i in range(n):
        meta[i][CHECKSUM_COLUMN] = readout_checksum(f["readouts/g"][i], meta[i])
    meta_ds[:n] = meta
    return True


def copy_readouts(src: Path, dst: Path) -> None:
    """Replace ``dst``'s readout rows and records by ``src``'s (same layout, another chip),
    checksums included, as a careless copy would."""
    with h5py.File(src, "r") as s, h5py.File(dst, "r+") as d:
        n = min(s["readouts/meta"].shape[0], d["readouts/meta"].shape[0])
        d["readouts/g"][:n] = s["readouts/g"][:n]
        d["readouts/meta"][:n] = s["readouts/meta"][:n]


def as_older_version(path: Path, version: int) -> None:
    """Rewrite a version-4 recording as the harness wrote version ``version`` (1-3): 3-entry
    commit and writer records, no manifest, unseeded per-readout checksums (version 3) or
    none (1, 2)."""
    import numpy as np

    with h5py.File(path, "r+") as f:
        f.attrs["format_version"] = version
        for name in ("commit", "writer"):
            head = f[name][:3]
            del f[name]
            f.create_dataset(name, data=head)
        meta = f["readouts/meta"][...]
        names = [n for n in meta.dtype.names if version >= 3 or n != CHECKSUM_COLUMN]
        new = np.zeros(meta.shape, dtype=[(n, meta.dtype[n]) for n in names])
        for n in names:
            new[n] = meta[n]
        if version >= 3:
            for i in range(new.size):
                new[i][CHECKSUM_COLUMN] = readout_checksum(f["readouts/g"][i], new[i])
        chunks = f["readouts/meta"].chunks
        del f["readouts/meta"]
        f.create_dataset("readouts/meta", data=new, maxshape=(None,), chunks=chunks)
