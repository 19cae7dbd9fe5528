"""``harness calibrate``: round trips (a recording of a chip with known constants is fitted and
the constants come back), the serial-vs-in-process identity, and bad input.

Tolerances. Each law is checked at the x of every level that holds data: the fitted law may
differ from the truth by 4 standard errors of that level's own estimate (the SE comes from
the level's device count, e.g. σ/sqrt(2(n−1)) for a spread; the law pools ~15 levels, so its
own error is smaller still) plus a stated allowance for the estimator's known approximations
(small-noise expansions of ln(1+ε), the ADC step): 2 % for μ_ν, 4 % for Q_s and σ_prog,
6 % for σ_ν (its estimate subtracts the larger estimation variance of each device's slope).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from harness.errors import ConfigError
from harness.recording import create_recording, open_recording
from harness.chip.registry import open_chip
from harness.sessions.schedule import parse_session
from harness.sessions.runner import run_session
from harness.virtual import physics as ph
from harness.calibration.calibrate import calibrate_recording
from harness.calibration.goodness import goodness_of_fit
from harness.calibration.result import CalibrationResult
from harness.virtual.chip import VirtualPCMChip
from harness.calibration.pattern import save_calibration_pattern
from harness.virtual.personality import ClippedLog, Personality, load_personality
from tests.clikit import assert_one_line_error, invoke

ROOT = Path(__file__).resolve().parents[1]
ROWS, COLS = 128, 256  # 16,384 programmed devices and as many RESET partners
ALLOWANCE = {"sigma_prog": 0.04, "nu_mean": 0.02, "nu_std": 0.06, "q_s": 0.04}


def session_text(model: Path, repeats: int = 1, start_s: float = 25.0, points: int = 30) -> str:
    return f"""
