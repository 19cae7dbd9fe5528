"""Hostile and damaged recordings, table-driven, against every consumer (issue 13, items 2, 4-6;
issue 19, items 1, 4, 5).

Each case crafts one bad file from a good session recording (or from one a writer was
killed in after its last commit). Every consumer -- ``replay``, ``evaluate --recording``,
``session status``, ``session resume``, the ``replay:`` chip backend (through
``evaluate --chip replay:F``), ``compare``, ``calibrate`` and ``report`` -- must answer
with one ``error:`` line naming the problem, a non-zero exit, within 10 s, and with
bounded memory. Cases that hung or allocated gigabytes before the fix run in a subprocess
(one driver process; its peak RSS must stay under 512 MB); the rest run in-process
(CliRunner), one test per (case, consumer) so the first failure hides none of the rest.

After its edit a case's file is *resealed* (its version-4 integrity manifest recomputed,
``tests/reseal.py``) unless the case says otherwise, so that the edit meets the structure
checks behind the manifest, as a file written that way (or a deliberate forger) would;
the cases with ``reseal=None`` test the manifest itself.

Each case's fragment is what the error line must contain; the control (the good file)
must succeed with every consumer, so the table can fail.
"""

from __future__ import annotations

import json
import resource
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pytest
from clikit import invoke

from reseal import copy_readouts, reseal

from harness.chip.registry import open_chip
from harness.sessions.schedule import load_session
from harness.sessions.runner import run_session

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "sessions" / "demo-short.toml"
SMALL = "virtual?rows=64&cols=160&seed=5"
OTHER_CHIP = "virtual?rows=64&cols=160&seed=6"
LIMIT_S = 10.0
#: Peak RSS of the process running the consumers on the crafted files (issue 19: 512 MB; a
#: CLI process with torch loaded that evaluates and reports the good file peaks at ~0.35 GB).
RSS_LIMIT_MB = 512.0
#: Peak RSS of this test process (pytest, torch, matplotlib and the in-process table): a
#: bomb that slipped through would allocate gigabytes.
TABLE_RSS_LIMIT_MB = 1024.0

CONSUMERS: dict[str, Callable[[str], list[str]]] = {
    "replay": lambda f: ["replay", f, "--json"],
    "evaluate": lambda f: ["evaluate", "--recording", f, "--json"],
    "status": lambda f: ["session", "status", f, "--json"],
    "resume": lambda f: ["session", "resume", f, "--json"],
    "replay-backend": lambda f: ["evaluate", "--chip", f"replay:{f}", "--times", "25s,1d", "--bits", "8", "--json"],
    "compare": lambda f: ["compare", str(BASES["good"]), f, "--json"],
    "calibrate": lambda f: ["calibrate", f, "--out", f + ".toml", "--overwrite", "--json"],
    "report": lambda f: ["report", f, "--html", f + ".html", "--overwrite", "--json"],
}


# ----------------------------------------------------------------------------- mutations

Mutation = Callable[[Path], None]


def h5(fn: Callable[[h5py.File], None]) -> Mutation:
    def apply(path: Path) -> None:
        with h5py.File(path, "r+") as f:
            fn(f)

    return apply


def set_attr(obj: str, name: str, value: object) -> Mutation:
    return h5(lambda f: f[obj].attrs.__setitem__(name, value))


def del_attr(obj: str, name: str) -> Mutation:
    return h5(lambda f: f[obj].attrs.__delitem__(name))


def json_attr(obj: str, name: str, edit: Callable[[object], object]) -> Mutation:
    def fn(f: h5py.File) -> None:
        f[obj].attrs[name] = json.dumps(edit(json.loads(f[obj].attrs[name])))

    return h5(fn)


def geometry(**changes: object) -> Mutation:
    return json_attr("layout", "geometry_json", lambda d: {**d, **changes})  # type: ignore[dict-item]


def replace(path: str, make: Callable[[h5py.File, np.ndarray], np.ndarray | None], **kw: object) -> Mutation:
    """Replace dataset ``path`` by ``make(f, old)`` (an array) or by what ``make`` created itself."""

    def fn(f: h5py.File) -> None:
        old = f[path][...]
        del f[path]
        new = make(f, old)
        if new is not None:
            f.create_dataset(path, data=new, **kw)

    return h5(fn)


def edit(path: str, change: Callable[[np.ndarray], None]) -> Mutation:
    def fn(f: h5py.File) -> None:
        a = f[path][...]
        change(a)
        f[path][...] = a

    return h5(fn)


