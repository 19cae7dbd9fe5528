"""Noisy links say so, and a stalled link gives up with one line (issue 19, item 7).

Main retried forever on a link where nothing got through and printed nothing: 3 %
corruption went 10 % in 300 s without a word about the link, and 1 % corruption + 1 %
drops + frequent hang-ups printed no progress line in 300 s. Now the driver's
:class:`~drivers.link_watch.LinkWatch` prints a line with the measured frame error rate
while frames fail, and raises one ``ChipTimeoutError`` naming the link quality when
a command has not completed for ``stall=`` seconds (URI; default 120 s), even if
a frame gets through now and then. A session that stalls
keeps every readout it committed and resumes.

The real-link tests use a 0.4 s stall bound on a loopback emulator whose line is made
useless (90 % of bytes corrupted) mid-run; the arithmetic is tested on a simulated clock.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from clikit import assert_one_line_error, invoke
from linkkit import SMALL, ServeFn

from drivers.faults import FaultInjector, FaultSpec
from drivers.link_settings import LinkSettings
from drivers.link_watch import LinkWatch
from harness.chip.protocol import Geometry
from harness.chip.registry import open_chip
from harness.errors import ChipTimeoutError, ConfigError
from harness.recording import open_recording
from harness.sessions.resume import resume_session
from harness.sessions.runner import SessionProgress, run_session
from harness.sessions.schedule import load_session

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "sessions" / "demo-short.toml"
DEAD = FaultSpec(corrupt_rate=0.9, seed=1)


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_watch_reports_the_frame_error_rate_and_gives_up_after_the_stall_bound() -> None:
    clock, lines = Clock(), []
    watch = LinkWatch("TCPIP::x", stall_s=120.0, notice_s=10.0, notice=lines.append, clock=clock)
    for i in range(80):  # 9 of every 10 frames fail, 0.125 s each (exact in binary)
        clock.t += 0.125
        if i % 10 == 0:
            watch.passed()
            watch.done()  # a command completed
        else:
            watch.failed("CELL:READ?", reconnects=2)
    assert len(lines) == 1 and "frame error rate 90.0 % (72 of 80 frames failed), 2 reconnects" in lines[0], lines
    for _ in range(950):  # then nothing gets through: the last command completed at 8.875 s
        clock.t += 0.125
        watch.failed("CELL:READ?", reconnects=3)
    with pytest.raises(ChipTimeoutError, match=r"made no progress for 120 s \(CELL:READ\? not done\): frame error rate") as e:
        clock.t += 0.125
        watch.failed("CELL:READ?", reconnects=3)
    assert "stall=" in str(e.value) and "\n" not in str(e.value)
    assert all(line.startswith("link: TCPIP::x: frame error rate") for line in lines)
    assert len(lines) == 12  # one line per 10 s while failing: 10 s, 20 s, ..., 120 s
    assert "100.0 %" in lines[-1]


def test_frames_that_get_through_without_finishing_a_command_are_no_progress() -> None:
    """The 'hang-up every 40 commands' case: windows get answers, the READ never completes."""
    clock = Clock()
    watch = LinkWatch("x", stall_s=2.0, notice_s=0.5, notice=lambda line: None, clock=clock)
    watch.begin()
    with pytest.raises(ChipTimeoutError, match="made no progress for 2 s"):
        for _ in range(100):
            clock.t += 0.25
            watch.passed(5)
            watch.failed("DATA:FETC?", reconnects=1)


def test_a_clean_link_prints_nothing() -> None:
    clock, lines = Clock(), []
    watch = LinkWatch("x", stall_s=1.0, notice_s=0.25, notice=lines.append, clock=clock)
    for _ in range(1000):
        clock.t += 0.1
        watch.begin()
        watch.passed()
        watch.done()
        watch.check("READ", 0)
    assert not lines


@pytest.mark.parametrize("value", ["0", "-1", "nan", "1e9", "soon"])
def test_bad_stall_values_are_refused(value: str) -> None:
    with pytest.raises(ConfigError, match="stall"):
        open_chip(f"serial:///dev/nonexistent-pcm?stall={value}")


def test_stall_is_a_uri_parameter() -> None:
    assert LinkSettings().stall_s == 120.0 and LinkSettings(stall_s=0.4).notice_s == 0.1


@pytest.mark.parametrize("kind", ["pty", "tcp"])
def test_a_link_that_stops_working_gives_up_with_one_line(serve: ServeFn, kind: str) -> None:
    emulator = serve(kind, SMALL, seed=2)
    lines: list[str] = []
    with open_chip(f"{emulator.uri}{'&' if '?' in emulator.uri else '?'}stall=0.4") as chip:
        chip.link_watch.notice = lines.append
        cells = np.arange(0, 2000)
        chip.read(cells)  # clean: fine, and silent
        assert not lines
        emulator.faults = FaultInjector(DEAD)
        with pytest.raises(ChipTimeoutError, match="made no progress for 0 s|made no progress for 1 s") as e:
            chip.read(cells)
    message = str(e.value)
    assert "frame error rate" in message and "stall=" in message and "\n" not in message
    # (no link: lines here: with a 0.4 s bound the first failed attempts already exceed it)


def test_program_on_a_dead_link_exits_with_one_line(serve: ServeFn, tmp_path: Path) -> None:
    emulator = serve("tcp", Geometry(rows=64, cols=256), seed=2)
    emulator.faults = FaultInjector(DEAD)
    r = invoke("program", "--chip", emulator.uri + "?stall=0.4", "--out", str(tmp_path / "p.h5"))
    assert r.exit_code != 0
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "frame error rate" in errors[0] and "Traceback" not in r.stderr + r.stdout


class Interrupt(Exception):
    pass


def test_a_session_on_a_stalled_link_keeps_its_readouts_and_resumes(serve: ServeFn, tmp_path: Path) -> None:
    emulator = serve("tcp", Geometry(rows=64, cols=256), seed=3)
    out = tmp_path / "s.h5"
    uri = emulator.uri + "?stall=0.4"

    def progress(p: SessionProgress) -> None:
        if p.phase == "readout" and p.done == 4:
            emulator.faults = FaultInjector(DEAD)  # the line goes bad after the 4th readout

    with open_chip(uri) as chip:
        chip.link_watch.notice = lambda line: None
        with pytest.raises(ChipTimeoutError, match="made no progress"):
            run_session(load_session(DEMO), chip, out, progress=progress)
    with open_recording(out) as rec:
        assert rec.n_readouts == 4  # nothing committed was lost
    emulator.faults = FaultInjector(FaultSpec())
    result = resume_session(out, chip_uri=uri)
    assert result.readouts_done == 10
