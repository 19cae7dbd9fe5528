"""The MicroNets keyword-spotting front end: 1 s of 16 kHz audio → 49 × 10 MFCCs.

Parameters (``docs/data.md``): 16 kHz, 1 s clips, 40 ms Hann window (640 samples), 20 ms hop
(320 samples), no centre padding → 1 + (16000 − 640) / 320 = 49 frames; power spectrum,
40 mel bands from 20 Hz to 4 kHz, log (dB), DCT-II → the first 10 coefficients. The window,
hop and 10 MFCCs are MicroNets' (Banbury et al., MLSys 2021, §4.1, after Zhang et al. "Hello
Edge", 2017, Table 1); 40 bands over 20 Hz–4 kHz are the TensorFlow speech-commands example's
defaults (``micro_speech``/``input_data.py``). The MFCC itself is librosa's
(``librosa.feature.mfcc``: Slaney mel scale, ``power_to_db`` with ``top_db = 80``, orthonormal
DCT-II) — a well-kept implementation rather than a hand-written one.

librosa is the optional extra ``pcm-harness[audio]``; it is imported when a function here is
called, never at import time, so the rest of the harness runs without it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from types import ModuleType
from typing import Any

import numpy as np
import numpy.typing as npt

from harness.errors import ConfigError, DatasetError, MissingExtraError


@dataclass(frozen=True)
class FrontEnd:
    """MFCC front-end parameters (defaults: MicroNets KWS, see the module docstring)."""

    sample_rate_hz: int = 16_000
    clip_samples: int = 16_000
    window_samples: int = 640
    hop_samples: int = 320
    n_mels: int = 40
    fmin_hz: float = 20.0
    fmax_hz: float = 4000.0
    n_mfcc: int = 10
    top_db: float = 80.0

    def __post_init__(self) -> None:
        if self.window_samples > self.clip_samples or self.hop_samples <= 0 or self.window_samples <= 0:
            raise ConfigError(
                f"front end: window {self.window_samples} / hop {self.hop_samples} samples do not fit "
                f"a clip of {self.clip_samples} samples"
            )
        if not 0.0 <= self.fmin_hz < self.fmax_hz <= self.sample_rate_hz / 2:
            raise ConfigError(
                f"front end: mel range {self.fmin_hz}–{self.fmax_hz} Hz is not inside 0–{self.sample_rate_hz / 2} Hz"
            )
        if not 1 <= self.n_mfcc <= self.n_mels:
            raise ConfigError(f"front end: n_mfcc={self.n_mfcc} must be in 1..n_mels={self.n_mels}")

    @property
    def n_frames(self) -> int:
        """Frames per clip (49 for the defaults)."""
        return 1 + (self.clip_samples - self.window_samples) // self.hop_samples

    @property
    def feature_shape(self) -> tuple[int, int]:
        """``(n_frames, n_mfcc)``: one clip's feature shape, ``(49, 10)`` for the defaults."""
        return (self.n_frames, self.n_mfcc)

    def as_metadata(self) -> dict[str, Any]:
        """The parameters as a JSON-able dict (stored in a dataset's ``metadata["frontend"]``)."""
        return {"kind": "mfcc", "library": "librosa", **asdict(self)}


MICRONETS_KWS = FrontEnd()


def require_librosa() -> ModuleType:
    """Import librosa or raise a one-line error naming the extra that provides it.

    Raises:
        MissingExtraError: librosa is not installed.
    """
    try:
        import librosa
    except ImportError as exc:
        raise MissingExtraError(
            "the audio front end needs librosa: install the audio extra with "
            "`pip install -e '.[audio]'` (or `pip install librosa`)"
        ) from exc
    return librosa


def fit_clip(signal: npt.ArrayLike, clip_samples: int = MICRONETS_KWS.clip_samples) -> npt.NDArray[np.float32]:
    """``signal`` as exactly ``clip_samples`` samples: zero-padded at the end or cut at the end
    (Speech Commands clips are "up to" 1 s; the TensorFlow example pads them the same way).

    Raises:
        ConfigError: ``signal`` is not 1-D or not finite.
    """
    x = np.asarray(signal, dtype=np.float32)
    if x.ndim != 1 or not np.all(np.isfinite(x)):
        raise ConfigError(f"audio must be a finite 1-D signal, got shape {x.shape}")
    if x.shape[0] >= clip_samples:
        return x[:clip_samples].copy()
    return np.concatenate([x, np.zeros(clip_samples - x.shape[0], dtype=np.float32)])


