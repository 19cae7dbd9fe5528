"""Resume must never write a wrong chip or a second writer into a recording (issue 13).

Regression tests, each failing before the fix: resume onto a fresh virtual chip when the
chip state is missing; ``--overwrite`` of a live file and two concurrent resumes (one
lock); a kill after the last commit (repair); leftover ``.partial-PID`` copies of a killed
resume and a disk without room (clean up, say how much is needed).
"""

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
from clikit import assert_one_line_error, invoke
from test_session import WRITER

from harness.errors import RecordingError
from harness.recording import open_recording, partial_paths
from harness.chip.registry import open_chip
from harness.sessions.schedule import load_session
from harness.sessions.resume import resume_session
from harness.sessions.runner import SessionProgress, run_session
from harness.sessions.status import session_status

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "sessions" / "demo-short.toml"  # 10 readouts
SMALL = "virtual?rows=64&cols=160&seed=5"
TESTS = str(Path(__file__).parent)


def lock_path(path: Path) -> Path:
    """The writer lock file next to a recording (docs/recording-format.md)."""
    return path.with_name(path.name + ".lock")


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Interrupt(KeyboardInterrupt):
    pass


def interrupted(out: Path, after: int, **kw: object) -> None:
    def progress(p: SessionProgress) -> None:
        if p.phase == "readout" and p.done == after:
            raise Interrupt

    with open_chip(SMALL) as chip, pytest.raises(Interrupt):
        run_session(load_session(DEMO), chip, out, progress=progress, **kw)  # type: ignore[arg-type]


def complete(out: Path) -> None:
    with open_chip(SMALL) as chip:
        run_session(load_session(DEMO), chip, out)


# ----------------------------------------------------------------------------- item 1


def test_resume_without_chip_state_refuses_a_fresh_virtual_chip(tmp_path: Path) -> None:
    out = tmp_path / "nostate.h5"
    interrupted(out, 4, save_chip_state=False)
    before = sha(out)
    r = invoke("session", "resume", str(out))
    assert_one_line_error(r, "holds no chip state")
    assert "--accept-chip" in r.stderr
    assert sha(out) == before
    # the explicit override proceeds, says so, and the recording keeps the choice
    r = invoke("session", "resume", str(out), "--accept-chip", "--json")
    assert r.exit_code == 0, r.stderr
    assert "warning: --accept-chip" in r.stderr
    summary = json.loads(r.stdout)
    assert summary["readouts_done"] == 10 and summary["chip_check"]["accepted_despite"]
    with open_recording(out) as rec:
        (entry,) = rec.resumes
        assert entry["resumed_from"] == 4 and entry["accepted_despite"]
        assert not entry["check"]["agrees"]  # the fresh chip reads blank
        assert entry["check"]["median_ratio_now_to_ref"] < 0.05
    assert session_status(out)["chip_accepted_despite_check"] == 1


def test_resume_on_the_recorded_virtual_chip_passes_the_check_and_is_logged(tmp_path: Path) -> None:
    out = tmp_path / "ok.h5"
    interrupted(out, 3)
    result = resume_session(out)
    assert result.readouts_done == 10 and result.chip_check is not None
    check = result.chip_check["check"]
    assert check["agrees"] and check["cells_checked"] >= 16
    with open_recording(out) as rec:
        assert len(rec.resumes) == 1 and rec.resumes[0]["accepted_despite"] == []


# ----------------------------------------------------------------------------- item 3

# The live-writer script of the session tests: one writer process holding a recording open.


def test_overwrite_refuses_a_file_a_live_session_writes(tmp_path: Path) -> None:
    out = tmp_path / "live.h5"
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER.format(tests=TESTS), str(out), str(DEMO)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        before = sha(out)
        r = invoke("session", "run", str(DEMO), "--chip", SMALL, "--out", str(out), "--overwrite")
        assert_one_line_error(r, f"still being written by process {proc.pid}")
        assert sha(out) == before
    finally:
        proc.communicate("stop\n", timeout=60)
    with open_recording(out) as rec:
        assert rec.n_readouts == 1  # the live session's data survived
    assert not lock_path(out).exists()
    # once it has finished, --overwrite replaces it
    r = invoke("session", "run", str(DEMO), "--chip", SMALL, "--out", str(out), "--overwrite")
    assert r.exit_code == 0, r.stderr


# The first resume pauses between reading its plan and reopening the file for writing
# (the window in which two unlocked resumes both decided to proceed).
PAUSED_RESUME = textwrap.dedent(
    """
    import sys
    import harness.sessions.resume as s
    real = s.recover_recording
    def paused(*a, **k):
        print("planned", flush=True)
        sys.stdin.readline()
        return real(*a, **k)
    s.recover_recording = paused
    r = s.resume_session(sys.argv[1])
    print("done", r.readouts_done, flush=True)
    """
)


