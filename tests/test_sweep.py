"""Sweeps on Dask: the sweep file, determinism across executors, resume, failures, bad input."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import numpy as np
import pytest

from harness.errors import ConfigError
from harness.sweeps.spec import parse_sweep, task_for

pytest.importorskip("distributed")
pd = pytest.importorskip("pandas")

from harness.sweeps.runner import load_results, run_sweep, summarize  # noqa: E402
from tests.clikit import assert_one_line_error, invoke  # noqa: E402

SMALL = """
[sweep]
name = "small"
seed = 11
runs = 3
[grid]
models = ["default"]
times = ["25s", "1d", "1y"]
bits = [8, 4]
gdc = [true, false]
"""


def _sorted(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values(["task_id", "t_s", "bits", "gdc", "read_noise"]).reset_index(drop=True)


@pytest.fixture(scope="module")
def spec():
    return parse_sweep(SMALL, source="small.toml")


@pytest.fixture(scope="module")
def serial_table(spec, tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep") / "w1"
    result = run_sweep(spec, out, workers=1)
    assert result.complete and result.ran == 3
    return _sorted(load_results(out))


# ----------------------------------------------------------------------------- the sweep file


def test_tidy_table_has_one_row_per_cell(serial_table, spec):
    assert len(serial_table) == 3 * 3 * 2 * 2  # runs × times × bits × gdc
    assert serial_table.groupby(["run", "t_s", "bits", "gdc"]).size().eq(1).all()
    assert set(serial_table["bits"]) == {8, 4}
    assert serial_table["accuracy"].between(0, 1).all()
    # simulated chips differ: three runs give three different accuracy rows at 4-bit, 1 y
    last = serial_table[(serial_table.bits == 4) & (serial_table.t_s == 365 * 86400.0) & serial_table.gdc]
    assert last["chip_seed"].nunique() == 3


def test_sweep_readouts_equal_the_session_runner_path():
    """A task reads its chip directly; the readouts are those ``harness evaluate`` records
    through the session runner for the same chip, bit for bit."""
    import numpy as np

    from harness.evaluation.evaluate import resolve_model
    from harness.evaluation.evaluator import ReadoutEvaluator
    from harness.evaluation.live import read_live_chip
    from harness.chip.registry import open_chip

    ev = ReadoutEvaluator(resolve_model("default"))
    times = (25.0, 86400.0, 365 * 86400.0)
    direct = ev.read_chip(open_chip("virtual?rows=64&cols=160&seed=5"), times)
    session = read_live_chip(open_chip("virtual?rows=64&cols=160&seed=5"), ev.model, times)
    for field in ("g_ref_uS", "times_s"):
        np.testing.assert_array_equal(getattr(direct, field), getattr(session, field), err_msg=field)
    # In memory the readouts are kept as float32, the precision the CiM simulator computes in.
    assert direct.g_uS.dtype == np.float32
    np.testing.assert_array_equal(direct.g_uS, session.g_uS.astype(np.float32), err_msg="g_uS")
    np.testing.assert_array_equal(direct.layout.cells, session.layout.cells)


def test_task_seeds_depend_only_on_coordinates():
    a = task_for(0, "default", "virtual", 2)
    assert a == task_for(0, "default", "virtual", 2)
    assert a.chip_seed != task_for(0, "default", "virtual", 3).chip_seed
    assert a.chip_seed != task_for(1, "default", "virtual", 2).chip_seed
    assert a.task_id != task_for(0, "other", "virtual", 2).task_id


@pytest.mark.parametrize(
    "text, words",
    [
        ("[grid]\nmodels=['default']\ntimes=['1h']\nbogus=1\n", "unknown key 'bogus'"),
        ("[sweep]\nrunz=3\n[grid]\nmodels=['default']\ntimes=['1h']\n", "unknown key 'runz'"),
        ("[grid]\nmodels=[]\ntimes=['1h']\n", "models is empty"),
        ("[grid]\nmodels=['default']\ntimes=[]\n", "times is empty"),
        ("[grid]\nmodels=['default']\ntimes=['1h']\nbits=[]\n", "bits is empty"),
        ("[grid]\nmodels=['default']\ntimes=['1h', '25s']\n", "increasing"),
        ("[grid]\nmodels=['default']\ntimes=['1h']\nbits=[8, 8]\n", "twice"),
        ("[grid]\nmodels=['default']\ntimes=['1h']\nbits=[99]\n", "bit-width"),
        ("[grid]\nmodels=['default']\ntimes=['1h']\nchips=['serial:///dev/ttyUSB0']\n", "not a virtual chip"),
        ("[grid]\nmodels=['default']\ntimes=['1h']\nchips=['virtual?seed=3']\n", "fixes seed"),
        ("[grid]\nmodels=['default']\ntimes=['-1h']\n", "negative"),
        ("[grid]\nmodels=['default']\n", "needs 'times'"),
        ("[extra]\n", "unknown table"),
        ("[sweep]\nruns=0\n[grid]\nmodels=['default']\ntimes=['1h']\n", "out of range"),
        ("not toml", "not valid TOML"),
    ],
)
def test_bad_sweep_files_are_refused(text, words):
    with pytest.raises(ConfigError, match=words):
        parse_sweep(text, source="x.toml")


# ----------------------------------------------------------------------------- executors


def test_two_workers_give_the_identical_table(spec, serial_table, tmp_path):
    result = run_sweep(spec, tmp_path / "w2", workers=2)
    assert result.complete and "LocalCluster of 2" in result.executor
    pd.testing.assert_frame_equal(_sorted(load_results(tmp_path / "w2")), serial_table)


def test_an_existing_scheduler_gives_the_identical_table(spec, serial_table, tmp_path):
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=2, processes=True, dashboard_address=":0") as cluster:
        result = run_sweep(spec, tmp_path / "sched", scheduler=cluster.scheduler_address)
    assert result.complete and result.executor.startswith("scheduler tcp://")
    pd.testing.assert_frame_equal(_sorted(load_results(tmp_path / "sched")), serial_table)


def test_unreachable_scheduler_fails_fast(spec, tmp_path):
    with socket.socket() as s:  # a free port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match="cannot reach the Dask scheduler"):
        run_sweep(spec, tmp_path / "x", scheduler=f"tcp://127.0.0.1:{port}")
    assert time.perf_counter() - t0 < 20


# ----------------------------------------------------------------------------- resume and failures


class _Interrupt(Exception):
    pass


def test_interrupted_sweep_resumes_and_runs_each_task_once(spec, serial_table, tmp_path):
    out = tmp_path / "resume"

    def stop_after_one(p):
        if p.done >= 1:
            raise _Interrupt

    with pytest.raises(_Interrupt):
        run_sweep(spec, out, workers=1, progress=stop_after_one)
    done_before = len(list(out.glob("task-*.parquet")))
    assert 1 <= done_before < 3
    again = run_sweep(spec, out, workers=1)
    assert again.skipped == done_before and again.ran == 3 - done_before and again.complete
    assert not list(out.glob(".*"))  # no temporary files left
    pd.testing.assert_frame_equal(_sorted(load_results(out)), serial_table)
    third = run_sweep(spec, out, workers=1)
    assert third.ran == 0 and third.skipped == 3


def test_a_failing_task_is_reported_and_the_others_finish(tmp_path):
    text = SMALL.replace('runs = 3', 'runs = 1').replace(
        'models = ["default"]', 'models = ["default"]\nchips = ["virtual", "virtual?rows=2&cols=2"]'
    )
    spec = parse_sweep(text, source="fail.toml")
    result = run_sweep(spec, tmp_path / "f", workers=1)
    assert result.ran == 1 and len(result.failures) == 1
    failure = result.failures[0]
    assert failure.task.chip == "virtual?rows=2&cols=2" and "\n" not in failure.error
    listed = json.loads(next((tmp_path / "f" / "_failed").glob("*.json")).read_text())
    assert listed["chip"] == "virtual?rows=2&cols=2" and listed["run"] == 0
    assert set(load_results(tmp_path / "f")["chip"]) == {"virtual"}


def test_summary_has_mean_and_std_per_cell(serial_table):
    s = summarize(serial_table)
    assert len(s) == 3 * 2 * 2 and (s["count"] == 3).all()
    row = s[(s.t_s == 25.0) & (s.bits == 8) & s.gdc].iloc[0]
    sel = serial_table[(serial_table.t_s == 25.0) & (serial_table.bits == 8) & serial_table.gdc]["accuracy"]
    assert row["mean"] == pytest.approx(sel.mean()) and row["std"] == pytest.approx(sel.std(ddof=1))
    # The 95 % interval holds the mean; with the chip spread it is no narrower than one chip's
    # binomial (Wilson) interval on the same test split.
    from harness.evaluation.uncertainty import wilson_interval

    n = int(serial_table["n_test"].iloc[0])
    w_lo, w_hi = wilson_interval(row["mean"], n)
    assert row["ci95_lo"] <= row["mean"] <= row["ci95_hi"]
    assert row["ci95_hi"] - row["ci95_lo"] >= float(w_hi - w_lo) - 1e-12


def test_summary_interval_of_one_run_is_the_binomial_interval(serial_table):
    one = serial_table[serial_table.run == 0]
    s = summarize(one)
    from harness.evaluation.uncertainty import wilson_interval

    n = int(one["n_test"].iloc[0])
    lo, hi = wilson_interval(s["mean"].to_numpy(), n)
    np.testing.assert_allclose(s["ci95_lo"], lo, rtol=0, atol=1e-12)
    np.testing.assert_allclose(s["ci95_hi"], hi, rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------- CLI


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "s.toml"
    p.write_text(text)
    return p


def test_cli_runs_and_resumes(tmp_path):
    f = _write(tmp_path, SMALL.replace("runs = 3", "runs = 1"))
    r = invoke("sweep", str(f), "--out", str(tmp_path / "o"), "--json")
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["ran"] == 1 and doc["complete"]
    r = invoke("sweep", str(f), "--out", str(tmp_path / "o"), "--json")
    assert json.loads(r.stdout)["skipped"] == 1


WORDS = {
    "unknown-key": "unknown key 'colour'",
    "empty-grid": "bits is empty",
    "out-is-file": "is not a results folder",
    "other-sweep": "another sweep",
    "workers-and-scheduler": "not both",
    "zero-workers": "--workers 0",
}


@pytest.mark.parametrize(
    "case",
    ["unknown-key", "empty-grid", "out-is-file", "other-sweep", "workers-and-scheduler", "zero-workers"],
)
def test_cli_bad_input_is_one_line(tmp_path, case):
    good = SMALL.replace("runs = 3", "runs = 1")
    out = tmp_path / "o"
    extra: list[str] = []
    text = good
    if case == "unknown-key":
        text = good + "colour = 'red'\n"
    elif case == "empty-grid":
        text = good.replace('bits = [8, 4]', 'bits = []')
    elif case == "out-is-file":
        out.write_text("precious")
    elif case == "other-sweep":
        out.mkdir()
        (out / "_sweep.json").write_text(json.dumps({"digest": "someone-else", "name": "x"}))
    elif case == "workers-and-scheduler":
        extra = ["--workers", "2", "--scheduler", "tcp://127.0.0.1:1"]
    elif case == "zero-workers":
        extra = ["--workers", "0"]
    f = _write(tmp_path, text)
    r = invoke("sweep", str(f), "--out", str(out), *extra)
    assert_one_line_error(r, WORDS[case])
    if case == "out-is-file":
        assert out.read_text() == "precious"


# ----------------------------------------------------------------------------- drift compensation axis


def test_compensate_axis_reuses_the_readouts_and_matches_the_gdc_axis(serial_table, tmp_path):
    """``compensate`` replaces the gdc axis on the same chips (same task seeds): its gdc and
    none rows equal the gdc = true / false rows of the same sweep without it."""
    text = SMALL.replace("bits = [8, 4]", "bits = [4]").replace("gdc = [true, false]", 'compensate = ["none", "gdc", "column"]')
    spec = parse_sweep(text, source="comp.toml")
    assert spec.rows_per_task == 3 * 1 * 3
    result = run_sweep(spec, tmp_path / "c", workers=1)
    assert result.complete
    df = load_results(tmp_path / "c")
    assert set(df["compensate"]) == {"none", "gdc", "column"}
    key = ["task_id", "t_s"]
    old = serial_table[serial_table.bits == 4]
    for name, gdc in (("gdc", True), ("none", False)):
        new = df[df.compensate == name].sort_values(key).reset_index(drop=True)
        ref = old[old.gdc == gdc].sort_values(key).reset_index(drop=True)
        assert list(new["accuracy"]) == list(ref["accuracy"]), name
    assert set(serial_table["compensate"]) == {"gdc", "none"}
    assert "compensate" in summarize(df).columns
    report = invoke("report", str(tmp_path / "c"), "--html", str(tmp_path / "c.html"))
    assert report.exit_code == 0, report.stderr
    assert "virtual, column" in (tmp_path / "c.html").read_text()


@pytest.mark.parametrize(
    "grid, fragment",
    [
        ('compensate = ["gdc", "magic"]', "unknown drift compensation 'magic'"),
        ('compensate = ["gdc"]\ngdc = [true]', "gdc and compensate do not combine"),
    ],
)
def test_bad_compensate_grid(grid, fragment):
    text = SMALL.replace("gdc = [true, false]", grid)
    with pytest.raises(ConfigError, match=fragment):
        parse_sweep(text, source="bad.toml")
