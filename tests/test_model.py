"""Model files and the bundled dataset: round trips, refusals of bad files, shipped models."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from torch import nn

from harness.data import fixtures_dir, load_dataset
from harness.errors import ConfigError, ModelError
from harness.models.format import (
    READABLE_FORMAT_VERSIONS,
    default_model_path,
    load_model,
    noise_aware_model_path,
    save_model,
)
from harness.models.model import LayerRanges, Model
from harness.models.torch_convert import model_from_torch

SEED = 11
MIN_SHIPPED_ACCURACY = 0.95
DIGITS_TRAIN, DIGITS_TEST = 1437, 360


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _mlp(seed: int = SEED) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(OrderedDict(fc1=nn.Linear(64, 20), act=nn.ReLU(), fc2=nn.Linear(20, 10))).eval()


def _cnn(seed: int = SEED) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 4, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 6, kernel_size=(3, 2), stride=2, bias=False),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(6 * 3 * 4, 10),
    ).eval()


def _mlp_model(**kw) -> Model:
    return model_from_torch(
        _mlp(), name="t", input_shape=(64,), n_classes=10, dataset="digits",
        ranges={"fc1": LayerRanges(1.0, 3.5), "fc2": LayerRanges(4.0, 20.0)},
        metadata={"seed": SEED, "note": "ünïcode", "nested": {"a": [1, 2.5]}}, **kw,
    )


# -- round trips ---------------------------------------------------------------------------
def test_save_load_round_trip_is_exact(tmp_path: Path, digits) -> None:
    torch_net = _mlp()
    model = _mlp_model()
    path = tmp_path / "m.h5"
    save_model(model, path)
    loaded = load_model(path)
    assert loaded.path == path and model.path is None
    assert loaded.name == "t" and loaded.dataset == "digits" and loaded.n_classes == 10
    assert loaded.architecture == model.architecture and loaded.input_shape == (64,)
    assert loaded.ranges == model.ranges and loaded.metadata == model.metadata
    assert set(loaded.weights()) == {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"}
    for key, value in model.weights().items():
        got = loaded.weights()[key]
        assert got.dtype == np.float32 and got.tobytes() == value.tobytes(), key
    x = torch.from_numpy(np.array(digits.x_test))
    with torch.no_grad():
        assert torch.equal(loaded.to_torch()(x), torch_net(x))
    assert not loaded.to_torch().training


def test_conv_round_trip_and_analog_layers(tmp_path: Path) -> None:
    net = _cnn()
    model = model_from_torch(net, name="cnn", input_shape=(1, 8, 8), n_classes=10, dataset="digits")
    save_model(model, tmp_path / "c.h5")
    loaded = load_model(tmp_path / "c.h5")
    x = torch.from_numpy(np.random.default_rng(SEED).random((16, 1, 8, 8), dtype=np.float32))
    with torch.no_grad():
        assert torch.equal(loaded.to_torch()(x), net(x))
    layers = loaded.analog_layers()
    assert [layer.name for layer in layers] == ["conv1", "conv2", "fc3"]
    assert layers[1].weight.shape == (6, 4 * 3 * 2) and layers[1].bias is None
    np.testing.assert_array_equal(layers[1].weight, net[2].weight.detach().numpy().reshape(6, -1))
    np.testing.assert_array_equal(layers[0].bias, net[0].bias.detach().numpy())
    assert loaded.n_weights() == 4 * 9 + 6 * 4 * 6 + 72 * 10
    assert loaded.n_parameters() == loaded.n_weights() + 4 + 10


def test_model_is_immutable_and_with_weights_checks(digits) -> None:
    model = _mlp_model()
    before = model.weights()["fc1.weight"].copy()
    model.weights()["fc1.weight"][:] = 0.0
    model.architecture[0]["in_features"] = 3
    model.metadata["seed"] = -1
    np.testing.assert_array_equal(model.weights()["fc1.weight"], before)
    assert model.architecture[0]["in_features"] == 64 and model.metadata["seed"] == SEED

    new = np.zeros((20, 64), dtype=np.float64)
    changed = model.with_weights({"fc1.weight": new})
    assert changed.weights()["fc1.weight"].dtype == np.float32
    assert np.all(changed.weights()["fc1.weight"] == 0.0)
    np.testing.assert_array_equal(changed.weights()["fc2.weight"], model.weights()["fc2.weight"])
    np.testing.assert_array_equal(model.weights()["fc1.weight"], before)
    with pytest.raises(ModelError, match="shape"):
        model.with_weights({"fc1.weight": np.zeros((64, 20))})
    with pytest.raises(ModelError, match="unknown"):
        model.with_weights({"fc9.weight": np.zeros((20, 64))})
    bad = before.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ModelError, match="non-finite"):
        model.with_weights({"fc1.weight": bad})


def test_model_from_torch_rejects_unsupported_layers() -> None:
    net = nn.Sequential(nn.Linear(64, 10), nn.Sigmoid())
    with pytest.raises(ModelError, match="Sigmoid"):
        model_from_torch(net, name="x", input_shape=(64,), n_classes=10, dataset="digits")
    with pytest.raises(ModelError, match="n_classes"):
        model_from_torch(_mlp(), name="x", input_shape=(64,), n_classes=12, dataset="digits")
    with pytest.raises(ModelError, match="expects input"):
        model_from_torch(_mlp(), name="x", input_shape=(63,), n_classes=10, dataset="digits")


def test_save_is_atomic_and_reports_unwritable_paths(tmp_path: Path) -> None:
    save_model(_mlp_model(), tmp_path / "m.h5")
    assert [p.name for p in tmp_path.iterdir()] == ["m.h5"]
    with pytest.raises(ModelError, match="cannot write"):
        save_model(_mlp_model(), tmp_path / "no-such-dir" / "m.h5")


# -- refusals ------------------------------------------------------------------------------
def _valid_file(tmp_path: Path) -> Path:
    path = tmp_path / "good.h5"
    save_model(_mlp_model(), path)
    return path


def _edit(path: Path, edit) -> Path:
    with h5py.File(path, "r+") as f:
        edit(f)
    return path


class _Trap:
    """Unpickling this creates ``sentinel``: proof that something was unpickled."""

    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self):
        return (open, (str(self.sentinel), "w"))


def _corruptions(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    good = _valid_file(tmp_path)
    data = good.read_bytes()
    (tmp_path / "text.h5").write_text("just some text\n")
    (tmp_path / "truncated.h5").write_bytes(data[: len(data) // 2])
    (tmp_path / "empty.h5").write_bytes(b"")
    with h5py.File(tmp_path / "foreign.h5", "w") as f:
        f.create_dataset("x", data=np.arange(3))
    cases = {
        "missing": (tmp_path / "nope.h5", "does not exist"),
        "text": (tmp_path / "text.h5", "not a readable HDF5"),
        "truncated": (tmp_path / "truncated.h5", "not a readable HDF5"),
        "empty": (tmp_path / "empty.h5", "not a readable HDF5"),
        "foreign": (tmp_path / "foreign.h5", "format"),
    }

    def variant(tag: str, edit, expect: str) -> None:
        path = tmp_path / f"{tag}.h5"
        path.write_bytes(data)
        cases[tag] = (_edit(path, edit), expect)

    def set_attr(key, value):
        return lambda f: f.attrs.__setitem__(key, value)

    def replace_weight(key, value):
        def edit(f):
            del f["weights"][key]
            f["weights"].create_dataset(key, data=value)
        return edit

    variant("version", set_attr("format_version", max(READABLE_FORMAT_VERSIONS) + 1), "format_version")
    variant("format", set_attr("format", "some-other-format"), "not a pcm-harness model")
    variant("arch_garbage", set_attr("architecture", "{not json"), "not valid JSON")
    variant("arch_wrong", set_attr("architecture", json.dumps([{"type": "lstm"}])), "unknown type")
    variant("meta_list", set_attr("metadata", "[1, 2]"), "not a JSON object")
    variant("n_classes_text", set_attr("n_classes", "ten"), "n_classes")
    variant("missing_tensor", lambda f: f["weights"].__delitem__("fc2.bias"), "fc2.bias' is missing")
    variant("shape", replace_weight("fc1.weight", np.zeros((64, 20), np.float32)), "shape")
    nan = np.zeros((20, 64), np.float32)
    nan[3, 4] = np.inf
    variant("non_finite", replace_weight("fc1.weight", nan), "non-finite")
    variant("extra", lambda f: f["weights"].create_dataset("fc3.weight", data=np.zeros(2)), "does not use")
    variant("int_weights", replace_weight("fc2.bias", np.arange(10)), "dtype")
    variant("bad_range", lambda f: f["ranges"]["fc1"].attrs.__setitem__("adc_range", -1.0), "adc_range")
    # A pickle in an attribute, and as an opaque tensor: read as bytes, never unpickled.
    trap = pickle.dumps(_Trap(tmp_path / "PWNED"))
    variant("pickle_attr", set_attr("architecture", np.void(trap)), "architecture")
    variant("pickle_tensor", replace_weight("fc2.bias", np.void(trap)), "dtype")
    return cases


CASES = [
    "missing", "text", "truncated", "empty", "foreign", "version", "format", "arch_garbage",
    "arch_wrong", "meta_list", "n_classes_text", "missing_tensor", "shape", "non_finite", "extra",
    "int_weights", "bad_range", "pickle_attr", "pickle_tensor",
]


@pytest.mark.parametrize("case", CASES)
def test_bad_model_files_raise_one_line_model_error(tmp_path: Path, case: str) -> None:
    path, expect = _corruptions(tmp_path)[case]
    with pytest.raises(ModelError) as info:
        load_model(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message, message
    assert expect in message, message
    assert not (tmp_path / "PWNED").exists()


def test_trap_pickle_would_fire_if_unpickled(tmp_path: Path) -> None:
    """Control for the pickle cases: the trap is live, so its absence above means something."""
    pickle.loads(pickle.dumps(_Trap(tmp_path / "PWNED")))
    assert (tmp_path / "PWNED").exists()


# -- the bundled dataset -------------------------------------------------------------------
def test_digits_dataset(digits) -> None:
    assert digits.name == "digits" and digits.n_classes == 10 and digits.input_shape == (64,)
    assert digits.x_train.shape == (DIGITS_TRAIN, 64) and digits.x_test.shape == (DIGITS_TEST, 64)
    assert digits.x_train.dtype == np.float32 and digits.y_train.dtype == np.int64
    for x in (digits.x_train, digits.x_test):
        assert x.min() == 0.0 and x.max() == 1.0
        np.testing.assert_array_equal(x * 16, np.rint(x * 16))  # pixels are k/16
    counts = np.bincount(digits.y_test, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37  # stratified: ~36 of each digit
    assert not digits.x_train.flags.writeable
    both = np.concatenate([digits.x_train, digits.x_test])
    assert np.unique(both, axis=0).shape[0] > 0.99 * both.shape[0]  # no split leakage by copying


def test_dataset_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown dataset 'mnist'"):
        load_dataset("mnist")
    with pytest.raises(ModelError, match="does not exist"):
        load_dataset(str(tmp_path / "gone.h5"))
    (tmp_path / "junk.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 64)
    with pytest.raises(ModelError, match="junk.h5") as info:
        load_dataset(str(tmp_path / "junk.h5"))
    assert "\n" not in str(info.value)
    with pytest.raises(ModelError, match="not a pcm-harness dataset"):
        load_dataset(str(default_model_path()))


def test_runtime_imports_do_not_need_sklearn() -> None:
    code = (
        "import sys, harness.data, harness.models.format, harness.train; "
        "harness.data.load_dataset('digits'); print('sklearn' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# -- shipped models ------------------------------------------------------------------------
@pytest.mark.parametrize("path_fn", [default_model_path, noise_aware_model_path])
def test_shipped_models_accuracy_and_metadata(path_fn, digits) -> None:
    path = path_fn()
    assert path.parent.parent == fixtures_dir()
    model = load_model(path)
    assert model.dataset == "digits" and model.input_shape == (64,) and model.n_classes == 10
    with torch.no_grad():
        logits = model.to_torch()(torch.from_numpy(np.array(digits.x_test)))
    accuracy = float(np.mean(logits.argmax(dim=1).numpy() == digits.y_test))
    print(f"{model.name}: float test accuracy {accuracy:.4f}")
    assert accuracy >= MIN_SHIPPED_ACCURACY
    assert model.metadata["float_test_accuracy"] == pytest.approx(accuracy, abs=1e-12)
    assert path.stat().st_size < 200_000


@pytest.mark.parametrize("path_fn", [default_model_path, noise_aware_model_path])
def test_shipped_ranges_cover_the_calibration_percentile(path_fn, digits) -> None:
    model = load_model(path_fn())
    percentile = model.metadata["range_percentile"]
    h = digits.x_train.astype(np.float64)
    for layer in model.analog_layers():
        ranges = model.ranges[layer.name]
        mvm = h @ layer.weight.T.astype(np.float64)
        for values, r in ((h, ranges.dac_range), (mvm, ranges.adc_range)):
            mags = np.abs(values)
            # r is the percentile: at least p% of values lie at or below it, at most p% strictly
            # below (up to one sample, < 1e-4 here; float32 vs float64 rounding via 1e-6).
            assert np.mean(mags <= r * (1 + 1e-6)) >= percentile / 100 - 1e-4, layer.name
            assert np.mean(mags < r * (1 - 1e-6)) <= percentile / 100 + 1e-4, layer.name
        h = np.maximum(mvm + layer.bias, 0.0)  # the shipped MLPs: ReLU between layers
