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


# ----------------------------------------------------------------------------- what was asked, shown


def test_evaluate_bits_0_is_ideal_converters_as_in_sweeps() -> None:
    """docs/sweeps.md: bits 0 = ideal converters. Before: evaluate refused --bits 0."""
    import json

    r = invoke("evaluate", "--recording", str(DEMO_RECORDING), "--bits", "0,8", "--times", "25s", "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["bits"][0] in (None, "ideal")


def test_evaluate_says_what_it_changed_in_times_and_bits() -> None:
    """Before: --times 1h,25s was reordered and --bits 8,8 de-duplicated silently."""
    r = invoke("evaluate", "--recording", str(DEMO_RECORDING), "--bits", "8,8", "--times", "1h,25s")
    assert r.exit_code == 0, r.stderr
    assert "note: --bits has repeats; evaluating each once: 8" in r.stderr
    assert "note: --times evaluated in increasing order without repeats: 25s,1h" in r.stderr


def test_a_single_run_shows_no_plus_minus() -> None:
    r = invoke("evaluate", "--recording", str(DEMO_RECORDING), "--bits", "8", "--times", "25s")
    assert r.exit_code == 0, r.stderr
    assert "±" not in r.stdout and "one run" in " ".join(r.stdout.split())


# ----------------------------------------------------------------------------- progress text


def test_progress_counts_are_integers_of_a_named_unit_and_the_first_eta_is_not_a_guess(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: "0.00649351/1 (1%), elapsed 3.5e-05s, ETA 0.0054s" (train), and a first ETA
    extrapolated from start-up ("11min" for 20 s jobs). Now: integer counts with their unit,
    no ETA before a rate is known, then the rate from the first step on (start-up excluded)."""
    from harness.commands import common

    clock = {"t": 100.0}
    monkeypatch.setattr(common.time, "monotonic", lambda: clock["t"])  # the simulated clock of this test
    with common.progress_bar("train", total=None, unit="steps", min_interval_s=0.0) as update:
        clock["t"] += 600.0  # ten minutes of start-up before the first step
        update(1, total=10)
        clock["t"] += 2.0
        update(2)
        clock["t"] += 2.0
        update(3)
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0] == "train: 1/10 steps (10%), elapsed 10min"
    assert lines[1] == "train: 2/10 steps (20%), elapsed 10min, ETA 16s"  # 2 s per step, 8 left
    assert lines[2].endswith("ETA 14s")


def test_progress_announces_a_long_first_step_only_when_asked(capsys: pytest.CaptureFixture[str]) -> None:
    from harness.commands.common import progress_bar

    with progress_bar("evaluate", total=None) as update:
        update(0, description="chips", total=3, unit="chips")
        update(0, description="CiM inference (chip 1, 8-bit)", total=3, unit="bit-widths", announce=True)
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == ["CiM inference (chip 1, 8-bit): 0/3 bit-widths, started"]


def test_session_progress_off_a_terminal_is_at_most_one_line_a_second() -> None:
    """Before: one line per readout (400 lines for a 400-point session)."""
    from harness.commands.session import session_progress
    from harness.sessions.runner import SessionProgress

    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err), session_progress() as progress:
        for i in range(1, 401):
            progress(SessionProgress("readout", i, 400, t_next_s=float(i + 1), t_s=float(i)))
    lines = err.getvalue().strip().splitlines()
    assert 2 <= len(lines) < 20, lines[:5]
    assert "1/400 readouts" in lines[0] and "400/400 readouts (100%)" in lines[-1]


# ----------------------------------------------------------------------------- torch warning


def test_kws_models_run_without_the_padding_same_warning() -> None:
    """Before: torch warned "Using padding='same' with even kernel lengths …" on every KWS
    forward (evaluate, train). The explicit pad gives the same output without the warning."""
    import warnings

    import torch

    from harness.models import resolve_model_path
    from harness.models.format import load_model
    from harness.models.micronet_kws import micronet_kws_s

    net = load_model(resolve_model_path("analognet-kws")).to_torch().eval()
    reference = torch.nn.Conv2d(1, 84, (10, 4), padding="same", bias=False)
    reference.load_state_dict(net.conv1.state_dict())
    x = torch.randn(2, 1, 49, 10, generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        net(x)
        micronet_kws_s().eval()(x)
        ours = net.conv1(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert torch.equal(ours, reference(x))


# ----------------------------------------------------------------------------- report text


def test_report_provenance_keeps_multi_line_text_and_shows_paths_a_reader_can_use(tmp_path: Path,
                                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: a session's TOML was collapsed onto one line and model paths were absolute
    temporary paths of the machine that made the report."""
    from harness.report.html import _dl, shown_path

    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    html = _dl({"session_toml": "[session]\nname = \"x\"\n", "model": "/tmp/pytest-of-x/abc/kws-4b.h5",
                "recording": str(tmp_path / "runs" / "a.h5"), "chip": "virtual?rows=8"})
    assert "<pre>[session]\nname = &quot;x&quot;</pre>" in html
    assert "<dd>kws-4b.h5</dd>" in html and "/tmp/pytest-of-x" not in html
    assert "<dd>runs/a.h5</dd>" in html
    assert shown_path("virtual?rows=8") == "virtual?rows=8"


def test_sigint_during_a_sweep_exits_130_and_keeps_finished_tasks_for_resume(tmp_path: Path) -> None:
    """SIGINT after the first task finished (its progress line is on stderr): exit 130 with
    one line; finished tasks stay (a rerun resumes them), no half-written part file."""
    pytest.importorskip("distributed")
    grid = tmp_path / "s.toml"
    grid.write_text('[sweep]\nname = "s"\nseed = 1\nruns = 6\n[grid]\nmodels = ["default"]\n'
                    'times = ["25s", "1y"]\nbits = [8, 4]\ngdc = [true]\n')
    out = tmp_path / "o"
    proc = _popen(PROGRAM_CODE, "sweep", str(grid), "--out", str(out), cwd=tmp_path)
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if line.startswith("sweep s") and " 1/6 tasks" in line:
            proc.send_signal(signal.SIGINT)
            break
    _, rest = proc.communicate(timeout=300)
    err = "".join(seen) + rest
    if proc.returncode == 0:  # the last tasks finished before the signal was handled
        pytest.skip("the sweep finished before SIGINT arrived")
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1].startswith("error: interrupted"), err
    assert "Traceback" not in err
    parts = [p for p in out.rglob("*") if p.is_file() and not p.name.startswith("_")]
    assert parts and not any(".tmp" in p.name or ".partial" in p.name for p in parts), parts