def meta_time(change: Callable[[np.ndarray], None]) -> Mutation:
    def fn(f: h5py.File) -> None:
        m = f["readouts/meta"][...]
        t = m["t_s"].copy()
        change(t)
        m["t_s"] = t
        f["readouts/meta"][...] = m

    return h5(fn)


def set_times(values: object) -> Mutation:
    return replace("session/times_s", lambda f, old: np.asarray(values, dtype=np.float64))


def setitem(a: np.ndarray, i: object, v: object) -> None:
    a[i] = v  # type: ignore[index]


def declare_huge(path: str, n: int = 300_000_000, dtype: str = "i8") -> Mutation:
    """A dataset declaring ``n`` entries but storing none (chunked, gzip): a tiny file whose
    naive reading allocates gigabytes."""

    def make(f: h5py.File, old: np.ndarray) -> None:
        f.create_dataset(path, shape=(n,), dtype=dtype, chunks=(1 << 20,), compression="gzip")

    return replace(path, make)


def external(path: str, target: str) -> Mutation:
    def make(f: h5py.File, old: np.ndarray) -> None:
        f.create_dataset(path, shape=old.shape, dtype=old.dtype, external=[(target, 0, old.nbytes)])

    return replace(path, make)


def virtual(path: str, tmp: Path) -> Mutation:
    def make(f: h5py.File, old: np.ndarray) -> None:
        src = tmp / "vds-source.h5"
        with h5py.File(src, "w") as s:
            s["x"] = old
        layout = h5py.VirtualLayout(shape=old.shape, dtype=old.dtype)
        layout[...] = h5py.VirtualSource(str(src), "x", shape=old.shape)
        f.create_virtual_dataset(path, layout)

    return replace(path, make)


def link(path: str, kind: str, target: str) -> Mutation:
    def fn(f: h5py.File) -> None:
        if path in f:
            del f[path]
        if kind == "soft":
            f[path] = h5py.SoftLink(target)
        elif kind == "external":
            f[path] = h5py.ExternalLink(target, "/")
        else:
            f[path] = f[target]

    return h5(fn)


def nest(depth: int) -> Mutation:
    def fn(f: h5py.File) -> None:
        g = f.require_group("extra")
        for i in range(depth):
            g = g.create_group(f"g{i}")

    return h5(fn)


def flip_chunk_byte(row: int) -> Mutation:
    def apply(path: Path) -> None:
        with h5py.File(path, "r") as f:
            offset = f["readouts/g"].id.get_chunk_info_by_coord((row, 0)).byte_offset
        flip_byte(path, offset + 5)

    return apply


def flip_byte(path: Path, offset: int, mask: int = 0x40) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= mask
    path.write_bytes(bytes(data))


def flip_object_header(obj: str, delta: int) -> Mutation:
    """One flipped byte inside an object's header (its metadata checksum then fails)."""

    def apply(path: Path) -> None:
        with h5py.File(path, "r", swmr=True) as f:
            addr = h5py.h5o.get_info(f[obj].id).addr
        flip_byte(path, addr + delta)

    return apply


def truncate(fraction: float) -> Mutation:
    def apply(path: Path) -> None:
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * fraction)])

    return apply


def overwrite_bytes(content: bytes) -> Mutation:
    return lambda path: path.write_bytes(content)


def lzf(path: str) -> Mutation:
    return replace(path, lambda f, old: old, compression="lzf", chunks=True)


def nested_json(depth: int) -> str:
    return "[" * depth + "]" * depth


def chunk_bomb(path: str, chunk: int) -> Mutation:
    """Rewrite ``path`` (1-D) with gzip chunks of ``chunk`` elements holding its data: a file
    of a few MB whose every read decompresses one whole chunk (gigabytes). The compressed
    chunk is streamed and written directly, so crafting it takes little memory."""
    import zlib

    def apply(p: Path) -> None:
        with h5py.File(p, "r+") as f:
            old = f[path][...]
            attrs = dict(f[path].attrs)
            del f[path]
            ds = f.create_dataset(path, shape=old.shape, maxshape=(None,), dtype=old.dtype, chunks=(chunk,),
                                  compression="gzip", compression_opts=1)
            for k, v in attrs.items():
                ds.attrs[k] = v
            z = zlib.compressobj(1)
            parts = [z.compress(old.tobytes())]
            left = chunk * old.dtype.itemsize - old.nbytes
            zeros = bytes(1 << 24)
            while left > 0:
                parts.append(z.compress(zeros[: min(left, len(zeros))]))
                left -= len(zeros)
            parts.append(z.flush())
            ds.id.write_direct_chunk((0,), b"".join(parts))

    return apply


