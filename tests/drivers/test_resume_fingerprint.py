"""A resume check that a reprogrammed chip cannot pass (issue 19, items 2–3).

A session runs against an emulated chip over loopback TCP (and, for the issue's own
scenario, a pty) and is interrupted early (after readout 2, t = 62 s) or late (after
readout 9, t = 9.7 h). ``session resume`` is then pointed at:

(a) the same emulator, still running — proceeds without ``--accept-chip``;
(b) the emulator restarted with the same seed and reprogrammed with ``harness program``
    (the issue's scenario) — refused (its clock is behind the recorded readouts, and
    read that young its deviations do not match);
(c) the emulator restarted blank — refused;
(d) another chip (seed 8) answering with the recorded chip's ``*IDN?``, programmed with
    the same model, its clock moved past the recorded readouts — refused by the fingerprint.

Each refusal is one ``error:`` line and leaves the recording byte for byte as it was.
Not tested because it does not hold: a same-seed chip reprogrammed alike *and* aged as
long as the recording reads like the recorded one in the virtual chip's model (see
:mod:`harness.sessions.resume_check`); only its clock gives it away.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from clikit import assert_one_line_error, invoke
from test_resume_chip import interrupted_session  # the demo session, interrupted after a readout

from drivers.emulator import Emulator, default_identity
from harness.chip.protocol import Geometry
from harness.chip.registry import open_chip
from harness.recording import open_recording
from harness.virtual.chip import VirtualPCMChip

# the demo session (sessions/demo-short.toml): 10 log-spaced readouts, 25 s .. 1 day
GEOMETRY = Geometry(rows=64, cols=256)  # the default model fits: ~2,500-3,000 programmed cells checked
SEED = 7
EARLY, LATE = 2, 9


@pytest.fixture
def emulators() -> Iterator[list[Emulator]]:
    started: list[Emulator] = []
    yield started
    for e in started:
        e.close()


def start(started: list[Emulator], seed: int, kind: str = "tcp", identity: str | None = None) -> Emulator:
    emulator = Emulator(VirtualPCMChip(GEOMETRY, seed=seed), identity=identity)
    started.append(emulator)
    if kind == "pty":
        emulator.start_pty()
    else:
        emulator.start_tcp("127.0.0.1", 0)
    return emulator


def program(uri: str, out: Path) -> None:
    r = invoke("program", "--chip", uri, "--out", str(out), "--json")
    assert r.exit_code == 0, r.stderr


def advance_clock(uri: str, t_s: float) -> None:
    """Move a (simulated-clock) emulated chip's clock to ``t_s``, as if it had been running."""
    with open_chip(uri) as chip:
        chip.wait_until(t_s)


def refused(out: Path, uri: str, fragment: str) -> None:
    before = out.read_bytes()
    r = invoke("session", "resume", str(out), "--chip", uri)
    assert_one_line_error(r, fragment)
    assert "--accept-chip" in r.stderr
    assert out.read_bytes() == before


@pytest.mark.parametrize("after", [EARLY, LATE])
def test_only_the_same_chip_resumes_without_accept_chip(emulators: list[Emulator], tmp_path: Path, after: int) -> None:
    first = start(emulators, SEED)
    out = tmp_path / "s.h5"
    interrupted_session(first.uri, out, after)
    copies = {k: tmp_path / f"{k}.h5" for k in "abcd"}
    for path in copies.values():
        shutil.copy(out, path)

    # (a) the same chip: proceeds, and its fingerprint was conclusive
    r = invoke("session", "resume", str(copies["a"]), "--chip", first.uri, "--json")
    assert r.exit_code == 0, r.stderr
    check = json.loads(r.stdout)["chip_check"]["check"]
    assert check["agrees"] and check["cells_checked"] >= 2000
    first.close()

    # (c) restarted, blank
    blank = start(emulators, SEED)
    refused(copies["c"], blank.uri, "does not read like the recorded one")
    blank.close()

    # (b) restarted with the same seed and reprogrammed with the same model (the issue's case)
    again = start(emulators, SEED)
    program(again.uri, tmp_path / "p.h5")
    refused(copies["b"], again.uri, "refusing to resume")
    again.close()

    # (d) another chip claiming the recorded identity, programmed alike, clock moved on
    with open_recording(out) as rec:
        t_last = rec.programming.t_end_s + float(rec.times_s[rec.n_readouts - 1])
    other = start(emulators, SEED + 1, identity=default_identity(VirtualPCMChip(GEOMETRY, seed=SEED)))
    program(other.uri, tmp_path / "q.h5")
    advance_clock(other.uri, t_last + 1.0)
    refused(copies["d"], other.uri, "programming noise does not match")

    assert check["fingerprint"]["conclusive"], check  # (a) was a real test, not a pass by default


@pytest.mark.parametrize("kind", ["pty", "tcp"])
def test_issue_scenario_serial_restart_program_resume_is_refused(
    emulators: list[Emulator], tmp_path: Path, kind: str
) -> None:
    """The issue's report: interrupted over serial, emulator restarted with the same seed,
    ``harness program`` run on it, then ``session resume`` — it used to append readouts."""
    first = start(emulators, SEED, kind)
    out = tmp_path / "s.h5"
    interrupted_session(first.uri, out, EARLY)
    first.close()
    again = start(emulators, SEED, kind)
    program(again.uri, tmp_path / "p.h5")
    refused(out, again.uri, "refusing to resume")
    with open_recording(out) as rec:
        assert rec.n_readouts == EARLY


def test_the_same_chip_resumed_after_a_long_gap_is_not_refused(emulators: list[Emulator], tmp_path: Path) -> None:
    """Drift since the interruption adds deviation the recording never saw: the fingerprint
    discounts it (and goes inconclusive) rather than refuse the same chip."""
    first = start(emulators, SEED)
    out = tmp_path / "s.h5"
    interrupted_session(first.uri, out, 4)  # t = 378 s
    with open_recording(out) as rec:
        t_last = rec.programming.t_end_s + float(rec.times_s[rec.n_readouts - 1])
    advance_clock(first.uri, 100 * t_last)  # resumed after 100× as long on the chip's clock
    r = invoke("session", "resume", str(out), "--chip", first.uri, "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["chip_check"]["check"]["agrees"]
