"""Storage checks of the whole-structure validation (the hostile-file budget): every object is a
group or a plain numeric dataset stored in this file, reached only through hard links,
bounded in number, depth, declared size and chunk size, so that no read of a validated
recording can allocate or decompress more than a few MiB at a time (see
``docs/recording-format.md``, *Hostile-file budget*)."""

from __future__ import annotations

from typing import Any

import h5py

from harness.errors import RecordingError

#: Largest array a recording may declare (cells): 16 Mi, 8x the default 512x2048 chip.
MAX_CELLS = 1 << 24
#: Most objects (groups + datasets) and deepest group nesting a recording may hold.
MAX_OBJECTS = 4096
MAX_DEPTH = 8
#: Largest chunk (bytes, uncompressed) a dataset may use: one read of any element
#: decompresses a whole chunk, so this bounds every read (the writer's largest chunk is
#: one 8 MiB readout row, schema.MAX_CHUNK_BYTES). A 2.7 MB file declaring 2**28-element
#: gzip chunks made a reader allocate 2 GB.
MAX_CHUNK_BYTES = 16 << 20

_ALLOWED_FILTERS = (h5py.h5z.FILTER_DEFLATE, h5py.h5z.FILTER_SHUFFLE, h5py.h5z.FILTER_FLETCHER32)


class Invalid(RecordingError):
    """A validation failure (re-raised as one RecordingError naming the file)."""


def check_objects(f: h5py.File) -> int:
    """Walk every link: only hard links, only groups and plain datasets (no external or
    virtual storage, only gzip/shuffle/fletcher32 filters, bounded chunks), bounded in
    number and depth. Returns the bytes all datasets but the readouts declare."""
    seen: set[Any] = {f["/"].id}
    stack: list[tuple[h5py.Group, str, int]] = [(f, "", 0)]
    count = 0
    static_bytes = 0
    while stack:
        grp, prefix, depth = stack.pop()
        names = list(grp.keys())
        if len(names) > MAX_OBJECTS:
            raise Invalid(f"group {prefix or '/'} holds {len(names)} objects")
        for name in names:
            where = f"{prefix}/{name}"
            link = grp.get(name, getlink=True)
            if not isinstance(link, h5py.HardLink):
                kind = "an external" if isinstance(link, h5py.ExternalLink) else "a soft"
                raise Invalid(f"{where} is {kind} link; recordings hold only their own objects")
            obj = grp[name]
            key = obj.id
            if key in seen:
                if isinstance(obj, h5py.Group):  # datasets are shared by design, groups never
                    raise Invalid(f"{where} links back to a group already seen (a link cycle?)")
                continue
            seen.add(key)
            count += 1
            if count > MAX_OBJECTS:
                raise Invalid(f"the file holds more than {MAX_OBJECTS} objects")
            if isinstance(obj, h5py.Group):
                if depth + 1 > MAX_DEPTH:
                    raise Invalid(f"{where} is nested deeper than {MAX_DEPTH} groups")
                stack.append((obj, where, depth + 1))
            elif isinstance(obj, h5py.Dataset):
                check_storage(obj, where)
                # readouts and refreshes grow with the session (bounded by its readouts)
                if where not in ("/readouts/g", "/readouts/meta") and not where.startswith("/refreshes/"):
                    static_bytes += int(obj.nbytes)
            else:
                raise Invalid(f"{where} is a {type(obj).__name__}, not a group or dataset")
    return static_bytes


def check_storage(ds: h5py.Dataset, where: str) -> None:
    dcpl = ds.id.get_create_plist()
    if dcpl.get_layout() not in (h5py.h5d.COMPACT, h5py.h5d.CONTIGUOUS, h5py.h5d.CHUNKED):
        raise Invalid(f"{where} is a virtual dataset; recordings hold only their own data")
    if dcpl.get_external_count() > 0:
        raise Invalid(f"{where} keeps its data in an external file; recordings hold only their own data")
    for i in range(dcpl.get_nfilters()):
        code = dcpl.get_filter(i)[0]
        if code not in _ALLOWED_FILTERS:
            raise Invalid(f"{where} uses HDF5 filter {code}; recordings use only gzip, shuffle and fletcher32")
    if ds.dtype.kind not in "biufV" or (ds.dtype.kind == "V" and ds.dtype.names is None):
        raise Invalid(f"{where} has dtype {ds.dtype}; recordings store only numbers")
    if any(s > MAX_CELLS * 64 for s in ds.shape) or ds.ndim > 4:
        raise Invalid(f"{where} declares shape {ds.shape}")
    if dcpl.get_layout() == h5py.h5d.CHUNKED:
        chunk = ds.chunks or ()
        chunk_bytes = ds.dtype.itemsize
        for c in chunk:
            chunk_bytes *= int(c)
        if chunk_bytes > MAX_CHUNK_BYTES:
            raise Invalid(
                f"{where} uses chunks of {chunk} ({chunk_bytes} bytes each); recordings use chunks of at most "
                f"{MAX_CHUNK_BYTES >> 20} MiB (reading one would decompress it whole)"
            )
    if dcpl.get_layout() == h5py.h5d.CONTIGUOUS and ds.nbytes > 1 << 20 and ds.id.get_storage_size() < ds.nbytes:
        raise Invalid(f"{where} declares {ds.nbytes} bytes but the file stores {ds.id.get_storage_size()}")
