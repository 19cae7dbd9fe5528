"""The whole-structure check every reader runs on open: :func:`validate_file`.

Every consumer opens a recording through ``Recording``, which runs :func:`validate_file`
once: the whole structure is checked against the format (``docs/recording-format.md``)
before any array is read, so a damaged or hostile file gives one ``RecordingError`` and
nothing else (no traceback, no unbounded allocation, no read outside the file). Checked:
object kinds and storage, types, shapes, dtypes, value ranges, times, attributes, the layer
JSON and the commit record. The names and constants checked against are
:mod:`harness.recording.schema`'s.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import numpy.typing as npt

from harness.chip.protocol import Geometry
from harness.errors import HarnessError, RecordingError
from harness.recording.schema import (
    BUILTIN_EXTRAS,
    CHECKSUM_COLUMN,
    CHECKSUM_VERSION,
    ENCODINGS,
    FORMAT_NAME,
    FORMAT_VERSION,
)
from harness.recording import integrity
from harness.recording.epochs import check_epochs
from harness.recording.storage import MAX_CELLS, Invalid, check_objects

#: Most readouts (committed or scheduled) a recording may hold.
MAX_READOUTS = 10_000_000
#: Most reads per scheduled time.
MAX_REPEATS = 10_000
#: Largest |time| (s) in a timetable or readout: ~3000 years; beyond is not a measurement.
MAX_TIME_S = 1e11
#: Largest text attribute (JSON, TOML, names) read from a file, and deepest JSON nesting.
MAX_TEXT_BYTES = 1 << 22
MAX_JSON_DEPTH = 64
#: Largest conductance (µS) a layout or programming target may name.
MAX_US = 1e6
#: Most chip-state keys, and elements of a chip-state array beyond one per cell.
MAX_STATE_KEYS = 64
STATE_EXTRA_ELEMENTS = 1 << 16
#: Most bytes all datasets but the readouts may declare together: the writer stores ~30
#: bytes per device of layout and programming and 32 bytes per cell of base chip state
#: (plus as much again in each slot at most); anything beyond would be read (hashed,
#: range-checked) for nothing but time.
STATIC_BYTES_PER_CELL = 256
STATIC_BYTES_EXTRA = 64 << 20

_Bad = Invalid


@dataclass(frozen=True)
class Header:
    """What validation established about a recording, for the reader."""

    format_version: int
    geometry: Geometry
    encoding: str
    readout_cells: npt.NDArray[np.int64]
    provenance: dict[str, Any]
    has_checksums: bool
    resumes: list[dict[str, Any]]
    #: The verified version-4 manifest (None for older versions).
    manifest: integrity.Manifest | None = None


def validate_file(f: h5py.File, path: Path) -> Header:
    """Check the whole structure of an open recording; returns its validated header.

    Raises:
        RecordingError: anything that does not match the format: one line naming the
            first problem found.
    """
    try:
        return _validate(f)
    except _Bad as exc:
        raise RecordingError(f"{path} is not a valid recording: {exc}") from None
    except RecordingError:
        raise
    except (OSError, KeyError, ValueError, TypeError, RuntimeError, OverflowError, RecursionError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise RecordingError(f"{path} is damaged or not a complete recording: {msg}") from None


def _validate(f: h5py.File) -> Header:
    fmt = _attr_text(f, "format", required=False)
    if fmt != FORMAT_NAME:
        raise RecordingError(
            f"{f.filename} is an HDF5 file but not a harness recording (root attribute format={fmt!r:.60}, "
            f"expected {FORMAT_NAME!r})"
        )
    version = _attr_int(f, "format_version")
    if version > FORMAT_VERSION or version < 1:
        raise RecordingError(
            f"{f.filename} has recording format version {version}; this harness reads versions 1..{FORMAT_VERSION} "
            "(upgrade the harness)"
        )
    for name in ("provenance", "layout", "programming", "readouts", "commit", "writer"):
        if name not in f:
            raise RecordingError(f"{f.filename} is incomplete: it has no '{name}' (not a finished header)")
    static_bytes = check_objects(f)
    geometry = _geometry(f["layout"])
    n_cells = geometry.n_cells

    provenance = _json_attr(f["provenance"], "json", dict, "provenance")
    resumes = _json_attr(f, "resumes_json", list, "resume log") if "resumes_json" in f.attrs else []
    if not all(isinstance(x, dict) for x in resumes):
        raise _Bad("the resume log is not a list of objects")

    # layout
    lay = _group(f, "layout")
    layers = _json_attr(lay, "layers_json", list, "layer list")
    for d in layers:
        _layer_ok(d)
    n_dev = _vector(lay, "cells", "iu", n_cells).shape[0]
    for name, kinds in (("target_uS", "f"), ("layer_index", "iu"), ("sign", "iu"), ("weight_index", "iu")):
        if _vector(lay, name, kinds, n_cells).shape[0] != n_dev:
            raise _Bad(f"layout arrays differ in length (cells {n_dev}, {name} {lay[name].shape[0]})")
    # One device per weight in a unipolar layer, two (G+, G−) otherwise: a layer list that
    # disagrees with the arrays would split them into the wrong layers.
    n_placed = sum((1 if d.get("unipolar", False) else 2) * d["out_features"] * d["fan_in"] for d in layers)
    if n_placed != n_dev:
        raise _Bad(f"the layer list places {n_placed} devices but the layout arrays hold {n_dev}")
    _in_range(lay, "cells", 0, n_cells - 1)
    _in_range(lay, "target_uS", 0.0, MAX_US)
    _in_range(lay, "layer_index", 0, max(len(layers) - 1, 0) if layers else -1)
    _in_range(lay, "sign", -1, 1)
    _in_range(lay, "weight_index", 0, np.iinfo(np.int64).max)
    _unique(lay, "cells", n_cells)

    # programming
    pr = _group(f, "programming")
    m = _vector(pr, "cells", "iu", n_cells).shape[0]
    for name, kinds in (("target_uS", "f"), ("final_uS", "f"), ("iterations", "iu"), ("converged", "biu")):
        if _vector(pr, name, kinds, n_cells).shape[0] != m:
            raise _Bad(f"programming arrays differ in length (cells {m}, {name} {pr[name].shape[0]})")
    _in_range(pr, "cells", 0, n_cells - 1)
    _in_range(pr, "target_uS", 0.0, MAX_US)
    _in_range(pr, "final_uS", -MAX_US, MAX_US)
    _in_range(pr, "iterations", 0, np.iinfo(np.int64).max)
    _unique(pr, "cells", n_cells)
    _json_attr(pr, "params_json", dict, "programming parameters")
    for key in ("t_start_s", "t_end_s", "wall_s", "t_end_unix_s"):
        _attr_float(pr, key)

    # session
    if "session" in f:
        s = _group(f, "session")
        for key in ("name", "toml", "source_path"):
            _attr_text(s, key)
        if "readout_repeats" in s.attrs:
            k = _attr_int(s, "readout_repeats")
            if not 1 <= k <= MAX_REPEATS:
                raise _Bad(f"session readout_repeats {k} is outside 1..{MAX_REPEATS}")
        t = _vector(s, "times_s", "f", MAX_READOUTS)
        times = t[...]
        if times.size == 0:
            raise _Bad("the session timetable is empty")
        _times_ok(times, "the session timetable", strict=True)

    # readouts
    r = _group(f, "readouts")
    encoding = _attr_text(r, "encoding")
    if encoding not in ENCODINGS:
        raise _Bad(f"unknown readout encoding {encoding!r:.40}")
    cells_ds = _vector(r, "cells", "iu", n_cells)
    _in_range(r, "cells", 0, n_cells - 1)
    _unique(r, "cells", n_cells)
    readout_cells = np.asarray(cells_ds[...], dtype=np.int64)
    g = _dataset(r, "g")
    if g.ndim != 2 or g.shape[1] != readout_cells.size:
        raise _Bad(f"readouts/g has shape {g.shape}, expected (n, {readout_cells.size})")
    if g.chunks is None or g.chunks[0] != 1 or g.id.get_create_plist().get_nfilters():
        raise _Bad("readouts/g is not stored one unfiltered row chunk at a time")
    if encoding == "adc_code":
        want: np.dtype[Any] = np.dtype(np.uint8) if geometry.adc_bits <= 8 else np.dtype(np.uint16)
        for key, value in (("adc_bits", geometry.adc_bits), ("adc_min_uS", geometry.adc_min_uS),
                           ("adc_max_uS", geometry.adc_max_uS)):
            got = _attr_float(r, key)
            if got != float(value):
                raise _Bad(f"readouts attribute {key}={got:g} does not match the layout geometry's {value:g}")
    else:
        want = np.dtype(np.float64)
    if g.dtype != want:
        raise _Bad(f"readouts/g has dtype {g.dtype} but {encoding} readouts of this chip are stored as {want}")
    meta = _dataset(r, "meta")
    names = meta.dtype.names or ()
    if meta.ndim != 1 or "t_s" not in names:
        raise _Bad("readouts/meta is not a 1-D table with a t_s column")
    if meta.dtype.itemsize > 1 << 16:
        raise _Bad(f"readouts/meta records are {meta.dtype.itemsize} bytes each")
    for name in names:
        dt = meta.dtype.fields[name][0]
        if dt.base.kind not in "biuf" or dt.base.itemsize > 8 or dt.itemsize > 1 << 16:
            raise _Bad(f"readouts/meta column {name!r} has dtype {dt}")
        if name in BUILTIN_EXTRAS and dt != BUILTIN_EXTRAS[name]:
            raise _Bad(f"readouts/meta column {name!r} has dtype {dt}, expected {BUILTIN_EXTRAS[name]}")
    has_checksums = CHECKSUM_COLUMN in names
    if version >= CHECKSUM_VERSION and not has_checksums:
        raise _Bad(f"format version {version} requires the per-readout {CHECKSUM_COLUMN} column")
    if has_checksums and meta.dtype.fields[CHECKSUM_COLUMN][0] != np.dtype(np.uint32):
        raise _Bad(f"readouts/meta column {CHECKSUM_COLUMN!r} is not uint32")

    # commit and writer records
    n, _tags, _ = _check_commit(f)
    if g.shape[0] > n + 1 or meta.shape[0] > n + 1:
        raise _Bad(f"{n} readouts are committed but {max(g.shape[0], meta.shape[0])} rows are declared")
    _stored_rows(g, meta, n)
    if n:
        _times_ok(meta.fields("t_s")[:n], "the readout times", strict=False)
    w = _dataset(f, "writer")
    if w.shape not in ((integrity.OLD_WRITER_LEN,), (integrity.WRITER_LEN,)) or w.dtype.kind not in "iu":
        raise _Bad(f"the writer record has shape {w.shape} and dtype {w.dtype}, expected 3 or 4 integers")

    # chip state
    if "chip_state" in f:
        cs = _group(f, "chip_state")
        keys = _json_attr(cs, "keys_json", list, "chip-state key list")
        if len(keys) > MAX_STATE_KEYS or not all(isinstance(k, str) and k and "/" not in k for k in keys):
            raise _Bad("the chip-state key list is not a short list of names")
        if len(set(keys)) != len(keys):
            raise _Bad("the chip-state key list repeats a name")
        limit = n_cells + STATE_EXTRA_ELEMENTS
        for part in ("base", "slot0", "slot1"):
            grp = _group(cs, part)
            for key in keys:
                ds = _dataset(grp, key)
                if ds.dtype.kind not in "biuf" or ds.size > limit or ds.ndim > 2:
                    raise _Bad(f"chip_state/{part}/{key} has dtype {ds.dtype} and shape {ds.shape}")
                if part != "base" and ds.ndim != grp.file["chip_state/base"][key].ndim:
                    raise _Bad(f"chip_state/{part}/{key} has another rank than the base state")
            if part != "base":
                present = _dataset(grp, "present")
                if present.shape != (len(keys),) or present.dtype.kind not in "biu":
                    raise _Bad(f"chip_state/{part}/present has shape {present.shape}, expected ({len(keys)},)")
    # Every array was read above only within its own bound; before hashing them all, their sum.
    if static_bytes > STATIC_BYTES_PER_CELL * n_cells + STATIC_BYTES_EXTRA:
        raise _Bad(
            f"its header arrays declare {static_bytes} bytes, more than a {geometry.rows}x{geometry.cols} chip's "
            f"recording holds ({STATIC_BYTES_PER_CELL} bytes per cell + {STATIC_BYTES_EXTRA >> 20} MiB)"
        )
    # Last, once the structure is known to be sound: the integrity manifest (version 4), or
    # the absence of one (older versions).
    try:
        manifest = integrity.verify(f, version)
        check_epochs(f, n)
    except integrity.IntegrityError as exc:
        raise _Bad(f"it fails its integrity check: {exc}") from None
    return Header(
        manifest=manifest,
        format_version=version,
        geometry=geometry,
        encoding=encoding,
        readout_cells=readout_cells,
        provenance=provenance,
        has_checksums=has_checksums,
        resumes=resumes,
    )


def check_commit(f: h5py.File) -> tuple[int, tuple[int, int], np.ndarray]:
    """The committed readout count and chip-state slot tags, checked against the stored rows,
    and the commit record they were read from."""
    try:
        return _check_commit(f)
    except _Bad as exc:
        raise RecordingError(f"{f.filename} is not a valid recording: {exc}") from None


def _check_commit(f: h5py.File) -> tuple[int, tuple[int, int], np.ndarray]:
    c_ds = _dataset(f, "commit")
    if c_ds.shape not in ((integrity.OLD_COMMIT_LEN,), (integrity.COMMIT_LEN,)) or c_ds.dtype.kind not in "iu":
        raise _Bad(
            f"the commit record has shape {c_ds.shape} and dtype {c_ds.dtype}, expected "
            f"{integrity.OLD_COMMIT_LEN} or {integrity.COMMIT_LEN} integers"
        )
    c = c_ds[...].astype(np.int64)
    n = int(c[0])
    r = f["readouts"]
    rows = min(r["g"].shape[0], r["meta"].shape[0])
    if n < 0 or n > rows or n > MAX_READOUTS:
        raise RecordingError(
            f"{f.filename} is inconsistent: {n} readouts committed but only {rows} stored (truncated file?)"
        )
    tags = (int(c[1]), int(c[2]))
    if any(t < -1 or t > n for t in tags):
        raise _Bad(f"the commit record names chip-state slots {tags} outside -1..{n}")
    return n, tags, c


def _group(parent: h5py.Group, name: str) -> h5py.Group:
    obj = parent.get(name)
    if not isinstance(obj, h5py.Group):
        raise _Bad(f"{parent.name.rstrip('/')}/{name} is missing or not a group")
    return obj


def _dataset(parent: h5py.Group, name: str) -> h5py.Dataset:
    obj = parent.get(name)
    if not isinstance(obj, h5py.Dataset):
        raise _Bad(f"{parent.name.rstrip('/')}/{name} is missing or not a dataset")
    return obj


def _vector(parent: h5py.Group, name: str, kinds: str, max_len: int) -> h5py.Dataset:
    ds = _dataset(parent, name)
    if ds.ndim != 1:
        raise _Bad(f"{ds.name} has shape {ds.shape}, expected one dimension")
    if ds.dtype.kind not in kinds or ds.dtype.itemsize > 8:
        raise _Bad(f"{ds.name} has dtype {ds.dtype}")
    if ds.shape[0] > max_len:
        raise _Bad(f"{ds.name} declares {ds.shape[0]} entries, more than the header allows ({max_len})")
    return ds


def _in_range(parent: h5py.Group, name: str, lo: float, hi: float) -> None:
    """Every value of a 1-D dataset is finite and in ``[lo, hi]`` (read in bounded slices)."""
    ds = parent[name]
    for a in integrity.slices(ds):
        if not a.size:
            continue
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            raise _Bad(f"{ds.name} holds non-finite values")
        if a.min() < lo or a.max() > hi:
            raise _Bad(f"{ds.name} holds values outside {lo:g}..{hi:g}")


def _unique(parent: h5py.Group, name: str, n_cells: int) -> None:
    """Cell addresses (already checked to be on the array) name each cell once; read in
    bounded slices (memory: one slice and one flag per cell of the array)."""
    ds = parent[name]
    seen = np.zeros(n_cells, dtype=np.bool_)
    for a in integrity.slices(ds):
        seen[a] = True
    if int(np.count_nonzero(seen)) == ds.shape[0]:
        return
    seen[:] = False  # some cell is named twice: find the first, slice by slice
    for a in integrity.slices(ds):
        u, first = np.unique(a, return_index=True)
        if u.size < a.size:
            dup = int(a[np.setdiff1d(np.arange(a.size), first)[0]])
            raise _Bad(f"{ds.name} names cell {dup} more than once")
        again = seen[u]
        if again.any():
            raise _Bad(f"{ds.name} names cell {int(u[again][0])} more than once")
        seen[u] = True


def _stored_rows(g: h5py.Dataset, meta: h5py.Dataset, n: int) -> None:
    """The committed readouts are stored, not only declared: enough chunks exist (an
    unallocated chunk would read as zeros, and a tiny file could declare 10^7 readouts)."""
    if not n or not g.shape[1]:
        return
    col_chunks = -(-g.shape[1] // g.chunks[1])
    have = g.id.get_num_chunks()
    if have < n * col_chunks:
        raise _Bad(f"{n} readouts are committed but readouts/g stores only {have} of their {n * col_chunks} chunks")
    if meta.chunks is not None and meta.id.get_num_chunks() < -(-n // meta.chunks[0]):
        raise _Bad(f"{n} readouts are committed but readouts/meta does not store them")


def _times_ok(times: np.ndarray, what: str, *, strict: bool) -> None:
    t = np.asarray(times, dtype=np.float64)
    if not np.isfinite(t).all():
        raise _Bad(f"{what} holds a time that is not a finite number")
    if t.size and (t.min() < (0.0 if strict else -MAX_TIME_S) or t.max() > MAX_TIME_S):
        raise _Bad(f"{what} holds a time outside 0..{MAX_TIME_S:g} s")
    d = np.diff(t)
    if d.size and (d.min() <= 0 if strict else d.min() < 0):
        i = int(np.flatnonzero(d <= 0 if strict else d < 0)[0])
        order = "increasing" if strict else "non-decreasing"
        raise _Bad(f"{what} is not {order}: entry {i + 1} ({t[i + 1]:g} s) follows {t[i]:g} s")


def _attr_raw(obj: h5py.HLObject, name: str) -> Any:
    if name not in obj.attrs:
        raise _Bad(f"{obj.name} has no attribute {name!r}")
    aid = h5py.h5a.open(obj.id, name.encode())
    if aid.get_storage_size() > MAX_TEXT_BYTES or aid.shape not in ((), (1,)):
        raise _Bad(f"{obj.name} attribute {name!r} is not a single value of reasonable size")
    return obj.attrs[name]


def _attr_text(obj: h5py.HLObject, name: str, *, required: bool = True) -> str | None:
    if not required and name not in obj.attrs:
        return None
    v = _attr_raw(obj, name)
    if isinstance(v, np.ndarray) and v.shape == (1,):
        v = v[0]
    if isinstance(v, bytes):
        try:
            v = v.decode("utf-8")
        except UnicodeDecodeError:
            raise _Bad(f"{obj.name} attribute {name!r} is not UTF-8 text") from None
    if not isinstance(v, str):
        if not required:
            return repr(v)[:60]
        raise _Bad(f"{obj.name} attribute {name!r} is {type(v).__name__}, expected text")
    return v


def _attr_int(obj: h5py.HLObject, name: str) -> int:
    v = _attr_raw(obj, name)
    if isinstance(v, np.ndarray) and v.shape == (1,):
        v = v[0]
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
        raise _Bad(f"attribute {name!r} of {obj.name} is {v!r:.40}, not an integer")
    return int(v)


def _attr_float(obj: h5py.HLObject, name: str) -> float:
    v = _attr_raw(obj, name)
    if isinstance(v, np.ndarray) and v.shape == (1,):
        v = v[0]
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise _Bad(f"attribute {name!r} of {obj.name} is {v!r:.40}, not a number")
    x = float(v)
    if not math.isfinite(x):
        raise _Bad(f"attribute {name!r} of {obj.name} is {x}, not a finite number")
    return x


def _json_attr(obj: h5py.HLObject, name: str, kind: type, what: str) -> Any:
    text = _attr_text(obj, name)
    try:
        value = json.loads(text)  # type: ignore[arg-type]
    except RecursionError:
        raise _Bad(f"the {what} JSON is nested too deeply") from None
    except ValueError as exc:
        raise _Bad(f"the {what} is not valid JSON ({exc})") from None
    if not isinstance(value, kind):
        raise _Bad(f"the {what} is a JSON {type(value).__name__}, expected {kind.__name__}")
    if _json_depth(value) > MAX_JSON_DEPTH:
        raise _Bad(f"the {what} JSON is nested deeper than {MAX_JSON_DEPTH} levels")
    return value


def _json_depth(value: Any) -> int:
    depth, level = 0, [value]
    while level:
        depth += 1
        nxt: list[Any] = []
        for v in level:
            if isinstance(v, dict):
                nxt.extend(v.values())
            elif isinstance(v, list):
                nxt.extend(v)
        level = nxt
        if depth > MAX_JSON_DEPTH:
            break
    return depth


_LAYER_TYPES = {"name": str, "out_features": int, "fan_in": int, "row0": int, "col0": int,
                "weight_max": float, "scale_uS": float, "transposed": bool, "pieces": list, "unipolar": bool,
                "levels": tuple}  # tuple: a list of finite numbers (weight levels, issue 23)


def _layer_ok(d: Any) -> None:
    """A layer placement as :class:`harness.programming.mapping.LayerPlacement` stores it: its
    fields without defaults are required, the others optional, each of its type."""
    from harness.programming.mapping import LayerPlacement

    fields = {f.name: f for f in dataclasses.fields(LayerPlacement)}
    required = {n for n, f in fields.items() if f.default is dataclasses.MISSING}
    if not isinstance(d, dict) or not required <= set(d) or not set(d) <= set(fields):
        raise _Bad("the layer list holds an entry that is not a layer placement")
    for key, v in d.items():
        kind = _LAYER_TYPES.get(key)
        if kind is str:
            ok = isinstance(v, str) and len(v) < 1024
        elif kind is int:
            ok = isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_CELLS
        elif kind is float:
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        elif kind is bool:
            ok = isinstance(v, bool)
        elif kind is tuple:
            ok = isinstance(v, list) and len(v) <= MAX_CELLS and all(
                isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in v
            )
        elif kind is list:
            ok = isinstance(v, list) and len(v) <= MAX_CELLS and all(
                isinstance(p, list) and len(p) == 4
                and all(isinstance(x, int) and not isinstance(x, bool) and 0 <= x <= MAX_CELLS for x in p)
                for p in v
            )
        else:
            ok = v is None or isinstance(v, (str, int, float, bool))
        if ok and key in ("weight_max", "scale_uS"):
            ok = v > 0  # mapping refuses all-zero layers, so both are positive; W = ΔG / scale_uS
        if not ok:
            raise _Bad(f"layer placement {key} is {v!r:.40}")


_GEOMETRY_INTS = ("rows", "cols", "adc_bits")


def _geometry(lay: h5py.Group) -> Geometry:
    d = _json_attr(lay, "geometry_json", dict, "geometry")
    fields = {f.name for f in dataclasses.fields(Geometry)}
    unknown = sorted(set(d) - fields)
    if unknown:
        raise _Bad(f"the geometry has unknown field {unknown[0]!r:.40}")
    for key, value in d.items():
        if key in _GEOMETRY_INTS:
            if isinstance(value, bool) or not isinstance(value, int):
                raise _Bad(f"geometry {key} is {value!r:.40}, not an integer")
        elif isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise _Bad(f"geometry {key} is {value!r:.40}, not a finite number")
    try:
        geometry = Geometry(**d)
    except HarnessError as exc:
        raise _Bad(f"the geometry is invalid: {exc}") from None
    if not (math.isfinite(geometry.adc_lsb_uS) and geometry.adc_lsb_uS > 0
            and math.isfinite(geometry.adc_max_uS - geometry.adc_min_uS)):
        raise _Bad(
            f"the geometry's ADC range {geometry.adc_min_uS:g}..{geometry.adc_max_uS:g} µS has no finite step "
            f"over {geometry.adc_bits} bits"
        )
    if geometry.n_cells > MAX_CELLS:
        raise _Bad(f"the geometry declares {geometry.rows}x{geometry.cols} cells, more than {MAX_CELLS}")
    return geometry