def flip_bits(path: str, n: int, seed: int) -> Mutation:
    """Flip ``n`` random bits of dataset ``path``'s stored values (random corruption)."""

    def fn(f: h5py.File) -> None:
        a = f[path][...]
        raw = a.view(np.uint8).reshape(-1)
        rng = np.random.default_rng(seed)
        pos = rng.integers(0, raw.size, n)
        raw[pos] ^= (1 << rng.integers(0, 8, n)).astype(np.uint8)
        f[path][...] = a

    return h5(fn)


def downgrade(version: int, drop_crc: bool) -> Mutation:
    """Rewrite ``format_version`` (and drop the per-readout crc32 column), then tamper with a readout."""

    def fn(f: h5py.File) -> None:
        f.attrs["format_version"] = version
        if drop_crc:
            m = f["readouts/meta"][...]
            names = [n for n in m.dtype.names if n != "crc32"]
            new = np.zeros(m.shape, dtype=[(n, m.dtype[n]) for n in names])
            for n in names:
                new[n] = m[n]
            del f["readouts/meta"]
            f.create_dataset("readouts/meta", data=new, maxshape=(None,), chunks=(64,))
        g = f["readouts/g"]
        row = g[3]
        row[:100] = 0
        g[3] = row

    return h5(fn)


def committed_slot_flip(f: h5py.File) -> None:
    """One flipped bit in the chip state saved with the last committed readout (its RNG)."""
    c = f["commit"][...]
    slot = 0 if c[1] == c[0] else 1
    ds = f[f"chip_state/slot{slot}/rng_state"]
    a = ds[...]
    a[10] ^= 1
    ds[...] = a


def scale_state(f: h5py.File) -> None:
    """Issue 19, item 2: chip_state/base/g_prog_uS x 1.1 for 500 cells."""
    a = f["chip_state/base/g_prog_uS"][...]
    a[:500] *= 1.1
    f["chip_state/base/g_prog_uS"][...] = a


#: The base files, once the module fixture made them (for mutations that copy from one).
BASES: dict[str, Path] = {}


def copied_readouts(other: str, *, sealed: bool) -> Callable[[Path], Mutation]:
    def make(tmp: Path) -> Mutation:
        def apply(p: Path) -> None:
            copy_readouts(BASES[other], p)
            if sealed:
                reseal(p)  # the manifest, not the rows' checksums

        return apply

    return make


@dataclass(frozen=True)
class Case:
    id: str
    mutate: Mutation | Callable[[Path], Mutation]
    fragment: str
    base: str = "good"  # or "crashed": a writer killed after its last commit
    subprocess: bool = False  # hung or allocated gigabytes before the fix
    needs_tmp: bool = False
    #: After the edit: "manifest" recomputes the integrity manifest, "rows" also every
    #: readout's checksum, None leaves the file as edited (the manifest must catch it).
    #: Subprocess cases are never resealed (hashing a bomb is the bomb).
    reseal: str | None = "manifest"
    #: Another fragment accepted instead (a consumer or check that names the problem its way).
    alt: str | None = None