[session]
name = "calibration"
[program]
model = "{model}"
[readout]
repeats = {repeats}
[schedule]
kind = "log"
start_s = {start_s}
stop_s = 72000.0
points = {points}
"""


@pytest.fixture(scope="module")
def pattern(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_calibration_pattern(tmp_path_factory.mktemp("pattern") / "pattern.h5", ROWS, COLS, seed=1)


def record(path: Path, chip: VirtualPCMChip | object, text: str) -> Path:
    run_session(parse_session(text), chip, path)  # type: ignore[arg-type]
    return path


def scaled_personality(seed: int) -> tuple[Personality, dict[str, float]]:
    """pcm-90nm with drift, read noise and programming noise scaled by seeded random factors.

    A draw is kept only if σ_prog still exceeds the read noise it contains (Nandakumar 2019; Joshi 2020: the
    published σ_prog holds the verify and t0 reads); otherwise the chip's relaxation would be
    floored at 0 and σ_prog would not be what the chip shows."""
    base = load_personality("pcm-90nm")
    rng = np.random.default_rng(seed)
    x = np.linspace(0.02, 1, 50)
    while True:
        f_drift, f_read, f_prog = rng.uniform(0.6, 1.6), rng.uniform(0.5, 1.3), rng.uniform(0.7, 1.5)
        p = base.with_updates(
            name="scaled",
            nu_mean=ClippedLog(*(f_drift * v for v in (base.nu_mean.ln_coef, base.nu_mean.offset, base.nu_mean.min, base.nu_mean.max))),
            nu_std=ClippedLog(*(f_drift * v for v in (base.nu_std.ln_coef, base.nu_std.offset, base.nu_std.min, base.nu_std.max))),
            q_coef=base.q_coef * f_read, q_max=base.q_max * f_read,
            prog_noise_coeffs_uS=tuple(c * f_prog for c in base.prog_noise_coeffs_uS),
        )
        g_q = x * p.g_max_uS * ph.read_noise_q(x, p)
        var_read = g_q**2 * (ph.read_noise_time_factor(p.t0_s, p) ** 2 + ph.read_noise_time_factor(ph.T_VERIFY_S, p) ** 2)
        if np.all(var_read < 0.8 * ph.programming_noise_std(x, p) ** 2):
            return p, {"drift": f_drift, "read": f_read, "prog": f_prog}


def assert_laws_recovered(result: CalibrationResult, truth: Personality) -> None:
    lv, fit = result.levels, result.personality
    laws = {
        "sigma_prog": (lv.sigma_prog_uS, lv.sigma_prog_se, lambda p: ph.programming_noise_std(lv.x, p)),
        "nu_mean": (lv.nu_mean, lv.nu_mean_se, lambda p: ph.drift_exponent_stats(lv.x, p)[0]),
        "nu_std": (lv.nu_std, lv.nu_std_se, lambda p: ph.drift_exponent_stats(lv.x, p)[1]),
        "q_s": (lv.q_s, lv.q_s_se, lambda p: ph.read_noise_q(lv.x, p)),
    }
    for name, (est, se, law) in laws.items():
        m = np.isfinite(est) & (lv.n_devices >= 100)
        assert m.sum() >= 8, name
        true_v, fit_v = law(truth)[m], law(fit)[m]
        tol = 4 * se[m] + ALLOWANCE[name] * true_v
        worst = np.max(np.abs(fit_v - true_v) / tol)
        assert worst <= 1.0, f"{name}: fit {fit_v} vs truth {true_v} (tolerance {tol})"
        # and the level estimates themselves scatter around the truth as their SEs say
        assert np.median(np.abs(est[m] - true_v) / (se[m] + ALLOWANCE[name] * true_v)) < 2.0, name


def assert_goodness(g: dict, context: object) -> None:
    """Held-out readouts vs the fitted model's predictive distribution: at α = 0.01 and 30
    correlated times (the same devices), a right model fails ~0.3 times; allow 20 %, and no
    time far beyond the critical distance (a wrong law shows up at most times at once)."""
    n = len(g["ks_per_time"])
    assert g["times_passing"] >= 0.8 * n, (context, g["ks_per_time"])
    assert g["ks_max"] < 1.5 * g["ks_critical_alpha_0.01"], (context, g["ks_per_time"])


def test_round_trip_scaled_personality_with_repeats(tmp_path: Path, pattern: Path) -> None:
    truth, factors = scaled_personality(seed=2026)
    toml = tmp_path / "truth.toml"
    toml.write_text(truth.to_toml())
    chip = open_chip(f"virtual?rows={ROWS}&cols={COLS}&seed=5&personality={toml}")
    rec_path = record(tmp_path / "scaled.h5", chip, session_text(pattern, repeats=3))
    with open_recording(rec_path) as rec:
        assert rec.provenance["personality"]["hash"] == truth.content_hash
        result = calibrate_recording(rec, seed=1)
    assert result.read_noise_method == "repeats"
    assert_laws_recovered(result, truth)
    c = result.constant
    # clip floors of the drift laws (reached above x ≈ 0.2 / 0.33): ~10 levels × ~650 devices each
    assert c("drift.nu_mean.min").identified and c("drift.nu_mean.min").value == pytest.approx(truth.nu_mean.min, rel=0.03)
    assert c("drift.nu_std.min").identified and c("drift.nu_std.min").value == pytest.approx(truth.nu_std.min, rel=0.06)
    # unreachable clip ceilings (x < 0.02 is below the ADC's resolution) are flagged, not invented
    assert not c("drift.nu_mean.max").identified and not c("read_noise.q_max").identified
    # RESET level: 16,384 partners, SE ≈ 0.003 µS → 4 SE
    reset = c("reset.g_mean_uS")
    assert abs(reset.value - truth.reset_g_mean_uS) <= 4 * (reset.ci_high - reset.ci_low) / 3.92
    # t0: every readout came after it, so it is reported as not identified (and kept)
    assert not c("t0_s").identified and c("t0_s").value == truth.t0_s
    # goodness of fit: held-out readouts agree with the fitted model's predictive distribution
    assert_goodness(result.goodness, factors)
    # the KS has power: the unscaled default personality does not predict this chip
    with open_recording(rec_path) as rec:
        wrong = goodness_of_fit(rec, "pcm-90nm", seed=1)
        right = goodness_of_fit(rec, result.personality, seed=1)
    assert wrong["times_passing"] <= len(wrong["ks_per_time"]) // 2, wrong["ks_per_time"]
    assert right["times_passing"] >= 0.8 * len(right["ks_per_time"])


def test_round_trip_hermes(tmp_path: Path, pattern: Path) -> None:
    herm = load_personality("hermes-14nm")
    chip = open_chip(f"virtual?rows={ROWS}&cols={COLS}&seed=6&personality=hermes-14nm")
    rec_path = record(tmp_path / "hermes.h5", chip, session_text(pattern, repeats=1))
    with open_recording(rec_path) as rec:
        result = calibrate_recording(rec, seed=2)  # base pcm-90nm: t0, g_max, cubic all from data
    assert result.read_noise_method == "residuals"
    fit = result.personality
    assert fit.g_max_uS == 20.7
    assert len(fit.prog_noise_coeffs_uS) == 4  # BIC picks the cubic
    assert_laws_recovered(result, herm)
    # t0 = 300 s between readouts 296 s and 390 s: resolved to within one readout spacing (×1.32)
    t0 = result.constant("t0_s")
    assert t0.identified and abs(np.log(t0.value / herm.t0_s)) <= np.log(390.0 / 296.0)
    reset = result.constant("reset.g_mean_uS")
    assert abs(reset.value - herm.reset_g_mean_uS) <= 4 * (reset.ci_high - reset.ci_low) / 3.92
    assert_goodness(result.goodness, "hermes")


def test_fitted_file_loads_as_a_chip_and_cli(tmp_path: Path, pattern: Path) -> None:
    rec_path = record(tmp_path / "r.h5", open_chip(f"virtual?rows={ROWS}&cols={COLS}&seed=3"),
                      session_text(pattern, repeats=2, points=12))
    out, png = tmp_path / "fitted.toml", tmp_path / "fit.png"
    result = invoke("calibrate", str(rec_path), "--out", str(out), "--png", str(png), "--json")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["read_noise_method"] == "repeats" and png.stat().st_size > 10_000
    assert {c["name"] for c in summary["constants"]} >= {"t0_s", "read_noise.q_coef", "drift.nu_mean.ln_coef"}
    chip = open_chip(f"virtual?rows=8&cols=8&personality={out}")
    assert chip.personality.content_hash == summary["personality"]["hash"]  # type: ignore[attr-defined]
    again = invoke("calibrate", str(rec_path), "--out", str(out))
    assert_one_line_error(again, "already exists")


def test_serial_recording_calibrates_like_in_process(tmp_path: Path, pattern: Path) -> None:
    from drivers.emulator import Emulator
    from harness.chip.protocol import Geometry

    text = session_text(pattern, repeats=2, points=8)
    emulator = Emulator(VirtualPCMChip(Geometry(rows=ROWS, cols=COLS), seed=9))
    try:
        emulator.start_pty()
        with open_chip(emulator.uri) as chip:
            assert emulator.uri.startswith("serial://")
            record(tmp_path / "serial.h5", chip, text)
    finally:
        emulator.close()
    record(tmp_path / "local.h5", VirtualPCMChip(Geometry(rows=ROWS, cols=COLS), seed=9), text)
    with open_recording(tmp_path / "serial.h5") as a, open_recording(tmp_path / "local.h5") as b:
        np.testing.assert_array_equal(a.readouts(), b.readouts())
        fa, fb = calibrate_recording(a), calibrate_recording(b)
    assert fa.personality.content_hash == fb.personality.content_hash
    assert [c.value for c in fa.constants] == [c.value for c in fb.constants]


# ----------------------------------------------------------------------------- bad input


def small_recording(tmp_path: Path, pattern: Path, points: int = 3) -> Path:
    return record(tmp_path / f"small{points}.h5", open_chip(f"virtual?rows={ROWS}&cols={COLS}&seed=1"),
                  session_text(pattern, points=points))


def test_fewer_than_two_readouts(tmp_path: Path, pattern: Path) -> None:
    text = session_text(pattern).replace('kind = "log"', 'kind = "list"\ntimes_s = [25.0]').replace(
        "start_s = 25.0\nstop_s = 72000.0\npoints = 30\n", "")
    path = record(tmp_path / "one.h5", open_chip(f"virtual?rows={ROWS}&cols={COLS}"), text)
    assert_one_line_error(invoke("calibrate", str(path), "--out", str(tmp_path / "f.toml")), "at least 2")


def test_no_programming_outcome(tmp_path: Path, pattern: Path) -> None:
    src = small_recording(tmp_path, pattern)
    with open_recording(src) as rec:
        layout, g = rec.layout, rec.readouts()
        prov = rec.provenance

    class NoProgramming:  # a programming result that programmed nothing
        cells = np.zeros(0, np.int64)
        target_uS = final_uS = np.zeros(0)
        iterations = np.zeros(0, np.int32)
        converged = np.zeros(0, bool)
        params: ClassVar[dict[str, float]] = {}
        t_start_s = t_end_s = wall_s = 0.0

    path = tmp_path / "noprog.h5"
    with create_recording(path, provenance=prov, layout=layout, programming=NoProgramming()) as w:  # type: ignore[arg-type]
        for i, row in enumerate(g):
            w.append_readout(25.0 * (i + 1), row)
    assert_one_line_error(invoke("calibrate", str(path), "--out", str(tmp_path / "f.toml")), "no programming outcome")


def test_all_devices_one_level(tmp_path: Path) -> None:
    from harness.models.format import save_model
    from harness.models.model import Model

    w = np.where(np.random.default_rng(0).random((16, 32)) < 0.5, -1.0, 1.0)  # every |W| equal
    model = tmp_path / "flat.h5"
    save_model(Model(name="flat", architecture=[{"type": "linear", "name": "fc", "in_features": 32, "out_features": 16,
                                                 "bias": False}], weights={"fc.weight": w}, input_shape=(32,),
                     n_classes=16, dataset="none"), model)
    path = record(tmp_path / "flat-rec.h5", open_chip("virtual?rows=32&cols=32"), session_text(model, points=4))
    assert_one_line_error(invoke("calibrate", str(path), "--out", str(tmp_path / "f.toml")), "at one level")


@pytest.mark.parametrize(("edit", "fragment"), [
    (("t0_s = 20.0", "t0_s = 0.0"), "t0_s = 0 s must be > 0"),
    (("g_std_uS = 0.03", "g_std_uS = -0.03"), "must be >= 0"),
    (("[reset]", "[reset]\nlevel_uS = 1.0"), "unknown key 'level_uS'"),
])
def test_bad_personality_file_on_the_chip_uri(tmp_path: Path, edit: tuple[str, str], fragment: str) -> None:
    text = load_personality("pcm-90nm").to_toml().replace(*edit)
    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(")):
        open_chip(f"virtual?personality={bad}")
    result = invoke("session", "run", str(ROOT / "sessions" / "demo-short.toml"), "--chip", f"virtual?rows=64&cols=160&personality={bad}",
                    "--out", str(tmp_path / "x.h5"))
    assert_one_line_error(result, fragment)


def test_closing_the_loop_accuracy_on_recording_and_fitted_chip_agree(tmp_path: Path) -> None:
    """A chip unlike the default (seeded scaled personality) runs the default model's session;
    calibrate its recording; the model's accuracy vs time on that recording must lie within
    the run-to-run spread of chips made from the fitted personality (3 sample stds of 10
    chips, plus one test sample's worth of accuracy), and the fitted chips' mean must agree
    with chips of the true personality within the spread of a mean of 10."""
    from harness.evaluation.evaluate import evaluate_chip, evaluate_recording
    from harness.calibration.result import save_personality

    truth, _ = scaled_personality(seed=7)
    (tmp_path / "truth.toml").write_text(truth.to_toml())
    text = '[session]\nname = "loop"\n[schedule]\nkind = "log"\nstart_s = 25.0\nstop_s = 86400.0\npoints = 12\n'
    uri = "virtual?rows=64&cols=160"
    rec_path = record(tmp_path / "rec.h5", open_chip(f"{uri}&seed=11&personality={tmp_path / 'truth.toml'}"), text)
    with open_recording(rec_path) as rec:
        result = calibrate_recording(rec)
    fitted = save_personality(result.personality, tmp_path / "fitted.toml")
    times, runs = (25.0, 3600.0, 86400.0), 10
    on_rec = evaluate_recording(rec_path, times_s=times, bits=(6,))
    on_fit = evaluate_chip(f"{uri}&personality={fitted}", times_s=times, runs=runs, bits=(6,), seed=1)
    on_truth = evaluate_chip(f"{uri}&personality={tmp_path / 'truth.toml'}", times_s=times, runs=runs, bits=(6,), seed=2)
    one_sample = 1.0 / on_rec.n_test
    spread = np.maximum(on_fit.std()[0], on_truth.std()[0])
    assert np.all(np.abs(on_rec.mean()[0] - on_fit.mean()[0]) <= 3 * spread + one_sample), (on_rec.mean(), on_fit.mean())
    se_diff = np.sqrt(on_fit.std()[0] ** 2 + on_truth.std()[0] ** 2) / np.sqrt(runs)
    assert np.all(np.abs(on_fit.mean()[0] - on_truth.mean()[0]) <= 3 * se_diff + one_sample)


# ----------------------------------------------------------------------------- issue 18: flags, --base recorded


def test_unreached_clip_bounds_say_where_their_value_comes_from() -> None:
    """A clip bound the data never reach is flagged as not identified, and its note tells the
    truth: 'base value' only when the value is the base's; otherwise (the base would cut the
    fitted line) the bound sits at the line's end and the note says so."""
    from harness.calibration.fits import fit_clipped_log

    ln_x = np.linspace(-3.0, -1.0, 12)
    y = -0.0125 * ln_x - 0.0059  # a falling line, 0.0316 .. 0.0066, no clip anywhere
    se = np.full_like(y, 1e-4)
    rng = np.random.default_rng(0)
    for base_min, from_base in ((0.004, True), (0.02, False)):
        base = ClippedLog(ln_coef=-0.0125, offset=-0.0059, min=base_min, max=0.045)
        law, cis = fit_clipped_log(ln_x, y, se, base, 50, rng)
        lo, hi, ident, note = cis["min"]
        assert not ident
        assert bool(law.min == base_min) == from_base, (law.min, base_min)
        if from_base:
            assert note.endswith("base value")
        else:
            assert "line's end" in note and not note.endswith("base value")
            assert law.min == pytest.approx(float(y.min()), rel=1e-3)  # does not cut the data
        assert not cis["max"][2] and cis["max"][3].endswith("base value")


