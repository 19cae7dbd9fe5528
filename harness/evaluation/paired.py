"""Several models on the same chips: the paired accuracy difference per time and bit width.

``harness evaluate --model A --model B`` evaluates every model on the same chips (same URIs
and seeds, the same read-noise seed, the same times) and the same test split, so each run and
test example has a result under both models; :func:`paired_differences` compares them with
:func:`harness.evaluation.uncertainty.paired_difference` (a paired two-way bootstrap).
"""

from __future__ import annotations

from typing import Any

from harness.errors import EvaluationError
from harness.evaluation.result import EvaluationResult
from harness.evaluation.uncertainty import paired_difference


def paired_differences(base: EvaluationResult, other: EvaluationResult) -> dict[str, Any]:
    """``other − base`` accuracy per bit width and time, with 95 % intervals:
    ``{"model", "baseline", "difference": {bits: {time: {"mean", "ci95"}}}}`` (fractions).

    Raises:
        EvaluationError: the two results are not paired (other chips, times, bits or test split),
            or lack per-example results.
    """
    if base.correct is None or other.correct is None:
        raise EvaluationError("a paired comparison needs per-example results of both evaluations")
    same = (
        base.bits == other.bits
        and base.times_s == other.times_s
        and base.runs_labels == other.runs_labels
        and base.n_test == other.n_test
        and base.dataset == other.dataset
        and base.correct.shape == other.correct.shape
    )
    if not same:
        raise EvaluationError(
            f"models {base.model!r} and {other.model!r} were not evaluated on the same chips, times, bit widths "
            "and test split; a paired difference needs all four equal"
        )
    labels = base.time_labels()
    table: dict[str, dict[str, Any]] = {}
    for i, b in enumerate(base.bits):
        row: dict[str, Any] = {}
        for j, label in enumerate(labels):
            d, lo, hi = paired_difference(base.correct[i, j], other.correct[i, j])
            row[label] = {"mean": d, "ci95": [lo, hi]}
        table[base.bits_label(b)] = row
    return {"model": other.model, "baseline": base.model, "difference": table}


__all__ = ["paired_differences"]
