"""Crash test: a real ``harness session run`` process is SIGKILLed at seeded random moments,
then ``harness session resume`` finishes it. Every time the recording must be complete,
ordered, without lost or repeated readouts, and match an uninterrupted run.

The kill moment is chosen by counting the child's progress lines on stderr (one per
programming iteration and per readout), not by sleeping: after the k-th line the parent
sends SIGKILL while the child runs on, so the kill lands anywhere from programming
through the header write to the readout loop.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from harness.cli import app
from harness.errors import RecordingError
from harness.recording import open_recording, partial_paths
from harness.chip.registry import open_chip
from harness.sessions.schedule import load_session
from harness.sessions.runner import run_session
from harness.sessions.status import session_status

REPO = Path(__file__).resolve().parent.parent
SESSION = REPO / "sessions" / "drift-20h.toml"  # 30 readouts
TRIALS = 6
runner = CliRunner()

CLI = "import sys; from harness.cli import app; sys.argv[0] = 'harness'; app()"


def uri(seed: int) -> str:
    return f"virtual?rows=64&cols=160&seed={seed}"


def reference(tmp_path: Path, seed: int) -> Path:
    ref = tmp_path / f"ref-{seed}.h5"
    with open_chip(uri(seed)) as chip:
        run_session(load_session(SESSION), chip, ref)
    return ref


def ks_statistic(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov statistic (max distance between empirical CDFs)."""
    grid = np.union1d(a, b)
    fa = np.searchsorted(np.sort(a), grid, side="right") / a.size
    fb = np.searchsorted(np.sort(b), grid, side="right") / b.size
    return float(np.abs(fa - fb).max())


def assert_matches_uninterrupted(out: Path, ref: Path) -> None:
    spec = load_session(SESSION)
    with h5py.File(out, "r") as f:  # plain HDF5 (not SWMR): the file ends closed cleanly
        assert int(f["commit"][0]) == 30
    assert not out.with_name(out.name + ".lock").exists()
    with open_recording(out) as rec, open_recording(ref) as r0:
        assert rec.n_readouts == 30 and rec.is_complete
        # complete, ordered, nothing lost or repeated, timetable kept
        assert np.array_equal(rec.extra("schedule_index"), np.arange(30))
        assert np.all(np.diff(rec.times_s) > 0)
        np.testing.assert_allclose(rec.times_s, spec.schedule.times_s, rtol=1e-12)
        g, g0 = rec.readouts(), r0.readouts()
        n = g.shape[1]
        # statistically indistinguishable: per-readout mean and std within 3 standard errors
        # (the device population is the same, so this is tight) and a two-sample KS test at
        # alpha = 0.001 (critical distance 1.95 * sqrt(2/n))
        se_mean = g0.std(axis=1) / np.sqrt(n)
        assert np.all(np.abs(g.mean(axis=1) - g0.mean(axis=1)) <= 3 * se_mean + 1e-12)
        assert np.all(np.abs(g.std(axis=1) - g0.std(axis=1)) <= 3 * g0.std(axis=1) / np.sqrt(2 * n) + 1e-12)
        for i in range(30):
            assert ks_statistic(g[i], g0[i]) < 1.95 * np.sqrt(2 / n)
        # and in fact, since the chip state was restored, the physics continued exactly
        assert np.array_equal(g, g0)
        assert np.array_equal(rec.programming.final_uS, r0.programming.final_uS)


