"""Calibration: fit a virtual-chip personality to a recording, and compare two recordings.

- :mod:`harness.calibration.calibrate` — ``calibrate_recording``: σ_prog, drift and read-noise
  laws, RESET level, with intervals and goodness of fit, run in order from the pieces below.
- :mod:`harness.calibration.data` — a recording's readouts as arrays (``load_data``).
- :mod:`harness.calibration.levels` — levels in ln x and the per-level estimates.
- :mod:`harness.calibration.fits` — the law fits (clipped-log drift laws, t0, RESET level).
- :mod:`harness.calibration.goodness` — held-out KS against predictive draws (``goodness_of_fit``).
- :mod:`harness.calibration.result` — ``CalibrationResult`` and its parts; ``save_personality``.
- :mod:`harness.calibration.compare` — two recordings of one layout side by side.
- :mod:`harness.calibration.pattern` — the calibration-pattern model (known levels to program).
- :mod:`harness.calibration.simulate` — a recording's experiment re-run on a virtual chip (the bootstrap).
- :mod:`harness.calibration.coverage` — coverage of the intervals on random synthetic chips.
- :mod:`harness.calibration.plots` — the calibration figure.

May import: sessions, recording, programming, virtual (physics, personalities, chip), models, the chip seam, the basics.
"""

from harness._exports import lazy_exports

_EXPORTS: dict[str, str] = {
    "calibrate_recording": "calibrate",
    **dict.fromkeys(["CalibrationResult", "FittedConstant", "LevelTable", "save_personality"], "result"),
    "compare_recordings": "compare",
    **dict.fromkeys(["calibration_pattern_weights", "save_calibration_pattern"], "pattern"),
    "plot_calibration": "plots",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
