"""The calibration's 95 % intervals cover the truth (issue 18): a reduced coverage study.

A few small synthetic chips whose personalities are drawn at random around pcm-90nm (every
published constant scaled by its own factor in [0.7, 1.3], t0 and the RESET level drawn too)
are recorded and calibrated blind (``harness.calibration.coverage``; the full study is
``benchmarks/calibration_coverage.py``, figures in docs/calibration.md).

Threshold. With nominal 95 % intervals the misses among the ~52 scored (chip, constant) pairs
are about Binomial(52, 0.05): 2.6 ± 1.6; 8 or more (pooled coverage below 85 %) has a
probability of 0.005 for independent pairs (the constants of one chip are correlated, which
widens this somewhat). A constant whose interval sits beside the truth (a bias larger than
the interval) misses on most chips: none scored on 3 or more chips may miss on more than half
of them. The test fails on the per-stage intervals (``--bootstrap 0``: measured 79 % pooled with this
seed, 41 of 52, q_exp covered on 1 of 4 chips) and passes with the bootstrap (94 %). Four chips
catch a gross miss, not a coverage of 80 against 95 %: that is the 40-chip study's job
(docs/calibration.md, "Coverage").
"""

from __future__ import annotations

import numpy as np

from harness.calibration.coverage import COMPARED, coverage_study

N_CHIPS = 4
POOLED_COVERAGE_MIN = 0.85
#: Constants every chip of this study identifies (a cubic σ_prog term only where BIC takes it).
ALWAYS = tuple(c for c in COMPARED if c != "programming_noise.c3")


def pooled(table: dict[str, dict[str, float]]) -> tuple[float, dict[str, float]]:
    """Pooled coverage over the scored (chip, constant) pairs, and the constants scored on 3+
    chips that are covered on fewer than half of them."""
    n = np.array([table[c]["n"] for c in COMPARED])
    hits = np.array([table[c]["coverage"] * table[c]["n"] if table[c]["n"] else 0.0 for c in COMPARED])
    worst = {c: table[c]["coverage"] for c in COMPARED if table[c]["n"] >= 3 and table[c]["coverage"] < 0.5}
    return float(hits.sum() / n.sum()), worst


def test_intervals_cover_the_truth_on_random_chips() -> None:
    outcomes, table = coverage_study(N_CHIPS, seed=18, rows=96, cols=256, points=10, repeats=3)
    assert len(outcomes) == N_CHIPS
    assert sum(table[c]["n"] for c in ALWAYS) >= 0.9 * N_CHIPS * len(ALWAYS), table  # (almost) all identified
    cover, worst = pooled(table)
    assert cover >= POOLED_COVERAGE_MIN and not worst, (cover, worst, table)
