"""The unipolar deployment path end to end through the CLI: ``train --recipe uniform --unipolar``
writes a model whose layers ``program`` / ``session run`` / ``evaluate`` map onto single devices
(one per weight, half the devices of the differential mapping), and recordings made that way
evaluate to the same weights."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from harness.errors import ModelError
from harness.models.format import default_model_path, load_model, save_model
from harness.models.model import Model
from harness.recording import open_recording
from tests.clikit import assert_one_line_error, invoke

REPO = Path(__file__).resolve().parents[1]
SESSION = REPO / "sessions" / "demo-short.toml"
CHIP = "virtual?rows=64&cols=160"


def _differential_copy(model: Model, name: str) -> Model:
    """The same weights, ranges and metadata without the unipolar marks."""
    return Model(
        name=name,
        architecture=model.architecture,
        weights=model.weights(),
        input_shape=model.input_shape,
        n_classes=model.n_classes,
        dataset=model.dataset,
        ranges=model.ranges,
        metadata=model.metadata,
    )


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A unipolar digits MLP fine-tuned from the shipped baseline for 2 + 2 epochs (seconds),
    and the same weights in a file without the unipolar marks."""
    d = tmp_path_factory.mktemp("unipolar")
    uni = d / "uni.h5"
    result = invoke(
        "train",
        "--model",
        str(default_model_path()),
        "--data",
        "digits",
        "--recipe",
        "uniform",
        "--unipolar",
        "--bits",
        "6",
        "--lr",
        "3e-2",
        "--batch-size",
        "32",
        "--epochs",
        "2",
        "--seed",
        "2",
        "--checkpoint-steps",
        "0",
        "--out",
        str(uni),
        "--json",
    )
    assert result.exit_code == 0, result.output
    diff = d / "diff.h5"
    save_model(_differential_copy(load_model(uni), "diff"), diff)
    return {"uni": uni, "diff": diff, "dir": d}


def test_model_file_records_its_unipolar_layers(models: dict[str, Path], tmp_path: Path) -> None:
    uni = load_model(models["uni"])
    assert uni.unipolar_layers == ("fc1", "fc2")
    assert all(layer.weight.min() >= 0.0 for layer in uni.analog_layers())
    with h5py.File(models["uni"], "r") as f:
        assert json.loads(f.attrs["unipolar_layers"]) == ["fc1", "fc2"]
    with h5py.File(models["diff"], "r") as f:  # all-differential files carry no attribute
        assert "unipolar_layers" not in f.attrs
    assert load_model(models["diff"]).unipolar_layers == ()
    assert load_model(default_model_path()).unipolar_layers == ()  # an older file
    assert uni.with_weights({}).unipolar_layers == ("fc1", "fc2")
    # Unknown names are refused when built and when loaded.
    with pytest.raises(ModelError, match="not analog layers"):
        Model(
            name="x",
            architecture=uni.architecture,
            weights=uni.weights(),
            input_shape=uni.input_shape,
            n_classes=uni.n_classes,
            dataset=uni.dataset,
            unipolar_layers=["relu1"],
        )
    bad = tmp_path / "bad.h5"
    save_model(uni, bad)
    with h5py.File(bad, "a") as f:
        f.attrs["unipolar_layers"] = '["fc9"]'
    with pytest.raises(ModelError, match="fc9"):
        load_model(bad)
    with h5py.File(bad, "a") as f:
        f.attrs["unipolar_layers"] = '{"fc1": true}'
    with pytest.raises(ModelError, match="unipolar_layers"):
        load_model(bad)


