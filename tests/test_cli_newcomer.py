"""A newcomer's day (issue 22): deterministic Ctrl-C, every check before any output, suffix
and flag-naming errors, what was asked is what is shown, and progress lines a person can read."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.clikit import assert_one_line_error, invoke

ROOT = Path(__file__).resolve().parents[1]
DEMO_RECORDING = ROOT / "fixtures" / "recordings" / "demo.h5"
PROGRAM_CODE = "import sys; from harness.cli import app; sys.argv[0] = 'harness'; app()"


def _popen(code: str, *args: str, cwd: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen([sys.executable, "-c", code, *args], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


# ----------------------------------------------------------------------------- Ctrl-C


def test_sigint_during_program_exits_130_with_one_line_and_writes_nothing(tmp_path: Path) -> None:
    """SIGINT once write-verify is under way (its first progress line is on stderr): exit
    130, one ``error: interrupted`` line, no recording and no temporary file left."""
    out = tmp_path / "ow.h5"
    proc = _popen(PROGRAM_CODE, "program", "--model", "analognet-kws", "--out", str(out), cwd=tmp_path)
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:  # blocks until the child writes: no sleeping on a wall clock
        seen.append(line)
        if line.startswith("write-verify"):
            proc.send_signal(signal.SIGINT)
            break
    rest_out, rest_err = proc.communicate(timeout=120)
    err = "".join(seen) + rest_err
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == "error: interrupted", err
    assert "Traceback" not in err and "Exception ignored" not in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "half-written output left behind"


_SWALLOWED = """
import gc, os, signal, sys, weakref
from harness.commands import interrupts
from harness.commands.common import user_errors

class Victim:
    pass

def callback(_ref):  # a KeyboardInterrupt raised in here is printed and swallowed by Python
    os.kill(os.getpid(), signal.SIGINT)

with interrupts.guard():
    with user_errors():
        v = Victim()
        r = weakref.ref(v, callback)
        del v
        gc.collect()
        open(sys.argv[1], "w").write("whole")  # the work goes on to the end
    print("summary")
"""


def test_a_swallowed_sigint_still_exits_130_saying_the_output_is_complete(tmp_path: Path) -> None:
    """Python swallows a KeyboardInterrupt raised in a weakref callback ("Exception ignored
    in …"), so the work finishes; before the fix the command then exited 0 as if never
    interrupted. Now: exit 130 and one line saying the output is whole."""
    out = tmp_path / "out.txt"
    proc = _popen(_SWALLOWED, str(out), cwd=tmp_path)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert out.read_text() == "whole"
    assert stderr.strip().splitlines()[-1] == "error: interrupted after the work was complete; its output is whole"


_AFTER = """
import os, signal, sys
from harness.commands import interrupts
from harness.commands.common import user_errors

with interrupts.guard():
    with user_errors():
        open(sys.argv[1], "w").write("whole")
    os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while the summary is printed
    print("summary")
    interrupts.complete_but_interrupted()
"""


def test_sigint_after_the_work_is_exit_130_with_a_line_not_minus_2(tmp_path: Path) -> None:
    """Before: SIGINT just after the work gave status -2 and no message."""
    out = tmp_path / "out.txt"
    proc = _popen(_AFTER, str(out), cwd=tmp_path)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "output is whole" in stderr and "Traceback" not in stderr


# ----------------------------------------------------------------------------- checks first


def test_session_run_with_a_chip_too_small_fails_before_any_output(tmp_path: Path) -> None:
    """Before: the session header went to stdout, then the error."""
    r = invoke("session", "run", str(ROOT / "sessions" / "demo-short.toml"), "--chip", "virtual?rows=8&cols=8",
               "--out", str(tmp_path / "a.h5"))
    assert_one_line_error(r, "8x8")
    assert r.stdout == "" and not (tmp_path / "a.h5").exists()


def test_session_run_with_a_missing_model_fails_before_any_output(tmp_path: Path) -> None:
    r = invoke("session", "run", str(ROOT / "sessions" / "demo-short.toml"), "--model", str(tmp_path / "bad.h5"),
               "--out", str(tmp_path / "a.h5"))
    assert_one_line_error(r, "does not exist")
    assert r.stdout == ""


@pytest.mark.parametrize("cmd", [("program",), ("session", "run", str(ROOT / "sessions" / "demo-short.toml"))])
def test_a_replay_chip_is_refused_before_any_output(tmp_path: Path, cmd: tuple[str, ...]) -> None:
    """Before: ``program`` printed "programming …" and then the replay chip refused the pulses."""
    r = invoke(*cmd, "--chip", f"replay:{DEMO_RECORDING}", "--out", str(tmp_path / "b.h5"))
    assert_one_line_error(r, "read-only")
    assert r.stdout == ""


def test_calibrate_checks_the_out_suffix(tmp_path: Path) -> None:
    """Before: TOML was written into c.json and the exit status was 0."""
    r = invoke("calibrate", str(DEMO_RECORDING), "--out", str(tmp_path / "c.json"))
    assert_one_line_error(r, "supported: .toml")
    assert not (tmp_path / "c.json").exists()


def test_train_data_that_is_not_a_dataset_says_why() -> None:
    r = invoke("train", "--model", "digits", "--data", str(ROOT / "README.md"), "--recipe", "baseline",
               "--out", "runs/never.h5")
    assert_one_line_error(r, "not an HDF5 file")


def test_accel_hw_errors_name_the_flag(tmp_path: Path) -> None:
    r = invoke("accel", "--model", "analognet-kws", "--hw", str(tmp_path / "nosuch.toml"))
    assert_one_line_error(r, "--hw ")
    bad = tmp_path / "bad.toml"
    bad.write_text("x = 1\n")
    r = invoke("accel", "--model", "analognet-kws", "--hw", str(bad))
    assert_one_line_error(r, "--hw ")


def test_sweep_with_an_unreachable_scheduler_leaves_no_scaffold(tmp_path: Path) -> None:
    """Before: ``_sweep.json``, ``_lock`` and ``_failed/`` stayed in the new folder."""
    pytest.importorskip("distributed")
    grid = tmp_path / "s.toml"
    grid.write_text('[sweep]\nname = "s"\nseed = 1\nruns = 1\n[grid]\nmodels = ["default"]\n'
                    'times = ["25s"]\nbits = [8]\ngdc = [true]\n')
    out = tmp_path / "o"
    r = invoke("sweep", str(grid), "--out", str(out), "--scheduler", "tcp://127.0.0.1:1")
    assert_one_line_error(r, "scheduler")
    assert not out.exists(), sorted(p.name for p in out.rglob("*"))
    out.mkdir()  # a folder the user made stays, empty
    r = invoke("sweep", str(grid), "--out", str(out), "--scheduler", "tcp://127.0.0.1:1")
    assert r.exit_code == 1 and out.is_dir() and list(out.iterdir()) == []
