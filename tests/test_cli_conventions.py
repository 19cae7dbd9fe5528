"""CLI conventions every command shares (issue 14): lazy imports, one-line usage errors,
flags shown as flags, output paths checked before any chip operation, plots as outputs,
geometry bounded by memory, progress on stderr, one duration format, consistent text."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli import COMMANDS
from harness.commands.common import (
    PLOT_SUFFIXES,
    RECORDING_SUFFIXES,
    check_output,
    progress_bar,
)
from harness.commands.lazy import load_target
from harness.errors import ConfigError
from harness.units import format_duration, parse_duration
from tests.clikit import assert_one_line_error, invoke

ROOT = Path(__file__).resolve().parents[1]
DEMO_SESSION = ROOT / "sessions" / "demo-short.toml"
DEMO_RECORDING = ROOT / "fixtures" / "recordings" / "demo.h5"
SMALL = "virtual?rows=64&cols=160&seed=4"


def run_harness(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``harness ARGS`` in a fresh interpreter (what a user's shell runs)."""
    code = "import sys; from harness.cli import app; sys.argv[0] = 'harness'; app()"
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=cwd or ROOT,
        env={**os.environ, **(env or {})}, timeout=300,
    )


def imported_modules(*args: str) -> set[str]:
    """Modules loaded after ``harness ARGS`` ran in a fresh interpreter."""
    code = (
        "import sys, atexit\n"
        "atexit.register(lambda: sys.__stderr__.write('MODULES ' + ' '.join(sorted(sys.modules)) + '\\n'))\n"
        "from harness.cli import app\nsys.argv[0] = 'harness'\napp()\n"
    )
    r = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT, timeout=300)
    line = [x for x in r.stderr.splitlines() if x.startswith("MODULES ")]
    assert line, r.stderr
    return set(line[-1].split()[1:])


HEAVY = ("torch", "matplotlib", "h5py", "numpy")


# ----------------------------------------------------------------------------- start-up


def test_help_and_version_import_no_heavy_package() -> None:
    for args in (["--help"], ["--version"], ["program", "--help"], ["evaluate", "--help"], ["session", "--help"]):
        mods = imported_modules(*args)
        assert not [m for m in HEAVY if m in mods], (args, [m for m in HEAVY if m in mods])


def test_session_status_imports_no_torch_or_matplotlib() -> None:
    mods = imported_modules("session", "status", str(DEMO_RECORDING))
    assert "h5py" in mods  # it did read the recording
    assert "torch" not in mods and "matplotlib" not in mods


def test_every_registered_command_loads_and_its_listed_help_is_its_docstring() -> None:
    for name, entry in COMMANDS.items():
        target = load_target(entry.target)
        doc = target.info.help if hasattr(target, "info") else target.__doc__
        assert doc.strip().splitlines()[0] == entry.help, name


def test_option_defaults_repeated_for_start_up_match_the_library() -> None:
    from harness.commands import evaluate as ev_cmd
    from harness.commands import program as prog_cmd
    from harness.evaluation.settings import DEFAULT_BITS, DEFAULT_TIMES_S, MATCH_MODES
    from harness.programming.write_verify import ProgrammingParams

    assert (ev_cmd.DEFAULT_BITS, ev_cmd.DEFAULT_TIMES_S, ev_cmd.MATCH_MODES) == (DEFAULT_BITS, DEFAULT_TIMES_S, MATCH_MODES)
    p = ProgrammingParams()
    assert (prog_cmd.DEFAULT_TOLERANCE_US, prog_cmd.DEFAULT_MAX_ITERATIONS, prog_cmd.DEFAULT_GAIN) == (
        p.tolerance_uS, p.max_iterations, p.gain)


