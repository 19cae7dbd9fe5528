"""Google Speech Commands v2 (Warden 2018, arXiv:1804.03209) → the 12-class KWS dataset.

Classes (Warden 2018 §7; the task of Hello Edge and MicroNets): the ten keywords yes no up down
left right on off stop go, ``_silence_`` and ``_unknown_`` (every other word), in that label
order.

A local copy in the standard layout is read; nothing is downloaded:

    DIR/<word>/<speaker>_nohash_<n>.wav     16 kHz 16-bit mono, up to 1 s
    DIR/_background_noise_/*.wav            long noise recordings
    DIR/validation_list.txt                 relative paths of the validation clips
    DIR/testing_list.txt                    relative paths of the test clips

Every other clip is training data. As in TensorFlow's ``speech_commands/input_data.py``
(the reference pipeline of Hello Edge and MicroNets), each split keeps all its keyword clips
and adds ``_unknown_`` clips (drawn from the other words) and ``_silence_`` clips, each
``10 %`` of that split's keyword count by default. Silence clips are 1 s windows cut from the
background-noise files, scaled by a gain drawn uniformly from ``[0, 1]``; each noise file is cut
by time (first 80 % → train, next 10 % → val, last 10 % → test) so no noise sample is in two
splits. Clips shorter than 1 s are zero-padded at the end.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from harness.errors import ConfigError, DatasetError

if TYPE_CHECKING:
    from harness.data.dataset import Dataset

KEYWORDS: tuple[str, ...] = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
SILENCE = "_silence_"
UNKNOWN = "_unknown_"
#: Class names in label order: the ten keywords, then silence, then unknown.
KWS_CLASSES: tuple[str, ...] = (*KEYWORDS, SILENCE, UNKNOWN)

BACKGROUND_DIR = "_background_noise_"
SPLIT_LISTS = {"val": "validation_list.txt", "test": "testing_list.txt"}
#: Time fraction of every background-noise file given to each split, in order.
NOISE_SPLIT_FRACTIONS = {"train": 0.8, "val": 0.1, "test": 0.1}
#: Speaker id recorded for silence clips (they have no speaker).
NO_SPEAKER = -1


@dataclass(frozen=True)
class ClipRef:
    """One clip to compute: a WAV file, or a window of a background-noise file (silence)."""

    path: Path
    label: int
    speaker: int
    start: int = 0  # first sample (silence windows)
    gain: float = 1.0  # silence windows only


def speaker_of(path: Path) -> str:
    """The speaker hash of a Speech Commands file name (``<hash>_nohash_<n>.wav``)."""
    return path.name.split("_nohash_")[0]


def plan_speech_commands(
    root: str | os.PathLike[str],
    *,
    unknown_fraction: float = 0.1,
    silence_fraction: float = 0.1,
    seed: int = 0,
) -> dict[str, list[ClipRef]]:
    """The clips of each split (``train``, ``val``, ``test``) of a local Speech Commands copy.

    Only file names and the noise files' lengths are read here (no audio decoding).

    Raises:
        DatasetError: not a directory, a split list missing, a listed file missing, a keyword
            folder missing or empty, or no background noise (one line naming what to fix).
        ConfigError: a fraction outside ``[0, 1]``.
    """
    for name, value in (("unknown_fraction", unknown_fraction), ("silence_fraction", silence_fraction)):
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"{name}={value} is outside [0, 1]")
    base = Path(root)
    if not base.is_dir():
        raise DatasetError(f"Speech Commands directory {base} does not exist")
    listed: dict[str, set[str]] = {}
    for split, list_name in SPLIT_LISTS.items():
        list_path = base / list_name
        if not list_path.is_file():
            raise DatasetError(
                f"Speech Commands directory {base} has no {list_name}; expected the standard v2 layout "
                "(<word>/<speaker>_nohash_<n>.wav plus validation_list.txt and testing_list.txt)"
            )
        listed[split] = {line.strip() for line in list_path.read_text().splitlines() if line.strip()}
    overlap = listed["val"] & listed["test"]
    if overlap:
        raise DatasetError(f"{base}: {len(overlap)} clips are in both split lists, e.g. {min(overlap)}")
    for split, names in listed.items():
        missing = sorted(n for n in names if not (base / n).is_file())
        if missing:
            raise DatasetError(
                f"{base / SPLIT_LISTS[split]} lists {len(missing)} files that do not exist, e.g. {missing[0]}"
            )
    words = sorted(p.name for p in base.iterdir() if p.is_dir() and p.name != BACKGROUND_DIR and not p.name.startswith("."))
    for keyword in KEYWORDS:
        if keyword not in words:
            raise DatasetError(f"Speech Commands directory {base} has no folder {keyword}/ (a keyword)")
    speakers: dict[str, int] = {}
    files: dict[str, list[tuple[str, int, Path]]] = {"train": [], "val": [], "test": []}
    for word in words:
        for wav in sorted((base / word).glob("*.wav")):
            rel = f"{word}/{wav.name}"
            split = "val" if rel in listed["val"] else "test" if rel in listed["test"] else "train"
            label = KWS_CLASSES.index(word) if word in KEYWORDS else KWS_CLASSES.index(UNKNOWN)
            files[split].append((speaker_of(wav), label, wav))
    for hash_ in sorted({s for split in files.values() for s, _, _ in split}):
        speakers[hash_] = len(speakers)
    noise = _background_files(base)
    rng = np.random.default_rng(seed)
    unknown_label = KWS_CLASSES.index(UNKNOWN)
    out: dict[str, list[ClipRef]] = {}
    for split, entries in files.items():
        keyword_refs = [ClipRef(p, lab, speakers[s]) for s, lab, p in entries if lab != unknown_label]
        if not keyword_refs:
            raise DatasetError(f"{base}: the {split} split has no keyword clips")
        unknown_refs = [ClipRef(p, lab, speakers[s]) for s, lab, p in entries if lab == unknown_label]
        n_unknown = min(len(unknown_refs), int(np.ceil(unknown_fraction * len(keyword_refs))))
        chosen = sorted(rng.choice(len(unknown_refs), size=n_unknown, replace=False)) if n_unknown else []
        n_silence = int(np.ceil(silence_fraction * len(keyword_refs)))
        silence = _silence_windows(noise, split, n_silence, rng)
        out[split] = keyword_refs + [unknown_refs[int(i)] for i in chosen] + silence
    return out


def _background_files(base: Path) -> list[tuple[Path, int]]:
    import wave

    from harness.data.audio import MICRONETS_KWS

    folder = base / BACKGROUND_DIR
    paths = sorted(folder.glob("*.wav")) if folder.is_dir() else []
    if not paths:
        raise DatasetError(f"Speech Commands directory {base} has no {BACKGROUND_DIR}/*.wav to cut silence from")
    out = []
    for path in paths:
        try:
            with wave.open(str(path), "rb") as w:
                n = w.getnframes()
        except (OSError, EOFError, wave.Error) as exc:
            raise DatasetError(f"cannot read background noise {path}: {exc}") from exc
        if int(n * NOISE_SPLIT_FRACTIONS["val"]) < MICRONETS_KWS.clip_samples:
            raise DatasetError(
                f"background noise {path} is {n} samples long; each split needs at least 1 s, "
                f"so the file must have {int(np.ceil(MICRONETS_KWS.clip_samples / NOISE_SPLIT_FRACTIONS['val']))}"
            )
        out.append((path, n))
    return out


def _silence_windows(noise: list[tuple[Path, int]], split: str, count: int, rng: np.random.Generator) -> list[ClipRef]:
    from harness.data.audio import MICRONETS_KWS

    clip = MICRONETS_KWS.clip_samples
    cut = np.cumsum([0.0, *NOISE_SPLIT_FRACTIONS.values()])
    index = list(NOISE_SPLIT_FRACTIONS).index(split)
    refs = []
    for _ in range(count):
        path, n = noise[int(rng.integers(len(noise)))]
        lo, hi = int(cut[index] * n), int(cut[index + 1] * n)
        start = int(rng.integers(lo, hi - clip + 1))
        refs.append(ClipRef(path, KWS_CLASSES.index(SILENCE), NO_SPEAKER, start, float(rng.uniform(0.0, 1.0))))
    return refs


def clip_signal(ref: ClipRef) -> npt.NDArray[np.float32]:
    """The 1 s, 16 kHz signal of one planned clip."""
    from harness.data.audio import MICRONETS_KWS, fit_clip, read_wav

    x = read_wav(str(ref.path))
    if ref.label == KWS_CLASSES.index(SILENCE):
        return (ref.gain * x[ref.start : ref.start + MICRONETS_KWS.clip_samples]).astype(np.float32)
    return fit_clip(x)


def build_speech_commands(
    root: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    unknown_fraction: float = 0.1,
    silence_fraction: float = 0.1,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, int]:
    """Compute the MicroNets features of a local Speech Commands copy once and write a dataset file.

    Features are 49 × 10 MFCCs (:mod:`harness.data.audio`), standardized per coefficient with
    the train split's mean and std (kept in ``metadata["normalization"]``), stored as float16.
    ``progress(done, total)`` is called after every batch of clips.

    Returns:
        clips per split.

    Raises:
        DatasetError: see :func:`plan_speech_commands`; unreadable WAV files.
        MissingExtraError: librosa is missing.
        ModelError: ``out`` cannot be written.
    """
    from harness.data.audio import MICRONETS_KWS, mfcc_batch, require_librosa
    from harness.data.dataset import save_dataset

    require_librosa()  # fail before planning, not after reading thousands of names
    plan = plan_speech_commands(root, unknown_fraction=unknown_fraction, silence_fraction=silence_fraction, seed=seed)
    total = sum(len(v) for v in plan.values())
    done = 0
    raw: dict[str, npt.NDArray[np.float32]] = {}
    batch = 256
    for split, refs in plan.items():
        feats = np.empty((len(refs), *MICRONETS_KWS.feature_shape), dtype=np.float32)
        for lo in range(0, len(refs), batch):
            chunk = refs[lo : lo + batch]
            feats[lo : lo + len(chunk)] = mfcc_batch(np.stack([clip_signal(r) for r in chunk]))
            done += len(chunk)
            if progress is not None:
                progress(done, total)
        raw[split] = feats
    dataset = kws_dataset(
        "speech-commands-v2-kws",
        raw,
        labels={split: [r.label for r in refs] for split, refs in plan.items()},
        subjects={split: [r.speaker for r in refs] for split, refs in plan.items()},
        metadata={
            "split": "validation_list.txt / testing_list.txt; the rest is train; subject_* = speaker index (-1: silence)",
            "source_dir": str(Path(root).resolve()),
            "unknown_fraction": unknown_fraction,
            "silence_fraction": silence_fraction,
            "seed": seed,
        },
    )
    save_dataset(dataset, out, feature_dtype="float16", source=f"Google Speech Commands v2 at {Path(root).resolve()}")
    return {split: len(refs) for split, refs in plan.items()}



def kws_dataset(
    name: str,
    raw: Mapping[str, npt.NDArray[np.float32]],
    *,
    labels: Mapping[str, Sequence[int]],
    subjects: Mapping[str, Sequence[int]],
    metadata: Mapping[str, Any],
) -> Dataset:
    """A 12-class KWS :class:`Dataset` from raw ``(n, 49, 10)`` MFCCs per split.

    Standardizes every coefficient with the train split's mean and std, rounds to float16 (the
    stored type), adds the channel axis (samples ``(1, 49, 10)``, the zoo's KWS input shape) and
    records the front end, axes and normalization in ``metadata`` next to the caller's facts.
    """
    from harness.data.audio import MICRONETS_KWS, standardization_stats, standardize
    from harness.data.dataset import Dataset

    mean, std = standardization_stats(raw["train"])
    arrays: dict[str, npt.NDArray[np.generic]] = {}
    for split, feats in raw.items():
        arrays[f"x_{split}"] = standardize(feats, mean, std, "float16")[:, None]
        arrays[f"y_{split}"] = np.asarray(labels[split], dtype=np.int64)
        arrays[f"subject_{split}"] = np.asarray(subjects[split], dtype=np.int64)
    return Dataset(
        name=name,
        n_classes=len(KWS_CLASSES),
        input_shape=(1, *MICRONETS_KWS.feature_shape),
        class_names=KWS_CLASSES,
        metadata={
            "frontend": MICRONETS_KWS.as_metadata(),
            "axes": ["channel", "time_frame", "mfcc"],
            "normalization": {"kind": "per-coefficient standardization, train split", "mean": mean, "std": std},
            **metadata,
        },
        **arrays,  # type: ignore[arg-type]
    )
