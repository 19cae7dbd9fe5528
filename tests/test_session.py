"""The session runner, resume and status, through the library and the real CLI."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest

from clikit import assert_one_line_error, invoke
from harness.chip.protocol import Geometry
from harness.errors import RecordingError
from harness.recording import open_recording
from harness.chip.registry import open_chip
from harness.sessions.schedule import list_schedule, load_session
from harness.sessions.resume import plan_resume, resume_session
from harness.sessions.runner import SessionProgress, run_session
from harness.sessions.status import session_status
from harness.virtual.chip import VirtualPCMChip

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "sessions" / "demo-short.toml"
DRIFT = REPO / "sessions" / "drift-20h.toml"
SMALL = "virtual?rows=64&cols=160&seed=5"


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def flat(text: str) -> str:
    """Output with rich's line wrapping undone."""
    return " ".join(text.split())




def run_demo(out: Path, uri: str = SMALL, **kw):  # type: ignore[no-untyped-def]
    with open_chip(uri) as chip:
        return run_session(load_session(DEMO), chip, out, **kw)


class Interrupt(KeyboardInterrupt):
    pass


def interrupted_run(out: Path, after: int, uri: str = SMALL) -> None:
    """Run the demo session and interrupt it (Ctrl-C) once ``after`` readouts are recorded."""

    def progress(p: SessionProgress) -> None:
        if p.phase == "readout" and p.done == after:
            raise Interrupt

    with pytest.raises(Interrupt):
        run_demo(out, uri, progress=progress)


def test_session_records_every_readout_at_its_scheduled_time(tmp_path: Path) -> None:
    out = tmp_path / "s.h5"
    events: list[SessionProgress] = []
    result = run_demo(out, progress=events.append)
    spec = load_session(DEMO)
    assert result.readouts_done == result.readouts_scheduled == 10 and result.late_readouts == 0
    with open_recording(out) as rec:
        assert rec.n_readouts == 10 and rec.is_complete
        np.testing.assert_allclose(rec.times_s, spec.schedule.times_s, rtol=1e-12, atol=1e-9)
        assert np.array_equal(rec.extra("t_scheduled_s"), spec.schedule.as_array())
        assert np.array_equal(rec.extra("schedule_index"), np.arange(10))
        assert np.array_equal(rec.readout_cells, rec.layout.cells)
        assert rec.provenance["session"] == "demo-short" and rec.provenance["session_toml"] == spec.source_text
        assert rec.provenance["chip_uri"] == SMALL and rec.provenance["seed"] == 5
        assert rec.programming.converged_fraction > 0.99
        # readouts drift down: programmed devices lose conductance with time
        on = rec.layout.target_uS > 5
        means = rec.readouts()[:, on].mean(axis=1)
        assert np.all(np.diff(means) < 0)
    phases = [e.phase for e in events]
    assert phases[0] == "programming" and phases[-1] == "done" and phases.count("readout") == 10
    nxt = [e.t_next_s for e in events if e.phase == "readout"]
    assert nxt[:-1] == list(spec.schedule.times_s[1:]) and nxt[-1] is None


def test_drift_20h_on_the_default_virtual_chip_via_cli(tmp_path: Path) -> None:
    out = tmp_path / "d.h5"
    r = invoke("session", "run", str(DRIFT), "--chip", "virtual", "--out", str(out), "--json")
    assert r.exit_code == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["readouts_done"] == 30 and summary["complete"]
    spec = load_session(DRIFT)
    with open_recording(out) as rec:
        assert rec.geometry == Geometry()  # 512 x 2048
        assert rec.n_readouts == 30
        assert np.all(np.diff(rec.times_s) > 0)
        np.testing.assert_allclose(rec.times_s, spec.schedule.times_s, rtol=1e-12)
        assert rec.times_s[0] == pytest.approx(25.0) and rec.times_s[-1] == pytest.approx(72000.0)
        # every programmed cell: each device of the layout, in layout order
        assert np.array_equal(rec.readout_cells, rec.layout.cells)
        assert rec.readouts().shape == (30, rec.layout.n_devices)


class SlowReadChip(VirtualPCMChip):
    """A virtual chip whose reads take 10 s (a slow serial link): readouts start late."""

    def _read_codes(self, cells):  # type: ignore[no-untyped-def]
        self._clock.advance(10.0)
        return super()._read_codes(cells)


