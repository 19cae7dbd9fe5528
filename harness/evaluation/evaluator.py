"""CiM inference over chips' readouts: accuracy per chip, time and bit-width.

:class:`ReadoutEvaluator` prepares what is the same for every chip of a model (test split,
converter ranges, float accuracy, the simulator of :mod:`harness.evaluation.cim`) once;
:func:`evaluate_readouts` runs it on a list of readouts, batched over chips × times, into an
:class:`harness.evaluation.result.EvaluationResult`.
"""

from __future__ import annotations

import time
from typing import Any
from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt
import torch

from harness.chip.protocol import Chip
from harness.data import check_dataset_fits, load_dataset
from harness.errors import EvaluationError
from harness.evaluation.cim import CimSimulator
from harness.evaluation.ranges import (
    DEFAULT_CALIBRATION_SAMPLES,
    DEFAULT_CALIBRATION_SEED,
    ConverterRanges,
    RangeCalibrator,
    RangesUsed,
)
from harness.evaluation.compensation import Compensation
from harness.evaluation.readouts import ChipReadouts
from harness.evaluation.result import EvaluationProgress, EvaluationResult, EvaluationTiming, ProgressCallback
from harness.evaluation.settings import DEFAULT_BITS, MAX_RUNS, normalize_bits, normalize_times
from harness.models.format import Model
from harness.programming.mapping import Layout
from harness.programming.write_verify import ProgrammingParams


