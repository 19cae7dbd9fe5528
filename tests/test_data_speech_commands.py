"""The Speech Commands v2 loader on a miniature tree in the standard layout, made here."""

from __future__ import annotations

import json
import wave
from pathlib import Path

import numpy as np
import pytest

from harness.data import load_dataset
from harness.data.speech_commands import (
    KWS_CLASSES,
    NO_SPEAKER,
    SILENCE,
    UNKNOWN,
    build_speech_commands,
    plan_speech_commands,
)
from harness.errors import DatasetError
from tests.clikit import assert_one_line_error, invoke

SR = 16_000
WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go", "bed", "marvin")
SPEAKERS = ("0a1b2c3d", "11aa22bb", "deadbeef")


def _write_wav(path: Path, samples: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SR)
        w.writeframes(np.asarray(samples, dtype="<i2").tobytes())


def make_tree(root: Path) -> dict[str, str]:
    """3 speakers × 12 words × 1 short clip (tones whose pitch encodes the word); speaker 2 is
    the validation speaker and speaker 3 the test speaker, as the lists say. Returns the split
    of every relative path."""
    rng = np.random.default_rng(1)
    split_of: dict[str, str] = {}
    for w_index, word in enumerate(WORDS):
        for s_index, speaker in enumerate(SPEAKERS):
            n = 4000 + 2000 * s_index  # clips shorter than 1 s, like many real ones
            t = np.arange(n) / SR
            tone = 8000 * np.sin(2 * np.pi * (200 + 150 * w_index) * t) + rng.normal(0, 50, n)
            rel = f"{word}/{speaker}_nohash_0.wav"
            _write_wav(root / rel, tone)
            split_of[rel] = ("train", "val", "test")[s_index]
    (root / "validation_list.txt").write_text("\n".join(r for r, s in split_of.items() if s == "val") + "\n")
    (root / "testing_list.txt").write_text("\n".join(r for r, s in split_of.items() if s == "test") + "\n")
    for name in ("white_noise.wav", "running_tap.wav"):
        _write_wav(root / "_background_noise_" / name, rng.normal(0, 3000, 12 * SR))
    return split_of


def test_plan_honours_the_split_lists_and_class_mapping(tmp_path: Path) -> None:
    split_of = make_tree(tmp_path)
    plan = plan_speech_commands(tmp_path, unknown_fraction=0.2, silence_fraction=0.3, seed=0)
    for split, refs in plan.items():
        words = [r for r in refs if r.label != KWS_CLASSES.index(SILENCE)]
        for ref in words:
            rel = f"{ref.path.parent.name}/{ref.path.name}"
            assert split_of[rel] == split
            word = ref.path.parent.name
            expected = KWS_CLASSES.index(word) if word in KWS_CLASSES else KWS_CLASSES.index(UNKNOWN)
            assert ref.label == expected
        keywords = [r for r in words if r.label < 10]
        assert sorted(r.label for r in keywords) == list(range(10))  # every keyword once per split
        unknown = [r for r in words if r.label == KWS_CLASSES.index(UNKNOWN)]
        assert len(unknown) == 2  # ceil(0.2 × 10), drawn from bed/marvin
        silence = [r for r in refs if r.label == KWS_CLASSES.index(SILENCE)]
        assert len(silence) == 3 and all(r.speaker == NO_SPEAKER for r in silence)
        # silence windows come from this split's own time slice of every noise file
        lo, hi = {"train": (0, 0.8), "val": (0.8, 0.9), "test": (0.9, 1.0)}[split]
        assert all(lo * 12 * SR <= r.start and r.start + SR <= hi * 12 * SR for r in silence)
    speakers = {split: {r.speaker for r in refs if r.speaker != NO_SPEAKER} for split, refs in plan.items()}
    assert all(len(s) == 1 for s in speakers.values()) and len(set.union(*speakers.values())) == 3


def test_build_writes_features_once_into_the_dataset_format(tmp_path: Path) -> None:
    pytest.importorskip("librosa", reason="the audio extra")
    make_tree(tmp_path / "sc")
    counts = build_speech_commands(tmp_path / "sc", tmp_path / "kws.h5", unknown_fraction=0.2, silence_fraction=0.1)
    assert counts == {"train": 13, "val": 13, "test": 13}
    ds = load_dataset(tmp_path / "kws.h5")
    assert ds.input_shape == (1, 49, 10) and ds.class_names == KWS_CLASSES and ds.splits() == ("train", "val", "test")
    assert ds.metadata["frontend"]["hop_samples"] == 320 and ds.metadata["frontend"]["n_mfcc"] == 10
    # standardized with the train split's statistics: mean 0 / std 1 there per coefficient
    train = ds.x_train.reshape(-1, 10).astype(np.float64)
    np.testing.assert_allclose(train.mean(axis=0), 0.0, atol=2e-3)
    np.testing.assert_allclose(train.std(axis=0), 1.0, atol=2e-3)
    # different words (tones) give different features; labels line up with the plan
    assert np.unique(ds.y_train).tolist() == list(range(12))
    yes, no = ds.x_train[ds.y_train == 0][0], ds.x_train[ds.y_train == 1][0]
    assert np.abs(yes - no).max() > 0.5


def test_cli_builds_and_reports_json(tmp_path: Path) -> None:
    pytest.importorskip("librosa", reason="the audio extra")
    make_tree(tmp_path / "sc")
    result = invoke("data", "kws", "--speech-commands", str(tmp_path / "sc"), "--out", str(tmp_path / "k.h5"), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["clips"] == {"train": 12, "val": 12, "test": 12}  # 10 % of 10 → 1 unknown, 1 silence
    assert load_dataset(tmp_path / "k.h5").y_test.shape == (12,)


@pytest.mark.parametrize("missing", ["validation_list.txt", "testing_list.txt"])
def test_missing_split_file_is_one_line_and_non_zero(tmp_path: Path, missing: str) -> None:
    make_tree(tmp_path / "sc")
    (tmp_path / "sc" / missing).unlink()
    result = invoke("data", "kws", "--speech-commands", str(tmp_path / "sc"), "--out", str(tmp_path / "k.h5"))
    assert_one_line_error(result, f"has no {missing}")
    assert not (tmp_path / "k.h5").exists()


def test_other_layout_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        plan_speech_commands(tmp_path / "nowhere")
    make_tree(tmp_path / "sc")
    with (tmp_path / "sc" / "testing_list.txt").open("a") as f:
        f.write("yes/ffffffff_nohash_9.wav\n")
    with pytest.raises(DatasetError, match="lists 1 files that do not exist, e.g. yes/ffffffff_nohash_9.wav"):
        plan_speech_commands(tmp_path / "sc")
