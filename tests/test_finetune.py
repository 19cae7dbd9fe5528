"""Progressive chip-in-the-loop fine-tuning (harness.train.finetune, ``harness finetune``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from clikit import assert_one_line_error, invoke
from harness.chip.protocol import ChipBackend, Geometry
from harness.data import load_dataset
from harness.models.format import default_model_path, load_model
from harness.models.model import Model
from harness.programming.write_verify import ProgrammingParams
from harness.train.finetune import progressive_finetune

SMALL = "virtual?rows=64&cols=160"  # the default digits MLP fits


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
    epoch of fine-tuning at lr 1e-4 keeps it within one point."""
    model = load_model(default_model_path())
    params = ProgrammingParams(tolerance_uS=0.05, gain=1.0, initial_slope_uS=40.0)
    none = progressive_finetune(IdealChip(Geometry(rows=64, cols=160)), model, epochs=0, params=params)
    assert [s.layer for s in none.stages] == ["fc1", "fc2"]
    assert all(s.converged == 1.0 and s.weight_error_rel_rms < 1e-3 for s in none.stages), none.stages
    assert _accuracy(none.measured) == _accuracy(model)
    for k, w in model.weights().items():
        np.testing.assert_array_equal(none.model.weights()[k], w)  # the targets are the model's weights
    tuned = progressive_finetune(IdealChip(Geometry(rows=64, cols=160)), model, epochs=1, params=params)
    assert abs(_accuracy(tuned.measured) - _accuracy(model)) <= 0.01
    meta = tuned.model.metadata["finetune"]
    assert meta["chip_identity"] == "IdealChip" and len(meta["stages"]) == 2


def test_cli_finetune_then_evaluate(tmp_path: Path) -> None:
    out = tmp_path / "ft.h5"
    r = invoke("finetune", "--chip", f"{SMALL}&seed=4", "--out", str(out), "--epochs", "1", "--json")
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["chip_identity"].startswith("VirtualPCMChip") and [s["layer"] for s in doc["stages"]] == ["fc1", "fc2"]
    assert load_model(out).metadata["finetune"]["chip_uri"] == f"{SMALL}&seed=4"
    e = invoke("evaluate", "--chip", SMALL, "--model", str(out), "--runs", "1", "--times", "25s", "--bits", "8", "--json")
    assert e.exit_code == 0, e.stderr
    assert json.loads(e.stdout)["accuracy"]["8"]["25s"]["mean"] > 0.9


def test_cli_finetune_onto_a_chip_too_small_is_one_line(tmp_path: Path) -> None:
    r = invoke("finetune", "--chip", "virtual?rows=16&cols=16", "--out", str(tmp_path / "x.h5"))
    assert_one_line_error(r, "layer 'fc1' needs a 64x128 block")
    assert not (tmp_path / "x.h5").exists()
