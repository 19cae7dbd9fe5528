"""``session resume`` onto a restarted emulator is refused (issue 13, item 1).

A session runs against an emulated chip over a real pty or loopback TCP and is
interrupted; the emulator is then stopped and a fresh one started (same seed, so the same
``*IDN?``, but an unprogrammed array). Resuming on the fresh one must be refused with a
line saying why; ``--accept-chip`` proceeds, says so, and the recording keeps the choice.
Resuming on the emulator that is still running passes the same check.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from clikit import assert_one_line_error, invoke
from linkkit import ServeFn

from harness.chip.protocol import Geometry
from harness.recording import open_recording
from harness.chip.registry import open_chip
from harness.sessions.schedule import load_session
from harness.sessions.runner import SessionProgress, run_session

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "sessions" / "demo-short.toml"
GEOMETRY = Geometry(rows=64, cols=256)  # the default model fits


class Interrupt(KeyboardInterrupt):
    pass


def interrupted_session(uri: str, out: Path, after: int) -> None:
    def progress(p: SessionProgress) -> None:
        if p.phase == "readout" and p.done == after:
            raise Interrupt

    with open_chip(uri) as chip, pytest.raises(Interrupt):
        run_session(load_session(DEMO), chip, out, progress=progress)


@pytest.mark.parametrize("kind", ["pty", "tcp"])
def test_resume_onto_a_restarted_emulator_is_refused(serve: ServeFn, tmp_path: Path, kind: str) -> None:
    first = serve(kind, GEOMETRY, seed=7)
    out = tmp_path / "s.h5"
    interrupted_session(first.uri, out, 4)
    same = tmp_path / "same.h5"
    shutil.copy(out, same)

    # the emulator that kept running: same chip, the check passes
    r = invoke("session", "resume", str(same), "--chip", first.uri, "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["chip_check"]["check"]["agrees"]
    first.close()

    fresh = serve(kind, GEOMETRY, seed=7)  # restarted: same identity, blank array
    before = out.read_bytes()
    r = invoke("session", "resume", str(out), "--chip", fresh.uri)
    assert_one_line_error(r, "does not read like the recorded one")
    assert "median G now/then" in r.stderr and "--accept-chip" in r.stderr
    assert out.read_bytes() == before

    r = invoke("session", "resume", str(out), "--chip", fresh.uri, "--accept-chip", "--json")
    assert r.exit_code == 0, r.stderr
    assert "warning: --accept-chip" in r.stderr
    with open_recording(out) as rec:
        assert rec.n_readouts == 10
        (entry,) = rec.resumes
        assert entry["chip_uri"] == fresh.uri and entry["accepted_despite"]
        assert entry["check"]["median_ratio_now_to_ref"] < 0.05


def test_resume_onto_an_emulator_of_another_seed_names_both_identities(serve: ServeFn, tmp_path: Path) -> None:
    first = serve("tcp", GEOMETRY, seed=7)
    out = tmp_path / "s.h5"
    interrupted_session(first.uri, out, 2)
    first.close()
    other = serve("tcp", GEOMETRY, seed=8)
    r = invoke("session", "resume", str(out), "--chip", other.uri)
    assert_one_line_error(r, "SEED8")
    assert "SEED7" in r.stderr
