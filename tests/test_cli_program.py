"""``harness program`` through the real CLI (typer CliRunner)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from clikit import assert_one_line_error, invoke
from harness.recording import open_recording

SMALL_CHIP = "virtual?rows=64&cols=256"




def test_program_json_summary_and_recording(tmp_path: Path) -> None:
    out = tmp_path / "p.h5"
    result = invoke("program", "--chip", SMALL_CHIP, "--seed", "7", "--out", str(out), "--json")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)  # stdout holds exactly one JSON object
    for key in ("devices_programmed", "converged_fraction", "error_std_uS", "wall_s"):
        assert key in summary
    assert summary["devices_programmed"] == 2 * (64 * 64 + 64 * 10)
    assert summary["converged_fraction"] >= 0.99
    assert 0 < summary["error_std_uS"] < 0.5
    with open_recording(out) as rec:
        prov = rec.provenance
        assert prov["chip_uri"] == SMALL_CHIP + "&seed=7"
        assert prov["seed"] == 7
        assert "numpy" in prov["packages"] and prov["harness_version"]
        assert rec.programming.converged.mean() == pytest.approx(summary["converged_fraction"])
        assert rec.layout.n_devices == summary["devices_programmed"]


def test_same_seed_same_programming(tmp_path: Path) -> None:
    a = json.loads(invoke("program", "--chip", SMALL_CHIP, "--seed", "3", "--out", str(tmp_path / "a.h5"), "--json").stdout)
    b = json.loads(invoke("program", "--chip", SMALL_CHIP, "--seed", "3", "--out", str(tmp_path / "b.h5"), "--json").stdout)
    assert a["error_std_uS"] == b["error_std_uS"] and a["levels"] == b["levels"]
    with open_recording(tmp_path / "a.h5") as ra, open_recording(tmp_path / "b.h5") as rb:
        np.testing.assert_array_equal(ra.programming.final_uS, rb.programming.final_uS)


def test_human_summary_names_the_figures(tmp_path: Path) -> None:
    result = invoke("program", "--chip", SMALL_CHIP, "--out", str(tmp_path / "h.h5"))
    assert result.exit_code == 0
    assert "devices programmed" in result.stdout and "error std" in result.stdout and "wall time" in result.stdout


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_existing_output_is_never_overwritten(tmp_path: Path) -> None:
    out = tmp_path / "keep.h5"
    out.write_bytes(b"precious")
    before = sha(out)
    result = invoke("program", "--chip", SMALL_CHIP, "--out", str(out))
    assert_one_line_error(result, "already exists")
    assert sha(out) == before


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--chip", "bogus://x"], "unknown chip URI scheme 'bogus'"),
        (["--chip", "virtual?sede=1"], "unknown parameter 'sede'"),
        (["--chip", "virtual?seed=2", "--seed", "3"], "contradicts"),
        (["--chip", "virtual?rows=8&cols=8"], "needs a 64x128 block"),
        (["--gain", "5"], "gain 5.0 must be in (0, 2]"),
        (["--tolerance", "-1"], "tolerance"),
    ],
)
def test_bad_input_gives_one_line_and_nonzero_exit(tmp_path: Path, args: list[str], fragment: str) -> None:
    out = tmp_path / "x.h5"
    result = invoke("program", *args, "--out", str(out))
    assert_one_line_error(result, fragment)
    assert not out.exists()


def test_missing_and_corrupt_model_files(tmp_path: Path) -> None:
    result = invoke("program", "--chip", SMALL_CHIP, "--model", str(tmp_path / "nope.h5"), "--out", str(tmp_path / "o.h5"))
    assert_one_line_error(result, "nope.h5")
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"\x89HDF\r\n\x1a\n" + b"garbage" * 50)
    result = invoke("program", "--chip", SMALL_CHIP, "--model", str(bad), "--out", str(tmp_path / "o.h5"))
    assert_one_line_error(result, "bad.h5")
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = np.arange(3)
    result = invoke("program", "--chip", SMALL_CHIP, "--model", str(foreign), "--out", str(tmp_path / "o.h5"))
    assert_one_line_error(result, "foreign.h5")
    assert not (tmp_path / "o.h5").exists()
