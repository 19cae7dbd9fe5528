"""Discrete weight levels on the chip: level set → conductance levels, and whether a chip can
separate them (issue 23).

A layer with a level set (``Model.weight_levels``; ``harness train --weight-levels N``) is mapped
by :func:`harness.programming.mapping.map_weights` with the scale set by the level set, not by
the weights that happen to use it: ``s = (g_max − g_min) / max|level|``, so the top level is
``g_max`` and every weight is programmed to exactly its level's conductance.

- **Differential pair** (``W = (G+ − G−)/s``): a weight at level ``+k·Δ`` programs G+ to
  ``g_min + s·k·Δ`` and leaves G− RESET (``g_min``), a negative level the reverse. A ternary
  weight ``{−a, 0, +a}`` is therefore ``(G+, G−) = (g_max, g_min)``, ``(g_min, g_min)`` or
  ``(g_min, g_max)``: each device is binary (SET to ``g_max`` or RESET), the most robust use of
  a PCM pair. ``2m + 1`` signed levels need ``m + 1`` conductance levels per device (7 → 2-bit
  devices, 31 → 4-bit).
- **Unipolar single device** (``W = (G − g_min)/s``): ``N`` levels ``{0, …, (N−1)·Δ}`` are ``N``
  conductance levels of one device (4 → 2-bit, 16 → 4-bit); negative levels cannot be held.

No multi-device cells (a 4-bit weight from two 2-bit devices with significance weighting): the
analog MVM sums currents, and a significance-weighted pair needs a 4:1 input or gain ratio
per column that this chip's array does not have (one DAC range per layer). A pair of
``(m+1)``-level devices already gives ``2m+1`` levels, so the design does not call for it.

Separation: write-verify lands a device within ``±tolerance_uS`` of its target, after which
programming noise (the spread σ_prog of the written state, Nandakumar et al. ICECS 2019;
Joshi et al. 2020) scatters it. Adjacent conductance levels must be more than ``2·tolerance``
apart (else the verify bands overlap) and at least :data:`MIN_SPACING_SIGMAS` σ_prog apart
(else neighbouring level distributions overlap more than they are apart: at one σ a read-back
assigned to the nearest level is already wrong for ~31 % of devices on each side).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from harness.chip.protocol import Chip, FloatArray, Geometry
from harness.errors import MappingError

#: Adjacent conductance levels must be at least this many σ_prog apart (see module docstring).
MIN_SPACING_SIGMAS = 1.0
#: Relative tolerance of "this weight is that level" (float32 weights against float levels).
LEVEL_RTOL = 1e-6


def checked_level_set(name: str, levels: Sequence[float], *, unipolar: bool) -> FloatArray:
    """``levels`` as an ascending float64 array; MappingError (one line) for fewer than 2,
    non-finite, repeated or all-zero levels, or a negative level on a unipolar layer."""
    values = np.asarray(levels, dtype=np.float64)
    if values.ndim != 1 or values.size < 2 or not np.all(np.isfinite(values)) or np.any(np.diff(values) <= 0):
        raise MappingError(
            f"layer {name!r}: level set {list(levels)!r:.80} must be >= 2 distinct ascending finite values"
        )
    if not np.any(values):
        raise MappingError(f"layer {name!r}: level set is all zero")
    if unipolar and values[0] < 0:
        raise MappingError(
            f"layer {name!r} is unipolar (one device per weight, G = g_min + s·W) but its level set has a negative "
            f"level ({values[0]:.4g}); deploy it on differential pairs or retrain with --unipolar"
        )
    return values


def level_index(name: str, w: npt.ArrayLike, levels: FloatArray) -> npt.NDArray[np.int64]:
    """Index into ``levels`` of every weight in ``w`` (flattened); MappingError if a weight is
    not one of the levels (never rounded silently: that would deploy other weights)."""
    flat = np.asarray(w, dtype=np.float64).ravel()
    hi = np.clip(np.searchsorted(levels, flat), 1, levels.size - 1)
    idx = np.where(np.abs(flat - levels[hi - 1]) <= np.abs(flat - levels[hi]), hi - 1, hi)
    off = np.abs(flat - levels[idx]) > LEVEL_RTOL * float(np.abs(levels).max())
    if np.any(off):
        raise MappingError(
            f"layer {name!r} has {int(off.sum())} weight(s) off its {levels.size} levels (e.g. {flat[off][0]:.6g}); "
            "a model with weight_levels holds only level values"
        )
    return idx.astype(np.int64)


def device_levels_uS(levels: FloatArray, geometry: Geometry) -> FloatArray:
    """The distinct conductance levels (µS, ascending, RESET ``g_min`` included) the devices of a
    layer with these weight levels are programmed to: ``g_min + s·|level|``, ``s = span/max|level|``."""
    span = geometry.g_max_uS - geometry.g_min_uS
    mags = np.unique(np.abs(levels))
    g = geometry.g_min_uS + np.minimum(span * mags / mags.max(), span)
    return np.unique(np.concatenate([[geometry.g_min_uS], g]))


@dataclass(frozen=True)
class LevelNoise:
    """The programming noise a separation check assumes.

    Attributes:
        sigma_uS: σ_prog (µS) as a function of the normalised target ``x = G/g_max``.
        source: what it is, for messages (``"pcm-90nm σ_prog"``).
        tolerance_uS: the write-verify tolerance.
    """

    sigma_uS: Callable[[FloatArray], FloatArray]
    source: str
    tolerance_uS: float


def chip_noise(chip: Chip, tolerance_uS: float) -> LevelNoise:
    """σ_prog of ``chip``: its personality's if it has one (the virtual chip), else the default
    personality's (the published statistical PCM model): a real chip's noise is not known before
    programming, and the published model is what the virtual chip is calibrated to."""
    from harness.virtual.personality import Personality, default_personality
    from harness.virtual.physics import programming_noise_std

    pers = getattr(chip, "personality", None)
    if not isinstance(pers, Personality):
        pers = default_personality()
        source = f"σ_prog of the default personality {pers.name} (the chip reports none)"
    else:
        source = f"σ_prog of personality {pers.name}"

    def sigma(x: FloatArray) -> FloatArray:
        return np.asarray(programming_noise_std(np.clip(x, 0.0, 1.0), pers), dtype=np.float64)

    return LevelNoise(sigma, source, tolerance_uS)


def check_separable(name: str, g_levels_uS: FloatArray, geometry: Geometry, noise: LevelNoise) -> None:
    """MappingError (one line naming the noise and the level spacing) unless every two adjacent
    conductance levels are more than ``2·tolerance`` and at least
    :data:`MIN_SPACING_SIGMAS` ·σ_prog (the larger of the two levels') apart."""
    if g_levels_uS.size < 2:
        return
    gap = np.diff(g_levels_uS)
    x = g_levels_uS / geometry.g_max_uS
    sig = np.maximum(noise.sigma_uS(x[:-1]), noise.sigma_uS(x[1:]))
    need = np.maximum(MIN_SPACING_SIGMAS * sig, 2.0 * noise.tolerance_uS * (1 + 1e-9))
    bad = np.flatnonzero(gap < need)
    if bad.size:
        j = int(bad[np.argmin(gap[bad] / need[bad])])
        raise MappingError(
            f"layer {name!r}: its {g_levels_uS.size} conductance levels are {gap[j]:.3g} µS apart "
            f"(at {g_levels_uS[j]:.3g}-{g_levels_uS[j + 1]:.3g} µS) but the chip cannot separate levels closer than "
            f"{need[j]:.3g} µS ({noise.source}: {sig[j]:.3g} µS x {MIN_SPACING_SIGMAS:g}; write-verify tolerance "
            f"±{noise.tolerance_uS:g} µS); use fewer --weight-levels"
        )


def check_layout_levels(layout: object, chip: Chip, tolerance_uS: float) -> None:
    """:func:`check_separable` for every layer of ``layout`` (a :class:`~harness.programming.mapping.Layout`)
    that has a level set, with ``chip``'s programming noise (:func:`chip_noise`)."""
    layers = getattr(layout, "layers", ())
    if not any(p.levels for p in layers):
        return
    noise = chip_noise(chip, tolerance_uS)
    for p in layers:
        if p.levels:
            check_separable(p.name, device_levels_uS(np.asarray(p.levels), chip.geometry), chip.geometry, noise)


def level_report(layout: object, final_uS: npt.ArrayLike, tolerance_uS: float) -> list[dict[str, object]]:
    """Per levelled layer and conductance level: devices, how many ended within
    ``tolerance_uS`` of the level, and the worst error (µS) — what write-verify made of the levels."""
    g = np.asarray(final_uS, dtype=np.float64)
    out: list[dict[str, object]] = []
    for i, p in enumerate(getattr(layout, "layers", ())):
        if not p.levels:
            continue
        sl = layout.layer_slice(i)  # type: ignore[attr-defined]
        target = layout.target_uS[sl]  # type: ignore[attr-defined]
        err = np.abs(g[sl] - target)
        for lv in np.unique(target):
            m = target == lv
            out.append(
                {"layer": p.name, "level_uS": float(lv), "devices": int(m.sum()),
                 "within_tolerance": int((err[m] <= tolerance_uS).sum()), "max_error_uS": float(err[m].max())}
            )
    return out
