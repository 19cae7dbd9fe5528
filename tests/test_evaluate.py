"""Evaluation from live chips and recordings: same numbers from both, reproducibility, time
matching, the effect of noise-aware training and GDC, and the ``harness evaluate`` CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from clikit import assert_one_line_error, invoke
from harness.errors import ConfigError, EvaluationError
from harness.evaluation.evaluate import evaluate_chip, evaluate_recording
from harness.evaluation.evaluator import evaluate_readouts
from harness.evaluation.live import read_chips, virtual_chip_uris
from harness.evaluation.readouts import match_times
from harness.evaluation.result import EvaluationResult
from harness.models.format import default_model_path, load_model, noise_aware_model_path
from harness.recording import open_recording
from harness.units import DAY_S, MONTH_S, YEAR_S, format_duration, parse_duration, parse_durations

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "recordings" / "demo.h5"
#: The smallest array the default digits MLP fits on.
SMALL_CHIP = "virtual?rows=64&cols=160"




# ----------------------------------------------------------------------------- units


def test_durations() -> None:
    assert parse_durations("25s,1h,1d,1mo,1y") == (25.0, 3600.0, DAY_S, MONTH_S, YEAR_S)
    assert parse_duration("90") == 90.0 and parse_duration("1.5h") == 5400.0 and parse_duration("2min") == 120.0
    assert MONTH_S == 30 * DAY_S and YEAR_S == 365 * DAY_S
    assert [format_duration(t) for t in (25, 3600, DAY_S, MONTH_S, YEAR_S, 5400)] == ["25s", "1h", "1d", "1mo", "1y", "1.5h"]
    for label in ("25s", "1h", "1d", "1mo", "1y", "1.5h", "2w"):
        assert format_duration(parse_duration(label)) == label
    for bad, fragment in (("1m", "ambiguous"), ("1q", "unknown time unit"), ("-1s", "negative"), ("x", "cannot read")):
        with pytest.raises(ConfigError, match=fragment):
            parse_duration(bad)
    with pytest.raises(ConfigError, match="no times"):
        parse_durations(" , ")


# ----------------------------------------------------------------------------- sources


def test_recording_equals_live_chip_that_made_it() -> None:
    """The fixture was recorded by a seeded virtual chip: re-running that chip live with the
    same model, programming parameters and times gives bit-identical readouts and tables."""
    with open_recording(FIXTURE) as rec:
        uri = str(rec.provenance["chip_uri"])
        params = rec.session.program.programming_params()  # type: ignore[union-attr]
        times = tuple(float(t) for t in rec.extra("t_scheduled_s"))
    from_rec = evaluate_recording(FIXTURE)
    live = evaluate_chip(uri, default_model_path(), times_s=times, runs=1, params=params)
    assert from_rec.times_s == times and live.times_s == times
    np.testing.assert_array_equal(from_rec.read_times_s, live.read_times_s)
    np.testing.assert_array_equal(from_rec.accuracy, live.accuracy)
    assert from_rec.to_dict()["accuracy"] == live.to_dict()["accuracy"]
    assert from_rec.digital_accuracy == live.digital_accuracy


def test_same_seed_same_table_other_seed_other_table() -> None:
    kwargs = {"times_s": (25.0, YEAR_S), "runs": 3, "bits": (8, 4)}
    a = evaluate_chip(SMALL_CHIP + "&seed=5", **kwargs)  # type: ignore[arg-type]
    b = evaluate_chip(SMALL_CHIP + "&seed=5", **kwargs)  # type: ignore[arg-type]
    c = evaluate_chip(SMALL_CHIP + "&seed=6", **kwargs)  # type: ignore[arg-type]
    assert a.to_dict()["accuracy"] == b.to_dict()["accuracy"]
    assert not np.array_equal(a.accuracy, c.accuracy)
    # runs are chips with consecutive seeds: seed 6's first chip is seed 5's second
    np.testing.assert_array_equal(a.accuracy[:, :, 1], c.accuracy[:, :, 0])
    assert a.runs_labels == tuple(virtual_chip_uris(SMALL_CHIP + "&seed=5", 3))
    assert a.runs_labels[2].endswith("seed=7")


def test_read_noise_repeats_on_one_recording() -> None:
    base = dict(times_s=(25.0, DAY_S), bits=(4,), read_noise=True)
    a = evaluate_recording(FIXTURE, runs=4, seed=1, **base)  # type: ignore[arg-type]
    b = evaluate_recording(FIXTURE, runs=4, seed=1, **base)  # type: ignore[arg-type]
    c = evaluate_recording(FIXTURE, runs=4, seed=2, **base)  # type: ignore[arg-type]
    np.testing.assert_array_equal(a.accuracy, b.accuracy)
    assert not np.array_equal(a.accuracy, c.accuracy)
    assert a.runs == 4 and len(set(a.accuracy[0, 1])) > 1
    with pytest.raises(EvaluationError, match="identical"):
        evaluate_recording(FIXTURE, runs=4, times_s=(25.0,))


def test_time_matching() -> None:
    rec = np.array([25.0, 100.0, 1000.0, 10000.0])
    assert match_times(rec, [25.0, 60.0, 2000.0, 4000.0, 10000.0]).tolist() == [0, 1, 2, 3, 3]
    assert match_times(rec, [100.0005], match="exact").tolist() == [1]
    with pytest.raises(EvaluationError, match="no readout at"):
        match_times(rec, [150.0], match="exact")
    with pytest.raises(EvaluationError, match="outside the recorded range"):
        match_times(rec, [20.0])
    with pytest.raises(EvaluationError, match="outside the recorded range"):
        match_times(rec, [YEAR_S])
    with pytest.raises(EvaluationError, match="no readouts"):
        match_times(np.array([]), [25.0])
    result = evaluate_recording(FIXTURE, times_s=(25.0, 3600.0, DAY_S), bits=(8,))
    assert result.times_s == (25.0, 3600.0, DAY_S)
    assert result.read_times_s[0, 0] == 25.0 and result.read_times_s[0, 2] == DAY_S
    assert 0.5 < result.read_times_s[0, 1] / 3600.0 < 2.0  # nearest recorded readout on a log axis


def test_model_must_match_the_recorded_layout() -> None:
    with pytest.raises(EvaluationError, match="differ from the targets programmed"):
        evaluate_recording(FIXTURE, noise_aware_model_path())
    model = load_model(default_model_path())
    wide = model.with_weights({"fc1.weight": model.weights()["fc1.weight"] * 1.5})
    with pytest.raises(EvaluationError, match="differ from the targets"):
        evaluate_recording(FIXTURE, wide)


def test_cli_model_with_other_layers_is_refused(tmp_path: Path) -> None:
    from harness.models.format import save_model
    from harness.models.model import Model

    rng = np.random.default_rng(0)
    arch = [
        {"type": "linear", "name": "fc1", "in_features": 64, "out_features": 32, "bias": True},
        {"type": "relu", "name": "relu1"},
        {"type": "linear", "name": "fc2", "in_features": 32, "out_features": 10, "bias": True},
    ]
    weights = {"fc1.weight": rng.normal(size=(32, 64)), "fc1.bias": np.zeros(32),
               "fc2.weight": rng.normal(size=(10, 32)), "fc2.bias": np.zeros(10)}
    path = tmp_path / "narrow.h5"
    save_model(Model(name="narrow", architecture=arch, weights=weights, input_shape=(64,), n_classes=10,
                     dataset="digits"), path)
    result = invoke("evaluate", "--recording", str(FIXTURE), "--model", str(path))
    assert_one_line_error(result, "does not match the layout")
    assert "fc1 32x64" in result.stderr and "fc1 64x64" in result.stderr


def test_result_shapes_and_json() -> None:
    r = evaluate_chip(SMALL_CHIP + "&seed=1", times_s=(YEAR_S, 25.0, 25.0), runs=2, bits=(6, 8, 6))
    assert r.times_s == (25.0, YEAR_S) and r.bits == (6, 8)
    assert r.accuracy.shape == (2, 2, 2) and r.read_times_s.shape == (2, 2)
    d = r.to_dict()
    json.dumps(d)
    assert d["accuracy"]["8"]["1y"]["mean"] == pytest.approx(r.mean()[1, 1])
    assert d["accuracy"]["6"]["25s"]["std"] == pytest.approx(r.std()[0, 0])
    assert d["digital_accuracy"] == r.digital_accuracy and 0.9 < r.digital_accuracy <= 1.0
    with pytest.raises(ValueError):
        r.accuracy[0, 0, 0] = 0.0  # results are read-only


# ----------------------------------------------------------------------------- the effect shown


@pytest.fixture(scope="module")
def model_comparison() -> dict[tuple[str, bool], EvaluationResult]:
    """Both shipped models on the same 20 simulated chips (seeds 100..119), GDC on and off."""
    times = (DAY_S, MONTH_S, YEAR_S)
    out = {}
    for path in (default_model_path(), noise_aware_model_path()):
        model = load_model(path)
        chips = read_chips(SMALL_CHIP + "&seed=100", model, times, 20)
        for gdc in (True, False):
            out[(model.name, gdc)] = evaluate_readouts(model, chips, times_s=times, bits=(8, 4), gdc=gdc)
    return out


def test_noise_aware_training_is_more_robust(model_comparison: dict[tuple[str, bool], EvaluationResult]) -> None:
    """Paired by chip seed: at 4 bits after a year the noise-aware model is ahead, by more
    than three standard errors of the paired difference without GDC and by more than two
    with it (measured on these 20 chips: +8.7 ± 0.6 points without GDC, +1.4 ± 0.6 with;
    GDC alone recovers most of what drift costs this small model), and at 8 bits both stay
    within 1.5 points of float."""
    for gdc, n_se in ((True, 2), (False, 3)):
        plain = model_comparison[("digits_mlp", gdc)]
        aware = model_comparison[("digits_mlp_noise_aware", gdc)]
        diff = aware.accuracy[1, 2] - plain.accuracy[1, 2]  # 4-bit, 1 year, per chip
        se = diff.std(ddof=1) / np.sqrt(diff.size)
        assert diff.mean() > n_se * se, (gdc, diff.mean(), se)
    for name in ("digits_mlp", "digits_mlp_noise_aware"):
        r = model_comparison[(name, True)]
        assert r.mean()[0, 2] > r.digital_accuracy - 0.015


def test_gdc_matters_after_drift(model_comparison: dict[tuple[str, bool], EvaluationResult]) -> None:
    """GDC on vs off on the same readouts: at 4 bits after a year +27 ± 1 points measured
    for the default model; require 10."""
    for name in ("digits_mlp", "digits_mlp_noise_aware"):
        on, off = model_comparison[(name, True)], model_comparison[(name, False)]
        assert on.mean()[1, 2] > off.mean()[1, 2] + 0.10
        assert np.all(on.mean()[1] >= off.mean()[1] - 0.005)  # never worse at any time


# ----------------------------------------------------------------------------- CLI


def test_cli_recording_json() -> None:
    result = invoke("evaluate", "--recording", str(FIXTURE), "--times", "25s,1h,1d", "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)  # exactly one JSON object on stdout
    assert 0.9 < data["digital_accuracy"] <= 1.0
    assert data["bits"] == ["8", "6", "4"] and data["times"] == ["25s", "1h", "1d"]
    for b in ("8", "6", "4"):
        for t in ("25s", "1h", "1d"):
            cell = data["accuracy"][b][t]
            assert 0 <= cell["mean"] <= 1 and cell["std"] == 0.0  # one chip
    assert data["source"] == "recording" and data["runs"] == 1


def test_cli_chip_table_and_plot(tmp_path: Path) -> None:
    png = tmp_path / "acc.png"
    result = invoke("evaluate", "--chip", SMALL_CHIP + "&seed=3", "--runs", "2", "--times", "25s,1d,1y",
                    "--bits", "8,4", "--png", str(png))
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    for fragment in ("float", "8-bit", "4-bit", "25s", "1d", "1y", "±", "GDC on"):
        assert fragment in out
    assert png.stat().st_size > 10_000 and png.read_bytes()[:4] == b"\x89PNG"


def test_cli_same_seed_identical_json() -> None:
    args = ("evaluate", "--chip", SMALL_CHIP + "&seed=9", "--runs", "2", "--times", "1h,1mo", "--bits", "6",
            "--no-gdc", "--json")
    a, b = json.loads(invoke(*args).stdout), json.loads(invoke(*args).stdout)
    assert a["accuracy"] == b["accuracy"] and a["gdc"] is False


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("--recording", str(FIXTURE), "--times", "1y"), "outside the recorded range"),
        (("--recording", str(FIXTURE), "--times", "10s,1h"), "outside the recorded range"),
        (("--recording", str(FIXTURE), "--model", str(noise_aware_model_path())), "differ from the targets"),
        (("--recording", str(FIXTURE), "--bits", "8,x"), "bit-width 'x'"),
        (("--recording", str(FIXTURE), "--bits", "40"), "bit-width 40"),
        (("--recording", str(FIXTURE), "--bits", "1"), "bit-width 1"),
        (("--recording", str(FIXTURE), "--times", "1m"), "ambiguous"),
        (("--recording", str(FIXTURE), "--runs", "3"), "identical"),
        (("--recording", str(FIXTURE), "--match", "fuzzy", "--times", "1h"), "unknown time matching"),
        (("--recording", "no/such/file.h5"), "does not exist"),
        (("--chip", SMALL_CHIP, "--recording", str(FIXTURE)), "exactly one"),
        ((), "exactly one"),
        (("--chip", "virtual?rows=8&cols=8", "--runs", "1"), "needs a 64x128 block"),
        (("--chip", SMALL_CHIP, "--runs", "0"), "--runs 0"),
        (("--chip", "nosuch://x"), "unknown chip URI scheme"),
    ],
)
def test_cli_bad_input_one_line(args: tuple[str, ...], fragment: str) -> None:
    assert_one_line_error(invoke("evaluate", *args), fragment)


def test_cli_replay_uri_evaluates_the_recording() -> None:
    a = json.loads(invoke("evaluate", "--chip", f"replay:{FIXTURE}", "--times", "25s,1d", "--bits", "8", "--json").stdout)
    b = json.loads(invoke("evaluate", "--recording", str(FIXTURE), "--times", "25s,1d", "--bits", "8", "--json").stdout)
    assert a["accuracy"] == b["accuracy"]


# ----------------------------------------------------------------------------- live path, memory, timings


def test_cli_chip_out_records_the_session_it_evaluated(tmp_path: Path) -> None:
    """A live evaluation reads in memory and writes nothing unless asked; with ``--out`` it
    records the chip's session, and evaluating that recording gives the same table and the
    same phases in ``timing_s`` (programming, reads, range calibration, CiM inference, digital
    baseline; the old lump ``program_read_s`` is gone)."""
    args = ("evaluate", "--chip", SMALL_CHIP + "&seed=4", "--runs", "1", "--times", "25s,1d", "--bits", "8", "--json")
    plain = invoke(*args)
    assert plain.exit_code == 0, plain.stderr
    live = json.loads(plain.stdout)
    assert "recording" not in live
    timing = live["timing_s"]
    assert set(timing) == {"ranges_s", "digital_s", "program_s", "read_s", "load_s", "inference_s", "total_s"}
    for key in ("program_s", "read_s", "inference_s", "digital_s"):
        assert timing[key] > 0, key
    assert sum(v for k, v in timing.items() if k != "total_s") <= timing["total_s"]

    out = tmp_path / "chip.h5"
    recorded = invoke(*args, "--out", str(out))
    assert recorded.exit_code == 0, recorded.stderr
    rec_json = json.loads(recorded.stdout)
    assert rec_json["recording"] == str(out) and out.stat().st_size > 0
    assert rec_json["accuracy"] == live["accuracy"]
    again = json.loads(invoke("evaluate", "--recording", str(out), "--bits", "8", "--json").stdout)
    assert again["accuracy"] == live["accuracy"]
    assert_one_line_error(invoke(*args, "--out", str(out)), "already exists")


def test_out_needs_one_chip(tmp_path: Path) -> None:
    assert_one_line_error(
        invoke("evaluate", "--chip", SMALL_CHIP, "--runs", "2", "--out", str(tmp_path / "x.h5")), "--runs 1"
    )
    assert_one_line_error(invoke("evaluate", "--recording", str(FIXTURE), "--out", str(tmp_path / "x.h5")), "needs --chip")
    assert not (tmp_path / "x.h5").exists()


def test_batches_in_bytes_do_not_change_the_numbers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without read noise the accuracy of every (chip, time) is the same whether all runs go
    to the simulator at once or one run per call (a byte bound smaller than one run), and
    also from the chip loop with batches of one chip; each chip's GDC reference is indexed,
    not repeated."""
    import harness.evaluation.evaluate as ev_mod
    import harness.evaluation.evaluator as evaluator_mod

    model = load_model(default_model_path())
    times = (25.0, DAY_S, YEAR_S)
    chips = read_chips(SMALL_CHIP + "&seed=30", model, times, 3)
    assert all(c.g_uS.dtype == np.float32 for c in chips)
    whole = evaluate_readouts(model, chips, times_s=times, bits=(8, 4), gdc=True)
    streamed = evaluate_chip(SMALL_CHIP + "&seed=30", model, times_s=times, runs=3, bits=(8, 4))
    monkeypatch.setattr(evaluator_mod, "EVAL_BATCH_BYTES", 1)
    monkeypatch.setattr(ev_mod, "EVAL_BATCH_BYTES", 1)
    one_by_one = evaluate_readouts(model, chips, times_s=times, bits=(8, 4), gdc=True)
    streamed_small = evaluate_chip(SMALL_CHIP + "&seed=30", model, times_s=times, runs=3, bits=(8, 4))
    np.testing.assert_array_equal(whole.accuracy, one_by_one.accuracy)
    np.testing.assert_array_equal(whole.accuracy, streamed.accuracy)
    np.testing.assert_array_equal(whole.accuracy, streamed_small.accuracy)
    # GDC matters on these chips after a year, so a wrong reference row would show.
    no_gdc = evaluate_readouts(model, chips, times_s=times, bits=(4,), gdc=False)
    assert not np.array_equal(no_gdc.accuracy[0], whole.accuracy[1])