CASES: list[Case] = [
    # root attributes
    Case("format-missing", del_attr("/", "format"), "not a harness recording"),
    Case("format-foreign", set_attr("/", "format", "netcdf"), "not a harness recording"),
    Case("format-int", set_attr("/", "format", 5), "not a harness recording"),
    Case("version-text", set_attr("/", "format_version", "one"), "not an integer"),
    Case("version-future", set_attr("/", "format_version", 99), "upgrade the harness"),
    Case("version-zero", set_attr("/", "format_version", 0), "format version 0"),
    Case("version-float", set_attr("/", "format_version", 1.5), "not an integer"),
    Case("version-missing", del_attr("/", "format_version"), "no attribute 'format_version'"),
    Case("version-array", set_attr("/", "format_version", np.array([1, 2])), "not a single value"),
    # provenance
    Case("provenance-list", set_attr("provenance", "json", "[1, 2]"), "provenance is a JSON list"),
    Case("provenance-not-json", set_attr("provenance", "json", "{not json"), "provenance is not valid JSON"),
    Case("provenance-deep-100k", set_attr("provenance", "json", nested_json(100_000)), "nested"),
    Case("provenance-deep-100", set_attr("provenance", "json", '{"a": ' + nested_json(100) + "}"), "nested deeper"),
    Case("provenance-int-attr", set_attr("provenance", "json", 7), "expected text"),
    Case("provenance-missing", h5(lambda f: f.__delitem__("provenance")), "no 'provenance'"),
    Case("provenance-binary", set_attr("provenance", "json", np.void(b"\xff\xfe")), "expected text"),
    # geometry and layers
    Case("geometry-list", set_attr("layout", "geometry_json", "[]"), "geometry is a JSON list"),
    Case("geometry-negative-rows", geometry(rows=-1), "geometry is invalid"),
    Case("geometry-huge", geometry(rows=1_000_000, cols=2048), "more than"),
    Case("geometry-adc-40-bits", geometry(adc_bits=40), "geometry is invalid"),
    Case("geometry-adc-bits-text", geometry(adc_bits="8"), "not an integer"),
    Case("geometry-unknown-key", geometry(warp=9), "unknown field"),
    Case("geometry-nan", set_attr("layout", "geometry_json", '{"rows": 64, "cols": 160, "adc_min_uS": NaN}'),
         "not a finite number"),
    Case("layers-object", set_attr("layout", "layers_json", "{}"), "layer list is a JSON dict"),
    Case("layers-missing-keys", set_attr("layout", "layers_json", '[{"name": "x"}]'), "not a layer placement"),
    Case("layers-bad-type", json_attr("layout", "layers_json", lambda v: [{**v[0], "fan_in": "many"}, *v[1:]]),  # type: ignore[index]
         "layer placement fan_in"),
    # layout arrays
    Case("layout-cell-out-of-range", edit("layout/cells", lambda a: setitem(a, 0, 64 * 160)), "outside"),
    Case("layout-cell-negative", edit("layout/cells", lambda a: setitem(a, 0, -5)), "outside"),
    Case("layout-cells-2d", replace("layout/cells", lambda f, a: a[: a.size // 2 * 2].reshape(2, -1)), "one dimension"),
    Case("layout-unequal-lengths", replace("layout/target_uS", lambda f, a: a[:-3]), "differ in length"),
    Case("layout-cells-float", replace("layout/cells", lambda f, a: a.astype(np.float64)), "dtype float64"),
    Case("layout-target-nan", edit("layout/target_uS", lambda a: setitem(a, 1, np.nan)), "non-finite"),
    Case("layout-layer-index", edit("layout/layer_index", lambda a: setitem(a, 0, 99)), "outside"),
    Case("layout-sign", edit("layout/sign", lambda a: setitem(a, 0, 5)), "outside"),
    Case("layout-soft-link-cycle", link("layout/cells", "soft", "/layout/cells"), "soft link"),
    Case("layout-external-link", link("layout/cells", "external", "/etc/passwd"), "external link"),
    Case("layout-external-passwd", external("layout/target_uS", "/etc/passwd"), "external file"),
    Case("layout-external-urandom", external("layout/target_uS", "/dev/urandom"), "external file"),
    Case("layout-huge-declared", declare_huge("layout/cells"), "more than the header allows", subprocess=True),
    Case("layout-missing", h5(lambda f: f.__delitem__("layout")), "no 'layout'"),
    Case("layout-lzf-filter", lzf("layout/target_uS"), "HDF5 filter"),
    Case("group-hard-link-cycle", link("layout/loop", "hard", "/layout"), "links back"),
    # programming
    Case("programming-cell-range", edit("programming/cells", lambda a: setitem(a, 0, 10**9)), "outside"),
    Case("programming-unequal", replace("programming/final_uS", lambda f, a: a[:5]), "differ in length"),
    Case("programming-t-end-text", set_attr("programming", "t_end_s", "soon"), "not a number"),
    Case("programming-t-end-nan", set_attr("programming", "t_end_s", float("nan")), "not a finite number"),
    Case("programming-params-int", set_attr("programming", "params_json", "3"), "JSON int"),
    Case("programming-final-strings", replace("programming/final_uS", lambda f, a: a.astype("S8")), "dtype"),
    # session timetable
    Case("times-1e300", edit("session/times_s", lambda a: setitem(a, -1, 1e300)), "outside"),
    Case("times-nan", edit("session/times_s", lambda a: setitem(a, 3, np.nan)), "not a finite number"),
    Case("times-negative", edit("session/times_s", lambda a: setitem(a, 0, -25.0)), "outside"),
    Case("times-duplicate", edit("session/times_s", lambda a: setitem(a, 2, a[1])), "not increasing"),
    Case("times-reversed", edit("session/times_s", lambda a: a.__setitem__(slice(None), a[::-1].copy())),
         "not increasing"),
    Case("times-2d", set_times(np.arange(1.0, 11.0).reshape(2, 5)), "one dimension"),
    Case("times-empty", set_times([]), "timetable is empty"),
    Case("session-toml-int", set_attr("session", "toml", 42), "expected text"),
    Case("repeats-zero", set_attr("session", "readout_repeats", 0), "readout_repeats 0"),
    # readouts
    Case("encoding-float64-over-codes", set_attr("readouts", "encoding", "float64"), "stored as float64"),
    Case("encoding-unknown", set_attr("readouts", "encoding", "rot13"), "unknown readout encoding"),
    Case("adc-bits-mismatch", set_attr("readouts", "adc_bits", 16), "does not match the layout geometry"),
    Case("adc-bits-16-both", lambda p: (geometry(adc_bits=16)(p), set_attr("readouts", "adc_bits", 16)(p)),
         "stored as uint16"),
    Case("adc-codes-beyond-7-bits", lambda p: (geometry(adc_bits=7)(p), set_attr("readouts", "adc_bits", 7)(p)),
         "beyond the 7-bit ADC", reseal="rows"),
    Case("readout-cells-range", edit("readouts/cells", lambda a: setitem(a, 0, -1)), "outside"),
    Case("readout-flipped-bit", flip_chunk_byte(9), "readout #10 is corrupted"),
    Case("readout-rows-huge", h5(lambda f: f["readouts/g"].resize(300_000_000, axis=0)), "rows are declared",
         subprocess=True),
    Case("readout-time-nan", meta_time(lambda t: setitem(t, 2, np.nan)), "not a finite number"),
    Case("readout-time-backwards", meta_time(lambda t: setitem(t, 5, 1.0)), "not non-decreasing"),
    Case("readout-meta-no-t", replace("readouts/meta", lambda f, m: np.zeros(m.shape, dtype=[("x", "f8")]),
                                      maxshape=(None,), chunks=True), "t_s column"),
    Case("readouts-virtual", lambda tmp: virtual("readouts/cells", tmp), "virtual dataset", needs_tmp=True),
    # commit and writer records
    Case("commit-beyond-stored", edit("commit", lambda a: setitem(a, 0, 1000)), "only 10 stored"),
    Case("commit-negative", edit("commit", lambda a: setitem(a, 0, -3)), "readouts committed"),
    Case("commit-shape", replace("commit", lambda f, a: a[:2]), "commit record has shape"),
    Case("commit-tags", edit("commit", lambda a: setitem(a, 1, 50)), "chip-state slots"),
    Case("commit-float", replace("commit", lambda f, a: a.astype(np.float64)), "commit record has shape"),
    Case("writer-shape", replace("writer", lambda f, a: a[:2]), "writer record"),
    # chip state
    Case("state-keys-object", set_attr("chip_state", "keys_json", "{}"), "key list is a JSON dict"),
    Case("state-key-missing", json_attr("chip_state", "keys_json", lambda k: [*k, "ghost"]), "chip_state/base/ghost"),
    Case("state-huge-declared", declare_huge("chip_state/base/g_prog_uS", dtype="f8"), "chip_state/base/g_prog_uS",
         subprocess=True),
    Case("state-present-shape", replace("chip_state/slot0/present", lambda f, a: np.zeros(1, np.uint8)),
         "present has shape"),
    # structure
    Case("nested-20-groups", nest(20), "nested deeper"),
    Case("not-hdf5", overwrite_bytes(b"just some text\n" * 100), "not an HDF5 file",
         alt="neither a recording (HDF5)"),  # report takes JSON results and sweep folders too
    Case("empty-file", overwrite_bytes(b""), "not an HDF5 file", alt="neither a recording (HDF5)"),
    Case("truncated-half", truncate(0.5), "truncated"),
    Case("commit-header-flip", flip_object_header("commit", 8), "damaged"),
    Case("layout-header-flip", flip_object_header("layout/target_uS", 12), "damaged"),
    # a writer killed after its last commit (SWMR flag set), then damaged
    Case("crashed-commit-header-flip", flip_object_header("commit", 8), "damaged", base="crashed", subprocess=True),
    Case("crashed-meta-header-flip", flip_object_header("readouts/meta", 12), "damaged", base="crashed",
         subprocess=True),
    Case("crashed-truncated", truncate(0.6), "truncated", base="crashed"),
    # issue 19, item 4: chunk bombs (gigabytes or minutes before the fix)
    Case("chunk-bomb-target", chunk_bomb("layout/target_uS", 2**28 - 1), "chunks of", subprocess=True),
    Case("chunk-bomb-cells", chunk_bomb("layout/cells", 2**27), "chunks of", subprocess=True),
    Case("chunk-bomb-meta", chunk_bomb("readouts/meta", 2**24), "chunks of", subprocess=True),
    # issue 19, item 5: values that made consumers raise tracebacks
    Case("adc-step-overflows", lambda p: (geometry(adc_min_uS=-1e308, adc_max_uS=1e308)(p),
                                          set_attr("readouts", "adc_min_uS", -1e308)(p),
                                          set_attr("readouts", "adc_max_uS", 1e308)(p)), "no finite step"),
    Case("zero-weight-scale", json_attr("layout", "layers_json",
                                        lambda v: [{**v[0], "weight_max": 0.0, "scale_uS": 0.0}, *v[1:]]),  # type: ignore[index]
         "layer placement"),
    Case("readout-times-negated", meta_time(lambda t: t.__setitem__(slice(None), -t)), "not non-decreasing"),
    Case("readout-times-reversed", meta_time(lambda t: t.__setitem__(slice(None), t[::-1].copy())),
         "not non-decreasing"),
    # issue 19, item 1: structure and integrity
    Case("layout-cells-all-equal", edit("layout/cells", lambda a: a.__setitem__(slice(None), a[0])), "more than once"),
    Case("readout-cells-duplicate", edit("readouts/cells", lambda a: setitem(a, 1, a[0])), "more than once"),
    Case("flips-layout-target", flip_bits("layout/target_uS", 3, 1), "integrity manifest", reseal=None),
    Case("flips-programming-final", flip_bits("programming/final_uS", 3, 2), "integrity manifest", reseal=None,
         alt="holds values outside"),  # a flipped exponent bit meets the range check first
    Case("flips-programming-converged", edit("programming/converged", lambda a: a.__setitem__(slice(None), False)),
         "integrity manifest", reseal=None),
    Case("flips-times", edit("session/times_s", lambda a: setitem(a, 3, a[3] * 1.01)), "integrity manifest",
         reseal=None),
    Case("edit-provenance", json_attr("provenance", "json", lambda d: {**d, "seed": 99}),  # type: ignore[dict-item]
         "integrity manifest", reseal=None),
    Case("edit-geometry-attr", set_attr("readouts", "time_origin", "now"), "integrity manifest", reseal=None),
    Case("extra-dataset", h5(lambda f: f.create_dataset("extra", data=np.arange(3))), "integrity manifest",
         reseal=None),
    Case("tampered-chip-state", h5(scale_state), "integrity manifest", reseal=None),
    Case("tampered-chip-slot", h5(committed_slot_flip), "chip state (slot", reseal=None),
    Case("readout-time-edited", meta_time(lambda t: setitem(t, 4, t[4] + 1e-3)), "readout records", reseal=None),
    Case("commit-digest-flipped", edit("commit", lambda a: setitem(a, 3, a[3] ^ 4)), "own checksum", reseal=None),
    Case("writer-record-edited", edit("writer", lambda a: setitem(a, 0, a[0] + 1)), "writer record", reseal=None),
    Case("resume-log-edited", set_attr("/", "resumes_json", "[]"), "resume log", reseal=None),
    Case("downgrade-to-2-no-crc", downgrade(2, True), "version-4 integrity manifest", reseal=None),
    Case("downgrade-to-3", downgrade(3, False), "version-4 integrity manifest", reseal=None),
    Case("manifest-removed", lambda p: (replace("commit", lambda f, a: a[:3])(p), replace("writer", lambda f, a: a[:3])(p)),
         "requires its integrity manifest", reseal=None),
    Case("readouts-from-another-chip", copied_readouts("other", sealed=False), "readout records", needs_tmp=True,
         reseal=None),
    Case("readouts-from-another-chip-resealed", copied_readouts("other", sealed=True), "copied from another",
         needs_tmp=True, reseal=None),
]

KILL_AFTER_LAST_COMMIT = textwrap.dedent(
    """
    import os, signal, sys
    from harness.recording import RecordingWriter
    RecordingWriter.close = lambda self: os.kill(os.getpid(), signal.SIGKILL)
    from harness.cli import app
    sys.argv[0] = "harness"
    app()
    """
)


@pytest.fixture(scope="module")
def bases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("bases")
    good = d / "good.h5"
    with open_chip(SMALL) as chip:
        run_session(load_session(DEMO), chip, good)
    with open_chip(OTHER_CHIP) as chip:
        run_session(load_session(DEMO), chip, d / "other.h5")
    crashed = d / "crashed.h5"
    proc = subprocess.run(
        [sys.executable, "-c", KILL_AFTER_LAST_COMMIT, "session", "run", str(DEMO), "--chip", SMALL,
         "--out", str(crashed)],
        capture_output=True, text=True, cwd=REPO, check=False,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    BASES.update(good=good, crashed=crashed, other=d / "other.h5")
    return dict(BASES)


@pytest.fixture(scope="module")
def crafted(bases: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Callable[[Case, Path], Path]:
    """``crafted(case, tmp)``: a fresh copy of the case's file in ``tmp`` (each case is
    crafted once per module, then copied)."""
    cache = tmp_path_factory.mktemp("crafted")

    def get(case: Case, tmp: Path) -> Path:
        master = cache / f"{case.id}.h5"
        if not master.exists():
            craft(case, bases, cache)
        path = tmp / f"{case.id}.h5"
        shutil.copy(master, path)
        return path

    return get


def craft(case: Case, bases: dict[str, Path], tmp: Path) -> Path:
    path = tmp / f"{case.id}.h5"
    shutil.copy(bases[case.base], path)
    mutate = case.mutate(tmp) if case.needs_tmp else case.mutate  # type: ignore[call-arg]
    mutate(path)  # type: ignore[call-arg,operator]
    if case.reseal is not None and not case.subprocess:
        reseal(path, rows=case.reseal == "rows")
    return path


def check_line(stderr: str, code: int, case: Case, consumer: str) -> None:
    where = f"{case.id} / {consumer}"
    assert code != 0, f"{where}: exit 0; stderr={stderr!r}"
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), f"{where}: {stderr[-2000:]!r}"
    assert "Traceback" not in stderr, where
    assert case.fragment in lines[0] or (case.alt is not None and case.alt in lines[0]), (
        f"{where}: {lines[0]!r} lacks {case.fragment!r}"
    )


def test_the_table_is_big_enough() -> None:
    assert len(CASES) >= 60 and len({c.id for c in CASES}) == len(CASES)


def test_every_consumer_accepts_the_good_files(bases: dict[str, Path], tmp_path: Path) -> None:
    """The control: the unmodified bases pass every consumer (crashed: readable via SWMR)."""
    for name in ("good", "crashed"):
        for consumer, argv in CONSUMERS.items():
            path = tmp_path / f"{name}-{consumer}.h5"
            shutil.copy(bases[name], path)
            r = invoke(*argv(str(path)))
            assert r.exit_code == 0, f"{name} / {consumer}: {r.stderr}"


def dead_chip(f: h5py.File) -> None:
    f["readouts/g"][...] = 0


#: Legitimate files with unusual content (resealed with every readout's checksum: what a
#: writer records): a dead chip reads 0 everywhere; a write-verify that converged nowhere.
#: Every consumer must succeed, or (calibrate, which needs data to fit) say why in one line.
LEGIT = {"dead-chip-all-zero": h5(dead_chip),
         "converged-nowhere": edit("programming/converged", lambda a: a.__setitem__(slice(None), False))}


@pytest.mark.parametrize("consumer", list(CONSUMERS))
@pytest.mark.parametrize("name", list(LEGIT))
def test_legitimate_unusual_files_work(bases: dict[str, Path], tmp_path: Path, name: str, consumer: str) -> None:
    path = tmp_path / f"{name}.h5"
    shutil.copy(bases["good"], path)
    LEGIT[name](path)
    assert reseal(path, rows=True)
    r = invoke(*CONSUMERS[consumer](str(path)))
    assert "Traceback" not in r.stderr and "Warning" not in r.stderr, r.stderr
    if consumer == "calibrate" and r.exit_code != 0:
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    else:
        assert r.exit_code == 0, f"{name} / {consumer}: {r.stderr}"


IN_PROCESS = [pytest.param(c, k, id=f"{c.id}-{k}") for c in CASES if not c.subprocess for k in CONSUMERS]


@pytest.mark.parametrize(("case", "consumer"), IN_PROCESS)
def test_hostile_recording_in_process(
    crafted: Callable[[Case, Path], Path], tmp_path: Path, case: Case, consumer: str
) -> None:
    import harness.evaluation.evaluate  # noqa: F401 - imported up front: the first import of torch is not the case's time

    path = crafted(case, tmp_path)
    t0 = time.perf_counter()
    r = invoke(*CONSUMERS[consumer](str(path)))
    elapsed = time.perf_counter() - t0
    check_line(r.stderr, r.exit_code, case, consumer)
    assert elapsed <= LIMIT_S, f"{case.id} / {consumer}: {elapsed:.1f} s"
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    assert peak <= TABLE_RSS_LIMIT_MB, f"{case.id} / {consumer}: this process peaked at {peak:.0f} MB"


#: Runs the dangerous cases in one fresh process (isolated from the test process): for
#: each (case, consumer, file) of the plan it records "start", then the exit code, stderr
#: and the command's time, one JSON line each, so a hang names its case; the imports of
#: the CLI and torch come first and are not any case's time.
DRIVER = textwrap.dedent(
    """
    import json, sys, time
    sys.path.insert(0, {tests!r})
    import harness.evaluation.evaluate
    from clikit import invoke
    def hwm_mb():  # this process's own peak RSS (VmHWM: unlike ru_maxrss, not inherited at fork)
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return None
    plan = json.load(open(sys.argv[1]))
    with open(sys.argv[2], "w", buffering=1) as log:
        for case, consumer, argv in plan:
            log.write(json.dumps({{"case": case, "consumer": consumer, "start": True}}) + "\\n")
            t0 = time.perf_counter()
            r = invoke(*argv)
            log.write(json.dumps({{"case": case, "consumer": consumer, "code": r.exit_code,
                                  "stderr": r.stderr, "elapsed": time.perf_counter() - t0,
                                  "peak_mb": hwm_mb()}}) + "\\n")
    """
)
#: The driver is killed after this long (imports included): a case hung.
KILL_AFTER_S = 120.0


SUBPROCESS = [pytest.param(c, k, id=f"{c.id}-{k}") for c in CASES if c.subprocess for k in CONSUMERS]


@pytest.fixture(scope="module")
def driver_results(crafted: Callable[[Case, Path], Path], tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Every dangerous (case, consumer) run once in one driver process: its results by
    (case id, consumer), and the driver's own peak RSS (MB, imports included) under "peak_mb"."""
    tmp = tmp_path_factory.mktemp("driver")
    plan = []
    for consumer, argv in CONSUMERS.items():
        (tmp / consumer).mkdir()
        for case in (c for c in CASES if c.subprocess):
            plan.append((case.id, consumer, argv(str(crafted(case, tmp / consumer)))))
    (tmp / "plan.json").write_text(json.dumps(plan))
    log = tmp / "log.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-c", DRIVER.format(tests=str(Path(__file__).parent)), str(tmp / "plan.json"), str(log)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    out: dict = {}
    try:
        _, stderr = proc.communicate(timeout=KILL_AFTER_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        stderr = ""
        last = json.loads(log.read_text().splitlines()[-1]) if log.exists() and log.read_text() else {}
        out["hung"] = f"{last.get('case')} / {last.get('consumer')}"
    out["returncode"] = proc.returncode
    out["stderr"] = stderr[-3000:]
    lines = log.read_text().splitlines() if log.exists() else []
    for line in lines:
        res = json.loads(line)
        if "start" not in res:
            out[(res["case"], res["consumer"])] = res
    peaks = [r["peak_mb"] for k, r in out.items() if isinstance(k, tuple) and r.get("peak_mb") is not None]
    out["peak_mb"] = max(peaks) if peaks else None  # None: no /proc (not Linux)
    return out


@pytest.mark.parametrize(("case", "consumer"), SUBPROCESS)
def test_hostile_recording_that_hung_or_exhausted_memory(driver_results: dict, case: Case, consumer: str) -> None:
    res = driver_results.get((case.id, consumer))
    if res is None:
        hung = driver_results.get("hung")
        pytest.fail(f"{case.id} / {consumer}: no result (driver {'hung at ' + hung if hung else 'failed'}: "
                    f"{driver_results['stderr']!r})")
    check_line(res["stderr"], res["code"], case, consumer)
    assert res["elapsed"] <= LIMIT_S, f"{case.id} / {consumer}: {res['elapsed']:.1f} s"


def test_the_driver_stayed_within_the_memory_budget(driver_results: dict) -> None:
    assert "hung" not in driver_results, driver_results["hung"]
    assert driver_results["returncode"] == 0, driver_results["stderr"]
    peak = driver_results["peak_mb"]
    if peak is not None:
        assert peak <= RSS_LIMIT_MB, f"a consumer process reached {peak:.0f} MB"
