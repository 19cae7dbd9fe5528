"""The evaluation's settings: default times and bit-widths, limits, and their checks.

Kept apart from the evaluation itself so that readouts, live reads, the evaluator and the
entry points (:mod:`harness.evaluation.evaluate`) share one definition of each without importing
one another. ``harness.commands.evaluate`` repeats the defaults (it must not import torch at
start-up); ``tests/test_cli_conventions.py`` keeps the two equal.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from harness.errors import EvaluationError
from harness.evaluation.cim import check_bits
from harness.units import DAY_S, HOUR_S, MONTH_S, YEAR_S

#: The AnalogNets paper's evaluation times (AnalogNets §6.2): 25 s, 1 h, 1 d, 1 mo, 1 y.
DEFAULT_TIMES_S: tuple[float, ...] = (25.0, HOUR_S, DAY_S, MONTH_S, YEAR_S)
#: Activation precisions of the AnalogNets paper (AnalogNets §6.2).
DEFAULT_BITS: tuple[int, ...] = (8, 6, 4)
#: Simulated chips per evaluation on a virtual chip (AnalogNets §6.2: 25 runs).
DEFAULT_VIRTUAL_RUNS = 25
MAX_RUNS = 10_000
MATCH_MODES = ("nearest", "exact")


def normalize_times(times_s: Sequence[float]) -> tuple[float, ...]:
    """Sorted, de-duplicated, validated times (s since programming).

    Raises:
        EvaluationError: empty, negative or non-finite times.
    """
    ts = sorted({float(t) for t in times_s})
    if not ts:
        raise EvaluationError("no evaluation times given; e.g. 25s,1h,1d,1mo,1y")
    for t in ts:
        if not math.isfinite(t) or t < 0:
            raise EvaluationError(f"evaluation time {t!r} s must be a finite number >= 0 (s since programming)")
    return tuple(ts)


def normalize_bits(bits: Sequence[int | None]) -> tuple[int | None, ...]:
    """De-duplicated bit-widths in the given order, each validated by :func:`harness.evaluation.cim.check_bits`."""
    out: list[int | None] = []
    for b in bits:
        b = check_bits(b)
        if b not in out:
            out.append(b)
    if not out:
        raise EvaluationError("no bit-widths given; e.g. 8,6,4")
    return tuple(out)


__all__ = [
    "DEFAULT_BITS",
    "DEFAULT_TIMES_S",
    "DEFAULT_VIRTUAL_RUNS",
    "MATCH_MODES",
    "MAX_RUNS",
    "normalize_bits",
    "normalize_times",
]
