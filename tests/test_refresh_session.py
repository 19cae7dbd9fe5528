"""Refresh sessions: the rule, the programming epochs in the recording, the monitor set's
split, resume after SIGKILL, and the refusals of bad [refresh] tables.

The session used throughout re-programs several times in a simulated year on a small
virtual chip: the default digits MLP read at 4 bits (where its monitor loses accuracy within
hours) with a 64-example monitor set and below_pp = 2.
"""

from __future__ import annotations

import dataclasses
import hashlib
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from harness.chip.registry import open_chip
from harness.cli import app
from harness.errors import ConfigError, RecordingError
from harness.evaluation.monitor import CimMonitor, build_monitor
from harness.recording import open_recording
from harness.sessions.refresh import EpochState, should_refresh
from harness.sessions.refresh_spec import RefreshSpec
from harness.sessions.runner import run_session
from harness.sessions.schedule import parse_session

REPO = Path(__file__).resolve().parent.parent
runner = CliRunner()
URI = "virtual?rows=64&cols=160&seed=3"
N_READS = 10

SESSION = textwrap.dedent(
    """
    [session]
    name = "refresh-test"
    [program]
    model = "default"
    [program.params]
    max_iterations = 30
    [schedule]
    kind = "log"
    start_s = 25.0
    stop_s = 31536000.0
    points = 10
    [refresh]
    below_pp = 2.0
    monitor_examples = 64
    monitor_bits = 4
    """
)


@pytest.fixture(scope="module")
def session_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("refresh") / "refresh.toml"
    p.write_text(SESSION)
    return p


