"""`harness models`, and `--model NAME|FILE` for program / session run / evaluate: listings,
placement recorded in the layout, and one-line refusals of bad models."""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path

import h5py
import pytest
import torch
from clikit import assert_one_line_error, invoke
from torch import nn

from harness.models.format import save_model
from harness.models.torch_convert import from_torch
from harness.models.layers import Residual
from harness.recording import open_recording

SMALL_CHIP = "virtual?rows=64&cols=256&seed=3"


def _tall_model(path: Path) -> Path:
    """An MLP whose first block is 100 rows tall: it goes on a 64-row chip transposed."""
    torch.manual_seed(0)
    net = nn.Sequential(OrderedDict(fc1=nn.Linear(100, 8), act=nn.ReLU(), fc2=nn.Linear(8, 3)))
    save_model(from_torch(net, (100,), name="tall", dataset="none"), path)
    return path


def test_models_json_lists_the_zoo_with_counts_and_fit() -> None:
    result = invoke("models", "--json")
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.stdout)["models"]}
    assert {"analognet-kws", "micronet-kws-s", "imec-kws-1d", "har-fc"} <= set(rows)
    kws = rows["analognet-kws"]
    assert (kws["mvms"], kws["macs"], kws["max_rows"], kws["n_cols"]) == (991, 38_691_408, 1008, 460)
    assert kws["aon_fits"] and kws["chip_fits"] and kws["chip_how"] == "yes (transposed: conv2, conv3, conv4, conv5)"
    assert kws["input_shape"] == [1, 49, 10] and kws["n_classes"] == 12 and "AnalogNets" in kws["source"]
    micro = rows["micronet-kws-s"]
    # Dense-expanded depthwise blocks take 80 % of the array but do fit (the same answer as
    # `harness accel`, whose tiler this uses; AnalogNets Appendix D / Fig. 11a maps it too).
    assert micro["aon_fits"] and micro["aon_how"].startswith("yes: all 12 layers resident, 80 %")
    assert micro["min_utilization"] == pytest.approx(1 / 112)


def test_models_table_and_a_model_file(tmp_path: Path) -> None:
    result = invoke("models", str(_tall_model(tmp_path / "tall.h5")))
    assert result.exit_code == 0, result.output
    assert "tall" in result.stdout and "fc1 transposed" not in result.stdout  # fits 512 rows as is
    table = invoke("models")
    assert table.exit_code == 0 and "analognet-kws" in table.stdout and "micronet-kws-s" in table.stdout


def test_program_records_a_transposed_block(tmp_path: Path) -> None:
    model = _tall_model(tmp_path / "tall.h5")
    out = tmp_path / "prog.h5"
    result = invoke("program", "--chip", SMALL_CHIP, "--model", str(model), "--out", str(out), "--json")
    assert result.exit_code == 0, result.output
    with open_recording(out) as rec:
        fc1, fc2 = rec.layout.layers
    assert fc1.transposed and (fc1.n_rows, fc1.n_cols) == (16, 100) and not fc2.transposed


def _write_bad(path: Path, edit) -> Path:  # type: ignore[no-untyped-def]
    _tall_model(path)
    with h5py.File(path, "r+") as f:
        edit(f)
    return path


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda p: _write_bad(p, lambda f: f.attrs.__setitem__(
            "architecture", json.dumps([{"type": "lstm", "name": "x"}]))), "unknown type 'lstm'"),
        (lambda p: _write_bad(p, lambda f: f.attrs.__setitem__("architecture", json.dumps([
            {"type": "residual", "name": "r", "body": [
                {"type": "linear", "name": "fc1", "in_features": 100, "out_features": 8, "bias": True}]},
        ]))), "residual block 'r': its body's output (8,) does not add to its input (100,)"),
        (lambda p: p.parent / "missing.h5", "does not exist"),
    ],
)
def test_bad_model_files_are_one_line_errors(tmp_path: Path, make, fragment: str) -> None:  # type: ignore[no-untyped-def]
    path = make(tmp_path / "bad.h5")
    result = invoke("program", "--chip", SMALL_CHIP, "--model", str(path), "--out", str(tmp_path / "o.h5"))
    assert_one_line_error(result, fragment)
    assert not (tmp_path / "o.h5").exists()


def test_residual_whose_shapes_do_not_add_is_refused_from_torch() -> None:
    from harness.errors import ModelError

    net = nn.Sequential(Residual(nn.Sequential(nn.Linear(4, 5))), nn.Linear(5, 2))
    with pytest.raises(ModelError, match=r"residual block 'res1': its body's output \(5,\) does not add"):
        from_torch(net, (4,))


def test_model_names_and_fit_errors(tmp_path: Path) -> None:
    assert_one_line_error(invoke("program", "--model", "resnet-50", "--out", str(tmp_path / "a.h5")),
                          "'resnet-50' is neither a model file nor a zoo model; zoo models: analognet-kws")
    assert_one_line_error(invoke("program", "--model", "har-fc", "--out", str(tmp_path / "b.h5")),
                          "zoo model 'har-fc' ships no trained weights")
    model = _tall_model(tmp_path / "tall.h5")
    assert_one_line_error(
        invoke("program", "--chip", "virtual?rows=8&cols=8", "--model", str(model), "--out", str(tmp_path / "c.h5")),
        "fits neither transposed nor split",
    )
    session = Path(__file__).parent.parent / "sessions" / "demo-short.toml"
    assert_one_line_error(invoke("session", "run", str(session), "--model", "nope-net", "--dry-run"),
                          "'nope-net' is neither a model file nor a zoo model")
    assert_one_line_error(invoke("evaluate", "--chip", "virtual", "--model", "nope-net"),
                          "'nope-net' is neither a model file nor a zoo model")


def test_session_run_takes_a_model_override(tmp_path: Path) -> None:
    model = _tall_model(tmp_path / "tall.h5")
    session = Path(__file__).parent.parent / "sessions" / "demo-short.toml"
    result = invoke("session", "run", str(session), "--model", str(model), "--dry-run", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["model"] == str(model)


def test_a_dataset_that_does_not_fit_the_model_is_one_line_before_programming(tmp_path: Path) -> None:
    from harness.models import get_model

    torch.manual_seed(0)
    path = tmp_path / "imec39.h5"  # the slide's 39 MFCCs; the shipped KWS data has 10
    save_model(from_torch(get_model("imec-kws-1d").eval(), (1, 49, 39), name="imec39", dataset="kws"), path)
    result = invoke("evaluate", "--chip", "virtual", "--model", str(path), "--runs", "1", "--times", "25")
    assert_one_line_error(result, "has samples of shape 1x49x10 but model 'imec39' takes inputs of shape 1x49x39")