def test_late_readouts_are_recorded_with_their_actual_time(tmp_path: Path) -> None:
    spec = dataclasses.replace(load_session(DEMO), schedule=list_schedule([25.0, 30.0, 100.0]))
    chip = SlowReadChip(Geometry(rows=64, cols=160), seed=1)
    result = run_session(spec, chip, tmp_path / "late.h5")
    with open_recording(tmp_path / "late.h5") as rec:
        t = rec.times_s
        # readout 0 on time; readout 1 could only start after readout 0's 10 s read
        assert t[0] == pytest.approx(25.0, abs=1e-9)
        assert t[1] == pytest.approx(35.0, abs=1e-6) and rec.extra("t_scheduled_s")[1] == 30.0
        assert t[2] == pytest.approx(100.0, abs=1e-9)
        np.testing.assert_allclose(rec.extra("read_duration_s"), 10.0 + 1e-6, rtol=1e-6)
    assert result.late_readouts == 1 and result.max_lateness_s == pytest.approx(5.0, abs=1e-6)


@pytest.mark.parametrize("after", [1, 6, 9])
def test_interrupted_then_resumed_equals_uninterrupted(tmp_path: Path, after: int) -> None:
    ref, out = tmp_path / "ref.h5", tmp_path / "int.h5"
    run_demo(ref)
    interrupted_run(out, after)
    with open_recording(out) as rec:
        assert rec.n_readouts == after and not rec.is_complete and not rec.writer_running
    assert session_status(out)["state"] == "interrupted"
    result = resume_session(out)
    assert result.resumed_from == after and result.readouts_done == 10
    with open_recording(ref) as a, open_recording(out) as b:
        assert np.array_equal(a.times_s, b.times_s)
        # the physics continued from the saved state: bit-identical to the uninterrupted run
        assert np.array_equal(a.readouts(), b.readouts())
        assert np.array_equal(a.programming.final_uS, b.programming.final_uS)


def test_resume_of_a_complete_session_changes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "s.h5"
    run_demo(out)
    before = sha(out)
    result = resume_session(out)
    assert result.readouts_done == 10 and result.resumed_from == 10
    assert sha(out) == before
    r = invoke("session", "resume", str(out))
    assert r.exit_code == 0 and "already complete" in flat(r.stdout)
    assert sha(out) == before


def test_resume_refuses_a_different_chip_and_leaves_the_file_alone(tmp_path: Path) -> None:
    out = tmp_path / "s.h5"
    interrupted_run(out, 3)
    before = sha(out)
    with pytest.raises(RecordingError, match="not the recorded chip"):
        resume_session(out, chip_uri="virtual?rows=64&cols=160&seed=6")
    with pytest.raises(RecordingError, match="geometry"):
        resume_session(out, chip_uri="virtual?rows=64&cols=192&seed=5")
    r = invoke("session", "resume", str(out), "--chip", "virtual?rows=64&cols=160&seed=6")
    assert_one_line_error(r, "not the recorded chip")
    assert sha(out) == before


def test_resume_explains_a_missing_recording_and_leftover_header(tmp_path: Path) -> None:
    out = tmp_path / "never.h5"
    r = invoke("session", "resume", str(out))
    assert_one_line_error(r, "before programming finished")
    (tmp_path / "never.h5.partial-999999").write_bytes(b"half a header")
    with pytest.raises(RecordingError, match="never finished"):
        plan_resume(out)
    r = invoke("session", "status", str(out))
    assert_one_line_error(r, "unfinished header")
    # a new run cleans up the dead writer's leftover and records normally
    run_demo(out)
    assert not (tmp_path / "never.h5.partial-999999").exists()
    assert session_status(out)["state"] == "complete"


def test_resume_refuses_a_program_only_recording(tmp_path: Path) -> None:
    out = tmp_path / "p.h5"
    assert invoke("program", "--chip", SMALL, "--out", str(out)).exit_code == 0
    before = sha(out)
    r = invoke("session", "resume", str(out))
    assert_one_line_error(r, "no session")
    st = json.loads(invoke("session", "status", str(out), "--json").stdout)
    assert st["state"] == "no session" and st["readouts_done"] == 0
    assert sha(out) == before


def _bad_files(tmp_path: Path) -> dict[str, Path]:
    good = tmp_path / "good.h5"
    interrupted_run(good, 4)
    truncated = tmp_path / "trunc.h5"
    data = good.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["data"] = np.arange(5)
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"\x00garbage" * 300)
    return {"truncated": truncated, "foreign": foreign, "junk": junk}


