"""Hostile and damaged recordings, table-driven, against every consumer (issue 13, items 2, 4-6).

Each case crafts one bad file from a good session recording (or from one a writer was
killed in after its last commit). Every consumer -- ``replay``, ``evaluate --recording``,
``session status``, ``session resume`` and the ``replay:`` chip backend (through
``evaluate --chip replay:F``) -- must answer with one ``error:`` line naming the problem,
a non-zero exit, within 10 s, and with bounded memory. Cases that hung or allocated
gigabytes before the fix run in a subprocess (killed after 10 s; its peak RSS is read);
the rest run in-process (CliRunner) and the whole table's peak RSS is bounded.

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

from harness.chip.registry import open_chip
from harness.sessions.schedule import load_session
from harness.sessions.runner import run_session

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "sessions" / "demo-short.toml"
SMALL = "virtual?rows=64&cols=160&seed=5"
LIMIT_S = 10.0
#: Peak RSS a consumer may reach on a crafted file (a CLI process with torch loaded is ~0.5 GB).
RSS_LIMIT_MB = 1500.0
#: Growth of this test process's peak RSS over the whole in-process table.
TABLE_RSS_GROWTH_MB = 400.0

CONSUMERS: dict[str, Callable[[str], list[str]]] = {
    "replay": lambda f: ["replay", f, "--json"],
    "evaluate": lambda f: ["evaluate", "--recording", f, "--json"],
    "status": lambda f: ["session", "status", f, "--json"],
    "resume": lambda f: ["session", "resume", f, "--json"],
    "replay-backend": lambda f: ["evaluate", "--chip", f"replay:{f}", "--times", "25s,1d", "--bits", "8", "--json"],
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


@dataclass(frozen=True)
class Case:
    id: str
    mutate: Mutation | Callable[[Path], Mutation]
    fragment: str
    base: str = "good"  # or "crashed": a writer killed after its last commit
    subprocess: bool = False  # hung or allocated gigabytes before the fix
    needs_tmp: bool = False


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
         "beyond the 7-bit ADC"),
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
    Case("not-hdf5", overwrite_bytes(b"just some text\n" * 100), "not an HDF5 file"),
    Case("empty-file", overwrite_bytes(b""), "not an HDF5 file"),
    Case("truncated-half", truncate(0.5), "truncated"),
    Case("commit-header-flip", flip_object_header("commit", 8), "damaged"),
    Case("layout-header-flip", flip_object_header("layout/target_uS", 12), "damaged"),
    # a writer killed after its last commit (SWMR flag set), then damaged
    Case("crashed-commit-header-flip", flip_object_header("commit", 8), "damaged", base="crashed", subprocess=True),
    Case("crashed-meta-header-flip", flip_object_header("readouts/meta", 12), "damaged", base="crashed",
         subprocess=True),
    Case("crashed-truncated", truncate(0.6), "truncated", base="crashed"),
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
    crashed = d / "crashed.h5"
    proc = subprocess.run(
        [sys.executable, "-c", KILL_AFTER_LAST_COMMIT, "session", "run", str(DEMO), "--chip", SMALL,
         "--out", str(crashed)],
        capture_output=True, text=True, cwd=REPO, check=False,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    return {"good": good, "crashed": crashed}


def craft(case: Case, bases: dict[str, Path], tmp: Path) -> Path:
    path = tmp / f"{case.id}.h5"
    shutil.copy(bases[case.base], path)
    mutate = case.mutate(tmp) if case.needs_tmp else case.mutate  # type: ignore[call-arg]
    mutate(path)  # type: ignore[call-arg,operator]
    return path


def check_line(stderr: str, code: int, case: Case, consumer: str) -> None:
    where = f"{case.id} / {consumer}"
    assert code != 0, f"{where}: exit 0; stderr={stderr!r}"
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), f"{where}: {stderr[-2000:]!r}"
    assert "Traceback" not in stderr, where
    assert case.fragment in lines[0], f"{where}: {lines[0]!r} lacks {case.fragment!r}"


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


def test_hostile_recordings_in_process(bases: dict[str, Path], tmp_path: Path) -> None:
    import harness.evaluation.evaluate  # noqa: F401 - imported once up front: the first import of torch is not the case's time

    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    for case in (c for c in CASES if not c.subprocess):
        for consumer, argv in CONSUMERS.items():
            path = craft(case, bases, tmp_path)
            t0 = time.perf_counter()
            r = invoke(*argv(str(path)))
            elapsed = time.perf_counter() - t0
            check_line(r.stderr, r.exit_code, case, consumer)
            assert elapsed <= LIMIT_S, f"{case.id} / {consumer}: {elapsed:.1f} s"
    growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - rss0
    assert growth <= TABLE_RSS_GROWTH_MB, f"peak RSS grew {growth:.0f} MB over the table"


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
    plan = json.load(open(sys.argv[1]))
    with open(sys.argv[2], "w", buffering=1) as log:
        for case, consumer, argv in plan:
            log.write(json.dumps({{"case": case, "consumer": consumer, "start": True}}) + "\\n")
            t0 = time.perf_counter()
            r = invoke(*argv)
            log.write(json.dumps({{"case": case, "consumer": consumer, "code": r.exit_code,
                                  "stderr": r.stderr, "elapsed": time.perf_counter() - t0}}) + "\\n")
    """
)
#: The driver is killed after this long (imports included): a case hung.
KILL_AFTER_S = 120.0


def test_hostile_recordings_that_hung_or_exhausted_memory(bases: dict[str, Path], tmp_path: Path) -> None:
    cases = {c.id: c for c in CASES if c.subprocess}
    plan = []
    for consumer, argv in CONSUMERS.items():
        (tmp_path / consumer).mkdir()
        for case in cases.values():
            plan.append((case.id, consumer, argv(str(craft(case, bases, tmp_path / consumer)))))
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    log = tmp_path / "log.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-c", DRIVER.format(tests=str(Path(__file__).parent)), str(tmp_path / "plan.json"), str(log)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        _, stderr = proc.communicate(timeout=KILL_AFTER_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        last = json.loads(log.read_text().splitlines()[-1]) if log.exists() and log.read_text() else {}
        pytest.fail(f"{last.get('case')} / {last.get('consumer')}: hung (driver killed after {KILL_AFTER_S} s)")
    assert proc.returncode == 0, stderr[-3000:]
    results = [json.loads(line) for line in log.read_text().splitlines() if "start" not in json.loads(line)]
    assert len(results) == len(plan)
    for res in results:
        case = cases[res["case"]]
        check_line(res["stderr"], res["code"], case, res["consumer"])
        assert res["elapsed"] <= LIMIT_S, f"{case.id} / {res['consumer']}: {res['elapsed']:.1f} s"
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # the largest child so far
    assert peak_mb <= RSS_LIMIT_MB, f"a consumer process reached {peak_mb:.0f} MB"
