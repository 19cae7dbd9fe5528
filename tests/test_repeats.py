"""Repeated reads: k reads back to back at every scheduled time, recorded, resumable; files of
format version 1 (before repeats) still read as k = 1."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from harness.errors import ConfigError, ScheduleError
from harness.recording import open_recording
from harness.chip.registry import open_chip
from harness.sessions.schedule import parse_session
from harness.sessions.resume import resume_session
from harness.sessions.runner import SessionProgress, run_session
from harness.sessions.status import session_status
from harness.virtual.chip import READ_OP_TIME_S
from reseal import as_older_version

URI = "virtual?rows=64&cols=160&seed=4"


def session(repeats: int = 3, points: int = 4) -> str:
    return f"""
[session]
name = "rep"
[program.params]
max_iterations = 20
[readout]
repeats = {repeats}
[schedule]
kind = "log"
start_s = 25.0
stop_s = 3600.0
points = {points}
"""


def run(path: Path, text: str, progress=None) -> None:  # type: ignore[no-untyped-def]
    with open_chip(URI) as chip:
        run_session(parse_session(text), chip, path, progress=progress)


def test_k_reads_per_time_recorded_back_to_back(tmp_path: Path) -> None:
    out = tmp_path / "r.h5"
    run(out, session(3, 4))
    with open_recording(out) as rec:
        assert rec.readout_repeats == 3 and rec.n_readouts == 12 and rec.n_scheduled == 12 and rec.is_complete
        assert rec.format_version >= 2  # repeats need version 2 (3 added checksums)
        idx = rec.extra("schedule_index")
        np.testing.assert_array_equal(idx, np.repeat(np.arange(4), 3))
        t = rec.times_s.reshape(4, 3)
        np.testing.assert_allclose(np.diff(t, axis=1), READ_OP_TIME_S, rtol=1e-6)  # back to back
        np.testing.assert_allclose(rec.extra("t_scheduled_s").reshape(4, 3)[:, 0], rec.scheduled_times_s)
        g = rec.readouts().reshape(4, 3, -1)
        assert not np.array_equal(g[:, 0], g[:, 1])  # fresh read noise at every read
    assert session_status(out)["readouts_scheduled"] == 12


def test_resume_in_the_middle_of_a_group_matches_uninterrupted(tmp_path: Path) -> None:
    ref, out = tmp_path / "ref.h5", tmp_path / "cut.h5"
    run(ref, session(3, 4))

    def crash(p: SessionProgress) -> None:
        if p.phase == "readout" and p.done == 5:  # after the 2nd read of the 2nd time
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(out, session(3, 4), crash)
    with open_recording(out) as rec:
        assert rec.n_readouts == 5 and not rec.is_complete
    assert session_status(out)["next_due_s"] == pytest.approx(float(np.geomspace(25, 3600, 4)[1]))
    result = resume_session(out)
    assert result.readouts_done == 12
    with open_recording(out) as rec, open_recording(ref) as r0:
        np.testing.assert_array_equal(rec.extra("schedule_index"), np.repeat(np.arange(4), 3))
        np.testing.assert_array_equal(rec.readouts(), r0.readouts())


def test_format_version_1_file_still_reads(tmp_path: Path) -> None:
    out = tmp_path / "v1.h5"
    run(out, session(1, 3))
    as_older_version(out, 1)  # what the harness wrote before repeats existed
    with h5py.File(out, "r+") as f:
        del f["session"].attrs["readout_repeats"]
    with open_recording(out) as rec:
        assert rec.format_version == 1 and rec.readout_repeats == 1
        assert rec.n_readouts == rec.n_scheduled == 3 and rec.is_complete


@pytest.mark.parametrize("bad", ["0", "-2", "1001", "2.5"])
def test_bad_repeats(bad: str) -> None:
    with pytest.raises(ConfigError, match="repeats"):
        parse_session(session().replace("repeats = 3", f"repeats = {bad}"))


def test_repeats_times_points_bounded() -> None:
    with pytest.raises(ScheduleError, match="exceed the limit"):
        parse_session(session(1000, 200))