@pytest.fixture(scope="module")
def reference(session_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted run of the session."""
    out = tmp_path_factory.mktemp("ref") / "ref.h5"
    spec = parse_session(session_file.read_text(), source=str(session_file))
    with open_chip(URI) as chip:
        result = run_session(spec, chip, out, monitor_factory=build_monitor)
    assert result.refreshes >= 2  # the session this module is about refreshes
    return out


# ----------------------------------------------------------------------------- the rule


def test_below_pp_fires_exactly_beyond_the_threshold() -> None:
    spec = RefreshSpec(below_pp=2.0, monitor_examples=100)
    state = EpochState(0, 0.0, np.zeros(1), reference=90)
    assert not should_refresh(spec, state, 1e6, 88)  # exactly 2 pp: not more than the threshold
    assert should_refresh(spec, state, 1e6, 87)  # 3 pp
    assert not should_refresh(spec, state, 1e6, 95)  # a gain never fires
    # the first read of an epoch is its own reference: nothing to compare with yet
    assert not should_refresh(spec, EpochState(0, 0.0, np.zeros(1)), 1e6, 10)


def test_every_fires_once_the_epoch_is_that_old() -> None:
    spec = RefreshSpec(every_s=1000.0)
    state = EpochState(2, 500.0, np.zeros(1), reference=50)
    assert not should_refresh(spec, state, 1499.0, 0)
    assert should_refresh(spec, state, 1500.0, 50)


def test_recorded_refreshes_follow_the_rule_at_every_readout(reference: Path) -> None:
    with open_recording(reference) as rec:
        ep = rec.readout_epochs
        acc = np.rint(rec.monitor_accuracy * 64).astype(int)
        assert rec.n_epochs == int(ep[-1]) + 1 >= 3
        fired_after = {e.after_readout for e in rec.epochs[1:]}
        for j in range(N_READS - 1):
            first = int(np.flatnonzero(ep == ep[j])[0])
            expected = (acc[first] - acc[j]) * 100 > 2.0 * 64
            assert (j in fired_after) == expected, j
            assert ep[j + 1] == ep[j] + expected
        assert all(e.rule == "below_pp" and e.converged_fraction > 0.99 for e in rec.epochs[1:])


# ----------------------------------------------------------------------------- the recording


def test_epochs_are_recorded_and_read_back(reference: Path) -> None:
    with open_recording(reference) as rec:
        epochs = rec.epochs
        assert [e.index for e in epochs] == list(range(rec.n_epochs))
        t = rec.times_s
        origin = rec.epoch_origin_s
        for e in epochs[1:]:
            # the refresh came after the read that fired it and before the next read
            assert t[e.after_readout] < e.t_origin_s < t[e.after_readout + 1]
            assert e.pulses >= rec.layout.n_devices  # at least one RESET per device
        assert np.all(t - origin > 0) and np.all(origin[rec.readout_epochs == 0] == 0)
        assert rec.epoch_final_uS(1).shape == rec.programming.final_uS.shape
        assert not np.array_equal(rec.epoch_final_uS(1), rec.programming.final_uS)
        assert 0.5 < float(np.nanmin(rec.monitor_accuracy)) <= float(np.nanmax(rec.monitor_accuracy)) <= 1.0


def test_drift_restarts_for_reprogrammed_devices(session_file: Path, tmp_path: Path) -> None:
    spec = parse_session(session_file.read_text(), source=str(session_file))
    with open_chip(URI) as chip:
        run_session(spec, chip, tmp_path / "r.h5", monitor_factory=build_monitor)
        with open_recording(tmp_path / "r.h5") as rec:
            last = rec.epochs[-1]
            cells = rec.layout.cells
        pulsed = chip.last_pulse_s(cells)
    # every device was pulsed during the last refresh: its drift clock starts there
    assert np.all(pulsed >= last.t_start_s) and np.all(pulsed <= last.t_end_s)


def test_a_changed_refresh_row_fails_the_integrity_check(reference: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.h5"
    bad.write_bytes(reference.read_bytes())
    with h5py.File(bad, "r+") as f:
        f["refreshes/final_uS"][0, 0] += 0.5
    with pytest.raises(RecordingError, match="refresh #1"):
        open_recording(bad)


def test_old_recordings_read_as_one_epoch(tmp_path: Path) -> None:
    out = tmp_path / "plain.h5"
    spec = parse_session(SESSION.split("[refresh]")[0], source="plain.toml")
    with open_chip(URI) as chip:
        run_session(spec, chip, out)
    with open_recording(out) as rec:
        assert not rec.has_epochs and rec.n_epochs == 1 and rec.monitor_accuracy is None
        assert np.array_equal(rec.readout_epochs, np.zeros(rec.n_readouts))
        assert np.array_equal(rec.epoch_origin_s, np.zeros(rec.n_readouts))


# ----------------------------------------------------------------------------- the monitor


def test_the_monitor_set_comes_from_the_training_split_only() -> None:
    from harness.data import load_dataset
    from harness.models.format import default_model_path, load_model
    from harness.programming.mapping import map_model

    model = load_model(default_model_path())
    with open_chip(URI) as chip:
        layout = map_model(model, chip.geometry)
    data = load_dataset(model.dataset)
    spec = RefreshSpec(below_pp=2.0, monitor_examples=64, monitor_bits=4)
    mon = CimMonitor(model, layout, spec, data)
    assert np.array_equal(mon.x.numpy(), data.x_train[mon.indices])
    assert np.array_equal(mon.y.numpy(), data.y_train[mon.indices])
    # a dataset whose test split is garbage gives the same set and the same counts: the
    # monitor never reads it
    rng = np.random.default_rng(1)
    poisoned = dataclasses.replace(
        data, x_test=rng.normal(size=data.x_test.shape).astype(np.float32), y_test=(data.y_test + 1) % data.n_classes
    )
    other = CimMonitor(model, layout, spec, poisoned)
    assert np.array_equal(other.indices, mon.indices)
    g = layout.target_uS * 0.9
    assert mon.correct(g, layout.target_uS) == other.correct(g, layout.target_uS)
    # the fixed seed draws the same set every time
    assert np.array_equal(CimMonitor(model, layout, spec, data).indices, mon.indices)


# ----------------------------------------------------------------------------- crash safety

KILL_AT = textwrap.dedent(
    """
    import os, signal, sys
    import harness.recording.writer as w
    point, nth = sys.argv[1], int(sys.argv[2])
    seen = [0]
    if point == "refresh":   # after a refresh's programming is stored, before its next read
        orig = w.RecordingWriter.record_refresh
        def hook(self, *a, **k):
            out = orig(self, *a, **k)
            seen[0] += 1
            if seen[0] == nth:
                os.kill(os.getpid(), signal.SIGKILL)
            return out
        w.RecordingWriter.record_refresh = hook
    else:                    # right after readout #nth is committed
        orig = w.RecordingWriter._append
        def hook(self, *a, **k):
            out = orig(self, *a, **k)
            if out + 1 == nth:
                os.kill(os.getpid(), signal.SIGKILL)
            return out
        w.RecordingWriter._append = hook
    from harness.cli import app
    sys.argv = ["harness", *sys.argv[3:]]
    app()
    """
)


def _same_as(out: Path, ref: Path) -> None:
    with open_recording(out) as rec, open_recording(ref) as r0:
        assert rec.is_complete and rec.n_readouts == N_READS
        assert np.array_equal(rec.readouts(), r0.readouts())
        assert np.array_equal(rec.times_s, r0.times_s)
        # (epoch_crc and crc32 differ: they cover the wall-clock times of each run)
        for col in ("epoch", "monitor_accuracy", "t_scheduled_s", "read_duration_s"):
            assert np.array_equal(rec.extra(col), r0.extra(col)), col
        assert rec.epochs == r0.epochs
        for e in range(1, rec.n_epochs):
            assert np.array_equal(rec.epoch_final_uS(e), r0.epoch_final_uS(e))


@pytest.mark.parametrize("point,nth", [("refresh", 1), ("refresh", 2), ("readout", 6)])
def test_sigkill_then_resume_is_bit_identical(point: str, nth: int, session_file: Path, reference: Path,
                                              tmp_path: Path) -> None:
    out = tmp_path / "crash.h5"
    proc = subprocess.run(
        [sys.executable, "-c", KILL_AT, point, str(nth), "session", "run", str(session_file), "--chip", URI,
         "--out", str(out)], capture_output=True, text=True, cwd=REPO, timeout=300,
    )
    assert proc.returncode == -9, proc.stderr[-2000:]
    with open_recording(out) as rec:
        assert 0 < rec.n_readouts < N_READS
    r = runner.invoke(app, ["session", "resume", str(out)], catch_exceptions=False)
    assert r.exit_code == 0, r.stderr
    _same_as(out, reference)


# ----------------------------------------------------------------------------- reference = "session"

SESSION_REFERENCE = SESSION.replace("below_pp = 2.0", 'below_pp = 2.0\nreference = "session"')


def test_the_session_reference_is_kept_across_refreshes(tmp_path: Path) -> None:
    """With reference = "session" every decision compares with the session's first read (the
    freshly programmed chip), never with a later epoch's first read, so a refresh whose first
    read is still more than below_pp under it fires again; and the recording resumes
    bit-identically after SIGKILL at the second refresh."""
    toml = tmp_path / "session-ref.toml"
    toml.write_text(SESSION_REFERENCE)
    spec = parse_session(toml.read_text(), source=str(toml))
    assert spec.refresh is not None and spec.refresh.reference == "session"
    assert "its first read in the session" in spec.refresh.describe()
    ref = tmp_path / "ref.h5"
    with open_chip(URI) as chip:
        run_session(spec, chip, ref, monitor_factory=build_monitor)
    with open_recording(ref) as rec:
        ep = rec.readout_epochs
        acc = np.rint(rec.monitor_accuracy * 64).astype(int)
        fired_after = {e.after_readout for e in rec.epochs[1:]}
        assert len(fired_after) >= 2
        for j in range(N_READS - 1):
            assert (j in fired_after) == ((acc[0] - acc[j]) * 100 > 2.0 * 64), j
    out = tmp_path / "crash.h5"
    proc = subprocess.run(
        [sys.executable, "-c", KILL_AT, "refresh", "2", "session", "run", str(toml), "--chip", URI, "--out", str(out)],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )
    assert proc.returncode == -9, proc.stderr[-2000:]
    r = runner.invoke(app, ["session", "resume", str(out)], catch_exceptions=False)
    assert r.exit_code == 0, r.stderr
    _same_as(out, ref)


def test_the_session_reference_rule_unit() -> None:
    spec = RefreshSpec(below_pp=2.0, monitor_examples=100, reference="session")
    # the reference an epoch carries is the session's first read: 3 pp under it fires
    assert should_refresh(spec, EpochState(3, 1e5, np.zeros(1), reference=90), 2e5, 87)


# ----------------------------------------------------------------------------- bad input

GAP_S = 25.0 * (31536000.0 / 25.0) ** (1 / 9) - 25.0  # the first (smallest) gap of the schedule


@pytest.mark.parametrize(
    "table,message",
    [
        ("below_pp = 2.0\nmonitor_sise = 64", "unknown key 'monitor_sise' in [refresh]"),
        ('below_pp = 2.0\nevery = "1mo"', "exactly one rule"),
        ("monitor_examples = 64", "exactly one rule"),
        ("below_pp = 0.0", "below the monitor set's resolution"),
        ("below_pp = -1.0", "below the monitor set's resolution"),
        ("below_pp = 1.0\nmonitor_examples = 64", "resolution of 1.56 pp"),
        ('below_pp = 2.0\nreference = "fresh"', "reference = 'fresh' must be one of 'epoch', 'session'"),
        ('every = "1mo"\nreference = "session"', "reference applies to below_pp only"),
        (f'every = "{int(GAP_S)}s"', "smallest gap between reads"),
    ],
)
def test_bad_refresh_tables_are_refused_in_one_line(table: str, message: str, tmp_path: Path) -> None:
    toml = tmp_path / "bad.toml"
    toml.write_text(SESSION.split("[refresh]")[0] + "[refresh]\n" + table + "\n")
    out = tmp_path / "kept.h5"
    out.write_bytes(b"an earlier recording")
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    r = runner.invoke(app, ["session", "run", str(toml), "--chip", URI, "--out", str(out), "--overwrite"])
    assert r.exit_code != 0
    assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert hashlib.sha256(out.read_bytes()).hexdigest() == digest  # nothing recorded is lost


def test_every_longer_than_the_smallest_gap_is_accepted() -> None:
    spec = parse_session(SESSION.split("[refresh]")[0] + '[refresh]\nevery = "1mo"\n')
    assert spec.refresh is not None and spec.refresh.every_s == 30 * 86400.0


def test_a_model_without_a_dataset_is_refused_before_programming(tmp_path: Path) -> None:
    from harness.models.format import default_model_path

    path = tmp_path / "nodata.h5"
    path.write_bytes(default_model_path().read_bytes())
    with h5py.File(path, "r+") as f:
        f.attrs["dataset"] = "no-such-dataset"
    toml = tmp_path / "s.toml"
    toml.write_text(SESSION.replace('model = "default"', f'model = "{path}"'))
    out = tmp_path / "out.h5"
    r = runner.invoke(app, ["session", "run", str(toml), "--chip", URI, "--out", str(out)])
    assert r.exit_code != 0 and "monitor needs its labelled training examples" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not out.exists()


def test_the_library_refuses_a_refresh_session_without_a_monitor(session_file: Path, tmp_path: Path) -> None:
    spec = parse_session(session_file.read_text(), source=str(session_file))
    with open_chip(URI) as chip, pytest.raises(ConfigError, match="monitor_factory"):
        run_session(spec, chip, tmp_path / "x.h5")
    assert not (tmp_path / "x.h5").exists()


# ----------------------------------------------------------------------------- consumers

TWO_EPOCHS = textwrap.dedent(
    """
    [session]
    name = "two-epochs"
    [program]
    model = "default"
    [readout]
    repeats = 2
    [schedule]
    kind = "list"
    times_s = [25.0, 100.0, 3000.0, 4000.0, 4500.0, 5000.0]
    [refresh]
    every = "2000s"
    """
)


@pytest.fixture(scope="module")
def two_epochs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("two")
    (d / "s.toml").write_text(TWO_EPOCHS)
    out = d / "two.h5"
    r = runner.invoke(app, ["session", "run", str(d / "s.toml"), "--chip", URI, "--out", str(out)])
    assert r.exit_code == 0, r.stderr
    return out


def test_every_refreshes_once_after_the_read_that_finds_the_epoch_old_enough(two_epochs: Path) -> None:
    with open_recording(two_epochs) as rec:
        assert rec.readout_epochs.tolist() == [0] * 6 + [1] * 6  # two reads per time
        (e1,) = rec.epochs[1:]
        assert e1.rule == "every" and e1.after_readout == 5 and 3000 < e1.t_origin_s < 4000
        assert np.all(np.isfinite(rec.monitor_accuracy))


def test_status_counts_the_epochs(two_epochs: Path) -> None:
    r = runner.invoke(app, ["session", "status", str(two_epochs), "--json"])
    assert r.exit_code == 0, r.stderr
    import json

    st = json.loads(r.stdout)["refresh"]
    assert st["epochs"] == 2 and st["refreshes"] == 1 and len(st["refresh_times_s"]) == 1
    assert st["refreshes_per_year"] == pytest.approx(365 * 86400 / 5000.0, rel=1e-3)
    r = runner.invoke(app, ["session", "status", str(two_epochs)])
    assert "2 programming epoch(s), 1 refresh(es)" in r.stdout


def test_replay_counts_time_from_each_reads_epoch(two_epochs: Path) -> None:
    import json

    r = runner.invoke(app, ["replay", str(two_epochs), "--json"])
    assert r.exit_code == 0, r.stderr
    s = json.loads(r.stdout)
    with open_recording(two_epochs) as rec:
        origin = rec.epochs[1].t_origin_s
    assert s["epoch"] == [0] * 6 + [1] * 6
    np.testing.assert_allclose(s["t_s"][6:], np.array(s["session_t_s"][6:]) - origin)
    for lv in s["levels"]:
        if not lv["reset_level"]:
            assert lv["mean_ratio"][6] == 1.0  # the first read of epoch 1 is its own t0
            assert 0.0 < lv["nu_fit"] < 0.2


def test_evaluate_uses_one_epoch_and_says_which(two_epochs: Path) -> None:
    import json

    r = runner.invoke(app, ["evaluate", "--recording", str(two_epochs), "--bits", "8", "--json"])
    assert r.exit_code == 0, r.stderr
    assert "2 programming epochs" in r.stderr and "evaluating epoch 1 only" in r.stderr
    latest = json.loads(r.stdout)
    with open_recording(two_epochs) as rec:
        origin = rec.epochs[1].t_origin_s
        t = rec.times_s
    np.testing.assert_allclose(latest["times_s"], t[6:] - origin)
    r = runner.invoke(app, ["evaluate", "--recording", str(two_epochs), "--bits", "8", "--epoch", "0", "--json"])
    assert r.exit_code == 0, r.stderr
    np.testing.assert_allclose(json.loads(r.stdout)["times_s"], t[:6])
    r = runner.invoke(app, ["evaluate", "--recording", str(two_epochs), "--epoch", "2"])
    assert r.exit_code == 1 and "not one of the 2 programming epoch(s)" in r.stderr


def test_calibrate_fits_one_epoch_with_times_since_its_programming(two_epochs: Path, tmp_path: Path) -> None:
    from harness.calibration.data import load_data

    with open_recording(two_epochs) as rec:
        origin = rec.epochs[1].t_origin_s
        d1 = load_data(rec, epoch=1)
        t1 = rec.times_s[6:] - origin
        np.testing.assert_allclose(d1.t_g, (t1[0::2] + t1[1::2]) / 2)  # the two reads of each time averaged
        assert d1.mean.shape[0] == 3 and d1.repeats == 2
        final1 = rec.epoch_final_uS(1)
        assert not np.array_equal(final1, rec.programming.final_uS)
        assert set(d1.final_uS) <= set(final1)
        d0 = load_data(rec)  # default: the epoch with the most readouts, the earliest on a tie (3 and 3)
        np.testing.assert_allclose(d0.t_g, (rec.times_s[0:6:2] + rec.times_s[1:6:2]) / 2)
    import json

    r = runner.invoke(app, ["calibrate", str(two_epochs), "--out", str(tmp_path / "f.toml"), "--bootstrap", "0",
                            "--epoch", "1", "--json"])
    assert r.exit_code == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["data"]["epoch"] == 1 and s["data"]["readouts"] == 6
    assert any("fitted epoch 1" in w for w in s["warnings"])
    r = runner.invoke(app, ["calibrate", str(two_epochs), "--out", str(tmp_path / "g.toml"), "--epoch", "2"])
    assert r.exit_code == 1 and "not one of the 2 programming epoch(s)" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "g.toml").exists()


def test_report_shows_the_sawtooth_and_refreshes_per_year(two_epochs: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    r = runner.invoke(app, ["report", str(two_epochs), "--html", str(out)])
    assert r.exit_code == 0, r.stderr
    html = out.read_text()
    assert "Refresh: programming epochs" in html and "monitor accuracy saw-tooth" in html
    assert "per simulated year" in html


def test_the_replay_chip_refuses_a_multi_epoch_recording(two_epochs: Path) -> None:
    from harness.errors import ReplayError

    with pytest.raises(ReplayError, match="2 programming epochs"):
        open_chip(f"replay:{two_epochs}")
