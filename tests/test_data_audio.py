"""The MicroNets MFCC front end against librosa's reference pipeline on known signals."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from harness.data.audio import (
    MICRONETS_KWS,
    FrontEnd,
    fit_clip,
    mfcc,
    mfcc_batch,
    standardize,
)
from harness.errors import ConfigError

librosa = pytest.importorskip("librosa", reason="the audio extra: pip install -e '.[audio]'")
scipy_fft = pytest.importorskip("scipy.fft")

SR = 16_000


def _known_signal() -> np.ndarray:
    """A 1 kHz tone for the first half second, then a 300 Hz → 3.5 kHz chirp, plus weak
    seeded noise: energy that moves across the mel bands and over time."""
    t = np.arange(SR) / SR
    tone = 0.5 * np.sin(2 * np.pi * 1000.0 * t) * (t < 0.5)
    chirp = 0.3 * np.sin(2 * np.pi * (300.0 * t + 0.5 * 3200.0 * (t - 0.5) ** 2)) * (t >= 0.5)
    return (tone + chirp + 0.01 * np.random.default_rng(0).standard_normal(SR)).astype(np.float32)


def _reference(x: np.ndarray) -> np.ndarray:
    """MicroNets' MFCC written out from librosa's primitives with the published parameters
    (MicroNets §4.1 / Hello Edge: 40 ms window, 20 ms stride, 10 MFCCs; 40 mel bands 20 Hz–4 kHz)."""
    spectrum = np.abs(librosa.stft(x, n_fft=640, hop_length=320, win_length=640, window="hann", center=False)) ** 2
    mel = librosa.filters.mel(sr=SR, n_fft=640, n_mels=40, fmin=20.0, fmax=4000.0) @ spectrum
    db = 10.0 * np.log10(np.maximum(mel, 1e-10))
    db = np.maximum(db, db.max() - 80.0)
    return scipy_fft.dct(db, type=2, norm="ortho", axis=0)[:10].T


def test_front_end_parameters_are_micronets() -> None:
    fe = MICRONETS_KWS
    assert (fe.sample_rate_hz, fe.clip_samples, fe.window_samples, fe.hop_samples) == (16000, 16000, 640, 320)
    assert (fe.n_mels, fe.fmin_hz, fe.fmax_hz, fe.n_mfcc) == (40, 20.0, 4000.0, 10)
    assert fe.feature_shape == (49, 10)  # 1 + (16000 − 640) / 320 frames


def test_mfcc_matches_the_librosa_reference_on_a_known_signal() -> None:
    x = _known_signal()
    ours = mfcc(x)
    ref = _reference(x)
    assert ours.shape == (49, 10) and ours.dtype == np.float32
    # float32 STFT and matrix products: differences of a few 1e-4 dB on values of ~100s.
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=2e-3)
    # And the library's own one-call MFCC agrees.
    one_call = librosa.feature.mfcc(
        y=x, sr=SR, n_mfcc=10, n_fft=640, hop_length=320, center=False, n_mels=40, fmin=20.0, fmax=4000.0
    ).T
    np.testing.assert_allclose(ours, one_call, rtol=1e-5, atol=2e-3)


def test_the_reference_would_catch_a_wrong_parameter() -> None:
    x = _known_signal()
    wrong = mfcc(x, FrontEnd(fmax_hz=8000.0))
    assert np.abs(wrong - _reference(x)).max() > 1.0
    assert mfcc(np.zeros(SR, np.float32), FrontEnd(hop_samples=160)).shape == (97, 10)


def test_batch_applies_top_db_per_clip() -> None:
    x = _known_signal()
    quiet = 1e-3 * x[::-1].copy()
    batch = mfcc_batch(np.stack([x, quiet]))
    np.testing.assert_array_equal(batch[0], mfcc(x))
    np.testing.assert_array_equal(batch[1], mfcc(quiet))
    assert np.abs(batch[1] - mfcc(x)).max() > 10.0


def test_bad_clips_are_rejected() -> None:
    with pytest.raises(ConfigError, match="16000 finite samples|shape \\(n, 16000\\)"):
        mfcc(np.zeros(15999, np.float32))
    with pytest.raises(ConfigError, match="finite"):
        mfcc(np.full(SR, np.nan, np.float32))
    assert fit_clip(np.ones(100)).shape == (SR,) and fit_clip(np.ones(20000)).shape == (SR,)
    assert fit_clip(np.ones(100))[100:].max() == 0.0


def test_standardize_rounds_to_the_stored_type() -> None:
    raw = np.array([[1.0, 10.0], [3.0, 30.0]], np.float32)
    z = standardize(raw, [2.0, 20.0], [1.0, 10.0])
    np.testing.assert_array_equal(z, [[-1.0, -1.0], [1.0, 1.0]])
    assert np.array_equal(standardize(raw / 3, [0.0, 0.0], [1.0, 1.0]).astype(np.float16).astype(np.float32),
                          standardize(raw / 3, [0.0, 0.0], [1.0, 1.0]))  # fmt: skip


def test_missing_librosa_is_one_line_naming_the_extra(tmp_path) -> None:  # type: ignore[no-untyped-def]
    code = (
        "import sys; sys.modules['librosa'] = None\n"
        "import numpy as np\n"
        "from harness.data.audio import mfcc\n"
        "try:\n    mfcc(np.zeros(16000, np.float32))\n"
        "except Exception as e:\n    print(type(e).__name__, '|', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.startswith("MissingExtraError |") and ".[audio]" in out and out.count("\n") == 1
    cli = (
        "import sys; sys.modules['librosa'] = None\n"
        "from harness.cli import app\n"
        "app(['data', 'kws', '--speech-commands', '.', '--out', 'never.h5'])\n"
    )
    run = subprocess.run([sys.executable, "-c", cli], capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode != 0 and run.stderr.count("\n") == 1 and ".[audio]" in run.stderr, run.stderr
    assert not (tmp_path / "never.h5").exists()


def test_the_harness_does_not_import_librosa() -> None:
    code = "import sys, harness.cli, harness.data, harness.data.audio; print('librosa' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
