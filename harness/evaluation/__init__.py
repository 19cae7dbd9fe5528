"""Evaluation: conductances (a live chip or a recording) → CiM inference → accuracy vs drift time.

- :mod:`harness.evaluation.cim` — the CiM simulator: per-layer DAC/ADC quantisation with the
  shared ADC gain, global drift compensation.
- :mod:`harness.evaluation.ranges` — converter ranges per bit width: trained, calibrated
  (minimum MSE under the shared ADC gain) or the percentile heuristic.
- :mod:`harness.evaluation.uncertainty` — 95 % intervals of accuracies and paired differences.
- :mod:`harness.evaluation.settings` — default times and bit-widths, limits, their checks.
- :mod:`harness.evaluation.result` — ``EvaluationResult``, progress and timing.
- :mod:`harness.evaluation.readouts` — one chip's readouts from a recording, model/layout and
  time matching.
- :mod:`harness.evaluation.live` — program and read live chips, in memory or through the session runner.
- :mod:`harness.evaluation.evaluator` — CiM inference over readouts (``ReadoutEvaluator``,
  ``evaluate_readouts``).
- :mod:`harness.evaluation.evaluate` — ``evaluate_chip`` (chips streamed in batches) /
  ``evaluate_recording``, ``resolve_model``.
- :mod:`harness.evaluation.plots` — the accuracy-vs-time figure.
- :mod:`harness.evaluation.compensation` — drift compensation methods (none, gdc, adabs, column)
  behind one interface; :mod:`harness.evaluation.compensated` compares them on the same reads.

May import: sessions, recording, programming, models, data, virtual, the chip seam, the basics.
"""

from harness._exports import lazy_exports

_EXPORTS: dict[str, str] = {
    **dict.fromkeys(
        [
            "MAX_BITS",
            "MIN_BITS",
            "CimSimulator",
            "check_bits",
            "top1_correct",
        ],
        "cim",
    ),
    **dict.fromkeys(
        [
            "HEURISTIC_RANGE_PERCENTILE",
            "RANGE_POLICIES",
            "ConverterRanges",
            "RangeCalibrator",
            "RangesUsed",
            "calibrate_ranges",
            "calibration_inputs",
            "converter_ranges",
            "percentile_range",
            "shared_gain_ranges",
        ],
        "ranges",
    ),
    **dict.fromkeys(["accuracy_interval", "paired_difference", "wilson_interval"], "uncertainty"),
    **dict.fromkeys(["DEFAULT_BITS", "DEFAULT_TIMES_S", "DEFAULT_VIRTUAL_RUNS", "normalize_bits", "normalize_times"], "settings"),
    **dict.fromkeys(["EvaluationProgress", "EvaluationResult", "EvaluationTiming"], "result"),
    **dict.fromkeys(
        ["ChipReadouts", "check_model_matches_layout", "match_times", "model_of_recording", "readouts_from_recording"],
        "readouts",
    ),
    **dict.fromkeys(["read_chip_direct", "read_chips", "read_live_chip", "virtual_chip_uris"], "live"),
    **dict.fromkeys(["ReadoutEvaluator", "evaluate_readouts"], "evaluator"),
    **dict.fromkeys(["evaluate_chip", "evaluate_recording", "resolve_model"], "evaluate"),
    "plot_accuracy": "plots",
    **dict.fromkeys(["Compensation", "make_compensations", "parse_methods"], "compensation"),
    **dict.fromkeys(["comparison_dict", "evaluate_compensations"], "compensated"),
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