class ReadoutEvaluator:
    """CiM accuracy of one model on any number of chips' readouts, prepared once.

    The test split, the converter ranges, the float accuracy and the simulator of a layout
    are the same for every chip of the model, so a sweep worker makes them once per model
    (:mod:`harness.sweeps.runner`) and :func:`evaluate_readouts` once per call.

    Args:
        model: the programmed model; its ``dataset``'s test split is evaluated.
        ranges: converter ranges for every bit width (default: per ``range_policy``).
        range_policy: ``auto``, ``trained``, ``calibrated`` or ``percentile``
            (:mod:`harness.evaluation.ranges`); calibration data come from the training split
            only, ``calibration_samples`` examples drawn under ``calibration_seed``.
    """

    def __init__(
        self,
        model: Model,
        *,
        ranges: ConverterRanges | None = None,
        range_policy: str = "auto",
        calibration_samples: int = DEFAULT_CALIBRATION_SAMPLES,
        calibration_seed: int = DEFAULT_CALIBRATION_SEED,
    ) -> None:
        self.model = model
        data = load_dataset(model.dataset)
        check_dataset_fits(data, input_shape=model.input_shape, n_classes=model.n_classes, model_name=model.name)
        # Only the training split is handed to the calibrator: no test example can shape the ranges.
        self.calibrator = RangeCalibrator(
            model, data.x_train, policy=range_policy, samples=calibration_samples, seed=calibration_seed, fixed=ranges,
        )
        t1 = time.perf_counter()
        self.x = torch.from_numpy(np.array(data.x_test, dtype=np.float32))
        self.y = torch.from_numpy(np.array(data.y_test, dtype=np.int64))
        self.n_test = int(self.y.shape[0])
        self.dataset = data.name
        self.digital_accuracy = _digital_accuracy(model, self.x, self.y)
        # The accuracy of always answering the test split's most frequent class.
        self.chance_accuracy = float(np.bincount(data.y_test).max() / max(1, self.n_test))
        #: Wall seconds per phase: "ranges" (:meth:`ranges`, the calibration on first use),
        #: "digital" (here), "program" and "read" (:meth:`read_chip`), "inference"
        #: (:meth:`correct_batch`); callers report them.
        self.phase_s: dict[str, float] = {"ranges": 0.0, "digital": time.perf_counter() - t1}
        self._sims: dict[int, tuple[Layout, CimSimulator]] = {}

    def ranges(self, bits: Sequence[int | None]) -> RangesUsed:
        """The converter ranges used at each of ``bits`` (calibrated on first use; the time
        goes to ``phase_s["ranges"]``)."""
        t0 = time.perf_counter()
        used = self.calibrator.used(bits)
        self.phase_s["ranges"] += time.perf_counter() - t0
        return used

    def simulator(self, layout: Layout, bits: int | None = None) -> CimSimulator:
        """The CiM simulator of ``layout`` (cached per layout object) with the ranges of ``bits``."""
        hit = self._sims.get(id(layout))
        if hit is None or hit[0] is not layout:
            hit = (layout, CimSimulator(self.model, layout, self.calibrator.at(None)))
            self._sims = {id(layout): hit}  # one layout at a time: chips of one model share it
        return hit[1].with_ranges(self.calibrator.at(bits))

    def read_chip(
        self, chip: Chip, times_s: Sequence[float], params: ProgrammingParams | None = None
    ) -> ChipReadouts:
        """Program the model onto ``chip`` and read its layout at ``times_s`` after programming,
        in memory (:func:`harness.evaluation.live.read_chip_direct`: the session runner's
        calls, bit-identical readouts, no recording); the time goes to ``phase_s``."""
        from harness.evaluation.live import read_chip_direct

        return read_chip_direct(chip, self.model, times_s, params, phase_s=self.phase_s)

    def accuracy(
        self, readouts: ChipReadouts, *, bits: Sequence[int | None], gdc: bool, read_noise: bool, seed: int,
        compensation: Compensation | None = None,
    ) -> npt.NDArray[np.float64]:
        """``(len(bits), T)`` accuracy of one chip's readouts."""
        return self.accuracy_batch(
            [readouts], bits=bits, gdc=gdc, read_noise=read_noise, seed=seed, compensation=compensation
        )[:, :, 0]

    def accuracy_batch(self, chips: Sequence[ChipReadouts], **options: Any) -> npt.NDArray[np.float64]:
        """``(len(bits), T, len(chips)·repeats)`` accuracy, chips × times batched in tensors: the
        mean over test examples of :meth:`correct_batch` (same keyword arguments)."""
        return self.correct_batch(chips, **options).mean(axis=3, dtype=np.float64)

    def correct_batch(
        self,
        chips: Sequence[ChipReadouts],
        *,
        bits: Sequence[int | None],
        gdc: bool,
        read_noise: bool,
        seed: int,
        repeats: int = 1,
        on_bits: Callable[[int, int | None], None] | None = None,
        compensation: Compensation | None = None,
    ) -> npt.NDArray[np.bool_]:
        """``(len(bits), T, len(chips)·repeats, n_test)``: whether each test example is
        classified right, per bit width, time and run (what the intervals need). A
        ``compensation`` (:mod:`harness.evaluation.compensation`) replaces ``gdc``.

        Runs (a chip's readouts at every time, ``repeats`` times per chip) go to the simulator
        in groups of at most :data:`EVAL_BATCH_BYTES` of float32 conductances (at least one
        run), so memory does not grow with the number of chips or repeats; each chip's GDC
        reference is passed once and indexed per set, never repeated. The results do not
        depend on the grouping; with ``read_noise`` the draws come from one generator in
        group order (the same seed gives the same numbers).
        """
        layout = chips[0].layout
        n_t = chips[0].times_s.shape[0]
        runs = [(c, k) for k, c in enumerate(chips) for _ in range(repeats)]  # run-major
        per_run = max(1, n_t * layout.n_devices * 4)
        group = max(1, EVAL_BATCH_BYTES // per_run)
        generator = torch.Generator().manual_seed(int(seed)) if read_noise else None
        out = np.empty((len(bits), n_t, len(runs), self.n_test), dtype=bool)
        t_inf = time.perf_counter()
        for i, b in enumerate(bits):
            if on_bits:
                on_bits(i, b)
            sim = self.simulator(layout, b)
            for lo in range(0, len(runs), group):
                part = runs[lo : lo + group]
                g_t = torch.from_numpy(np.concatenate([c.g_uS for c, _ in part]).astype(np.float32, copy=False))
                first = part[0][1]
                ref_t = torch.from_numpy(np.stack([c.g_ref_uS for c in chips[first : part[-1][1] + 1]]).astype(np.float32))
                # Set s of the group belongs to chip part[s // n_t]: its reference row.
                ref_of_set = torch.tensor([k - first for _, k in part for _ in range(n_t)], dtype=torch.int64)
                t_read = np.concatenate([c.times_s for c, _ in part]) if read_noise else None
                # A compensation takes one reference per set (its correction is per set).
                corr = None if compensation is None else compensation.correction(sim, g_t, ref_t[ref_of_set], b)
                hits = sim.correct(
                    self.x, self.y, g_t, bits=b, g_ref_uS=ref_t if gdc and compensation is None else None,
                    read_noise_t_s=t_read, g_prog_uS=ref_t if read_noise else None, generator=generator,
                    ref_index=ref_of_set, correction=corr,
                )
                out[i, :, lo : lo + len(part)] = hits.numpy().reshape(len(part), n_t, self.n_test).transpose(1, 0, 2)
        self.phase_s["inference"] = self.phase_s.get("inference", 0.0) + (time.perf_counter() - t_inf)
        return out


#: Bound on the float32 conductances handed to the CiM simulator at once (bytes), and on the
#: readouts :func:`harness.evaluation.evaluate.evaluate_chip` holds before evaluating them: a
#: few runs of a large model (AnalogNet-KWS: 12 MB per chip at 5 times, so 2 chips held, one
#: per call), every run of a small one (the default digits MLP, 25 chips × 5 times: 4.7 MB,
#: one call).
EVAL_BATCH_BYTES = 16 << 20


def evaluate_readouts(
    model: Model,
    chips: Sequence[ChipReadouts],
    *,
    times_s: Sequence[float],
    bits: Sequence[int | None] = DEFAULT_BITS,
    gdc: bool = True,
    read_noise: bool = False,
    repeats: int = 1,
    seed: int = 0,
    ranges: ConverterRanges | None = None,
    range_policy: str = "auto",
    calibration_samples: int = DEFAULT_CALIBRATION_SAMPLES,
    source: str = "chip",
    location: str = "",
    progress: ProgressCallback | None = None,
    timing: EvaluationTiming | None = None,
    compensation: Compensation | None = None,
    evaluator: ReadoutEvaluator | None = None,
) -> EvaluationResult:
    """CiM accuracy of ``model`` on every chip's readouts, batched over chips × times.

    Args:
        model: the programmed model (its ``dataset``'s test split is evaluated).
        chips: readouts, all at ``len(times_s)`` times and with the same layout.
        times_s: the requested times the readouts answer (for the result's labels).
        bits: activation precisions; gdc / read_noise: the switches of :mod:`harness.evaluation.cim`.
        repeats: evaluations per chip (> 1 only with ``read_noise``: fresh draws each).
        seed: seeds the ``torch.Generator`` of the per-read noise.
        ranges: converter ranges for every bit width (default: per ``range_policy``, with
            ``calibration_samples`` training examples: :class:`ReadoutEvaluator`).
        evaluator: a prepared :class:`ReadoutEvaluator` of ``model`` to reuse (several
            compensation methods on the same readouts); then ``ranges``, ``range_policy`` and
            ``calibration_samples`` are its own.

    Raises:
        EvaluationError: no chips, mismatched readouts, bad bits, repeats without read noise.
    """
    wall0 = time.perf_counter()
    if not chips:
        raise EvaluationError("no chips to evaluate")
    times = tuple(float(t) for t in times_s)
    bits_t = normalize_bits(bits)
    if not 1 <= repeats <= MAX_RUNS:
        raise EvaluationError(f"repeats={repeats} must be in 1..{MAX_RUNS}")
    if repeats > 1 and not read_noise:
        raise EvaluationError(
            f"{repeats} runs of one chip's readouts would all be identical without per-read noise; "
            "use --runs 1, or --read-noise for repeated read-noise draws"
        )
    layout = chips[0].layout
    for c in chips:
        if c.g_uS.shape != (len(times), layout.n_devices) or c.g_ref_uS.shape != (layout.n_devices,):
            raise EvaluationError(f"readouts of {c.label} have shape {c.g_uS.shape}, expected ({len(times)}, {layout.n_devices})")
    if evaluator is None:
        evaluator = ReadoutEvaluator(model, ranges=ranges, range_policy=range_policy, calibration_samples=calibration_samples)
    used = evaluator.ranges(bits_t)  # calibrated before the inference clock starts (once per evaluator)
    inference_before = evaluator.phase_s.get("inference", 0.0)
    n_t = len(times)
    labels = tuple(c.label for c in chips for _ in range(repeats))
    t_read = np.concatenate([np.tile(c.times_s, repeats) for c in chips])
    digital = evaluator.digital_accuracy
    correct = evaluator.correct_batch(
        chips, bits=bits_t, gdc=gdc, read_noise=read_noise, seed=seed, repeats=repeats,
        on_bits=(lambda i, b: progress(EvaluationProgress("inference", i, len(bits_t), f"{EvaluationResult.bits_label(b)}-bit")))
        if progress else None, compensation=compensation,
    )
    base = timing or EvaluationTiming()
    return EvaluationResult(
        model=model.name,
        model_path=None if model.path is None else str(model.path),
        source=source,
        location=location,
        runs_labels=labels,
        digital_accuracy=digital,
        n_test=evaluator.n_test,
        bits=bits_t,
        times_s=times,
        read_times_s=t_read.reshape(len(labels), n_t),
        accuracy=correct.mean(axis=3, dtype=np.float64),
        gdc=gdc if compensation is None else compensation.uses_gdc,
        read_noise=read_noise,
        seed=int(seed),
        ranges=used,
        correct=correct,
        chance_accuracy=evaluator.chance_accuracy,
        dataset=evaluator.dataset,
        timing=phase_timing(
            {**evaluator.phase_s, "inference": evaluator.phase_s.get("inference", 0.0) - inference_before},
            base, total_s=base.total_s + (time.perf_counter() - wall0),
        ),
        compensation="" if compensation is None else compensation.name,
    )


def phase_timing(phase_s: dict[str, float], base: EvaluationTiming | None = None, *, total_s: float) -> EvaluationTiming:
    """An :class:`EvaluationTiming` of ``phase_s`` (:attr:`ReadoutEvaluator.phase_s`) added to
    ``base``'s phases (e.g. the load time of a recording)."""
    b = base or EvaluationTiming()
    return EvaluationTiming(
        ranges_s=b.ranges_s + phase_s.get("ranges", 0.0),
        digital_s=b.digital_s + phase_s.get("digital", 0.0),
        program_s=b.program_s + phase_s.get("program", 0.0),
        read_s=b.read_s + phase_s.get("read", 0.0),
        load_s=b.load_s,
        inference_s=b.inference_s + phase_s.get("inference", 0.0),
        total_s=total_s,
    )


def _digital_accuracy(model: Model, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model.to_torch()(x).argmax(dim=1) == y).to(torch.float64).mean())


__all__ = ["EVAL_BATCH_BYTES", "ReadoutEvaluator", "evaluate_readouts", "phase_timing"]
