"""Evaluation: conductances (a live chip or a recording) → CiM inference → accuracy vs drift time.

- :mod:`harness.evaluation.cim` — the CiM simulator: per-layer DAC/ADC quantisation with the
  shared ADC gain, global drift compensation, converter ranges.
- :mod:`harness.evaluation.evaluate` — readouts from recordings or live chips, the evaluator,
  ``evaluate_chip`` / ``evaluate_recording``.
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
    **dict.fromkeys(
        [
            "DEFAULT_BITS",
            "DEFAULT_TIMES_S",
            "DEFAULT_VIRTUAL_RUNS",
            "ChipReadouts",
            "EvaluationProgress",
            "EvaluationResult",
            "EvaluationTiming",
            "ReadoutEvaluator",
            "check_model_matches_layout",
            "evaluate_chip",
            "evaluate_readouts",
            "evaluate_recording",
            "match_times",
            "model_of_recording",
            "normalize_bits",
            "normalize_times",
            "read_chips",
            "read_live_chip",
            "readouts_from_recording",
            "resolve_model",
            "virtual_chip_uris",
        ],
        "evaluate",
    ),
    "plot_accuracy": "plots",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
