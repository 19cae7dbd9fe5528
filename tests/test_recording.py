"""The recording format: round trips, crash safety, refusal of bad files, SWMR readers."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest

from harness.chip.protocol import Geometry
from harness.errors import RecordingError
from harness.programming.mapping import map_weights
from harness.programming.write_verify import ProgrammingParams, program_layout
from harness.provenance import collect_provenance
from harness.recording import (
    FORMAT_VERSION,
    create_recording,
    open_recording,
    partial_paths,
    recover_recording,
)
from harness.virtual.chip import VirtualPCMChip

GEOM = Geometry(rows=16, cols=32)
REPO = Path(__file__).resolve().parent.parent


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def programmed(seed: int = 1):  # type: ignore[no-untyped-def]
    chip = VirtualPCMChip(GEOM, seed=seed)
    w = np.random.default_rng(seed).normal(size=(8, 16))
    layout = map_weights([("fc", w)], GEOM)
    result = program_layout(chip, layout, ProgrammingParams())
    prov = collect_provenance(chip_uri=f"virtual?rows=16&cols=32&seed={seed}", chip_identity=chip.identity,
                              seed=seed, model="test")
    return chip, layout, result, prov


def record(path: Path, n: int = 4, seed: int = 1, **kw):  # type: ignore[no-untyped-def]
    """A recording with ``n`` readouts; returns the live reads and chip states."""
    chip, layout, result, prov = programmed(seed)
    reads, states = [], []
    with create_recording(path, provenance=prov, layout=layout, programming=result,
                          chip_state=chip.snapshot(), **kw) as w:
        for i in range(n):
            t = 25.0 * 3**i
            chip.wait_until(result.t_end_s + t)
            t_read = chip.now() - result.t_end_s
            g = chip.read(w.cells)
            state = chip.snapshot(include_devices=False)
            w.append_readout(t_read, g, chip_state=state, t_scheduled_s=t, schedule_index=i)
            reads.append(g)
            states.append(state)
    return chip, layout, result, reads, states


def test_round_trip_is_bit_exact(tmp_path: Path) -> None:
    path = tmp_path / "r.h5"
    chip, layout, result, reads, states = record(path)
    with open_recording(path) as rec:
        assert rec.format_version == FORMAT_VERSION
        assert rec.n_readouts == 4 and rec.encoding == "adc_code"
        for i, g in enumerate(reads):
            got = rec.readout(i)
            assert got.dtype == np.float64 and np.array_equal(got, g)  # bit-exact, not allclose
        assert np.array_equal(rec.readouts(), np.stack(reads))
        np.testing.assert_array_equal(rec.extra("t_scheduled_s"), 25.0 * 3 ** np.arange(4))
        np.testing.assert_array_equal(rec.extra("schedule_index"), np.arange(4))
        assert np.all(np.diff(rec.times_s) > 0)
        lay = rec.layout
        for name in ("cells", "target_uS", "layer_index", "sign", "weight_index"):
            assert np.array_equal(getattr(lay, name), getattr(layout, name)), name
        assert lay.layers == layout.layers and lay.geometry == layout.geometry
        p = rec.programming
        assert np.array_equal(p.final_uS, result.final_uS)
        assert np.array_equal(p.converged, result.converged)
        assert np.array_equal(p.iterations, result.iterations)
        assert p.t_end_s == result.t_end_s and p.params["tolerance_uS"] == result.params.tolerance_uS
        assert rec.provenance["seed"] == 1 and rec.provenance["model"] == "test"
        # the state after the last readout: the base (devices) merged with the last runtime state
        st = rec.chip_state()
        assert st is not None
        assert float(st["clock_s"]) == float(states[-1]["clock_s"])
        assert np.array_equal(st["rng_state"], states[-1]["rng_state"])
        assert np.array_equal(st["g_prog_uS"], chip.snapshot()["g_prog_uS"])
        assert rec.chip_state(2) is None  # older states are overwritten (two slots)
        assert float(rec.chip_state(0)["clock_s"]) == result.t_end_s
        assert not rec.writer_running


def test_float64_encoding_round_trips_values_off_the_adc_grid(tmp_path: Path) -> None:
    chip, layout, result, prov = programmed()
    g = np.linspace(0.01, 24.99, layout.n_devices)
    with create_recording(tmp_path / "f.h5", provenance=prov, layout=layout, programming=result,
                          encoding="float64") as w:
        w.append_readout(25.0, g)
    with open_recording(tmp_path / "f.h5") as rec:
        assert rec.encoding == "float64" and np.array_equal(rec.readout(0), g)


def test_values_off_the_adc_grid_are_refused_and_nothing_is_committed(tmp_path: Path) -> None:
    chip, layout, result, prov = programmed()
    path = tmp_path / "a.h5"
    with create_recording(path, provenance=prov, layout=layout, programming=result) as w:
        w.append_readout(25.0, chip.read(layout.cells))
        with pytest.raises(RecordingError, match="ADC grid"):
            w.append_readout(30.0, np.full(layout.n_devices, 1.2345678))
        with pytest.raises(RecordingError, match="shape"):
            w.append_readout(30.0, np.zeros(3))
        with pytest.raises(RecordingError, match="before the previous readout"):
            w.append_readout(10.0, chip.read(layout.cells))
        with pytest.raises(RecordingError, match="unknown per-readout column"):
            w.append_readout(30.0, chip.read(layout.cells), temperature_K=300.0)
        assert w.n_readouts == 1
    with open_recording(path) as rec:
        assert rec.n_readouts == 1


def test_declared_extras_are_recorded(tmp_path: Path) -> None:
    chip, layout, result, prov = programmed()
    with create_recording(tmp_path / "e.h5", provenance=prov, layout=layout, programming=result,
                          extras={"temperature_K": np.float32, "adc_offsets": (np.int16, (4,))}) as w:
        w.append_readout(25.0, chip.read(layout.cells), temperature_K=301.5, adc_offsets=[1, -2, 3, 0])
    with open_recording(tmp_path / "e.h5") as rec:
        assert rec.extra("temperature_K")[0] == np.float32(301.5)
        assert rec.extra("adc_offsets").tolist() == [[1, -2, 3, 0]]
        with pytest.raises(RecordingError, match="no per-readout column"):
            rec.extra("pressure")


def test_existing_file_is_never_overwritten_unless_asked(tmp_path: Path) -> None:
    path = tmp_path / "r.h5"
    record(path, n=2)
    before = sha(path)
    chip, layout, result, prov = programmed(seed=2)
    with pytest.raises(RecordingError, match=str(path)):
        create_recording(path, provenance=prov, layout=layout, programming=result)
    assert sha(path) == before and partial_paths(path) == []
    with create_recording(path, provenance=prov, layout=layout, programming=result, overwrite=True):
        pass
    with open_recording(path) as rec:
        assert rec.n_readouts == 0 and rec.provenance["seed"] == 2


def test_a_failing_header_write_leaves_no_file_behind(tmp_path: Path) -> None:
    path = tmp_path / "r.h5"
    chip, layout, result, prov = programmed()
    with pytest.raises(RecordingError, match="cannot record"):
        create_recording(path, provenance={**prov, "bad": object()}, layout=layout, programming=result)
    assert not path.exists() and partial_paths(path) == []


def test_missing_directory_and_directory_path(tmp_path: Path) -> None:
    chip, layout, result, prov = programmed()
    with pytest.raises(RecordingError, match="does not exist"):
        create_recording(tmp_path / "no" / "r.h5", provenance=prov, layout=layout, programming=result)
    with pytest.raises(RecordingError, match="directory"):
        create_recording(tmp_path, provenance=prov, layout=layout, programming=result)


def _foreign(tmp_path: Path) -> Path:
    p = tmp_path / "foreign.h5"
    with h5py.File(p, "w") as f:
        f["x"] = np.arange(10)
    return p


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda d: d / "missing.h5", "does not exist"),
        (lambda d: (d / "junk.h5").write_bytes(b"not hdf5 at all" * 100) and d / "junk.h5", "not an HDF5 file"),
        (_foreign, "not a harness recording"),
        (lambda d: d, "directory"),
    ],
)
def test_open_refuses_missing_junk_foreign(tmp_path: Path, make, words: str) -> None:  # type: ignore[no-untyped-def]
    path = make(tmp_path)
    with pytest.raises(RecordingError, match=words):
        open_recording(path)


def test_newer_format_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "r.h5"
    record(path, n=1)
    with h5py.File(path, "a") as f:
        f.attrs["format_version"] = FORMAT_VERSION + 1
    with pytest.raises(RecordingError, match="upgrade the harness"):
        open_recording(path)


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9, 0.99])
def test_truncated_files_are_refused_or_read_consistently(tmp_path: Path, fraction: float) -> None:
    path = tmp_path / "r.h5"
    _, _, _, reads, _ = record(path, n=4)
    data = path.read_bytes()
    cut = tmp_path / "cut.h5"
    cut.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(RecordingError):
        with open_recording(cut) as rec:
            rec.readouts()
            rec.layout  # noqa: B018 - reading is the test
            rec.programming  # noqa: B018


def test_recover_keeps_committed_content_and_links(tmp_path: Path) -> None:
    path = tmp_path / "r.h5"
    _, layout, _, reads, states = record(path, n=3)
    size = path.stat().st_size
    with recover_recording(path) as w:
        assert w.n_readouts == 3
    with open_recording(path) as rec:
        assert np.array_equal(rec.readouts(), np.stack(reads))
        assert np.array_equal(rec.layout.cells, layout.cells)
        assert float(rec.chip_state()["clock_s"]) == float(states[-1]["clock_s"])
        f = rec._f
        assert f["layout/cells"] == f["programming/cells"] == f["readouts/cells"]  # still hard links
    assert path.stat().st_size <= size * 1.2
    assert partial_paths(path) == []


# --------------------------------------------------------------------------- real crashes

CRASH_WRITER = textwrap.dedent(
    """
    import os, signal, sys
    import numpy as np
    sys.path.insert(0, {tests!r})
    from test_recording import programmed
    from harness.recording import create_recording
    import h5py

    path, n, kill_at = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    chip, layout, result, prov = programmed(1)
    flushes = 0
    real_flush = h5py.File.flush
    def flush(self):
        global flushes
        real_flush(self)
        flushes += 1
        # append_readout flushes twice: after the rows (+state), after the commit record
        if kill_at == "rows" and flushes == 2 * n + 1:
            os.kill(os.getpid(), signal.SIGKILL)
    h5py.File.flush = flush
    w = create_recording(path, provenance=prov, layout=layout, programming=result, chip_state=chip.snapshot())
    flushes = 0
    for i in range(n + 1):
        t = 25.0 * 3**i
        chip.wait_until(result.t_end_s + t)
        g = chip.read(w.cells)
        w.append_readout(t, g, chip_state=chip.snapshot(include_devices=False), t_scheduled_s=t, schedule_index=i)
        np.save(f"{{path}}.read{{i}}.npy", g)
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


