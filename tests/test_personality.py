"""Chip personalities: the shipped files, bit-identity with the pre-personality chip, and
strict parsing (unknown keys and non-physical values are one-line errors)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from harness.chip.protocol import Geometry
from harness.errors import ConfigError
from harness.chip.registry import open_chip
from harness.virtual import physics as ph
from harness.virtual.chip import VirtualPCMChip
from harness.virtual.personality import (
    load_personality,
    parse_personality,
    shipped_personalities,
)

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "fixtures" / "golden"


def _golden_module():  # the same call sequence that made the golden file
    spec = importlib.util.spec_from_file_location("golden", GOLDEN / "make_virtual_chip_golden.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_shipped_personalities() -> None:
    assert {"pcm-90nm", "hermes-14nm"} <= set(shipped_personalities())
    p90 = load_personality("pcm-90nm")
    assert p90.g_max_uS == 25.0 and p90.t0_s == 20.0 and p90.t_read_s == 250e-9
    assert p90.prog_noise_coeffs_uS == (0.26348, 1.9650, -1.1731)
    herm = load_personality("hermes-14nm")  # aihwkit HermesNoiseModel; Khaddam-Aljameh 2021
    assert herm.g_max_uS == 20.7 and herm.t0_s == 300.0 and herm.t_read_s == 512e-9
    assert herm.prog_noise_coeffs_uS == (0.16603222, 4.71806468, -8.48101252, 4.68961419)
    assert p90.content_hash != herm.content_hash
    # the cubic: σ_prog at x = 1 is the sum of the coefficients
    assert float(ph.programming_noise_std(1.0, herm)) == pytest.approx(sum(herm.prog_noise_coeffs_uS), rel=1e-12)


def test_pcm90_is_bit_identical_to_the_pinned_trace(tmp_path: Path) -> None:
    """pcm-90nm replays the pinned trace bit for bit (see the golden script for what it pins)."""
    golden = np.load(GOLDEN / "virtual_chip_pcm90.npz")
    mod = _golden_module()
    out = mod.trace(VirtualPCMChip(Geometry(rows=8, cols=64), seed=11, personality="pcm-90nm"))
    out.update(mod.session_trace(tmp_path))
    assert set(out) == set(golden.files)
    for key in golden.files:
        np.testing.assert_array_equal(out[key], golden[key], err_msg=key)


def test_toml_round_trip_and_hash() -> None:
    p = load_personality("hermes-14nm")
    again = parse_personality(p.to_toml())
    assert again == p and again.content_hash == p.content_hash
    renamed = parse_personality(p.to_toml().replace('name = "hermes-14nm"', 'name = "other"'))
    assert renamed.content_hash == p.content_hash  # the hash is of the constants only


def test_uri_selects_personality_and_identity_names_it(tmp_path: Path) -> None:
    chip = open_chip("virtual?rows=4&cols=8&personality=hermes-14nm")
    assert isinstance(chip, VirtualPCMChip)
    assert chip.geometry.g_max_uS == 20.7
    assert "hermes-14nm@" in chip.identity
    f = tmp_path / "mine.toml"
    f.write_text(load_personality("pcm-90nm").with_updates(name="mine", t0_s=40.0).to_toml())
    chip2 = open_chip(f"virtual?rows=4&cols=8&personality={f}")
    assert chip2.personality.t0_s == 40.0 and "mine@" in chip2.identity  # type: ignore[attr-defined]


def test_hermes_physics_uses_its_constants() -> None:
    herm = load_personality("hermes-14nm")
    chip = VirtualPCMChip(Geometry(rows=4, cols=8, g_max_uS=20.7), seed=1, personality=herm)
    cells = np.arange(32)
    chip.reset(cells)
    chip.set_pulse(cells, np.full(32, 0.5))
    t = chip.last_pulse_s(cells)[0]
    g_t0 = chip.conductance_uS(cells, t + 300.0)
    # no drift before t0 = 300 s (relaxation complete at t0): G(300 s) == G(299.999... s) up to relaxation
    g_late = chip.conductance_uS(cells, t + 3000.0)
    nu = chip.drift_exponents(cells)
    np.testing.assert_allclose(g_late, g_t0 * 10.0 ** (-nu), rtol=1e-12)


BAD = [
    ("[drift]\nt0_s = 20.0\n", "[drift]\nt0_s = 20.0\nextra = 1\n", "unknown key 'extra' in [drift]"),
    ("[drift]\nt0_s = 20.0", "[drift]\nt0_s = 0.0", "t0_s = 0 s must be > 0"),
    ("[drift]\nt0_s = 20.0", "[drift]\nt0_s = -5.0", "t0_s = -5 s must be > 0"),
    ("g_std_uS = 0.03", "g_std_uS = -0.03", "must be >= 0"),
    ("coeffs_uS = [0.26348, 1.9650, -1.1731]", "coeffs_uS = [-0.26348, 1.9650, -1.1731]", "noise must be >= 0"),
    ("q_coef = 0.0088", "q_coef = -0.0088", "must be >= 0"),
    ("[adc]", "[adcs]", "unknown table [adcs]"),
    ("set_c2c_rel = 0.3\n", "", "missing key 'set_c2c_rel' in [pulse]"),
    ("bits = 8", "bits = 8.0", "must be an integer"),
]


@pytest.mark.parametrize(("old", "new", "message"), BAD)
def test_bad_personality_is_one_line_config_error(old: str, new: str, message: str) -> None:
    text = (ROOT / "harness/virtual/personalities/pcm-90nm.toml").read_text()
    assert old in text
    with pytest.raises(ConfigError) as exc:
        parse_personality(text.replace(old, new, 1), source="bad.toml")
    assert message in str(exc.value) and "\n" not in str(exc.value) and "bad.toml" in str(exc.value)


def test_unknown_personality_name() -> None:
    with pytest.raises(ConfigError, match="no personality 'pcm-7nm'"):
        open_chip("virtual?rows=4&cols=8&personality=pcm-7nm")


def test_session_provenance_names_the_personality(tmp_path: Path) -> None:
    from harness.recording import open_recording
    from harness.sessions.schedule import load_session
    from harness.sessions.runner import run_session

    spec = load_session(ROOT / "sessions" / "demo-short.toml")
    chip = open_chip("virtual?rows=64&cols=160&personality=hermes-14nm")
    run_session(spec, chip, tmp_path / "h.h5")
    with open_recording(tmp_path / "h.h5") as rec:
        herm = load_personality("hermes-14nm")
        assert rec.provenance["personality"] == {"name": "hermes-14nm", "hash": herm.content_hash}
        assert rec.geometry.g_max_uS == 20.7


def test_reads_in_blocks_replay_the_pinned_trace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A read is evaluated in blocks of READ_BLOCK cells with the draws of one sequential
    stream: any block size (here 7, so every read of the trace spans many blocks, the last one
    partial) gives the pinned trace bit for bit."""
    import harness.virtual.chip as chip_mod

    monkeypatch.setattr(chip_mod, "READ_BLOCK", 7)
    golden = np.load(GOLDEN / "virtual_chip_pcm90.npz")
    out = _golden_module().trace(VirtualPCMChip(Geometry(rows=8, cols=64), seed=11, personality="pcm-90nm"))
    for key in out:
        np.testing.assert_array_equal(out[key], golden[key], err_msg=key)
