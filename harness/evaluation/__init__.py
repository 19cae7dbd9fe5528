"""Evaluation: conductances (a live chip or a recording) → CiM inference → accuracy vs drift time.

- :mod:`harness.evaluation.cim` — the CiM simulator: per-layer DAC/ADC quantisation with the
  shared ADC gain, global drift compensation, converter ranges.
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

May import: sessions, recording, programming, models, data, virtual, the chip seam, the basics.
"""

from harness._exports import lazy_exports

_EXPORTS: dict[str, str] = {
    **dict.fromkeys(
        [
            "HEURISTIC_RANGE_PERCENTILE",
            "MAX_BITS",
            "MIN_BITS",
            "CimSimulator",
            "ConverterRanges",
            "calibrate_ranges",
            "check_bits",
            "converter_ranges",
            "percentile_range",
            "top1_correct",
        ],
        "cim",
    ),
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
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
