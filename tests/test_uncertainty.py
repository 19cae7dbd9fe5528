"""95 % intervals of accuracies and paired model differences (harness.evaluation.uncertainty),
and how evaluate reports them (table, JSON, several models on the same chips)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from clikit import assert_one_line_error, invoke
from harness.evaluation.evaluate import evaluate_recording
from harness.evaluation.uncertainty import accuracy_interval, paired_difference, wilson_interval
from harness.models.format import noise_aware_model_path

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "recordings" / "demo.h5"
SMALL_CHIP = "virtual?rows=64&cols=160"


@pytest.mark.parametrize(
    ("k", "n", "lo", "hi"),
    # Newcombe 1998 (Statistics in Medicine 17:857), Table II, method 3 (Wilson score, no
    # continuity correction), to the 4 decimals printed there
    [(81, 263, 0.2553, 0.3662), (15, 148, 0.0624, 0.1605), (0, 20, 0.0, 0.1611), (1, 29, 0.0061, 0.1718)],
)
def test_wilson_interval_matches_published_values(k: int, n: int, lo: float, hi: float) -> None:
    got = wilson_interval(k / n, n)
    assert float(got[0]) == pytest.approx(lo, abs=6e-5) and float(got[1]) == pytest.approx(hi, abs=6e-5)


def test_one_chip_interval_is_the_binomial_wilson_interval() -> None:
    rng = np.random.default_rng(0)
    for n, p in ((960, 0.9), (360, 0.975), (50, 0.5), (40, 1.0)):
        correct = rng.random((1, n)) < p
        lo, hi = accuracy_interval(correct)
        w_lo, w_hi = wilson_interval(correct.sum() / n, n)
        assert float(lo) == pytest.approx(float(w_lo), abs=1e-12) and float(hi) == pytest.approx(float(w_hi), abs=1e-12)


def test_one_recorded_chip_reports_the_wilson_interval() -> None:
    result = evaluate_recording(FIXTURE, times_s=[25.0], bits=[8, 4])
    assert result.runs == 1 and result.correct is not None
    for i in range(2):
        k = int(result.correct[i, 0, 0].sum())
        lo, hi = wilson_interval(k / result.n_test, result.n_test)
        assert result.interval()[i, 0] == pytest.approx([float(lo), float(hi)], abs=1e-12)
    cell = result.to_dict()["accuracy"]["4"]["25s"]
    assert cell["ci95"] == pytest.approx([float(x) for x in result.interval()[1, 0]])


def test_interval_covers_the_population_accuracy_across_chips_and_examples() -> None:
    """Chips with their own skill and examples with their own difficulty (a logistic model):
    over 300 simulated evaluations of 5 chips × 400 examples the interval contains the
    population accuracy (chips and examples both drawn anew) at least 90 % of the time (the
    method is conservative: nominal 95 %; a 300-trial binomial at 95 % falls below 90 % with
    probability ~1e-4). Without the chip term it would cover far less: checked too."""
    rng = np.random.default_rng(3)
    # population accuracy by Monte Carlo over many chips and examples
    chips_pop = rng.normal(0.0, 0.6, 4000)
    ex_pop = rng.normal(2.0, 1.5, 4000)
    truth = float(np.mean(1 / (1 + np.exp(-(chips_pop[:, None] + ex_pop[None, :])))))
    hits = hits_examples_only = 0
    trials = 300
    for _ in range(trials):
        c = rng.normal(0.0, 0.6, 5)
        e = rng.normal(2.0, 1.5, 400)
        p = 1 / (1 + np.exp(-(c[:, None] + e[None, :])))
        correct = rng.random(p.shape) < p
        lo, hi = accuracy_interval(correct)
        hits += lo <= truth <= hi
        w_lo, w_hi = wilson_interval(correct.mean(), correct.size)  # pooled, chips ignored
        hits_examples_only += w_lo <= truth <= w_hi
    assert hits / trials >= 0.90
    assert hits_examples_only / trials < 0.80


def test_paired_difference_of_a_model_with_itself_is_exactly_zero() -> None:
    x = np.random.default_rng(1).random((5, 960)) < 0.8
    assert paired_difference(x, x) == (0.0, 0.0, 0.0)


def test_paired_difference_finds_a_known_improvement() -> None:
    rng = np.random.default_rng(2)
    a = rng.random((4, 960)) < 0.8
    b = a.copy()
    b[:, :60] = True  # b also gets the first 60 examples right on every chip
    d, lo, hi = paired_difference(a, b)
    assert d == pytest.approx((b.mean() - a.mean()))
    assert 0.0 < lo < d < hi  # excludes 0: the pairing removes the shared sampling noise


def test_cli_several_models_on_the_same_chips(tmp_path: Path) -> None:
    png = tmp_path / "acc.png"
    args = ("evaluate", "--chip", SMALL_CHIP + "&seed=5", "--runs", "2", "--times", "25s,1d", "--bits", "8,4")
    same = json.loads(invoke(*args, "--model", "digits_mlp", "--model", "digits_mlp", "--json").stdout)
    assert [m["model"] for m in same["models"]] == ["digits_mlp", "digits_mlp"]
    for row in same["differences"][0]["difference"].values():
        for cell in row.values():
            assert cell == {"mean": 0.0, "ci95": [0.0, 0.0]}
    out = invoke(*args, "--model", "digits_mlp", "--model", str(noise_aware_model_path()), "--png", str(png))
    assert out.exit_code == 0, out.stderr
    assert "paired accuracy difference" in out.stdout and "digits_mlp_noise_aware − digits_mlp" in out.stdout
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_cli_one_run_shows_no_zero_spread_and_names_the_ranges() -> None:
    out = invoke("evaluate", "--recording", str(FIXTURE), "--times", "25s", "--bits", "4", "--ranges", "percentile")
    assert out.exit_code == 0, out.stderr
    assert "± 0.00" not in out.stdout and "95 % Wilson interval" in " ".join(out.stdout.split())  # title may wrap
    assert "DAC/ADC ranges: percentile → percentile (512 training examples, seed 0)" in out.stdout
    doc = json.loads(invoke("evaluate", "--recording", str(FIXTURE), "--times", "25s", "--bits", "4", "--json").stdout)
    assert doc["ranges"]["policy"] == "auto" and doc["ranges"]["source"] == "trained"
    assert set(doc["ranges"]["bits"]["4"]) == {"source", "dac_range", "adc_norm_range", "adc_range"}
    assert_one_line_error(invoke("evaluate", "--recording", str(FIXTURE), "--ranges", "best"), "unknown --ranges")
    assert_one_line_error(
        invoke("evaluate", "--recording", str(FIXTURE), "--model", "digits_mlp", "--model", "digits_mlp"), "need --chip"
    )


def test_report_shows_intervals_ranges_and_paired_differences(tmp_path: Path) -> None:
    from harness.evaluation.paired import paired_differences
    from harness.report import build_report

    result = evaluate_recording(FIXTURE, times_s=[25.0, 3600.0], bits=[8, 4])
    single = tmp_path / "one.json"
    single.write_text(json.dumps(result.to_dict()))
    pair = tmp_path / "pair.json"
    pair.write_text(json.dumps({"models": [result.to_dict()] * 2, "differences": [paired_differences(result, result)]}))
    html = build_report([single, pair])
    lo, hi = result.interval()[1, 0] * 100
    assert f"[{lo:.1f}, {hi:.1f}]" in html  # the 4-bit, 25 s interval in the table
    assert "± 0.00" not in html  # one run: no spread column
    assert "DAC/ADC ranges: policy auto → trained" in html
    assert "paired accuracy difference" in html and "+0.00 [+0.00, +0.00]" in html
