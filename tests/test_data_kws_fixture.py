"""The shipped synthetic keyword-spotting dataset (fixtures/kws.h5) and its build script.

What is checked, and why that way:

- the file's *statistics are identical* to what the script defines: every split's labels and
  speakers (hence class counts and the speaker-disjoint split) equal the script's plan
  exactly; this needs neither eSpeak NG nor librosa;
- a *subset is regenerated bit for bit*: eSpeak NG's output is byte-identical across runs
  (the first clip's 16-bit audio is compared by SHA-256 with the hash stored at build time),
  and the features of a dozen clips from every split and class are recomputed through the
  same front end and compared with the stored float16 values. They must be equal to within
  one float16 step; on the machine that built the file they are exactly equal. The step of
  slack is kept because the STFT/mel products run through FFT and BLAS kernels that may round
  differently on another CPU, and a value that lands on a float16 rounding boundary can then
  round the other way. Regenerating the full file (9600 clips, minutes) is the script's job,
  not a unit test's.
"""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
import sys

import numpy as np
import pytest

from harness.data import fixtures_dir, load_dataset
from harness.data.audio import standardize
from harness.data.speech_commands import KWS_CLASSES
from tests.tools import skip_unless_tool

SCRIPT = fixtures_dir() / "build_kws_dataset.py"


@pytest.fixture(scope="module")
def script():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("build_kws_dataset", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it is executed
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def kws():  # type: ignore[no-untyped-def]
    return load_dataset("kws")


def test_shipped_file_is_small_and_well_formed(kws) -> None:  # type: ignore[no-untyped-def]
    assert (fixtures_dir() / "kws.h5").stat().st_size <= 10 * 1024 * 1024
    assert kws.input_shape == (1, 49, 10) and kws.class_names == KWS_CLASSES
    assert kws.splits() == ("train", "val", "test")
    assert (len(kws.y_train), len(kws.y_val), len(kws.y_test)) == (7680, 960, 960)
    for split in kws.splits():  # balanced: 2 of each keyword, 2 unknown, 2 silence per speaker
        counts = np.bincount(getattr(kws, f"y_{split}"), minlength=12)
        assert np.all(counts == counts[0]), (split, counts)
    speakers = [set(getattr(kws, f"subject_{s}").tolist()) for s in kws.splits()]
    assert [len(s) for s in speakers] == [320, 40, 40]
    assert not (speakers[0] & speakers[1] or speakers[0] & speakers[2] or speakers[1] & speakers[2])
    train = kws.x_train.reshape(-1, 10).astype(np.float64)  # standardized with train statistics
    np.testing.assert_allclose(train.mean(axis=0), 0.0, atol=1e-3)
    np.testing.assert_allclose(train.std(axis=0), 1.0, atol=1e-3)
    fe = kws.metadata["frontend"]
    assert (fe["window_samples"], fe["hop_samples"], fe["n_mels"], fe["n_mfcc"]) == (640, 320, 40, 10)


def test_labels_and_speakers_equal_the_script_plan(script, kws) -> None:  # type: ignore[no-untyped-def]
    plan = script.plan()
    for split in kws.splits():
        clips = [c for c in plan if c.split == split]
        np.testing.assert_array_equal(getattr(kws, f"y_{split}"), [c.label for c in clips])
        np.testing.assert_array_equal(getattr(kws, f"subject_{split}"), [c.speaker for c in clips])
    assert kws.metadata["generator"]["seed"] == script.SEED


def test_script_regenerates_a_subset_bit_for_bit(script, kws) -> None:  # type: ignore[no-untyped-def]
    skip_unless_tool(shutil.which("espeak-ng"), "needs espeak-ng (apt-get install espeak-ng)")
    pytest.importorskip("librosa", reason="the audio extra")
    plan = script.plan()
    first = script.clip_audio(plan[0])
    assert hashlib.sha256(first.tobytes()).hexdigest() == kws.metadata["audio_sha256_first_clip"]
    offsets = {s: next(i for i, c in enumerate(plan) if c.split == s) for s in kws.splits()}
    picked = []  # per split: one clip of each of 4 classes, including silence and unknown
    for split in kws.splits():
        for label in (0, 7, KWS_CLASSES.index("_silence_"), KWS_CLASSES.index("_unknown_")):
            picked.append(next(c for c in plan if c.split == split and c.label == label))
    norm = kws.metadata["normalization"]
    regenerated = standardize(script.raw_features(picked), norm["mean"], norm["std"], "float16")
    for clip, features in zip(picked, regenerated, strict=True):
        stored = getattr(kws, f"x_{clip.split}")[clip.index - offsets[clip.split], 0]
        step = np.spacing(np.abs(stored).astype(np.float16)).astype(np.float32)
        assert np.all(np.abs(features - stored) <= step), clip