# ----------------------------------------------------------------------------- usage errors, help


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("program", "--seed", "abc"), "'--seed'"),
        (("program", "--bogus"), "--bogus"),
        (("--bogus",), "--bogus"),
        (("session", "run", "--bogus"), "--bogus"),
        (("session", "status"), "Missing argument"),
        (("nosuchcommand",), "nosuchcommand"),
    ],
)
def test_usage_errors_are_one_line(args: tuple[str, ...], fragment: str) -> None:
    r = invoke(*args)
    assert_one_line_error(r, fragment, exit_code=2)
    assert "--help" in r.stderr and "╭" not in r.stderr


def test_usage_error_is_one_line_in_a_real_process_too() -> None:
    r = run_harness("evaluate", "--runs", "many")
    assert r.returncode == 2 and r.stdout == ""
    assert len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith("error: "), r.stderr


def test_help_shows_flags_without_a_value_type() -> None:
    for cmd in (("program",), ("evaluate",), ("session", "run"), ("replay",)):
        text = invoke(*cmd, "--help").stdout
        assert "--json" in text and "<bool>" not in text, text
    assert "<int>" in invoke("program", "--help").stdout  # real values still show their type


def test_no_arguments_prints_the_command_list() -> None:
    r = invoke()
    assert r.exit_code == 0 and "program" in r.stdout and "evaluate" in r.stdout


# ----------------------------------------------------------------------------- output paths


def test_check_output_rules(tmp_path: Path) -> None:
    ok = tmp_path / "a.h5"
    assert check_output(ok, option="--out", suffixes=RECORDING_SUFFIXES) == ok
    with pytest.raises(ConfigError, match=r"\.png, \.svg, \.pdf"):
        check_output(tmp_path / "plot.txt", option="--png", suffixes=PLOT_SUFFIXES)
    with pytest.raises(ConfigError, match="no file extension"):
        check_output(tmp_path / "plotnoext", option="--png", suffixes=PLOT_SUFFIXES)
    with pytest.raises(ConfigError, match="is a directory"):
        check_output(tmp_path, option="--out", suffixes=RECORDING_SUFFIXES, overwrite=True)
    with pytest.raises(ConfigError, match="does not exist"):
        check_output(tmp_path / "nope" / "a.h5", option="--out", suffixes=RECORDING_SUFFIXES)
    ok.write_bytes(b"x")
    with pytest.raises(ConfigError, match="already exists"):
        check_output(ok, option="--out", suffixes=RECORDING_SUFFIXES)
    assert check_output(ok, option="--out", suffixes=RECORDING_SUFFIXES, overwrite=True) == ok
    with pytest.raises(ConfigError, match="not a directory"):
        check_output(ok / "b.h5", option="--out", suffixes=RECORDING_SUFFIXES)
    # Permission bits do not stop root, so the unwritable directory is procfs.
    with pytest.raises(ConfigError, match="cannot write in directory /proc"):
        check_output("/proc/x.h5", option="--out", suffixes=RECORDING_SUFFIXES)
    assert not list(tmp_path.glob(".harness-probe-*"))


@pytest.mark.parametrize("cmd", [("program",), ("session", "run", str(DEMO_SESSION))])
def test_unwritable_out_fails_before_any_chip_operation(cmd: tuple[str, ...]) -> None:
    r = invoke(*cmd, "--chip", "virtual", "--out", "/proc/run.h5")
    assert_one_line_error(r, "cannot write in directory /proc")
    assert "programming" not in r.stdout  # failed before the model was even loaded