def test_a_law_flat_over_the_observed_range_does_not_claim_its_line() -> None:
    """μ_ν clipped at its floor over all but two levels (a high floor): the levels are flat,
    the line's slope and offset are not identified, and the flags say so (issue 18: a slope of
    ~0 with a tiny interval was reported as identified, far from the truth)."""
    from harness.calibration.fits import fit_clipped_log

    ln_x = np.linspace(-3.0, 0.0, 15)
    truth = ClippedLog(ln_coef=-0.0163, offset=0.0186, min=0.062, max=0.1)
    y = np.clip(truth.ln_coef * ln_x + truth.offset, truth.min, truth.max)  # on the line only below x = 0.07
    se = np.full_like(y, 4e-4)
    y = y + se * np.random.default_rng(1).standard_normal(y.size)
    _, cis = fit_clipped_log(ln_x, y, se, load_personality("pcm-90nm").nu_mean, 50, np.random.default_rng(0))
    assert not cis["ln_coef"][2] and not cis["offset"][2], cis
    assert "not identified" in cis["ln_coef"][3]
    # a law with a clear slope over the range keeps its line
    y2 = truth.ln_coef * ln_x + 0.02 + se * np.random.default_rng(2).standard_normal(y.size)
    _, cis2 = fit_clipped_log(ln_x, y2, se, load_personality("pcm-90nm").nu_mean, 50, np.random.default_rng(0))
    assert cis2["ln_coef"][2] and cis2["offset"][2]


def test_base_recorded_starts_from_the_recorded_personality(tmp_path: Path) -> None:
    pattern = save_calibration_pattern(tmp_path / "pattern.h5", 64, 128, seed=2)
    truth, _ = scaled_personality(seed=3)
    toml = tmp_path / "truth.toml"
    toml.write_text(truth.with_updates(t_read_s=1e-7).to_toml())  # a constant the data cannot identify
    rec_path = record(tmp_path / "r.h5", open_chip(f"virtual?rows=64&cols=128&seed=4&personality={toml}"),
                      session_text(pattern, repeats=2, points=8))
    with open_recording(rec_path) as rec:
        result = calibrate_recording(rec, base="recorded", bootstrap=0)
        default = calibrate_recording(rec, bootstrap=0)
    assert result.base.content_hash == load_personality(toml).content_hash
    assert result.personality.t_read_s == 1e-7 and default.personality.t_read_s == load_personality("pcm-90nm").t_read_s
    # the file changed since the recording: refused in one line, not silently replaced
    toml.write_text(truth.to_toml())
    out = invoke("calibrate", str(rec_path), "--out", str(tmp_path / "f.toml"), "--base", "recorded", "--bootstrap", "0")
    assert_one_line_error(out, "content hash")
