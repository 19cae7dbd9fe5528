"""Accuracy vs drift time: conductances from a live chip or a recording → CiM inference.

One code path for both sources. A **recording** (``harness session run`` output) holds the
layout, the programming outcome and readouts at recorded times
(:mod:`harness.evaluation.readouts`, which also says how requested times are matched). A
**live chip** is programmed and read with the session runner's calls, in memory
(:func:`harness.evaluation.live.read_chip_direct`), or through the session runner into a
recording when one is asked for (``record=``, ``harness evaluate --out``): the same readouts
either way, so a recording and the live virtual chip that made it (same URI, model,
programming parameters and times) give bit-identical readouts and identical accuracy tables.

From each chip's readouts the CiM simulator (:mod:`harness.evaluation.cim`) runs the model on the
dataset's test split at every (chip, time, bit-width), in batched tensor operations
(:mod:`harness.evaluation.evaluator`):

* **Simulated chips.** ``--chip virtual?seed=S`` with ``runs=N`` programs and reads N
  virtual chips with seeds ``S, S+1, …, S+N−1`` (each on its own simulated clock: a year
  takes no wall time), all with the URI's geometry, and evaluates them in batches of at most
  :data:`~harness.evaluation.evaluator.EVAL_BATCH_BYTES` of readouts (float32), so that
  memory stays flat in N. A non-virtual chip (serial, VISA) is
  one chip, and so is a recording: ``runs > 1`` then means repeated evaluations of that
  chip's readouts with fresh per-read noise draws, and is refused without ``read_noise``
  (they would be identical).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from harness.errors import EvaluationError
from harness.evaluation.compensation import Compensation
from harness.evaluation.evaluator import EVAL_BATCH_BYTES, ReadoutEvaluator, evaluate_readouts, phase_timing
from harness.evaluation.live import read_live_chip, virtual_chip_uris
from harness.evaluation.ranges import DEFAULT_CALIBRATION_SAMPLES
from harness.evaluation.readouts import ChipReadouts, model_of_recording, readouts_from_recording
from harness.evaluation.result import EvaluationProgress, EvaluationResult, EvaluationTiming, ProgressCallback
from harness.evaluation.settings import (
    DEFAULT_BITS,
    DEFAULT_TIMES_S,
    DEFAULT_VIRTUAL_RUNS,
    MAX_RUNS,
    normalize_bits,
    normalize_times,
)
from harness.models.format import Model, default_model_path, load_model
from harness.programming.mapping import Layout
from harness.programming.write_verify import ProgrammingParams
from harness.recording import open_recording


def _resolve_model(model: Model | str | Path | None) -> Model | None:
    if model is None or isinstance(model, Model):
        return model
    return resolve_model(model)


def resolve_model(ref: str | Path) -> Model:
    """A model by reference: ``"default"``, a zoo or bundled model's name (``analognet-kws``,
    ``digits_mlp``: its file in ``fixtures/models/``) or a file
    (:func:`harness.models.resolve_model_path`).

    Raises:
        ModelError: no such file, zoo or bundled model, or an unreadable file.
    """
    from harness.models import resolve_model_path

    return load_model(resolve_model_path(ref))


def evaluate_chip(
    chip_uri: str,
    model: Model | str | Path | None = None,
    *,
    times_s: Sequence[float] = DEFAULT_TIMES_S,
    runs: int | None = None,
    bits: Sequence[int | None] = DEFAULT_BITS,
    gdc: bool = True,
    read_noise: bool = False,
    seed: int = 0,
    params: ProgrammingParams | None = None,
    match: str = "nearest",
    progress: ProgressCallback | None = None,
    range_policy: str = "auto",
    calibration_samples: int = DEFAULT_CALIBRATION_SAMPLES,
    record: str | Path | None = None,
) -> EvaluationResult:
    """Program ``model`` (default: the bundled default model) on the chip(s) named by
    ``chip_uri``, read them at ``times_s`` and evaluate (see the module docstring).

    ``runs``: simulated chips for a ``virtual`` URI (default 25); for any other chip,
    evaluations of its one set of readouts (default 1; > 1 needs ``read_noise``). A
    ``replay:FILE`` URI evaluates that recording (:func:`evaluate_recording`).
    ``range_policy``, ``calibration_samples``: the converter ranges
    (:class:`harness.evaluation.evaluator.ReadoutEvaluator`).
    ``record``: also record the session in this new file (one chip only: a virtual URI
    needs ``runs=1``); by default nothing is written.

    Raises:
        EvaluationError / ConfigError / HarnessError: bad arguments or from the chip.
    """
    return evaluate_chip_compensated(
        chip_uri, model, [None], times_s=times_s, runs=runs, bits=bits, gdc=gdc, read_noise=read_noise, seed=seed,
        params=params, match=match, progress=progress, range_policy=range_policy,
        calibration_samples=calibration_samples, record=record,
    )[0]


def evaluate_chip_compensated(
    chip_uri: str,
    model: Model | str | Path | None,
    compensations: Sequence[Compensation | None],
    *,
    times_s: Sequence[float] = DEFAULT_TIMES_S,
    runs: int | None = None,
    bits: Sequence[int | None] = DEFAULT_BITS,
    gdc: bool = True,
    read_noise: bool = False,
    seed: int = 0,
    params: ProgrammingParams | None = None,
    match: str = "nearest",
    progress: ProgressCallback | None = None,
    range_policy: str = "auto",
    calibration_samples: int = DEFAULT_CALIBRATION_SAMPLES,
    record: str | Path | None = None,
) -> list[EvaluationResult]:
    """:func:`evaluate_chip` under each drift compensation of ``compensations`` (None: ``gdc``
    decides), on the same chips, readouts and test examples: one result per method."""
    from harness.chip.registry import parse_uri

    parsed = parse_uri(chip_uri)
    if parsed.scheme == "replay":
        return evaluate_recording_compensated(
            parsed.path, model, compensations, times_s=times_s, runs=runs, bits=bits, gdc=gdc, read_noise=read_noise,
            seed=seed, match=str(parsed.params.get("match", match)), progress=progress, range_policy=range_policy,
            calibration_samples=calibration_samples,
        )
    wall0 = time.perf_counter()
    times = normalize_times(times_s)
    bits_t = normalize_bits(bits)
    virtual = parsed.scheme == "virtual"
    n_runs = (DEFAULT_VIRTUAL_RUNS if virtual else 1) if runs is None else int(runs)
    if not 1 <= n_runs <= MAX_RUNS:
        raise EvaluationError(f"--runs {n_runs} must be in 1..{MAX_RUNS}")
    repeats = 1 if virtual else n_runs
    if repeats > 1 and not read_noise:
        raise EvaluationError(
            f"{chip_uri!r} is one physical chip: {n_runs} runs would repeat identical readouts; use --runs 1, "
            "or --read-noise for repeated read-noise draws (simulated chips need a virtual URI)"
        )
    if record is not None and virtual and n_runs > 1:
        raise EvaluationError(f"a recording holds one chip's session: with {n_runs} simulated chips, use --runs 1 to record one")
    the_model = _resolve_model(model) or load_model(default_model_path())
    return _evaluate_chips_streaming(
        chip_uri, the_model, times, n_runs if virtual else 1, bits=bits_t, gdc=gdc, read_noise=read_noise,
        repeats=repeats, seed=seed, params=params, progress=progress, wall0=wall0, compensations=compensations,
        evaluator=ReadoutEvaluator(the_model, range_policy=range_policy, calibration_samples=calibration_samples),
        record=record,
    )


def _same_layout(a: Layout, b: Layout) -> bool:
    """True if two layouts place the same devices the same way (chips of one model and
    geometry: mapping is deterministic)."""
    return (
        a.geometry == b.geometry and a.layers == b.layers
        and all(np.array_equal(getattr(a, f), getattr(b, f)) for f in ("cells", "target_uS", "layer_index", "sign", "weight_index"))
    )


def _batch_seed(seed: int, k: int) -> int:
    """Read-noise seed of the k-th chip batch: ``seed`` itself for the first batch (so one
    batch equals a whole-list evaluation), independent derived streams after it."""
    if k == 0:
        return int(seed)
    return int(np.random.SeedSequence([int(seed), k]).generate_state(1, dtype=np.uint64)[0] >> 1)


def _evaluate_chips_streaming(
    chip_uri: str,
    model: Model,
    times: tuple[float, ...],
    n_chips: int,
    *,
    bits: tuple[int | None, ...],
    gdc: bool,
    read_noise: bool,
    repeats: int,
    seed: int,
    params: ProgrammingParams | None,
    progress: ProgressCallback | None,
    wall0: float,
    evaluator: ReadoutEvaluator,
    compensations: Sequence[Compensation | None] = (None,),
    record: str | Path | None = None,
) -> list[EvaluationResult]:
    """Program and read the chips of ``chip_uri`` one by one (in memory, or through the
    session runner into ``record``) and evaluate them in batches of at most
    :data:`EVAL_BATCH_BYTES` of readouts, keeping only per-example results between batches;
    every method of ``compensations`` on the same readouts."""
    from harness.chip.registry import open_chip, parse_uri

    scheme = parse_uri(chip_uri).scheme
    uris = virtual_chip_uris(chip_uri, n_chips) if scheme == "virtual" else [chip_uri]
    used = evaluator.ranges(bits)
    acc_parts: list[list[npt.NDArray[np.bool_]]] = [[] for _ in compensations]  # per method
    t_parts: list[npt.NDArray[np.float64]] = []
    labels: list[str] = []
    batch: list[ChipReadouts] = []
    method_s = [0.0] * len(compensations)  # each method's inference time

    def flush(last: int) -> None:
        which = f"chip {last + 1}" if len(batch) == 1 else f"chips {last + 2 - len(batch)}–{last + 1}"
        k = len(acc_parts[0])
        for m, comp in enumerate(compensations):  # every method on the same readouts (and noise draws)
            t_m = time.perf_counter()
            acc_parts[m].append(evaluator.correct_batch(
                batch, bits=bits, gdc=gdc, read_noise=read_noise, seed=_batch_seed(seed, k), repeats=repeats,
                on_bits=(lambda j, b: progress(EvaluationProgress(
                    "inference", j, len(bits), f"{which}, {EvaluationResult.bits_label(b)}-bit")))
                if progress and m == 0 else None,
                compensation=comp,
            ))
            method_s[m] += time.perf_counter() - t_m
        for c in batch:
            t_parts.extend([c.times_s] * repeats)
            labels.extend([c.label] * repeats)
        batch.clear()

    layout = None
    for i, uri in enumerate(uris):
        with contextlib.closing(open_chip(uri)) as chip:
            if record is None:
                readouts = evaluator.read_chip(chip, times, params)
            else:  # the session runner programs and reads in one call: counted as programming
                t0 = time.perf_counter()
                readouts = read_live_chip(chip, model, times, params=params, out=record)
                evaluator.phase_s["program"] = evaluator.phase_s.get("program", 0.0) + (time.perf_counter() - t0)
        if readouts.g_uS.shape != (len(times), readouts.layout.n_devices):
            raise EvaluationError(
                f"readouts of {readouts.label} have shape {readouts.g_uS.shape}, expected ({len(times)}, {readouts.layout.n_devices})"
            )
        if layout is not None and _same_layout(readouts.layout, layout):
            readouts = dataclasses.replace(readouts, layout=layout)  # one copy for all chips
        layout = readouts.layout
        batch.append(readouts)
        # Readouts are float32 in memory (read_chip_direct) or float64 (from a recording). The
        # first chip is evaluated alone: its time (program, read and CiM inference) is what the
        # CLI's one-line estimate of the whole run rests on.
        if sum(c.g_uS.size * 4 for c in batch) * repeats >= EVAL_BATCH_BYTES or (i == 0 and len(uris) > 1):
            flush(i)
        if progress:
            progress(EvaluationProgress("chip", i + 1, len(uris), uri))
    if batch:
        flush(len(uris) - 1)
    total_s = time.perf_counter() - wall0
    return [EvaluationResult(
        model=model.name,
        model_path=None if model.path is None else str(model.path),
        source="chip",
        location=chip_uri,
        runs_labels=tuple(labels),
        digital_accuracy=evaluator.digital_accuracy,
        n_test=evaluator.n_test,
        bits=bits,
        times_s=times,
        read_times_s=np.stack(t_parts),
        accuracy=np.concatenate(parts, axis=2).mean(axis=3, dtype=np.float64),
        gdc=gdc if comp is None else comp.uses_gdc,
        read_noise=read_noise,
        seed=int(seed),
        ranges=used,
        correct=np.concatenate(parts, axis=2),
        chance_accuracy=evaluator.chance_accuracy,
        dataset=evaluator.dataset,
        timing=dataclasses.replace(
            phase_timing(evaluator.phase_s, total_s=total_s), inference_s=t_m
        ) if len(compensations) > 1 else phase_timing(evaluator.phase_s, total_s=total_s),
        compensation="" if comp is None else comp.name,
    ) for comp, parts, t_m in zip(compensations, acc_parts, method_s)]


def evaluate_recording(
    path: str | Path,
    model: Model | str | Path | None = None,
    *,
    times_s: Sequence[float] | None = None,
    runs: int | None = None,
    bits: Sequence[int | None] = DEFAULT_BITS,
    gdc: bool = True,
    read_noise: bool = False,
    seed: int = 0,
    match: str = "nearest",
    progress: ProgressCallback | None = None,
    range_policy: str = "auto",
    calibration_samples: int = DEFAULT_CALIBRATION_SAMPLES,
    epoch: int | None = None,
) -> EvaluationResult:
    """Evaluate the readouts recorded in ``path`` (time matching: :func:`harness.evaluation.readouts.match_times`).

    ``epoch``: of a refresh session's recording, the programming epoch evaluated (default: the
    latest; times count from its programming: :func:`~harness.evaluation.readouts.readouts_from_recording`).

    ``model``: default, the model the recording names (:func:`model_of_recording`).
    ``times_s``: default, every recorded readout. ``runs``: evaluations of the recording's
    one chip (default 1; > 1 needs ``read_noise``).

    Raises:
        RecordingError: missing, foreign or damaged file.
        EvaluationError: model/layout mismatch, times outside the recording, bad arguments.
    """
    return evaluate_recording_compensated(
        path, model, [None], times_s=times_s, runs=runs, bits=bits, gdc=gdc, read_noise=read_noise, seed=seed,
        match=match, progress=progress, range_policy=range_policy, calibration_samples=calibration_samples,
        epoch=epoch,
    )[0]


def evaluate_recording_compensated(
    path: str | Path,
    model: Model | str | Path | None,
    compensations: Sequence[Compensation | None],
    *,
    times_s: Sequence[float] | None = None,
    runs: int | None = None,
    bits: Sequence[int | None] = DEFAULT_BITS,
    gdc: bool = True,
    read_noise: bool = False,
    seed: int = 0,
    match: str = "nearest",
    progress: ProgressCallback | None = None,
    range_policy: str = "auto",
    calibration_samples: int = DEFAULT_CALIBRATION_SAMPLES,
    epoch: int | None = None,
) -> list[EvaluationResult]:
    """:func:`evaluate_recording` under each drift compensation of ``compensations`` (None:
    ``gdc`` decides), on the same readouts and test examples: one result per method."""
    wall0 = time.perf_counter()
    bits_t = normalize_bits(bits)
    n_runs = 1 if runs is None else int(runs)
    if not 1 <= n_runs <= MAX_RUNS:
        raise EvaluationError(f"--runs {n_runs} must be in 1..{MAX_RUNS}")
    if n_runs > 1 and not read_noise:
        raise EvaluationError(
            f"a recording holds one chip: {n_runs} runs would repeat identical readouts; use --runs 1, "
            "or --read-noise for repeated read-noise draws"
        )
    with open_recording(path) as rec:
        the_model = _resolve_model(model) or model_of_recording(rec)
        chip = readouts_from_recording(rec, the_model, times_s, match=match, epoch=epoch)
        recorded_times = chip.times_s
    times = normalize_times(times_s) if times_s is not None else tuple(float(t) for t in recorded_times)
    load_s = time.perf_counter() - wall0
    # One evaluator for every method: test data, ranges and float accuracy are made once.
    evaluator = ReadoutEvaluator(the_model, range_policy=range_policy, calibration_samples=calibration_samples)
    return [evaluate_readouts(
        the_model, [chip], times_s=times, bits=bits_t, gdc=gdc, read_noise=read_noise, repeats=n_runs, seed=seed,
        source="recording", location=str(path), progress=progress,
        timing=EvaluationTiming(load_s=load_s, total_s=load_s), compensation=comp, evaluator=evaluator,
    ) for comp in compensations]


__all__ = [
    "evaluate_chip",
    "evaluate_chip_compensated",
    "evaluate_recording",
    "evaluate_recording_compensated",
    "resolve_model",
]