def test_plots_are_outputs_like_any_other(tmp_path: Path) -> None:
    existing = tmp_path / "p.png"
    existing.write_bytes(b"keep")
    r = invoke("replay", str(DEMO_RECORDING), "--png", str(existing))
    assert_one_line_error(r, "already exists")
    assert existing.read_bytes() == b"keep"
    assert_one_line_error(invoke("replay", str(DEMO_RECORDING), "--png", str(tmp_path / "x.txt")), ".png, .svg, .pdf")
    assert_one_line_error(invoke("replay", str(DEMO_RECORDING), "--png", str(tmp_path / "plotnoext")), "no file extension")
    assert not (tmp_path / "plotnoext.png").exists()
    r = invoke("replay", str(DEMO_RECORDING), "--png", str(existing), "--overwrite", "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["png"] == str(existing) and existing.read_bytes()[:4] == b"\x89PNG"
    assert_one_line_error(
        invoke("evaluate", "--recording", str(DEMO_RECORDING), "--png", str(tmp_path / "e.txt")), "supported: .png"
    )


def test_session_run_creates_runs_dir_like_program(tmp_path: Path) -> None:
    r = run_harness("session", "run", str(DEMO_SESSION), "--chip", SMALL, "--out", "runs/x.h5", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "runs" / "x.h5").is_file() and json.loads(r.stdout)["out"] == "runs/x.h5"
    r = run_harness("session", "run", str(DEMO_SESSION), "--chip", SMALL, "--out", "elsewhere/x.h5", cwd=tmp_path)
    assert r.returncode == 1 and "directory elsewhere does not exist" in r.stderr


def test_runs_dir_is_git_ignored() -> None:
    r = subprocess.run(["git", "check-ignore", "-q", "runs/x.h5"], cwd=ROOT)
    assert r.returncode == 0


# ----------------------------------------------------------------------------- validation before the chip


def test_dry_run_validates_the_chip_uri() -> None:
    for uri, fragment in (("virtual?bogus=1", "unknown parameter 'bogus'"), ("nosuch://x", "unknown chip URI scheme"),
                          ("serial://?baud=fast", "bad value 'fast'"), ("virtual?rows=99999999", "limit")):
        assert_one_line_error(invoke("session", "run", str(DEMO_SESSION), "--dry-run", "--chip", uri), fragment)


def test_evaluate_refuses_bad_arguments_before_work(tmp_path: Path) -> None:
    assert_one_line_error(invoke("evaluate", "--recording", str(DEMO_RECORDING), "--match", "bogus"), "--match 'bogus'")  # no --times
    assert_one_line_error(invoke("evaluate", "--chip", "virtual?bogus=1", "--json"), "unknown parameter")
    assert_one_line_error(invoke("evaluate", "--recording", str(tmp_path / "none.h5")), "does not exist")


def test_huge_virtual_geometry_is_one_line_naming_size_and_limit() -> None:
    r = run_harness("program", "--chip", "virtual?rows=99999999", "--out", "/tmp/never-written.h5")
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "99999999x2048" in lines[0] and "TiB" in lines[0] and "limit" in lines[0], r.stderr
    r = run_harness("emulate", "--pty", "--rows", "99999999", "--duration", "0.1")
    assert r.returncode == 1 and "99999999x2048" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_emulate_link_into_missing_directory_names_it(tmp_path: Path) -> None:
    r = invoke("emulate", "--pty", "--link", str(tmp_path / "nodir" / "tty"), "--duration", "0.1")
    assert_one_line_error(r, f"directory {tmp_path / 'nodir'} does not exist")


# ----------------------------------------------------------------------------- text


def test_one_duration_format() -> None:
    assert [format_duration(t) for t in (25, 61.82, 7.2e4, 86400, 0.35)] == ["25s", "1.03min", "20h", "1d", "0.35s"]
    for t in (25, 3600, 86400, 30 * 86400, 1.5 * 86400):
        assert parse_duration(format_duration(t)) == t
    from harness.sessions.schedule import fmt_duration

    assert fmt_duration(61.82) == "1.03min"


def test_dry_run_numbers_readouts_from_one() -> None:
    r = invoke("session", "run", str(DEMO_SESSION), "--dry-run", "--json")
    rows = json.loads(r.stdout)["timetable"]
    assert [row["readout"] for row in rows] == list(range(1, len(rows) + 1))
    human = invoke("session", "run", str(DEMO_SESSION), "--dry-run").stdout
    first_row = next(line for line in human.splitlines() if "25" in line and "│" in line)
    assert first_row.split("│")[1].strip() == "1"


def test_piped_output_is_not_hard_wrapped(tmp_path: Path) -> None:
    long_dir = tmp_path / ("d" * 90)
    long_dir.mkdir()
    out = long_dir / "s.h5"
    r = run_harness("session", "run", str(DEMO_SESSION), "--chip", SMALL, "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert any(str(out) in line for line in r.stdout.splitlines()), r.stdout


def test_status_of_simulated_clock_session_has_no_wall_clock_due_time(tmp_path: Path) -> None:
    from tests.test_session import interrupted_run

    out = tmp_path / "s.h5"
    interrupted_run(out, 4)
    st = json.loads(invoke("session", "status", str(out), "--json").stdout)
    assert st["simulated_clock"] is True and st["next_due_unix_s"] is None
    text = invoke("session", "status", str(out)).stdout
    assert "next due" in text and "wall clock" not in text and "simulated clock" in text


def test_status_of_program_only_recording_says_no_session(tmp_path: Path) -> None:
    out = tmp_path / "p.h5"
    assert invoke("program", "--chip", SMALL, "--out", str(out)).exit_code == 0
    text = " ".join(invoke("session", "status", str(out)).stdout.split())
    assert "has no session" in text and "complete" not in text


def test_visa_hint_names_the_package_of_the_library() -> None:
    from drivers.visa_backend import visa_package

    assert visa_package("fixtures/pyvisa_sim/pcm_chip.yaml@sim") == "pyvisa-sim"
    assert visa_package("@py") == "pyvisa-py"


def test_garbage_hint_mentions_baud_rate_only_on_serial() -> None:
    from drivers.attempts import garbage_error

    class FakeLink:  # only .description (and .baudrate on serial) is read by the message
        description = "x"

    class SerialLike(FakeLink):
        baudrate = 9600

    assert "baud" not in str(garbage_error("READ", b"zz", FakeLink()))  # type: ignore[arg-type]
    assert "baud rate (now 9600)" in str(garbage_error("READ", b"zz", SerialLike()))  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- progress


def test_plain_progress_lines_with_eta_when_not_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    with progress_bar("chips", total=4, min_interval_s=0.0) as update:
        for i in range(1, 5):
            update(i)
    err = capsys.readouterr()
    lines = err.err.strip().splitlines()
    assert err.out == ""
    assert lines[0].startswith("chips: 1/4 (25%)") and "ETA" not in lines[0]  # no rate yet (issue 22)
    assert lines[-1].startswith("chips: 4/4 (100%)") and len(lines) == 4


def test_plain_progress_is_throttled_but_keeps_first_and_last(capsys: pytest.CaptureFixture[str]) -> None:
    with progress_bar("chips", total=1000, min_interval_s=3600.0) as update:
        for i in range(1, 1001):
            update(i)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and "1/1000" in lines[0] and "1000/1000" in lines[1]


def test_alternating_phases_keep_their_own_clock(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A chip is read, then inferred on, then the next chip is read: each phase's elapsed time
    # runs from its own start (it once restarted at every switch and always said "elapsed 0s").
    import harness.commands.common as common

    clock = {"t": 1000.0}
    monkeypatch.setattr(common.time, "monotonic", lambda: clock["t"])
    with progress_bar("evaluate", total=None, min_interval_s=0.0) as update:
        for chip in range(1, 4):
            clock["t"] += 10.0
            update(chip, description="read", total=3)
            clock["t"] += 5.0
            update(chip, description="infer", total=6)
    lines = capsys.readouterr().err.strip().splitlines()
    reads = [ln for ln in lines if ln.startswith("read:")]
    assert reads[-1].startswith("read: 3/3 (100%), elapsed 40s"), reads  # since the bar opened at t=1000


def test_evaluate_json_run_shows_progress_on_stderr() -> None:
    r = invoke("evaluate", "--recording", str(DEMO_RECORDING), "--json", "--bits", "8")
    assert r.exit_code == 0, r.stderr
    json.loads(r.stdout)
    assert "ETA" in r.stderr and "(100%)" in r.stderr


def test_evaluate_memory_is_flat_in_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Per-chip readouts are dropped after each batch: peak traced (numpy) memory of 12
    chips is that of 4 when batches hold 2 chips (12 times x ~4.7k devices x 4 B = 225 kB
    each: a 400 kB bound). Holding every chip's readouts, 4 -> 12 chips adds ~35 MB."""
    import tracemalloc

    import harness.evaluation.evaluate as ev

    monkeypatch.setattr(ev, "EVAL_BATCH_BYTES", 400_000)
    model = ev.resolve_model("default")
    times = tuple(25.0 * 4**k for k in range(12))
    ev.evaluate_chip("virtual?rows=64&cols=160", model, times_s=times[:1], runs=1, bits=(8,))  # warm caches
    peaks = {}
    for runs in (4, 12):
        tracemalloc.start()
        result = ev.evaluate_chip("virtual?rows=64&cols=160", model, times_s=times, runs=runs, bits=(8,))
        peaks[runs] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert result.accuracy.shape == (1, len(times), runs) and len(set(result.runs_labels)) == runs
    assert peaks[12] < 1.2 * peaks[4], peaks


def test_evaluate_chip_progress_lines_per_chip_in_a_log() -> None:
    r = invoke("evaluate", "--chip", "virtual?rows=64&cols=160", "--runs", "3", "--times", "25s", "--bits", "8", "--json")
    assert r.exit_code == 0, r.stderr
    json.loads(r.stdout)
    assert "1/3 chips (33%)" in r.stderr and "3/3 chips (100%)" in r.stderr and "ETA" in r.stderr


# ----------------------------------------------------------------------------- packaging


def test_torch_is_a_supported_range_documented_in_docs() -> None:
    import tomllib

    from packaging.requirements import Requirement

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    torch_req = next(Requirement(d) for d in deps if Requirement(d).name == "torch")
    spec = torch_req.specifier
    # Any torch a user may have in the range installs beside the harness: the CI wheel, the
    # other local build, the documented lower bound; older ones (no NumPy 2 ABI) do not.
    assert all(spec.contains(v) for v in ("2.13.0+cpu", "2.14.1", "2.3.0")), spec
    assert not spec.contains("2.2.2") and not spec.contains("3.0.0"), spec
    doc = (ROOT / "docs" / "install.md").read_text()
    assert f"torch{spec}" in doc.replace(" ", "") or "torch>=2.3,<3" in doc
    for install in ((ROOT / ".ci" / "run").read_text(), (ROOT / "README.md").read_text()):
        assert "pip install -q torch==2.13.0 && pip install -q -e" in install


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("accel", "--model", "digits-mlp", "--png", "fig.txt"), "--png fig.txt: unsupported format '.txt'"),
        (("data", "kws", "--speech-commands", "nowhere", "--out", "k.txt"), "--out k.txt: unsupported format"),
        (("train", "--model", "digits-mlp", "--data", "digits", "--recipe", "baseline", "--out", "m"), "no file extension"),
        (("calibrate", str(DEMO_RECORDING), "--out", "f.toml", "--png", "p.jpg"), "supported: .png, .svg, .pdf"),
    ],
)
def test_every_command_checks_its_outputs_first(args: tuple[str, ...], fragment: str, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert_one_line_error(invoke(*args), fragment)
    assert list(tmp_path.iterdir()) == []


def test_train_refuses_to_replace_a_model_without_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "m.h5"
    out.write_bytes(b"keep")
    r = invoke("train", "--model", "digits-mlp", "--data", "digits", "--recipe", "baseline", "--out", str(out))
    assert_one_line_error(r, "already exists")
    assert out.read_bytes() == b"keep"


def test_missing_backend_package_is_named_by_its_pypi_name() -> None:
    from harness.chip.registry import backend_unavailable

    msg = backend_unavailable("serial", ModuleNotFoundError("No module named 'serial'", name="serial"))
    assert "pip install pyserial" in msg
    msg = backend_unavailable("visa", ModuleNotFoundError("No module named 'pyvisa_sim'", name="pyvisa_sim"))
    assert "pip install pyvisa-sim" in msg and "pyvisa-py" not in msg
