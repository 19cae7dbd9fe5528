"""Noisy links with default settings (issue 13, item 9): no URI options, and the driver
adapts its frames to the link. Every test runs the real driver against the emulator over a
real pty or loopback socket (or, for the byte-exact cases, against a scripted link).

The reproductions of the issue: at 0.01 % corrupted bytes a pty failed on the ~38 KB
``CELL:RES`` of the default model (the 16 MiB chunk, halved once per failure with 8
retries, never got below it), and TCP failed at 0.3 %; a damaged ``*IDN?`` reply was
reported as "not a PCM test chip".
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from clikit import invoke
from linkkit import SCRIPT_IDN, SCRIPT_SESSION, SMALL, ScriptedLink, ServeFn, cmd, rep

from drivers.client import RemoteChip
from drivers.faults import FaultSpec
from drivers.link_settings import LinkSettings
from harness.chip.protocol import Geometry
from harness.errors import ChipIOError
from harness.programming.write_verify import program_cells
from harness.recording import open_recording
from harness.chip.registry import open_chip
from harness.virtual.chip import VirtualPCMChip

MODEL_GEOMETRY = Geometry(rows=64, cols=256)  # the default model (9472 devices) fits
VIRTUAL = f"virtual?rows={MODEL_GEOMETRY.rows}&cols={MODEL_GEOMETRY.cols}&seed=7"


def program_json(chip: str, out: Path) -> dict:
    result = invoke("program", "--chip", chip, "--out", str(out), "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_cli_program_over_a_pty_at_one_in_ten_thousand_corrupted_bytes(serve: ServeFn, tmp_path: Path) -> None:
    # the reproduction: default URI, the default model's 38 KB RESET frame
    emulator = serve("pty", MODEL_GEOMETRY, seed=7, faults=FaultSpec(corrupt_rate=1e-4, seed=3))
    remote = program_json(emulator.uri, tmp_path / "remote.h5")
    local = program_json(VIRTUAL, tmp_path / "local.h5")
    assert remote["levels"] == local["levels"]
    with open_recording(tmp_path / "remote.h5") as a, open_recording(tmp_path / "local.h5") as b:
        np.testing.assert_array_equal(a.programming.final_uS, b.programming.final_uS)
        np.testing.assert_array_equal(a.programming.iterations, b.programming.iterations)
    assert emulator.faults.corrupted > 0


@pytest.mark.parametrize("kind, faults", [
    ("tcp", FaultSpec(corrupt_rate=3e-3, seed=4)),
    ("pty", FaultSpec(corrupt_rate=3e-3, drop_rate=1e-3, disconnect_every=300, seed=2)),
])
def test_default_uri_programming_through_noise_is_bit_identical(serve: ServeFn, kind: str, faults: FaultSpec) -> None:
    # 600 cells two apart: a 2.4 KB address list, far beyond what survives 0.3 % (main
    # failed: its smallest VISA chunk after 8 halvings was 4 KB, so the frame never split)
    cells = np.arange(0, 1200, 2)
    target = np.random.default_rng(1).uniform(0.0, 25.0, cells.size)
    want = program_cells(VirtualPCMChip(SMALL, seed=5), cells, target)

    emulator = serve(kind, SMALL, seed=5, faults=faults)
    chip = open_chip(emulator.uri)  # default settings: no URI options
    got = program_cells(chip, cells, target)
    stats = chip.stats
    chip.close()

    np.testing.assert_array_equal(got.final_uS, want.final_uS)
    np.testing.assert_array_equal(got.iterations, want.iterations)
    assert got.t_end_s == want.t_end_s
    assert stats.failures > 10 and emulator.faults.corrupted > 100
    if faults.disconnect_every:
        assert emulator.hangups >= 1 and stats.reconnects >= emulator.hangups
    # every pulse and read executed exactly once, whatever the link did
    assert emulator.server.executed == stats.transactions


# --- damaged *IDN? replies ------------------------------------------------------------------
def _handshake_from(seq0: int) -> list[tuple[bytes, bytes]]:
    """The rest of opening a chip after an identify with sequence ``seq0``."""
    bodies = [("SYST:VERS?", "OK 1"), ("GEOM?", "OK 4,8"), ("GEOM:COND?", "OK 0.0,25.0"),
              ("GEOM:ADC?", "OK 8,0.0,32.0"), ("LIM:AMPL?", "OK 0.8"), ("SYST:SESS?", f"OK {SCRIPT_SESSION:08X}")]
    return [(cmd(seq0 + 1 + i, q), rep(seq0 + 1 + i, r)) for i, (q, r) in enumerate(bodies)]


def _damaged_idn(seq: int, flips: dict[int, int]) -> bytes:
    """The good reply to *IDN? ``seq`` with bytes replaced, so it is printable text with
    no frame marker and no intact header or trailer: what main took for another device."""
    raw = bytearray(rep(seq, f'OK "{SCRIPT_IDN}"'))
    for at, value in flips.items():
        raw[at] = value
    return bytes(raw)


def test_damaged_idn_replies_are_retried_not_taken_for_another_device() -> None:
    # marker '<' -> 'x', one hex digit of the length -> 'G', trailer '\n' -> '.' (and in the
    # second, other bytes): two different damaged copies of our own reply
    first = _damaged_idn(1, {0: ord("x"), 25: ord("G"), -1: ord(".")})
    second = _damaged_idn(2, {0: ord("y"), 20: ord("Z"), -1: ord("!"), -5: ord("?")})
    script = [(cmd(1, "*IDN?"), first), (cmd(2, "*IDN?"), second),
              (cmd(3, "*IDN?"), rep(3, f'OK "{SCRIPT_IDN}"')), *_handshake_from(3)]
    link = ScriptedLink(script)
    chip = RemoteChip(link, "scripted://", LinkSettings(timeout_s=0.05, retries=2))
    assert chip.identity == SCRIPT_IDN and chip.stats.failures == 2
    chip.close()
    link.assert_done()


# --- backoff ----------------------------------------------------------------------------------
class _FlakyOpen(ScriptedLink):
    """A scripted link whose reopening fails ``failures`` times (a device re-enumerating)."""

    def __init__(self, script: list[tuple[bytes, bytes | None]], failures: int) -> None:
        super().__init__(script)
        self.failures = failures

    def open(self) -> None:
        if self.opens >= 1 and self.failures > 0:
            self.failures -= 1
            raise ChipIOError("device not there (yet)")
        super().open()


def test_reopening_backs_off_on_the_injected_clock() -> None:
    from linkkit import handshake

    s = SCRIPT_SESSION
    script = [*handshake(), (cmd(1, "TIME?", s), None),  # silence: reconnect
              (cmd(2, "*IDN?", s), rep(2, f'OK "{SCRIPT_IDN}"', s)), (cmd(1, "TIME?", s), rep(1, "OK 2.5", s))]
    link = _FlakyOpen(script, failures=4)
    pauses: list[float] = []
    chip = RemoteChip(link, "scripted://", LinkSettings(timeout_s=0.05, retries=8), sleep=pauses.append)
    assert chip.now() == 2.5
    chip.close()
    link.assert_done()
    # doubling from 10 ms, capped at half the timeout; no wall-clock sleep was taken
    assert pauses == [0.01, 0.02, 0.025, 0.025]