@pytest.mark.parametrize("kill_at", ["rows", "end"])
def test_sigkill_loses_at_most_the_readout_in_flight(tmp_path: Path, kill_at: str) -> None:
    path = tmp_path / "crash.h5"
    script = CRASH_WRITER.format(tests=str(Path(__file__).parent))
    n = 3
    proc = subprocess.run([sys.executable, "-c", script, str(path), str(n), kill_at], capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    with h5py.File(path, "r", swmr=True) as f:
        rows = f["readouts/g"].shape[0]
    with open_recording(path) as rec:
        expected = n if kill_at == "rows" else n + 1
        # "rows": the 4th readout's rows reached the file but its commit did not
        assert rows == n + 1
        assert rec.n_readouts == expected
        for i in range(expected):
            assert np.array_equal(rec.readout(i), np.load(f"{path}.read{i}.npy"))
        state = rec.chip_state()
        assert state is not None
    with recover_recording(path) as w:
        assert w.n_readouts == expected
    with open_recording(path) as rec:
        assert rec.n_readouts == expected and rec._f["readouts/g"].shape[0] == expected


def test_a_second_process_reads_while_the_writer_appends(tmp_path: Path) -> None:
    path = tmp_path / "live.h5"
    chip, layout, result, prov = programmed()
    reader = textwrap.dedent(
        """
        import sys, hashlib
        from harness.recording import open_recording
        rec = open_recording(sys.argv[1])
        print("opened", rec.n_readouts, flush=True)
        for line in sys.stdin:
            n = rec.refresh()
            print("seen", n, hashlib.sha256(rec.readout(n - 1).tobytes()).hexdigest() if n else "-", flush=True)
        """
    )
    with create_recording(path, provenance=prov, layout=layout, programming=result,
                          chip_state=chip.snapshot()) as w:
        proc = subprocess.Popen([sys.executable, "-c", reader, str(path)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None and proc.stdin is not None
            line = proc.stdout.readline()
            assert line.split() == ["opened", "0"], line + proc.stderr.read()  # type: ignore[union-attr]
            for i in range(3):
                chip.wait_until(result.t_end_s + 25.0 * (i + 1))
                g = chip.read(w.cells)
                w.append_readout(25.0 * (i + 1), g, chip_state=chip.snapshot(include_devices=False))
                proc.stdin.write("next\n")
                proc.stdin.flush()
                seen = proc.stdout.readline().split()
                assert seen == ["seen", str(i + 1), hashlib.sha256(g.tobytes()).hexdigest()]
        finally:
            proc.stdin.close()  # type: ignore[union-attr]
            proc.wait(timeout=60)
        assert proc.returncode == 0
        # while the writer is open, the file says so (status/resume use this)
        with open_recording(path) as rec:
            assert rec.writer_info[0] == os.getpid() and rec.writer_info[2]


def test_provenance_and_session_are_stored_as_json_and_toml(tmp_path: Path) -> None:
    from harness.sessions.schedule import load_session

    spec = load_session(REPO / "sessions" / "demo-short.toml")
    chip, layout, result, prov = programmed()
    with create_recording(tmp_path / "s.h5", provenance=prov, layout=layout, programming=result, session=spec):
        pass
    with open_recording(tmp_path / "s.h5") as rec:
        assert rec.session_toml == spec.source_text
        assert rec.session == spec
        assert np.array_equal(rec.scheduled_times_s, spec.schedule.as_array())
        assert rec.n_scheduled == 10 and not rec.is_complete
        assert json.loads(rec._f["provenance"].attrs["json"])["chip_identity"] == chip.identity


def _all_objects(path: Path) -> tuple[list[str], list[tuple[str, str]]]:
    """Every dataset path (one per object) and every (object path, attribute name) of a file."""
    datasets: list[str] = []
    attrs: list[tuple[str, str]] = []
    seen: set[object] = set()
    with h5py.File(path, "r") as f:
        attrs += [("/", a) for a in f.attrs]

        def visit(name: str, obj: object) -> None:
            if obj.id in seen:  # type: ignore[attr-defined]
                return
            seen.add(obj.id)  # type: ignore[attr-defined]
            attrs.extend((name, a) for a in obj.attrs)  # type: ignore[attr-defined]
            if isinstance(obj, h5py.Dataset) and obj.size:
                datasets.append(name)

        f.visititems(visit)
    return datasets, attrs


def test_v4_manifest_covers_every_dataset_and_attribute(tmp_path: Path) -> None:
    """Issue 19, item 1: one changed value anywhere -- any dataset (committed data), any
    attribute -- is refused on open, or (a readout row) when that readout is read."""
    path = tmp_path / "r.h5"
    record(path, n=4)
    datasets, attrs = _all_objects(path)
    assert {"layout/target_uS", "programming/final_uS", "chip_state/base/g_prog_uS", "commit", "writer",
            "readouts/meta", "readouts/g"} <= set(datasets)
    assert ("/", "format_version") in attrs and ("layout", "geometry_json") in attrs
    missed = []
    for name in datasets:
        bad = tmp_path / "bad.h5"
        bad.write_bytes(path.read_bytes())
        with h5py.File(bad, "r+") as f:
            ds = f[name]
            with open_recording(path) as rec:
                n = rec.n_readouts
            if name.startswith("chip_state/slot"):  # only the committed slot is live
                c = f["commit"][...]
                if int(c[1 + int(name[len("chip_state/slot")])]) != int(c[0]):
                    continue
            a = np.array(ds[...], ndmin=1)
            raw = a.view(np.uint8).reshape(-1)
            # a byte of committed data: the last committed readout's row or record, else the start
            k = 0 if name not in ("readouts/g", "readouts/meta") else (n - 1) * (raw.size // ds.shape[0])
            raw[k] ^= 0x01
            ds[...] = a.reshape(ds.shape)
        try:
            with open_recording(bad) as rec:
                rec.readouts()
                rec.chip_state()
            missed.append(name)
        except RecordingError:
            pass
    for obj, attr in attrs:
        bad = tmp_path / "bad.h5"
        bad.write_bytes(path.read_bytes())
        with h5py.File(bad, "r+") as f:
            v = f[obj].attrs[attr]
            f[obj].attrs[attr] = (v + "\n") if isinstance(v, str) else v + 1
        try:
            open_recording(bad).close()
            missed.append(f"{obj}@{attr}")
        except RecordingError:
            pass
    assert missed == []


@pytest.mark.parametrize("version", [1, 2, 3])
def test_a_v4_file_rewritten_as_an_older_version_is_refused(tmp_path: Path, version: int) -> None:
    path = tmp_path / "r.h5"
    record(path, n=2)
    with h5py.File(path, "r+") as f:
        f.attrs["format_version"] = version
    with pytest.raises(RecordingError, match="carries a version-4 integrity manifest"):
        open_recording(path)


def test_a_readout_copied_between_positions_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "r.h5"
    record(path, n=3)
    with h5py.File(path, "r+") as f:  # row 0 (and its record, checksum included) over row 1
        f["readouts/g"][1] = f["readouts/g"][0]
        f["readouts/meta"][1] = f["readouts/meta"][0]
    with pytest.raises(RecordingError, match="integrity"):
        open_recording(path)