def run_and_kill(out: Path, seed: int, kill_after_lines: int) -> tuple[bool, int, list[str]]:
    """Start ``harness session run`` and SIGKILL it after it printed ``kill_after_lines`` lines."""
    proc = subprocess.Popen(
        [sys.executable, "-c", CLI, "session", "run", str(SESSION), "--chip", uri(seed), "--out", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=REPO,
        env={**os.environ, "PCM_HARNESS_PROGRESS_INTERVAL_S": "0"},  # a line per step: the kill points count them
    )
    assert proc.stderr is not None
    lines: list[str] = []
    while len(lines) < kill_after_lines:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line.strip())
    killed = proc.poll() is None
    if killed:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=120)
    proc.stderr.close()
    return killed and proc.returncode == -signal.SIGKILL, proc.returncode, lines


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume(tmp_path: Path) -> None:
    rng = np.random.default_rng(20240611)
    kills = 0
    landed = []
    for trial in range(TRIALS):
        seed = 100 + trial
        ref = reference(tmp_path, seed)
        out = tmp_path / f"crash-{trial}.h5"
        # up to 32 programming lines, then 30 readout lines: a third of the kills aim at
        # programming and the header write, the rest at the readout loop
        k = int(rng.integers(1, 33)) if trial % 3 == 0 else int(rng.integers(33, 63))
        killed, rc, lines = run_and_kill(out, seed, k)
        kills += killed
        if not out.exists():
            # killed in programming or in the header write: nothing that looks like a
            # recording exists, and resume says so; a new run starts cleanly
            r = runner.invoke(app, ["session", "resume", str(out)], catch_exceptions=False)
            assert r.exit_code == 1 and "before programming finished" in r.stderr
            landed.append(("before header", k))
            r = runner.invoke(app, ["session", "run", str(SESSION), "--chip", uri(seed), "--out", str(out)],
                              catch_exceptions=False)
            assert r.exit_code == 0, r.stderr
        else:
            with open_recording(out) as rec:
                done = rec.n_readouts
            landed.append((f"after {done} readouts", k))
            r = runner.invoke(app, ["session", "resume", str(out)], catch_exceptions=False)
            assert r.exit_code == 0, r.stderr
        assert partial_paths(out) == []
        assert_matches_uninterrupted(out, ref)
    assert kills >= 5, landed
    print("kills landed:", landed)


KILL_IN_HEADER = textwrap.dedent(
    """
    import os, signal, sys
    import harness.recording.writer as recording
    def die(*a, **k):
        os.kill(os.getpid(), signal.SIGKILL)  # header written to the temporary file, not yet renamed
    recording._publish = die
    from harness.cli import app
    sys.argv[0] = "harness"
    app()
    """
)


def test_kill_inside_the_header_write_leaves_nothing_that_looks_valid(tmp_path: Path) -> None:
    out = tmp_path / "h.h5"
    proc = subprocess.run(
        [sys.executable, "-c", KILL_IN_HEADER, "session", "run", str(SESSION), "--chip", uri(7), "--out", str(out)],
        capture_output=True, text=True, cwd=REPO,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert not out.exists()
    leftovers = partial_paths(out)
    assert len(leftovers) == 1
    r = runner.invoke(app, ["session", "resume", str(out)], catch_exceptions=False)
    assert r.exit_code == 1 and "never finished" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = runner.invoke(app, ["session", "status", str(out)], catch_exceptions=False)
    assert r.exit_code == 1 and "unfinished header" in r.stderr
    # the temporary file is never mistaken for a recording
    with pytest.raises(RecordingError):
        open_recording(out)
    r = runner.invoke(app, ["session", "run", str(SESSION), "--chip", uri(7), "--out", str(out)], catch_exceptions=False)
    assert r.exit_code == 0, r.stderr
    assert partial_paths(out) == []
    assert_matches_uninterrupted(out, reference(tmp_path, 7))


def test_a_crashed_and_then_truncated_recording_is_refused_unchanged(tmp_path: Path) -> None:
    out = tmp_path / "c.h5"
    killed, _, _ = run_and_kill(out, 3, 32 + 10)  # well into the readouts
    assert killed and out.exists()
    with open_recording(out) as rec:
        assert 0 < rec.n_readouts < 30
    data = out.read_bytes()
    cut = tmp_path / "cut.h5"
    cut.write_bytes(data[: len(data) * 3 // 4])
    before = hashlib.sha256(cut.read_bytes()).hexdigest()
    r = runner.invoke(app, ["session", "resume", str(cut)], catch_exceptions=False)
    assert r.exit_code == 1 and "truncated" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert hashlib.sha256(cut.read_bytes()).hexdigest() == before
    # the original crashed file is still resumable
    assert session_status(out)["state"] == "interrupted"
    r = runner.invoke(app, ["session", "resume", str(out)], catch_exceptions=False)
    assert r.exit_code == 0, r.stderr
    assert_matches_uninterrupted(out, reference(tmp_path, 3))