@pytest.mark.parametrize("command", [["session", "resume"], ["session", "status"], ["replay"]])
def test_truncated_or_foreign_files_give_one_line_and_stay_unchanged(tmp_path: Path, command: list[str]) -> None:
    words = {"truncated": "truncated", "foreign": "not a harness recording", "junk": "not an HDF5 file"}
    for kind, path in _bad_files(tmp_path).items():
        before = sha(path)
        r = invoke(*command, str(path))
        assert_one_line_error(r, words[kind])
        assert sha(path) == before


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("[session\nname='x'", "not valid TOML"),
        (DEMO.read_text().replace("[readout]", "[readout]\nspeed = 2"), "unknown key 'speed'"),
        (DEMO.read_text().replace('kind = "log"\nstart_s = 25.0\nstop_s = 86400.0\npoints = 10',
                                  'kind = "list"\ntimes_s = [25, -3]'), "must be >= 0"),
        (DEMO.read_text().replace('kind = "log"\nstart_s = 25.0\nstop_s = 86400.0\npoints = 10',
                                  'kind = "list"\ntimes_s = [25, 300, 100]'), "not in increasing order"),
    ],
)
def test_bad_session_files_fail_in_one_line_before_touching_anything(tmp_path: Path, text: str, words: str) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    out = tmp_path / "out.h5"
    r = invoke("session", "run", str(bad), "--chip", SMALL, "--out", str(out))
    assert_one_line_error(r, words)
    assert "bad.toml" in r.stderr
    assert not out.exists()


def test_run_refuses_to_overwrite_an_existing_recording(tmp_path: Path) -> None:
    out = tmp_path / "s.h5"
    interrupted_run(out, 2)
    before = sha(out)
    r = invoke("session", "run", str(DEMO), "--chip", SMALL, "--out", str(out))
    assert_one_line_error(r, "already exists")
    assert sha(out) == before
    r = invoke("session", "run", str(DEMO), "--chip", SMALL, "--out", str(out), "--overwrite", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["readouts_done"] == 10


def test_dry_run_prints_the_timetable_and_touches_no_chip(tmp_path: Path) -> None:
    r = invoke("session", "run", str(DRIFT), "--chip", "serial:///dev/does-not-exist", "--dry-run")
    assert r.exit_code == 0, r.stderr
    assert "20h" in flat(r.stdout) and "25s" in flat(r.stdout) and "30" in flat(r.stdout)
    r = invoke("session", "run", str(DRIFT), "--dry-run", "--json")
    table = json.loads(r.stdout)["timetable"]
    assert len(table) == 30 and table[0]["t_s"] == 25.0 and table[-1]["t_s"] == 72000.0


def test_cli_run_status_resume_json(tmp_path: Path) -> None:
    out = tmp_path / "s.h5"
    interrupted_run(out, 4)
    st = json.loads(invoke("session", "status", str(out), "--json").stdout)
    assert st["state"] == "interrupted" and st["readouts_done"] == 4 and st["readouts_pending"] == 6
    spec = load_session(DEMO)
    assert st["next_due_s"] == spec.schedule.times_s[4]
    assert st["last_t_s"] == pytest.approx(spec.schedule.times_s[3])
    assert 0.5 < st["conductance"]["mean_ratio_last_first"] < 1.0
    human = invoke("session", "status", str(out))
    assert "interrupted" in flat(human.stdout) and "session resume" in flat(human.stdout)
    r = invoke("session", "resume", str(out), "--json")
    assert r.exit_code == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["resumed_from"] == 4 and s["readouts_done"] == 10 and s["complete"]
    human = invoke("session", "status", str(out))
    assert "complete" in flat(human.stdout) and "10 done" in flat(human.stdout)


def test_cli_run_human_output(tmp_path: Path) -> None:
    r = invoke("session", "run", str(DEMO), "--chip", "virtual?rows=64&cols=160", "--seed", "4",
               "--out", str(tmp_path / "h.h5"))
    assert r.exit_code == 0, r.stderr
    assert "10/10 readouts recorded" in flat(r.stdout)
    assert "session (last at 1d): 10/10 readouts (100%)" in r.stderr and "ETA" in r.stderr  # plain lines when not a tty
    with open_recording(tmp_path / "h.h5") as rec:
        assert rec.provenance["seed"] == 4


WRITER = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {tests!r})
    from test_recording import programmed
    from harness.recording import create_recording
    from harness.sessions.schedule import load_session
    chip, layout, result, prov = programmed(1)
    w = create_recording(sys.argv[1], provenance=prov, layout=layout, programming=result,
                         session=load_session(sys.argv[2]), chip_state=chip.snapshot())
    w.append_readout(25.0, chip.read(w.cells), chip_state=chip.snapshot(include_devices=False))
    print("ready", flush=True)
    sys.stdin.readline()
    w.close()
    """
)


def test_status_and_resume_see_a_live_writer_in_another_process(tmp_path: Path) -> None:
    out = tmp_path / "live.h5"
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER.format(tests=str(Path(__file__).parent)), str(out), str(DEMO)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        st = session_status(out)
        assert st["state"] == "running" and st["writer_pid"] == proc.pid and st["readouts_done"] == 1
        before = sha(out)
        r = invoke("session", "resume", str(out))
        assert_one_line_error(r, f"still being written by process {proc.pid}")
        assert sha(out) == before
    finally:
        proc.communicate("stop\n", timeout=60)
    assert session_status(out)["state"] == "interrupted"