def test_two_concurrent_resumes_cannot_both_proceed(tmp_path: Path) -> None:
    out, ref = tmp_path / "c.h5", tmp_path / "ref.h5"
    interrupted(out, 4)
    complete(ref)
    proc = subprocess.Popen(
        [sys.executable, "-c", PAUSED_RESUME, str(out)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "planned", proc.stderr
        before = sha(out)
        r = invoke("session", "resume", str(out))
        assert_one_line_error(r, f"still being written by process {proc.pid}")
        assert sha(out) == before
        stdout, stderr = proc.communicate("go\n", timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    assert stdout.split() == ["done", "10"]
    with open_recording(out) as a, open_recording(ref) as b:
        assert np.array_equal(a.readouts(), b.readouts())
        assert len(a.resumes) == 1


# ----------------------------------------------------------------------------- item 7

KILL_AFTER_LAST_COMMIT = textwrap.dedent(
    """
    import os, signal, sys
    from harness.recording import RecordingWriter
    real = RecordingWriter.close
    def die(self):
        os.kill(os.getpid(), signal.SIGKILL)  # every readout committed, the file not closed
    RecordingWriter.close = die
    from harness.cli import app
    sys.argv[0] = "harness"
    app()
    """
)


def test_kill_after_the_last_commit_is_repaired_by_resume(tmp_path: Path) -> None:
    out, ref = tmp_path / "k.h5", tmp_path / "ref.h5"
    complete(ref)
    proc = subprocess.run(
        [sys.executable, "-c", KILL_AFTER_LAST_COMMIT, "session", "run", str(DEMO), "--chip", SMALL, "--out", str(out)],
        capture_output=True, text=True, cwd=REPO, check=False,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    with pytest.raises(OSError, match="already open for write"):
        h5py.File(out, "r")
    st = session_status(out)
    assert st["state"] == "complete" and st["needs_repair"]
    assert "rewrites it readable" in " ".join(invoke("session", "status", str(out)).stdout.split())
    r = invoke("session", "resume", str(out))
    assert r.exit_code == 0, r.stderr
    with h5py.File(out, "r") as f:  # plain HDF5 opens it again
        assert int(f["commit"][0]) == 10
    assert not session_status(out)["needs_repair"]
    with open_recording(out) as a, open_recording(ref) as b:
        assert np.array_equal(a.readouts(), b.readouts())
    assert not lock_path(out).exists() and partial_paths(out) == []


# ----------------------------------------------------------------------------- item 8

KILL_DURING_RESUME_COPY = textwrap.dedent(
    """
    import os, signal, sys
    import harness.recording.recovery as recovery
    def die(*a, **k):
        os.kill(os.getpid(), signal.SIGKILL)  # the copy NAME.partial-PID exists, half written
    recovery._copy_readout_group = die
    from harness.cli import app
    sys.argv[0] = "harness"
    app()
    """
)


def test_a_killed_resume_leaves_no_partial_copy_after_the_next_resume(tmp_path: Path) -> None:
    out = tmp_path / "r.h5"
    interrupted(out, 5)
    proc = subprocess.run(
        [sys.executable, "-c", KILL_DURING_RESUME_COPY, "session", "resume", str(out)],
        capture_output=True, text=True, cwd=REPO, check=False,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    leftovers = [p.name for p in partial_paths(out)]
    assert len(leftovers) == 1 and leftovers[0].startswith("r.h5.partial-")
    r = invoke("session", "resume", str(out))
    assert r.exit_code == 0, r.stderr
    assert partial_paths(out) == [] and not lock_path(out).exists()
    assert session_status(out)["readouts_done"] == 10


NO_ROOM = textwrap.dedent(
    """
    import resource, signal, sys
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG) instead
    limit = int(sys.argv.pop(1))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    from harness.cli import app
    sys.argv[0] = "harness"
    app()
    """
)


def test_resume_without_room_for_its_copy_says_how_much_it_needs(tmp_path: Path) -> None:
    out = tmp_path / "n.h5"
    interrupted(out, 5)
    before = sha(out)
    size = out.stat().st_size
    proc = subprocess.run(
        [sys.executable, "-c", NO_ROOM, str(size // 2), "session", "resume", str(out)],
        capture_output=True, text=True, cwd=REPO, check=False,
    )
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "needs about" in lines[0] and "MB" in lines[0] and "damaged" not in lines[0]
    assert sha(out) == before and partial_paths(out) == [] and not lock_path(out).exists()


def test_a_readout_with_a_flipped_bit_is_named(tmp_path: Path) -> None:
    out = tmp_path / "flip.h5"
    complete(out)
    with h5py.File(out, "r") as f:
        ds = f["readouts/g"]
        offset = ds.id.get_chunk_info_by_coord((3, 0)).byte_offset
    data = bytearray(out.read_bytes())
    data[offset + 7] ^= 0x10
    out.write_bytes(bytes(data))
    with open_recording(out) as rec:
        rec.readout(2)  # the others are intact
        with pytest.raises(RecordingError, match="readout #4 is corrupted"):  # index 3: the 4th readout
            rec.readout(3)
    assert_one_line_error(invoke("replay", str(out)), "readout #4 is corrupted")


def test_files_of_older_versions_still_read(tmp_path: Path) -> None:
    # demo-v1.h5: the demo recording as format version 1 wrote it (commit e7a8a8f), kept as
    # it was; demo.h5 is regenerated with the current chip and format.
    fixture = REPO / "fixtures" / "recordings" / "demo-v1.h5"
    with open_recording(fixture) as rec:
        assert rec.format_version < 3 and not rec.has_checksums and rec.n_readouts > 0
        rec.readouts()
    assert invoke("replay", str(fixture), "--json").exit_code == 0


def test_no_lock_file_is_left_by_a_finished_session(tmp_path: Path) -> None:
    out = tmp_path / "s.h5"
    complete(out)
    assert not lock_path(out).exists()
    assert sorted(os.listdir(tmp_path)) == ["s.h5"]