def test_program_maps_a_unipolar_model_on_half_the_devices(models: dict[str, Path]) -> None:
    d = models["dir"]
    summaries = {}
    for key in ("uni", "diff"):
        result = invoke(
            "program",
            "--chip",
            CHIP,
            "--model",
            str(models[key]),
            "--out",
            str(d / f"p-{key}.h5"),
            "--overwrite",
            "--json",
        )
        assert result.exit_code == 0, result.output
        summaries[key] = json.loads(result.stdout)
    uni, diff = summaries["uni"], summaries["diff"]
    n_weights = load_model(models["uni"]).n_array_weights()
    assert diff["devices_used"] == 2 * n_weights == 9472
    assert uni["devices_used"] == n_weights == diff["devices_used"] // 2
    assert uni["devices_programmed"] == uni["devices_used"]
    assert uni["unipolar_layers"] == ["fc1", "fc2"] and diff["unipolar_layers"] == []
    assert [(p["name"], p["unipolar"], p["devices"]) for p in uni["layers"]] == [
        ("fc1", True, 64 * 64),
        ("fc2", True, 10 * 64),
    ]
    # The recording's layout keeps the marks and reads back the model's weights.
    with open_recording(d / "p-uni.h5") as rec:
        layout = rec.layout
        assert [p.unipolar for p in layout.layers] == [True, True]
        assert np.all(layout.sign == 1) and layout.n_devices == n_weights
        back = layout.to_weights(layout.target_uS)
    for layer in load_model(models["uni"]).analog_layers():
        np.testing.assert_allclose(back[layer.name], layer.weight, rtol=1e-5, atol=1e-7)
    human = invoke("program", "--chip", CHIP, "--model", str(models["uni"]), "--out", str(d / "p-h.h5"), "--overwrite")
    assert human.exit_code == 0, human.output
    assert "4736 devices programmed (fc1, fc2 unipolar)" in human.stdout


def test_evaluate_a_unipolar_model_on_a_chip_and_from_its_session(models: dict[str, Path]) -> None:
    d = models["dir"]
    result = invoke(
        "evaluate",
        "--chip",
        CHIP,
        "--model",
        str(models["uni"]),
        "--runs",
        "2",
        "--bits",
        "8",
        "--times",
        "25s",
        "--json",
    )
    assert result.exit_code == 0, result.output
    live = json.loads(result.stdout)
    assert live["digital_accuracy"] > 0.85  # measured 0.936
    assert live["accuracy"]["8"]["25s"]["mean"] > 0.8  # measured 0.881, 0.894 (chips 0, 1)
    # session run → recording → evaluate rebuilds the same single-device weights.
    rec = d / "s.h5"
    result = invoke(
        "session",
        "run",
        str(SESSION),
        "--chip",
        CHIP,
        "--model",
        str(models["uni"]),
        "--out",
        str(rec),
        "--overwrite",
        "--json",
    )
    assert result.exit_code == 0, result.output
    with open_recording(rec) as r:
        assert r.layout.n_devices == load_model(models["uni"]).n_array_weights()
    result = invoke("evaluate", "--recording", str(rec), "--bits", "8", "--times", "25s", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["accuracy"]["8"]["25s"]["mean"] > 0.8  # measured 0.881
    # The same weights without the marks were not what was programmed.
    assert_one_line_error(
        invoke("evaluate", "--recording", str(rec), "--model", str(models["diff"]), "--bits", "8"),
        "is unipolar (one device per weight)",
    )
    replay = invoke("replay", str(rec), "--json")  # replay summarizes the recorded layout as it is
    assert replay.exit_code == 0, replay.output
    assert json.loads(replay.stdout)["devices"] == load_model(models["uni"]).n_array_weights()


def test_negative_weight_in_a_unipolar_layer_is_one_line(models: dict[str, Path], tmp_path: Path) -> None:
    uni = load_model(models["uni"])
    w = uni.weights()["fc2.weight"]
    w[3, 5] = -0.25
    bad = tmp_path / "neg.h5"
    save_model(uni.with_weights({"fc2.weight": w}), bad)
    for args in (
        ["program", "--chip", CHIP, "--model", str(bad), "--out", str(tmp_path / "p.h5")],
        ["session", "run", str(SESSION), "--chip", CHIP, "--model", str(bad), "--out", str(tmp_path / "s.h5")],
        ["evaluate", "--chip", CHIP, "--model", str(bad), "--runs", "1", "--bits", "8", "--times", "25s"],
    ):
        assert_one_line_error(invoke(*args), "layer 'fc2' is marked unipolar")
    assert not (tmp_path / "p.h5").exists()
