"""``harness train`` end to end on the bundled digits data (tiny budgets)."""

from __future__ import annotations

import json

import pytest

from harness.evaluation.cim import converter_ranges
from harness.models.format import load_model
from tests.clikit import assert_one_line_error, invoke


def test_train_writes_a_model_with_learned_ranges_and_removes_its_checkpoint(tmp_path) -> None:
    out = tmp_path / "m.h5"
    result = invoke(
        "train", "--model", "digits-mlp", "--data", "digits", "--recipe", "analognets", "--bits", "6",
        "--epochs", "1", "--seed", "2", "--out", str(out), "--json",
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    model = load_model(out)
    assert summary["recipe"] == "analognets" and summary["epochs_run"] == 2  # stage 1 + stage 2
    assert model.metadata["bits"] == 6 and model.metadata["recipe"] == "analognets"
    assert set(model.ranges) == {"fc1", "fc2"}
    assert converter_ranges(model).adc_norm_range == pytest.approx(model.metadata["adc_gain"], rel=1e-5)
    assert not (tmp_path / "m.h5.ckpt.h5").exists()


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--recipe", "magic"], "unknown recipe"),
        (["--recipe", "noise", "--eta", "-0.1"], "eta"),
        (["--recipe", "analognets", "--bits", "1"], "bits"),
        (["--recipe", "analognets", "--bits", "17"], "bits"),
        (["--recipe", "baseline", "--model", "no-such-model"], "unknown model"),
        (["--recipe", "baseline", "--resume"], "no checkpoint"),
    ],
)
def test_bad_input_is_one_line(tmp_path, args, fragment) -> None:
    base = {"--model": "digits-mlp", "--data": "digits", "--out": str(tmp_path / "m.h5")}
    for key in args[::2]:
        base.pop(key, None)
    flat = [item for pair in base.items() for item in pair]
    assert_one_line_error(invoke("train", *flat, *args), fragment)


def test_shape_mismatch_corrupt_checkpoint_and_foreign_resume_are_one_line(tmp_path) -> None:
    start = tmp_path / "start.h5"
    assert invoke("train", "--model", "digits-mlp", "--data", "digits", "--recipe", "baseline", "--epochs", "1",
                  "--out", str(start)).exit_code == 0
    other = tmp_path / "other.h5"
    assert invoke("train", "--model", "digits-mlp", "--data", "digits", "--recipe", "baseline", "--epochs", "1",
                  "--seed", "9", "--out", str(other)).exit_code == 0
    # A checkpoint of a run that started from `start` …
    from harness.data import load_dataset
    from harness.train.engine import TrainOptions, train_model
    from harness.train.recipes import make_recipe

    ckpt = tmp_path / "run.h5.ckpt.h5"

    class Stop(Exception):
        pass

    def stop(event) -> None:
        if event["step"] == 3:
            raise Stop

    with pytest.raises(Stop):
        train_model(load_model(start), load_dataset("digits"), make_recipe("baseline"),
                    TrainOptions(epochs=1, seed=0, checkpoint_steps=2), checkpoint_path=ckpt, progress=stop)
    # … cannot be resumed with another starting model.
    result = invoke("train", "--model", str(other), "--data", "digits", "--recipe", "baseline", "--epochs", "1",
                    "--checkpoint-steps", "2", "--resume", "--out", str(tmp_path / "run.h5"))
    assert_one_line_error(result, "made for model")
    ckpt.write_bytes(b"not hdf5 at all")
    result = invoke("train", "--model", str(start), "--data", "digits", "--recipe", "baseline", "--epochs", "1",
                    "--checkpoint-steps", "2", "--resume", "--out", str(tmp_path / "run.h5"))
    assert_one_line_error(result, "corrupt")
    # A model of another input shape than the data.
    from harness.models.torch_convert import model_from_torch
    from harness.train.digits import build_mlp

    narrow = tmp_path / "narrow.h5"
    from harness.models.format import save_model

    save_model(model_from_torch(build_mlp(32, 8, 10), name="narrow", input_shape=(32,), n_classes=10,
                                dataset="digits"), narrow)
    result = invoke("train", "--model", str(narrow), "--data", "digits", "--recipe", "baseline",
                    "--out", str(tmp_path / "x.h5"))
    assert_one_line_error(result, "shape")