def mfcc(signal: npt.ArrayLike, front_end: FrontEnd = MICRONETS_KWS) -> npt.NDArray[np.float32]:
    """MFCCs of one clip: ``(n_frames, n_mfcc)`` = ``(49, 10)`` for the defaults (time × coefficient).

    Args:
        signal: mono audio in ``[-1, 1]`` at ``front_end.sample_rate_hz``, exactly
            ``front_end.clip_samples`` long (use :func:`fit_clip`).

    Raises:
        ConfigError: wrong length or not finite.
        MissingExtraError: librosa is missing.
    """
    x = np.asarray(signal, dtype=np.float32)
    if x.ndim != 1:
        raise ConfigError(f"audio clip must be 1-D, got shape {x.shape}; use mfcc_batch() for a batch")
    return mfcc_batch(x[None, :], front_end)[0]


def mfcc_batch(signals: npt.ArrayLike, front_end: FrontEnd = MICRONETS_KWS) -> npt.NDArray[np.float32]:
    """MFCCs of a batch ``(n, clip_samples)`` → ``(n, n_frames, n_mfcc)``.

    The whole batch goes through librosa at once (librosa accepts leading batch axes); the
    ``top_db`` floor is applied per clip, relative to each clip's own peak, exactly as
    ``librosa.power_to_db(S, top_db=…)`` does for one clip.

    Raises:
        ConfigError: not ``(n, clip_samples)`` or not finite.
        MissingExtraError: librosa is missing.
    """
    librosa = require_librosa()
    xs = np.asarray(signals, dtype=np.float32)
    if xs.ndim != 2 or xs.shape[1] != front_end.clip_samples or not np.all(np.isfinite(xs)):
        raise ConfigError(
            f"audio clips must be finite, shape (n, {front_end.clip_samples}); got {xs.shape}; use fit_clip()"
        )
    if xs.shape[0] == 0:
        return np.empty((0, *front_end.feature_shape), dtype=np.float32)
    mel_power = librosa.feature.melspectrogram(
        y=xs,
        sr=front_end.sample_rate_hz,
        n_fft=front_end.window_samples,
        win_length=front_end.window_samples,
        hop_length=front_end.hop_samples,
        window="hann",
        center=False,
        power=2.0,
        n_mels=front_end.n_mels,
        fmin=front_end.fmin_hz,
        fmax=front_end.fmax_hz,
    )  # (n, n_mels, n_frames)
    log_mel_db = librosa.power_to_db(mel_power, ref=1.0, top_db=None)
    log_mel_db = np.maximum(log_mel_db, log_mel_db.max(axis=(1, 2), keepdims=True) - front_end.top_db)
    coeffs = librosa.feature.mfcc(S=log_mel_db, n_mfcc=front_end.n_mfcc, dct_type=2, norm="ortho")
    return np.ascontiguousarray(np.swapaxes(coeffs, 1, 2), dtype=np.float32)


def standardization_stats(train: npt.NDArray[np.float32]) -> tuple[list[float], list[float]]:
    """Per-coefficient mean and std (last axis) of training features, in float64.

    A coefficient with zero spread gets std 1 (left unscaled rather than divided by zero).
    """
    flat = np.asarray(train, dtype=np.float64).reshape(-1, train.shape[-1])
    std = flat.std(axis=0)
    std[std == 0.0] = 1.0
    return flat.mean(axis=0).tolist(), std.tolist()


def standardize(
    raw: npt.NDArray[np.float32], mean: list[float], std: list[float], dtype: str = "float16"
) -> npt.NDArray[np.float32]:
    """``(raw − mean) / std`` per coefficient (last axis), rounded to ``dtype`` (the stored type)
    and returned as float32, so that it is exactly what a dataset file of that type holds."""
    z = (np.asarray(raw, dtype=np.float64) - np.asarray(mean)) / np.asarray(std)
    return z.astype(dtype).astype(np.float32)


def read_wav(path: str, sample_rate_hz: int = MICRONETS_KWS.sample_rate_hz) -> npt.NDArray[np.float32]:
    """A mono 16-bit PCM WAV file as float32 in ``[-1, 1)``.

    Uses the standard library's ``wave`` (Speech Commands clips are 16-bit mono 16 kHz).

    Raises:
        DatasetError: not a readable 16-bit mono WAV at ``sample_rate_hz``.
    """
    import wave

    try:
        with wave.open(path, "rb") as w:
            rate, width, channels, n = w.getframerate(), w.getsampwidth(), w.getnchannels(), w.getnframes()
            raw = w.readframes(n)
    except (OSError, EOFError, wave.Error) as exc:
        raise DatasetError(f"cannot read WAV file {path}: {' '.join(str(exc).split()) or type(exc).__name__}") from exc
    if rate != sample_rate_hz or width != 2 or channels != 1:
        raise DatasetError(
            f"WAV file {path} is {rate} Hz, {8 * width}-bit, {channels} channel(s); expected "
            f"{sample_rate_hz} Hz 16-bit mono"
        )
    return np.frombuffer(raw, dtype="<i2").astype(np.float32) / np.float32(32768.0)
