"""What an evaluation reports: progress while it runs, its wall-time breakdown and its result.

:class:`EvaluationResult` holds accuracy per bit-width, time and run with the settings that
made it, and renders itself as JSON (``harness evaluate --json``) and as labels for tables and
figures (:mod:`harness.evaluation.plots`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from harness.evaluation.ranges import ConverterRanges, RangesUsed
from harness.evaluation.uncertainty import accuracy_interval, accuracy_interval_from_runs
from harness.units import format_duration


@dataclass(frozen=True)
class EvaluationProgress:
    """Reported while evaluating: ``phase`` is ``"chip"`` (``done`` of ``total`` chips
    programmed and read, reported after each), ``"readout"`` (a readout of chip ``done + 1``)
    or ``"inference"`` (bit-width ``done + 1`` of ``total`` starts)."""

    phase: str
    done: int
    total: int
    label: str = ""


ProgressCallback = Callable[[EvaluationProgress], None]


@dataclass(frozen=True)
class EvaluationTiming:
    """Wall time (s) per phase: converter-range calibration, the float (digital) baseline,
    programming the chips and reading them (0 for recordings), loading readouts from a
    recording, CiM inference, and the whole evaluation (which also holds what no phase
    names: start-up of the chips, bookkeeping)."""

    ranges_s: float = 0.0
    digital_s: float = 0.0
    program_s: float = 0.0
    read_s: float = 0.0
    load_s: float = 0.0
    inference_s: float = 0.0
    total_s: float = 0.0


@dataclass(frozen=True, eq=False)
class EvaluationResult:
    """Accuracy per bit-width, time and run, with the float baseline and what made it.

    Attributes:
        model: the model's name; ``model_path`` its file (None if not from a file).
        source: ``"chip"`` or ``"recording"``; ``location`` the chip URI or recording path.
        runs_labels: per run, the chip it ran on (URI or recording path).
        digital_accuracy: float accuracy of the model on the test split (no converters).
        n_test: test samples.
        bits: activation precisions (None: ideal converters).
        times_s: requested times (s since programming), increasing.
        read_times_s: ``(runs, T)`` the actual readout times used.
        accuracy: ``(len(bits), T, runs)`` top-1 accuracy in ``[0, 1]``.
        gdc, read_noise, seed: the evaluation switches; ``seed`` seeds the read noise.
        ranges: the converter-range policy and the DAC ranges and ADC gain used per bit width.
        timing: wall-time breakdown.
        correct: ``(len(bits), T, runs, n_test)`` bool, each test example right or not (None:
            not kept; the intervals then bound the test-set term, see :meth:`interval`).
        chance_accuracy: accuracy of always answering the most frequent test class.
        dataset: the test data's name.
    """

    model: str
    model_path: str | None
    source: str
    location: str
    runs_labels: tuple[str, ...]
    digital_accuracy: float
    n_test: int
    bits: tuple[int | None, ...]
    times_s: tuple[float, ...]
    read_times_s: npt.NDArray[np.float64]
    accuracy: npt.NDArray[np.float64]
    gdc: bool
    read_noise: bool
    seed: int
    ranges: RangesUsed | ConverterRanges
    timing: EvaluationTiming = field(default_factory=EvaluationTiming)
    correct: npt.NDArray[np.bool_] | None = None
    chance_accuracy: float | None = None
    dataset: str | None = None
    #: the drift compensation method (:mod:`harness.evaluation.compensation`), "" when only ``gdc`` says.
    compensation: str = ""

    def __post_init__(self) -> None:
        for arr in (self.read_times_s, self.accuracy, self.correct):
            if arr is not None:
                arr.setflags(write=False)

    def interval(self) -> npt.NDArray[np.float64]:
        """``(len(bits), T, 2)``: the 95 % interval of each mean accuracy, combining chip-to-chip
        spread and test-set sampling (:func:`harness.evaluation.uncertainty.accuracy_interval`;
        for one run, the binomial Wilson interval)."""
        if self.correct is not None:
            lo, hi = accuracy_interval(self.correct)
        else:
            lo, hi = accuracy_interval_from_runs(self.accuracy, self.n_test)
        return np.stack([lo, hi], axis=-1)

    @property
    def runs(self) -> int:
        return int(self.accuracy.shape[2])

    def mean(self) -> npt.NDArray[np.float64]:
        """``(len(bits), T)`` mean accuracy over runs."""
        return self.accuracy.mean(axis=2)

    def std(self) -> npt.NDArray[np.float64]:
        """``(len(bits), T)`` sample std over runs (ddof = 1; 0 for a single run)."""
        if self.runs < 2:
            return np.zeros(self.accuracy.shape[:2])
        return self.accuracy.std(axis=2, ddof=1)

    def time_labels(self) -> list[str]:
        """Short unique labels of :attr:`times_s` (``25s``, ``1h``, ``1mo``…)."""
        labels = [format_duration(t) for t in self.times_s]
        if len(set(labels)) < len(labels):
            labels = [f"{t:.9g}s" for t in self.times_s]
        if len(set(labels)) < len(labels):  # repeated recorded times: number them
            labels = [f"{label}#{i}" for i, label in enumerate(labels, start=1)]
        return labels

    @staticmethod
    def bits_label(bits: int | None) -> str:
        return "ideal" if bits is None else str(bits)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``digital_accuracy`` and ``accuracy[bits][time] = {t_s, t_read_s,
        mean, std, ci95, min, max, runs}`` plus the evaluation's settings, ranges and timing."""
        mean, std, ci = self.mean(), self.std(), self.interval()
        labels = self.time_labels()
        table: dict[str, dict[str, Any]] = {}
        for i, b in enumerate(self.bits):
            row: dict[str, Any] = {}
            for j, label in enumerate(labels):
                acc = self.accuracy[i, j]
                row[label] = {
                    "t_s": self.times_s[j],
                    "t_read_s": float(self.read_times_s[:, j].mean()),
                    "mean": float(mean[i, j]),
                    "std": float(std[i, j]),
                    "ci95": [float(ci[i, j, 0]), float(ci[i, j, 1])],
                    "min": float(acc.min()),
                    "max": float(acc.max()),
                    "runs": [float(a) for a in acc],
                }
            table[self.bits_label(b)] = row
        return {
            "model": self.model,
            "model_path": self.model_path,
            "source": self.source,
            self.source: self.location,
            "runs": self.runs,
            "chips": list(self.runs_labels),
            "test_samples": self.n_test,
            "gdc": self.gdc,
            "read_noise": self.read_noise,
            "seed": self.seed,
            "digital_accuracy": self.digital_accuracy,
            "chance_accuracy": self.chance_accuracy,
            "dataset": self.dataset,
            "interval": "95 % Wilson score interval with the effective sample size of a chips × test-examples "
            "design (one run: the binomial Wilson interval); harness.evaluation.uncertainty",
            "bits": [self.bits_label(b) for b in self.bits],
            "times_s": list(self.times_s),
            "times": labels,
            "accuracy": table,
            "ranges": self.ranges.to_dict(),
            "timing_s": dataclasses.asdict(self.timing),
            **({"compensation": self.compensation} if self.compensation else {}),
        }


__all__ = ["EvaluationProgress", "EvaluationResult", "EvaluationTiming", "ProgressCallback"]
