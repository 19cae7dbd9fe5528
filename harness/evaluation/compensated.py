"""Drift compensation methods compared on the same chips, readouts and test examples.

:func:`evaluate_compensations` runs one evaluation per method of
:mod:`harness.evaluation.compensation` over one set of readouts (a live chip's, read once, or
a recording's); :func:`comparison_dict` is its JSON (``harness evaluate --compensate … --json``),
with per-run paired differences against ``gdc``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import EvaluationError
from harness.evaluation.compensation import DEFAULT_CALIBRATION_EXAMPLES, METHODS, make_compensations, parse_methods
from harness.evaluation.evaluate import evaluate_chip_compensated, evaluate_recording_compensated, resolve_model
from harness.evaluation.result import EvaluationResult
from harness.evaluation.uncertainty import paired_difference
from harness.models.format import Model


def evaluate_compensations(
    methods: str | Sequence[str],
    *,
    chip: str | None = None,
    recording: str | Path | None = None,
    model: Model | str | Path | None = None,
    calibration_examples_n: int = DEFAULT_CALIBRATION_EXAMPLES,
    seed: int = 0,
    **options: Any,
) -> list[EvaluationResult]:
    """Evaluate ``model`` on a chip (``chip`` URI) or a recording under each method of
    ``methods``, on the same chips, readouts and test examples: one result per method, in order.

    ``options``: those of :func:`harness.evaluation.evaluate.evaluate_chip` /
    :func:`~harness.evaluation.evaluate.evaluate_recording` (times_s, runs, bits, read_noise,
    match, params, progress). The methods are checked against the model (and the calibration
    examples drawn, seeded by ``seed``) before any chip is touched.

    Raises:
        EvaluationError: unknown methods, a method the model cannot use, bad arguments;
            anything the evaluation raises.
    """
    if (chip is None) == (recording is None):
        raise EvaluationError("give exactly one of a chip URI or a recording")
    parse_methods(methods)  # unknown names fail before any file is opened
    the_model: Model
    if isinstance(model, Model):
        the_model = model
    elif model is not None:
        the_model = resolve_model(model)
    elif chip is not None:
        from harness.models.format import default_model_path, load_model

        the_model = load_model(default_model_path())
    else:
        from harness.evaluation.readouts import model_of_recording
        from harness.recording import open_recording

        with open_recording(recording) as rec:  # type: ignore[arg-type]
            the_model = model_of_recording(rec)
    comps = make_compensations(methods, the_model, calibration_examples_n=calibration_examples_n, seed=seed)
    if chip is not None:
        return evaluate_chip_compensated(chip, the_model, comps, seed=seed, **options)
    return evaluate_recording_compensated(recording, the_model, comps, seed=seed, **options)  # type: ignore[arg-type]


def comparison_dict(results: Sequence[EvaluationResult], calibration_examples_n: int) -> dict[str, Any]:
    """JSON-ready comparison: the first result's settings, ``methods[name]`` = each result's
    :meth:`~harness.evaluation.result.EvaluationResult.to_dict`, and ``paired_vs_gdc[name][bits][time]``
    = mean and sample std (over runs) of the per-run difference to ``gdc`` (same chips and
    readouts), its standard error, and ``ci95``: the paired two-way bootstrap interval over chips
    and test examples (:func:`~harness.evaluation.uncertainty.paired_difference`), when ``gdc``
    is among the methods and the results carry per-example outcomes."""
    first = results[0].to_dict()
    out: dict[str, Any] = {
        k: first[k] for k in ("model", "model_path", "source", first["source"], "runs", "chips", "test_samples",
                              "read_noise", "seed", "digital_accuracy", "bits", "times_s", "times", "ranges")
    }
    out["compensate"] = [r.compensation for r in results]
    out["calibration_examples"] = int(calibration_examples_n) if any(
        METHODS[r.compensation].needs_calibration for r in results) else 0
    out["calibration_split"] = "train"
    out["methods"] = {r.compensation: r.to_dict() for r in results}
    ref = next((r for r in results if r.compensation == "gdc"), None)
    if ref is not None:
        paired: dict[str, Any] = {}
        for r in results:
            diff = r.accuracy - ref.accuracy  # (bits, T, runs), paired by run
            sd = diff.std(axis=2, ddof=1) if r.runs > 1 else np.zeros(diff.shape[:2])
            per_bits: dict[str, Any] = {}
            for i, b in enumerate(r.bits):
                row: dict[str, Any] = {}
                for j, label in enumerate(r.time_labels()):
                    cell: dict[str, Any] = {"mean": float(diff[i, j].mean()), "std": float(sd[i, j]),
                                            "sem": float(sd[i, j] / math.sqrt(r.runs))}
                    if r.correct is not None and ref.correct is not None:
                        # The same chips, reads and test examples under both methods: the paired
                        # two-way bootstrap of issue 18 (chips and test examples resampled together).
                        _, lo, hi = paired_difference(ref.correct[i, j], r.correct[i, j])
                        cell["ci95"] = [lo, hi]
                    row[label] = cell
                per_bits[r.bits_label(b)] = row
            paired[r.compensation] = per_bits
        out["paired_vs_gdc"] = paired
    return out


__all__ = ["comparison_dict", "evaluate_compensations"]
