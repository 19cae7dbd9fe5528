"""Dataset file format 2: round trips, format-1 compatibility, validation, the shape check."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from harness.data import Dataset, check_dataset_fits, load_dataset, save_dataset
from harness.errors import ConfigError, DatasetError, ModelError


def _dataset(shape: tuple[int, ...] = (49, 10), *, val: bool = True, dtype: str = "float16") -> Dataset:
    rng = np.random.default_rng(3)

    def x(n: int) -> np.ndarray:
        return rng.normal(0.0, 2.0, (n, *shape)).astype(dtype).astype(np.float32)

    def y(n: int) -> np.ndarray:
        return rng.integers(0, 3, n).astype(np.int64)

    return Dataset(
        x_train=x(12), y_train=y(12), x_test=x(5), y_test=y(5),
        x_val=x(4) if val else None, y_val=y(4) if val else None,
        name="toy", n_classes=3, input_shape=shape, class_names=("a", "b", "c"),
        metadata={"frontend": {"hop_samples": 320}, "axes": ["time_frame", "mfcc"]},
        subject_train=np.arange(12, dtype=np.int64), subject_test=np.full(5, 99, dtype=np.int64),
    )  # fmt: skip


@pytest.mark.parametrize("shape", [(49, 10), (50, 50), (128, 9)])
def test_round_trip_keeps_everything(tmp_path: Path, shape: tuple[int, ...]) -> None:
    ds = _dataset(shape)
    path = tmp_path / "d.h5"
    save_dataset(ds, path, feature_dtype="float16", source="test")
    back = load_dataset(path)
    assert back.input_shape == shape and back.class_names == ("a", "b", "c")
    assert back.splits() == ("train", "val", "test")
    for split in back.splits():
        for kind in ("x", "y"):
            np.testing.assert_array_equal(getattr(back, f"{kind}_{split}"), getattr(ds, f"{kind}_{split}"))
    np.testing.assert_array_equal(back.subject_train, ds.subject_train)
    assert back.subject_val is None
    assert back.metadata == ds.metadata
    with h5py.File(path, "r") as f:
        assert f["x_train"].dtype == np.float16 and f.attrs["format_version"] == 2
        assert json.loads(f.attrs["metadata"])["frontend"]["hop_samples"] == 320


def test_same_data_gives_identical_bytes(tmp_path: Path) -> None:
    ds = _dataset()
    save_dataset(ds, tmp_path / "a.h5", feature_dtype="float16")
    save_dataset(ds, tmp_path / "b.h5", feature_dtype="float16")
    assert (tmp_path / "a.h5").read_bytes() == (tmp_path / "b.h5").read_bytes()


def test_nothing_is_rounded_silently(tmp_path: Path) -> None:
    ds = _dataset(dtype="float32")  # values not representable in float16
    with pytest.raises(ConfigError, match="not exactly representable as float16"):
        save_dataset(ds, tmp_path / "d.h5", feature_dtype="float16")
    save_dataset(ds, tmp_path / "d.h5", feature_dtype="float32")
    np.testing.assert_array_equal(load_dataset(tmp_path / "d.h5").x_train, ds.x_train)
    with pytest.raises(ConfigError, match="not on a grid of 16 levels"):
        save_dataset(ds, tmp_path / "e.h5", feature_levels=16)


def test_format_1_files_still_load(tmp_path: Path) -> None:
    path = tmp_path / "v1.h5"
    with h5py.File(path, "w") as f:
        f.attrs.update(format="pcm-harness-dataset", format_version=1, name="old", n_classes=2,
                       input_shape=np.array([4]), feature_levels=4, source="")  # fmt: skip
        f["x_train"] = np.array([[0, 1, 2, 4]] * 3, dtype=np.uint8)
        f["y_train"] = np.array([0, 1, 0])
        f["x_test"] = np.array([[4, 4, 0, 0]], dtype=np.uint8)
        f["y_test"] = np.array([1])
    ds = load_dataset(path)
    np.testing.assert_array_equal(ds.x_train[0], [0.0, 0.25, 0.5, 1.0])
    assert ds.splits() == ("train", "test") and ds.class_names == () and ds.metadata == {}
    assert load_dataset("digits").input_shape == (64,)  # the shipped format-1 file


def test_inconsistent_files_are_one_line_errors(tmp_path: Path) -> None:
    path = tmp_path / "d.h5"
    save_dataset(_dataset(), path, feature_dtype="float16")
    with h5py.File(path, "a") as f:
        f.attrs["class_names"] = np.array(["only-one"], dtype=h5py.string_dtype())
    with pytest.raises(DatasetError, match="1 class names for 3 classes") as info:
        load_dataset(path)
    assert "\n" not in str(info.value) and isinstance(info.value, ModelError)
    save_dataset(_dataset(), path, feature_dtype="float16")
    with h5py.File(path, "a") as f:
        del f["y_val"]
    with pytest.raises(DatasetError, match="only one of x_val and y_val"):
        load_dataset(path)
    save_dataset(_dataset(), path, feature_dtype="float16")
    with h5py.File(path, "a") as f:
        f.attrs["feature_encoding"] = "mp3"
    with pytest.raises(DatasetError, match="feature_encoding 'mp3'"):
        load_dataset(path)


def test_dataset_validation() -> None:
    ds = _dataset()
    with pytest.raises(ConfigError, match="give both x_val and y_val"):
        Dataset(x_train=ds.x_train, y_train=ds.y_train, x_test=ds.x_test, y_test=ds.y_test,
                x_val=ds.x_val, name="t", n_classes=3, input_shape=(49, 10))  # fmt: skip
    bad = np.array(ds.x_train)
    bad[0, 0, 0] = np.nan
    with pytest.raises(ConfigError, match="non-finite"):
        Dataset(x_train=bad, y_train=ds.y_train, x_test=ds.x_test, y_test=ds.y_test,
                name="t", n_classes=3, input_shape=(49, 10))  # fmt: skip
    with pytest.raises(ConfigError, match="no 'val' split"):
        Dataset(x_train=ds.x_train, y_train=ds.y_train, x_test=ds.x_test, y_test=ds.y_test,
                name="t", n_classes=3, input_shape=(49, 10)).split("val")  # fmt: skip


def test_shape_check_names_both_shapes() -> None:
    ds = _dataset((49, 10))
    check_dataset_fits(ds, input_shape=(49, 10), n_classes=3, model_name="m")
    with pytest.raises(DatasetError) as info:
        check_dataset_fits(ds, input_shape=(1, 49, 10), n_classes=3, model_name="micronet-kws-s")
    text = str(info.value)
    assert "shape 49x10" in text and "shape 1x49x10" in text and "micronet-kws-s" in text and "\n" not in text
    with pytest.raises(DatasetError, match="has 3 classes but model 'm' has 12 outputs"):
        check_dataset_fits(ds, input_shape=(49, 10), n_classes=12, model_name="m")


def test_evaluate_and_train_reject_a_dataset_of_another_shape(tmp_path: Path) -> None:
    """Where datasets meet models (``harness evaluate``, ``harness train``): one line, exit ≠ 0,
    before anything is programmed or trained."""
    from torch import nn

    from harness.models.format import save_model
    from harness.models.torch_convert import model_from_torch
    from tests.clikit import assert_one_line_error, invoke

    data = tmp_path / "kws-like.h5"
    save_dataset(_dataset((1, 49, 10)), data, feature_dtype="float16")
    net = nn.Sequential(nn.Linear(64, 3))
    model = model_from_torch(net, name="flat", input_shape=(64,), n_classes=3, dataset=str(data))
    save_model(model, tmp_path / "flat.h5")
    result = invoke("evaluate", "--chip", "virtual", "--model", str(tmp_path / "flat.h5"), "--runs", "1")
    assert_one_line_error(result, "has samples of shape 1x49x10 but model 'flat' takes inputs of shape 64")
    result = invoke("train", "--model", "digits-mlp", "--data", str(data), "--recipe", "baseline",
                    "--epochs", "1", "--out", str(tmp_path / "m.h5"))  # fmt: skip
    assert_one_line_error(result, "has samples of shape 1x49x10 but model")
    assert not (tmp_path / "m.h5").exists()
