"""Progressive chip-in-the-loop fine-tuning (harness.train.finetune, ``harness finetune``)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from clikit import assert_one_line_error, invoke
from harness.chip.protocol import ChipBackend, Geometry
from harness.chip.registry import open_chip
from harness.data import load_dataset
from harness.errors import TrainingError
from harness.models.format import default_model_path, load_model
from harness.models.model import Model
from harness.programming.write_verify import ProgrammingParams
from harness.recording import reading
from harness.train.finetune import FinetuneOptions, progressive_finetune, training_split

SMALL = "virtual?rows=64&cols=160"  # the default digits MLP fits
FAST = FinetuneOptions(epochs=1, max_train=300, batch_size=50)


class IdealChip(ChipBackend):
    """No noise, no drift: a SET pulse of amplitude a adds exactly 40·a µS, a read returns the
    conductance as it is (no ADC), RESET returns to 0 µS."""

    def __init__(self, geometry: Geometry) -> None:
        super().__init__(geometry, "ideal")
        self.g = np.zeros(geometry.rows * geometry.cols)
        self.t = 0.0

    def now(self) -> float:
        return self.t

    def wait_until(self, t_s: float) -> None:
        self.t = max(self.t, t_s)

    def _reset(self, cells):  # type: ignore[no-untyped-def]
        self.g[cells] = 0.0

    def _set_pulse(self, cells, amplitude):  # type: ignore[no-untyped-def]
        self.g[cells] += 40.0 * amplitude

    def _read(self, cells):  # type: ignore[no-untyped-def]
        return self.g[cells].copy()


def _accuracy(model: Model) -> float:
    data = load_dataset(model.dataset)
    with torch.no_grad():
        out = model.to_torch()(torch.from_numpy(np.array(data.x_test, dtype=np.float32)))
    return float((out.argmax(1).numpy() == np.asarray(data.y_test)).mean())


def test_ideal_chip_reproduces_the_float_model() -> None:
    """On an ideal device the write-verify loop (told the device's exact slope, full gain) lands on
    every target in one pulse, except targets below its smallest step (0.04 µS), which stay at
    0 µS within the 0.05 µS tolerance: the measured weights are the float weights to < 0.1 % of
    max|W| RMS. Without fine-tuning the chip's model then has the float model's accuracy; one
    epoch of hardware-aware fine-tuning (8 bits) at lr 1e-4 keeps it within one point (3 of the
    360 test digits)."""
    model = load_model(default_model_path())
    params = ProgrammingParams(tolerance_uS=0.05, gain=1.0, initial_slope_uS=40.0)
    none = progressive_finetune(IdealChip(Geometry(rows=64, cols=160)), model,
                                options=FinetuneOptions(epochs=0, params=params))
    assert [s.layer for s in none.stages] == ["fc1", "fc2"]
    assert all(s.converged == 1.0 and s.weight_error_rel_rms < 1e-3 for s in none.stages), none.stages
    assert _accuracy(none.measured) == _accuracy(model)
    for k, w in model.weights().items():
        np.testing.assert_array_equal(none.model.weights()[k], w)  # the targets are the model's weights
    tuned = progressive_finetune(IdealChip(Geometry(rows=64, cols=160)), model,
                                 options=FinetuneOptions(epochs=1, params=params))
    assert abs(_accuracy(tuned.measured) - _accuracy(model)) <= 0.01
    meta = tuned.model.metadata["finetune"]
    assert meta["chip_identity"] == "IdealChip" and len(meta["stages"]) == 2 and meta["bits"] == 8
    assert tuned.stages[0].train_loss is not None and tuned.stages[-1].train_loss is not None


def test_resume_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    """Interrupted after the first layer (its checkpoint written), then resumed on a fresh
    virtual chip of the same URI: the first layer is not re-programmed (the chip's state comes
    from the checkpoint) and every weight, read-back and later chip read is bit-identical."""
    model = load_model(default_model_path())
    uri = f"{SMALL}&seed=3"
    whole_chip = open_chip(uri)
    whole = progressive_finetune(whole_chip, model, options=FAST, checkpoint_path=tmp_path / "a.ckpt.h5")

    class Stop(Exception):
        pass

    def stop_at_second_layer(event: dict) -> None:  # type: ignore[type-arg]
        if event["phase"] == "program" and event["index"] == 1:
            raise Stop

    ckpt = tmp_path / "b.ckpt.h5"
    with pytest.raises(Stop):
        progressive_finetune(open_chip(uri), model, options=FAST, checkpoint_path=ckpt, progress=stop_at_second_layer)
    events: list[dict] = []  # type: ignore[type-arg]
    resumed_chip = open_chip(uri)
    resumed = progressive_finetune(resumed_chip, model, options=FAST, checkpoint_path=ckpt, resume=True,
                                   progress=events.append)
    assert resumed.resumed_from == 1
    assert [e["layer"] for e in events if e["phase"] == "program"] == ["fc2"]  # fc1 is not re-programmed
    for key, w in whole.model.weights().items():
        np.testing.assert_array_equal(resumed.model.weights()[key], w, err_msg=key)
    np.testing.assert_array_equal(resumed.g_read_uS, whole.g_read_uS)
    assert resumed.stages == whole.stages
    for chip in (whole_chip, resumed_chip):
        chip.wait_until(whole.programming.t_end_s + 86_400.0)
    np.testing.assert_array_equal(resumed_chip.read(resumed.layout.cells), whole_chip.read(whole.layout.cells))


def test_resume_refuses_another_chip_or_model(tmp_path: Path) -> None:
    model = load_model(default_model_path())
    ckpt = tmp_path / "c.ckpt.h5"
    progressive_finetune(open_chip(f"{SMALL}&seed=3"), model, options=dataclasses.replace(FAST, epochs=0),
                         checkpoint_path=ckpt)
    with pytest.raises(TrainingError, match="made on chip .*seed=3.*not .*seed=5"):
        progressive_finetune(open_chip(f"{SMALL}&seed=5"), model, options=dataclasses.replace(FAST, epochs=0),
                             checkpoint_path=ckpt, resume=True)
    other = model.with_weights({"fc2.bias": model.weights()["fc2.bias"] + 0.5})
    with pytest.raises(TrainingError, match="other starting weights"):
        progressive_finetune(open_chip(f"{SMALL}&seed=3"), other, options=dataclasses.replace(FAST, epochs=0),
                             checkpoint_path=ckpt, resume=True)
    with pytest.raises(TrainingError, match="exists: pass --resume"):
        progressive_finetune(open_chip(f"{SMALL}&seed=3"), model, options=FAST, checkpoint_path=ckpt)


def test_the_test_split_never_reaches_the_fine_tuning() -> None:
    """The same run with the test split replaced by other data (and a model without trained
    ranges, so the converter ranges are calibrated) gives bit-identical weights: calibration and
    fine-tuning read the training split only."""
    base = load_model(default_model_path())
    model = Model(name=base.name, architecture=base.architecture, weights=base.weights(), input_shape=base.input_shape,
                  n_classes=base.n_classes, dataset=base.dataset, ranges=None, metadata={}, unipolar_layers=())
    data = load_dataset("digits")
    rng = np.random.default_rng(0)
    other = dataclasses.replace(data, x_test=rng.random(np.shape(data.x_test), dtype=np.float32) * 16,
                                y_test=rng.integers(0, 10, np.shape(data.y_test)))
    a = progressive_finetune(open_chip(f"{SMALL}&seed=1"), model, data, FAST)
    b = progressive_finetune(open_chip(f"{SMALL}&seed=1"), model, other, FAST)
    assert a.model.metadata["finetune"]["ranges_source"] == "calibrated"
    for key, w in a.model.weights().items():
        np.testing.assert_array_equal(b.model.weights()[key], w, err_msg=key)
    x, _, idx = training_split(data, FAST)
    assert x.shape[0] == 300 and idx.max() < np.shape(data.x_train)[0]
    np.testing.assert_array_equal(x.numpy(), np.asarray(data.x_train)[idx])


def test_cli_finetune_records_the_reads_and_evaluate_reads_them(tmp_path: Path) -> None:
    out = tmp_path / "ft.h5"
    r = invoke("finetune", "--chip", f"{SMALL}&seed=4", "--out", str(out), "--max-train", "300", "--times", "25s,1d",
               "--json")
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["chip_identity"].startswith("VirtualPCMChip") and [s["layer"] for s in doc["stages"]] == ["fc1", "fc2"]
    assert doc["readout_times_s"] == [25.0, 86_400.0] and doc["bits"] == 8
    assert "layer 2/2 fc2: fine-tuning epoch 1/1 loss" in r.stderr
    rec = tmp_path / "ft.reads.h5"
    meta = load_model(out).metadata["finetune"]
    assert meta["chip_uri"] == f"{SMALL}&seed=4" and meta["recording"] == str(rec)
    assert not (tmp_path / "ft.h5.ckpt.h5").exists()  # removed on success
    with reading(rec) as recording:
        assert recording.n_readouts == 2 and recording.provenance["model"] == str(out)
        assert recording.programming.cells.size == sum(s["devices"] for s in doc["stages"])
    e = invoke("evaluate", "--recording", str(rec), "--bits", "8", "--json")
    assert e.exit_code == 0, e.stderr
    acc = json.loads(e.stdout)["accuracy"]["8"]
    assert set(acc) == {"25s", "1d"} and acc["25s"]["mean"] > 0.9


def test_cli_bad_inputs_are_one_line(tmp_path: Path) -> None:
    r = invoke("finetune", "--chip", "virtual?rows=16&cols=16", "--out", str(tmp_path / "x.h5"))
    assert_one_line_error(r, "layer 'fc1' needs a 64x128 block")
    assert not (tmp_path / "x.h5").exists() and not (tmp_path / "x.reads.h5").exists()
    r = invoke("finetune", "--chip", SMALL, "--out", str(tmp_path / "x.h5"), "--data", "no-such-data")
    assert_one_line_error(r, "no-such-data")
    r = invoke("finetune", "--chip", SMALL, "--out", str(tmp_path / "x.h5"), "--resume")
    assert_one_line_error(r, "no checkpoint to resume from")
    r = invoke("finetune", "--chip", SMALL, "--out", str(tmp_path / "x.h5"), "--bits", "1")
    assert_one_line_error(r, "bits")
    ok = invoke("finetune", "--chip", f"{SMALL}&seed=2", "--out", str(tmp_path / "y.h5"), "--epochs", "0")
    assert ok.exit_code == 0, ok.stderr
    r = invoke("finetune", "--chip", f"{SMALL}&seed=2", "--out", str(tmp_path / "y.h5"), "--epochs", "0")
    assert_one_line_error(r, "y.h5")  # an existing output is never replaced without --overwrite


def test_cli_resume_continues_on_the_same_chip_only(tmp_path: Path) -> None:
    """A run whose checkpoint was left behind (here: made by the library) resumes through the CLI
    on the chip it was made on, without re-programming; another chip is refused in one line."""
    out = tmp_path / "r.h5"
    model = load_model(default_model_path())
    options = dataclasses.replace(FAST, epochs=0)
    progressive_finetune(open_chip(f"{SMALL}&seed=3"), model, options=options,
                         checkpoint_path=tmp_path / "r.h5.ckpt.h5")
    r = invoke("finetune", "--chip", f"{SMALL}&seed=5", "--out", str(out), "--epochs", "0", "--max-train", "300",
               "--batch-size", "50", "--resume")
    assert_one_line_error(r, "made on chip")
    assert not out.exists() and (tmp_path / "r.h5.ckpt.h5").exists()  # nothing lost
    r = invoke("finetune", "--chip", f"{SMALL}&seed=3", "--out", str(out), "--epochs", "0", "--max-train", "300",
               "--batch-size", "50", "--resume", "--times", "25s", "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["resumed_from"] == 2 and "programming" not in r.stderr
    assert "resumed after layer 2 of 2" in r.stderr and not (tmp_path / "r.h5.ckpt.h5").exists()
