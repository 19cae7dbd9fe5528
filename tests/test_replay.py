"""The replay backend and ``harness replay``, on the shipped fixture and on fresh recordings."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from harness.chip.protocol import Chip, Geometry
from harness.cli import app
from harness.errors import ConfigError, ReplayError, SafetyLimitError
from harness.recording import create_recording, open_recording, reading
from harness.chip.registry import open_chip
from harness.sessions.replay import ReplayChip, summarize_recording
from harness.sessions.schedule import load_session
from harness.sessions.runner import run_session
from harness.virtual import physics as ph
from harness.virtual.chip import VirtualPCMChip
from harness.virtual.personality import load_personality

P90 = load_personality("pcm-90nm")

REPO = Path(__file__).resolve().parent.parent
FIXTURE = REPO / "fixtures" / "recordings" / "demo.h5"
runner = CliRunner()


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_fixture_is_small_and_complete() -> None:
    assert FIXTURE.stat().st_size < 1 << 20
    with open_recording(FIXTURE) as rec:
        assert rec.n_readouts == 10 and rec.is_complete and rec.session_name == "demo-short"
        assert rec.provenance["chip_uri"] == "virtual?rows=64&cols=160&seed=42"


def test_replay_chip_returns_the_recorded_readouts_at_their_times() -> None:
    before = sha(FIXTURE)
    with reading(FIXTURE) as rec:
        expected = rec.readouts()
        sched = rec.extra("t_scheduled_s")
        cells = rec.readout_cells
    chip = open_chip(f"replay:{FIXTURE}")
    try:
        assert isinstance(chip, Chip) and isinstance(chip, ReplayChip)
        assert chip.geometry == Geometry(rows=64, cols=160)
        assert "VirtualPCMChip" in chip.identity
        t_end = chip.now()
        for i, t in enumerate(sched):
            chip.wait_until(t_end + t)
            got = chip.read(cells)
            assert np.array_equal(got, expected[i])  # bit-exact
            # a subset, in any order, at the same time: the same readout
            sub = cells[::-7]
            assert np.array_equal(chip.read(sub), expected[i][::-7])
    finally:
        chip.close()
    assert sha(FIXTURE) == before


class CapturingChip(VirtualPCMChip):
    """The virtual chip, keeping a copy of everything it returns from a read."""

    def __init__(self, *a, **k):  # type: ignore[no-untyped-def]
        super().__init__(*a, **k)
        self.returned: list[np.ndarray] = []

    def read(self, cells):  # type: ignore[no-untyped-def]
        g = super().read(cells)
        self.returned.append(g.copy())
        return g

    def read_codes(self, cells):  # type: ignore[no-untyped-def]
        codes = super().read_codes(cells)
        self.returned.append(self.geometry.codes_to_uS(codes))  # what read() would have returned
        return codes


def test_replay_equals_live(tmp_path: Path) -> None:
    """What the live chip returned during a session is what the replay chip returns, bit for bit."""
    out = tmp_path / "live.h5"
    spec = load_session(REPO / "sessions" / "demo-short.toml")
    chip = CapturingChip(Geometry(rows=64, cols=160), seed=9)
    run_session(spec, chip, out)
    live = chip.returned[-spec.schedule.n_readouts:]  # the session's reads come after programming's
    with open_chip(f"replay:{out}") as rp:
        t_end = rp.now()
        cells = rp.recording.readout_cells
        for t, g in zip(spec.schedule.times_s, live):
            rp.wait_until(t_end + t)
            assert np.array_equal(rp.read(cells), g)


def test_between_recorded_times_exact_mode_refuses_and_nearest_mode_holds() -> None:
    with open_chip(f"replay:{FIXTURE}") as chip:
        with pytest.raises(ReplayError, match="no readout recorded at t = 10"):
            chip.wait_until(chip.now() + 10.0)
            chip.read([0, 1])
    with open_chip(f"replay:{FIXTURE}") as exact:
        t_end = exact.now()
        exact.wait_until(t_end + 25.0 + 5e-4)  # within the default 1 ms tolerance
        a = exact.read(exact.recording.readout_cells)
        exact.wait_until(t_end + 30.0)
        with pytest.raises(ReplayError, match="nearest recorded: 25s, 1.03min"):
            exact.read(exact.recording.readout_cells)
    with open_chip(f"replay:{FIXTURE}?match=nearest") as near, reading(FIXTURE) as rec:
        t_end = near.now()
        near.wait_until(t_end + 30.0)
        assert np.array_equal(near.read(rec.readout_cells), a)
        near.wait_until(t_end + 1e9)
        assert np.array_equal(near.read(rec.readout_cells), rec.readout(-1))


def test_replay_refuses_pulses_unrecorded_cells_and_bad_uris(tmp_path: Path) -> None:
    with open_chip(f"replay:{FIXTURE}") as chip:
        with pytest.raises(ReplayError, match="read-only"):
            chip.reset([0, 1])
        with pytest.raises(ReplayError, match="read-only"):
            chip.set_pulse([0, 1], 0.5)
        with pytest.raises(SafetyLimitError):  # the seam's safety check comes first
            chip.set_pulse([0], 2.0)
        unread = np.setdiff1d(np.arange(chip.geometry.n_cells), chip.recording.readout_cells)
        chip.wait_until(chip.now() + 25.0)
        with pytest.raises(ReplayError, match=f"cell {unread[0]} was not read"):
            chip.read(unread[:3])
    with pytest.raises(ConfigError, match="match"):
        open_chip(f"replay:{FIXTURE}?match=linear")
    with pytest.raises(ConfigError, match="unknown parameter"):
        open_chip(f"replay:{FIXTURE}?speed=2")
    with pytest.raises(ConfigError, match="needs a file"):
        open_chip("replay:")
    with pytest.raises(ReplayError, match="does not exist"):
        open_chip(f"replay:{tmp_path / 'none.h5'}")


def test_replay_of_a_recording_without_readouts(tmp_path: Path) -> None:
    with reading(FIXTURE) as rec:
        layout = rec.layout
        prog = rec.programming
    empty = tmp_path / "empty.h5"
    create_recording(empty, provenance={"chip_uri": "x"}, layout=layout, programming=prog).close()
    with open_chip(f"replay:{empty}") as chip:
        with pytest.raises(ReplayError, match="holds no readouts"):
            chip.read([int(layout.cells[0])])


def test_summary_matches_the_drift_law() -> None:
    """Per level above 5 µS: mean ν of the published model (Nandakumar 2019; Joshi 2020) and the ratio it implies."""
    with reading(FIXTURE) as rec:
        s = summarize_recording(rec)
    t = np.asarray(s["t_s"])
    levels = {(lv["lo_uS"], lv["hi_uS"]): lv for lv in s["levels"]}
    assert levels[(0.0, 0.5)]["reset_level"] and levels[(0.0, 0.5)]["nu_fit"] is None
    for key in ((5.0, 10.0), (10.0, 15.0)):
        lv = levels[key]
        assert lv["n"] >= 300
        assert lv["mean_ratio"][0] == 1.0 and lv["nu_eff"][0] is None
        x = lv["target_mean_uS"] / P90.g_max_uS
        nu_mean = float(ph.drift_exponent_stats(x, P90)[0])
        # ν is drawn per device with σ_ν <= 0.008 at these levels; with >= 300 devices the
        # level mean is known to ~0.0005, read noise and ADC steps add ~0.002 to the fit
        assert lv["nu_fit"] == pytest.approx(nu_mean, abs=0.004)
        expected_ratio = (t[-1] / t[0]) ** -nu_mean
        assert lv["mean_ratio"][-1] == pytest.approx(expected_ratio, abs=0.02)
        assert all(b < a for a, b in zip(lv["mean_ratio"], lv["mean_ratio"][1:]))
        assert 0 < lv["ratio_std"][-1] < 0.2


def test_replay_cli_json_and_png(tmp_path: Path) -> None:
    png = tmp_path / "plot.png"
    r = runner.invoke(app, ["replay", str(FIXTURE), "--json", "--png", str(png)], catch_exceptions=False)
    assert r.exit_code == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["readouts_done"] == 10 and len(s["t_s"]) == 10 and s["png"] == str(png)
    assert {"mean_ratio", "ratio_std", "nu_eff", "nu_fit", "std_uS"} <= set(s["levels"][1])
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000


def test_replay_cli_human_output() -> None:
    r = runner.invoke(app, ["replay", str(FIXTURE)], catch_exceptions=False)
    assert r.exit_code == 0, r.stderr
    text = " ".join(r.stdout.split())
    assert "per target level" in text and "ν fit" in text and "RESET" in text and "1d" in text


def test_replay_cli_bad_png_path_is_one_line(tmp_path: Path) -> None:
    r = runner.invoke(app, ["replay", str(FIXTURE), "--png", str(tmp_path / "no" / "p.png")], catch_exceptions=False)
    assert r.exit_code == 1 and r.stderr.startswith("error: ") and len(r.stderr.strip().splitlines()) == 1
