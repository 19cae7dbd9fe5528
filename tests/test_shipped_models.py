"""Every model shipped in fixtures/models/ loads and fits the dataset it names."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.data import load_dataset
from harness.data.dataset import check_dataset_fits
from harness.models.format import load_model

MODELS = sorted((Path(__file__).resolve().parents[1] / "fixtures" / "models").glob("*.h5"))


@pytest.mark.parametrize("path", MODELS, ids=[p.stem for p in MODELS])
def test_shipped_model_fits_its_dataset(path: Path) -> None:
    model = load_model(path)
    data = load_dataset(model.dataset)
    check_dataset_fits(data, input_shape=model.input_shape, n_classes=model.n_classes, model_name=model.name)
