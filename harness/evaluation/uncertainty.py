"""95 % intervals for accuracies measured on a few chips and a finite test split.

An accuracy averaged over ``C`` chips and ``n`` test examples varies for two reasons: another
set of chips (chip-to-chip spread) and another test sample of the same size (test-set
sampling; at 90 % on 960 clips alone about ±1.9 points). Both are in the intervals here.

**Accuracy** (:func:`accuracy_interval`): a Wilson score interval (Wilson 1927; Brown 2001) on
the pooled accuracy ``p̂`` with the *effective* sample size ``n_eff = p̂(1 − p̂) / V̂`` (the design effect of clustered samples, Kish 1965), where

    V̂ = s²(a_c) / C  +  s²₀(m_i) / n

is the variance of the mean in a two-way (chips × examples) design: ``a_c`` the accuracy of
chip ``c`` (sample variance, ddof 1), ``m_i`` the fraction of chips that get example ``i``
right (variance ddof 0). The estimate counts the chip × example interaction twice, so it is
conservative, as a two-way bootstrap over chips and examples is. For one chip ``V̂ =
p̂(1 − p̂)/n``, ``n_eff = n`` and the interval *is* the binomial Wilson interval.
``n_eff`` is capped at ``C·n`` (every observation independent).

**Paired difference** of two models on the same chips and test examples
(:func:`paired_difference`): a paired two-way percentile bootstrap (Efron 1993) — each
resample draws chips and test examples with replacement and takes the same ones for both models —
:data:`BOOTSTRAP_RESAMPLES` resamples under a fixed seed. A model against itself gives
exactly 0 with a zero-width interval.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from harness.errors import EvaluationError

#: Two-sided 95 % standard normal quantile.
Z95 = 1.959963984540054
#: Resamples of the paired bootstrap, and the seed of their draws.
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0


def wilson_interval(p: npt.ArrayLike, n: npt.ArrayLike, z: float = Z95) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Wilson score interval of a proportion ``p`` observed on ``n`` (> 0, may be fractional)
    trials: ``(lo, hi)``, elementwise."""
    p_ = np.asarray(p, dtype=np.float64)
    n_ = np.asarray(n, dtype=np.float64)
    if np.any(n_ <= 0):
        raise EvaluationError("a Wilson interval needs n > 0 trials")
    z2 = z * z
    denom = 1.0 + z2 / n_
    centre = (p_ + z2 / (2.0 * n_)) / denom
    half = z / denom * np.sqrt(np.clip(p_ * (1.0 - p_), 0.0, None) / n_ + z2 / (4.0 * n_ * n_))
    return np.clip(centre - half, 0.0, 1.0), np.clip(centre + half, 0.0, 1.0)


def accuracy_interval(correct: npt.ArrayLike, z: float = Z95) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """95 % interval of the accuracy from per-example results ``correct`` of shape
    ``(..., C, n)`` (chips × test examples; bool or 0/1): ``(lo, hi)`` of shape ``(...)``
    (module docstring)."""
    x = np.asarray(correct, dtype=np.float64)
    if x.ndim < 2 or x.shape[-1] == 0 or x.shape[-2] == 0:
        raise EvaluationError(f"need per-example results of shape (..., chips, examples), got {x.shape}")
    c, n = x.shape[-2], x.shape[-1]
    p = x.mean(axis=(-2, -1))
    chip_var = x.mean(axis=-1).var(axis=-1, ddof=1) / c if c > 1 else np.zeros_like(p)
    example_var = x.mean(axis=-2).var(axis=-1) / n
    return wilson_interval(p, _effective_n(p, chip_var + example_var, c * n), z)


def accuracy_interval_from_runs(
    accuracy: npt.ArrayLike, n: int, z: float = Z95
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """The same interval from per-chip accuracies ``(..., C)`` alone, on ``n`` test examples:
    without per-example results the test-set term takes its upper bound ``p̂(1 − p̂)/n``
    (chips that agree on every example), so the interval is a little wider; exact for one chip."""
    a = np.asarray(accuracy, dtype=np.float64)
    c = a.shape[-1]
    p = a.mean(axis=-1)
    chip_var = a.var(axis=-1, ddof=1) / c if c > 1 else np.zeros_like(p)
    return wilson_interval(p, _effective_n(p, chip_var + p * (1.0 - p) / n, c * n), z)


def _effective_n(p: npt.NDArray[np.float64], var: npt.NDArray[np.float64], cap: int) -> npt.NDArray[np.float64]:
    pq = p * (1.0 - p)
    with np.errstate(divide="ignore", invalid="ignore"):
        n_eff = np.where(var > 0, pq / np.where(var > 0, var, 1.0), float(cap))
    return np.clip(n_eff, 1.0, float(cap))


def paired_difference(
    correct_a: npt.ArrayLike,
    correct_b: npt.ArrayLike,
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    level: float = 0.95,
) -> tuple[float, float, float]:
    """Accuracy of ``b`` minus that of ``a`` on the same chips and test examples, both
    ``(C, n)``: ``(difference, lo, hi)`` with a paired two-way percentile bootstrap interval
    (module docstring).

    Raises:
        EvaluationError: shapes differ or are not (chips, examples).
    """
    a = np.asarray(correct_a, dtype=np.float64)
    b = np.asarray(correct_b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2 or a.size == 0:
        raise EvaluationError(
            f"paired results must have the same (chips, examples) shape: {a.shape} vs {b.shape}; "
            "evaluate the models on the same chips and test split"
        )
    d = b - a
    c, n = d.shape
    diff = float(d.mean())
    if not np.any(d):
        return diff, diff, diff
    rng = np.random.default_rng(seed)
    block = max(1, (1 << 22) // max(1, n))  # bounded memory per block of resamples
    means = np.empty(resamples)
    for s in range(0, resamples, block):
        r = min(block, resamples - s)
        wc = rng.multinomial(c, np.full(c, 1.0 / c), size=r).astype(np.float64)  # chip counts
        we = rng.multinomial(n, np.full(n, 1.0 / n), size=r).astype(np.float64)  # example counts
        means[s : s + r] = np.einsum("rc,cn,rn->r", wc, d, we, optimize=True) / (c * n)
    tail = (1.0 - level) / 2.0 * 100.0
    lo, hi = np.percentile(means, [tail, 100.0 - tail])
    return diff, float(lo), float(hi)



def difference_text(cell: dict[str, Any]) -> str:
    """A paired difference (fractions) in points, as tables print it: ``+1.23 [+0.40, +2.05]``
    with its 95 % interval, or ``+1.23 ± 0.45`` (standard error) where only that is known."""
    if "ci95" in cell:
        lo, hi = cell["ci95"]
        return f"{cell['mean'] * 100:+.2f} [{lo * 100:+.2f}, {hi * 100:+.2f}]"
    return f"{cell['mean'] * 100:+.2f} ± {cell['sem'] * 100:.2f}"


__all__ = [
    "BOOTSTRAP_RESAMPLES",
    "Z95",
    "accuracy_interval",
    "accuracy_interval_from_runs",
    "difference_text",
    "paired_difference",
    "wilson_interval",
]
