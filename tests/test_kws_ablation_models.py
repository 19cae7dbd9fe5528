"""The shipped models of the AnalogNets ablation (``fixtures/train_kws_models.py``, issue 9):
what they were trained with, their recorded accuracies, the shared-gain constraint of their
learned converter ranges, and the evaluation results file ``docs/training.md`` quotes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from harness.data import load_dataset
from harness.data.dataset import fixtures_dir
from harness.models.format import load_model

MODELS = fixtures_dir() / "models"
#: stem -> (recipe, ADC bits of stage 2 or None, the file it started from)
ABLATION = {
    "analognet-kws-noise": ("noise", None, "analognet-kws"),
    "analognet-kws-stage1": ("analognets", None, "analognet-kws"),
    "analognet-kws-analognets-8b": ("analognets", 8, "analognet-kws-stage1"),
    "analognet-kws-analognets-6b": ("analognets", 6, "analognet-kws-stage1"),
    "analognet-kws-analognets-4b": ("analognets", 4, "analognet-kws-stage1"),
    "micronet-kws-s-stage1": ("analognets", None, "micronet-kws-s"),
    "micronet-kws-s-analognets-8b": ("analognets", 8, "micronet-kws-s-stage1"),
}


@pytest.fixture(scope="module")
def kws():  # type: ignore[no-untyped-def]
    return load_dataset("kws")


@pytest.mark.parametrize("stem", ABLATION)
def test_ablation_model_records_its_training_and_accuracy(stem: str, kws) -> None:  # type: ignore[no-untyped-def]
    recipe, bits, start = ABLATION[stem]
    model = load_model(MODELS / f"{stem}.h5")
    meta = model.metadata
    assert (meta["recipe"], meta["bits"], meta["started_from"]) == (recipe, bits, f"fixtures/models/{start}.h5")
    assert meta["seed"] == 0 and meta["n_train"] == kws.x_train.shape[0] and meta["train_seconds"] > 0
    x = np.array(kws.x_test, dtype=np.float32).reshape(-1, *model.input_shape)
    with torch.no_grad():
        pred = model.to_torch()(torch.from_numpy(x)).argmax(1).numpy()
    accuracy = float(np.mean(pred == kws.y_test))
    # Two of 960 predictions may flip with another thread count (float summation order).
    assert accuracy == pytest.approx(meta["float_test_accuracy"], abs=2.5 / len(kws.y_test))
    assert accuracy > 0.5  # the fine-tunes keep the baseline's skill (chance is 1/12)


@pytest.mark.parametrize("stem", [s for s, (_, bits, _) in ABLATION.items() if bits is not None])
def test_learned_ranges_obey_the_shared_adc_gain(stem: str) -> None:
    """Eq. 5: r_ADC,l / (r_DAC,l · W_max,l) = |g| for every analog layer, W_max,l the largest
    deployed weight (the clip bound fixed in stage 2, or max |W| below it)."""
    model = load_model(MODELS / f"{stem}.h5")
    gain, clips = model.metadata["adc_gain"], model.metadata["clip_ranges"]
    weights = model.weights()
    assert model.ranges and set(model.ranges) == set(clips)
    for name, r in model.ranges.items():
        w_max = min(clips[name], float(np.max(np.abs(weights[f"{name}.weight"]))))
        assert r.adc_range / (r.dac_range * w_max) == pytest.approx(abs(gain), rel=1e-4), name


def test_ablation_results_cover_25_chips_and_the_paper_times() -> None:
    results = json.loads((MODELS / "kws_ablation.json").read_text())
    for stem in ("analognet-kws", "analognet-kws-noise", *(f"analognet-kws-analognets-{b}b" for b in (8, 6, 4))):
        result = results[stem]["result"]
        assert result["runs"] == 25 and result["times"] == ["25s", "1h", "1d", "1mo", "1y"]
        for per_time in result["accuracy"].values():
            assert all(len(cell["runs"]) == 25 for cell in per_time.values())
    for stem in ("micronet-kws-s", "micronet-kws-s-analognets-8b"):  # Appendix A, on a larger chip
        result = results[stem]["result"]
        assert result["runs"] == 25 and list(result["accuracy"]) == ["8"] and "rows=1024" in result["chip"]
