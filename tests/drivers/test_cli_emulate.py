"""``harness emulate`` and the commands that use it, end to end through the real CLI.

``harness program`` and ``harness session run`` against the emulator over a pty and over
loopback TCP give the same results as the in-process virtual chip with the same seed.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from linkkit import ServeFn

from clikit import assert_one_line_error, invoke
from harness.chip.protocol import Geometry
from harness.recording import open_recording

ROOT = Path(__file__).resolve().parents[2]
MODEL_GEOMETRY = Geometry(rows=64, cols=256)  # the default model fits
VIRTUAL = f"virtual?rows={MODEL_GEOMETRY.rows}&cols={MODEL_GEOMETRY.cols}&seed=7"




@pytest.mark.parametrize(
    "args, fragment",
    [
        ([], "exactly one of --pty or --tcp"),
        (["--pty", "--tcp", "127.0.0.1:0"], "exactly one of --pty or --tcp"),
        (["--tcp", "0.0.0.0:5025"], "--allow-remote"),
        (["--tcp", "localhost"], "HOST:PORT"),
        (["--tcp", "127.0.0.1:70000"], "outside 0..65535"),
        (["--pty", "--corrupt-rate", "1.5"], "corrupt rate 1.5"),
        (["--pty", "--disconnect-every", "-1"], "disconnect-every -1"),
        (["--pty", "--rows", "0"], "array size 0x2048"),
        (["--pty", "--clock", "moon"], "unknown clock 'moon'"),
    ],
)
def test_emulate_bad_options_are_one_line_errors(args: list[str], fragment: str) -> None:
    assert_one_line_error(invoke("emulate", *args), fragment, exit_code=1)


def test_emulate_tcp_prints_the_uri_and_stops_after_duration() -> None:
    result = invoke("emulate", "--tcp", "127.0.0.1:0", "--rows", "8", "--cols", "8", "--duration", "0.2")
    assert result.exit_code == 0, result.stderr
    (line,) = result.stdout.splitlines()
    assert line.startswith("visa://TCPIP::127.0.0.1::") and line.endswith("::SOCKET")
    assert "connect with --chip" in result.stderr


def test_emulate_pty_prints_a_device_and_removes_it_on_exit(tmp_path: Path) -> None:
    link = tmp_path / "ttyPCM"
    result = invoke("emulate", "--pty", "--link", str(link), "--rows", "8", "--cols", "8", "--duration", "0.2")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == f"serial://{link}"
    assert not os.path.lexists(link)


@pytest.fixture
def emulate_pty_process() -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``harness emulate --pty`` as its own process; yields it and the URI it printed."""
    cmd = [sys.executable, "-c", "from harness.cli import app; app()", "emulate", "--pty",
           "--rows", str(MODEL_GEOMETRY.rows), "--cols", str(MODEL_GEOMETRY.cols), "--seed", "7"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        assert ready, "harness emulate printed nothing within 60 s"
        uri = proc.stdout.readline().strip()  # type: ignore[union-attr]
        assert uri.startswith("serial://"), uri + proc.stderr.read()  # type: ignore[union-attr]
        yield proc, uri
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def program_json(chip: str, out: Path) -> dict:
    result = invoke("program", "--chip", chip, "--out", str(out), "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_program_over_serial_pty_matches_the_virtual_chip(
    emulate_pty_process: tuple[subprocess.Popen[str], str], tmp_path: Path
) -> None:
    proc, uri = emulate_pty_process
    remote = program_json(uri, tmp_path / "remote.h5")
    local = program_json(VIRTUAL, tmp_path / "local.h5")
    assert remote["chip_identity"].startswith("PCM-HARNESS,VPCM-EMULATOR,SEED7-64X256")
    assert remote["levels"] == local["levels"] and remote["error_std_uS"] == local["error_std_uS"]
    with open_recording(tmp_path / "remote.h5") as a, open_recording(tmp_path / "local.h5") as b:
        np.testing.assert_array_equal(a.programming.final_uS, b.programming.final_uS)
        np.testing.assert_array_equal(a.programming.iterations, b.programming.iterations)
    link = uri.removeprefix("serial://")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0
    assert not os.path.lexists(link)


def test_program_and_session_over_visa_tcp_match_the_virtual_chip(serve: ServeFn, tmp_path: Path) -> None:
    uri = serve("tcp", MODEL_GEOMETRY, seed=7).uri
    remote = program_json(uri, tmp_path / "remote.h5")
    local = program_json(VIRTUAL, tmp_path / "local.h5")
    assert remote["levels"] == local["levels"]
    with open_recording(tmp_path / "remote.h5") as a, open_recording(tmp_path / "local.h5") as b:
        np.testing.assert_array_equal(a.programming.final_uS, b.programming.final_uS)

    session = str(ROOT / "sessions" / "demo-short.toml")
    fresh = serve("tcp", MODEL_GEOMETRY, seed=7).uri
    for chip, out in ((fresh, "s-remote.h5"), (VIRTUAL, "s-local.h5")):
        result = invoke("session", "run", session, "--chip", chip, "--out", str(tmp_path / out), "--json")
        assert result.exit_code == 0, result.stderr
    with open_recording(tmp_path / "s-remote.h5") as a, open_recording(tmp_path / "s-local.h5") as b:
        assert a.n_readouts == b.n_readouts == 10
        np.testing.assert_array_equal(a.times_s, b.times_s)
        np.testing.assert_array_equal(a.readouts(), b.readouts())


@pytest.mark.parametrize(
    "chip, fragment",
    [
        ("serial:///nonexistent/ttyPCM", "cannot open serial port /nonexistent/ttyPCM"),
        ("visa://TCPIP::127.0.0.1::1::SOCKET", "cannot reach VISA resource"),
        ("visa://TCPIP::127.0.0.1::5025::SOCKET?baud=9600", "unknown parameter 'baud'"),
        ("serial://", "needs a device path"),
    ],
)
def test_program_bad_chip_uri_is_one_line(chip: str, fragment: str, tmp_path: Path) -> None:
    assert_one_line_error(invoke("program", "--chip", chip, "--out", str(tmp_path / "x.h5")), fragment, exit_code=1)
