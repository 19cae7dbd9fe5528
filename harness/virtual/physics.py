"""Statistical PCM device model, one function per effect.

The constants come from a :class:`~harness.virtual.personality.Personality` (every function
takes one as ``p``; ``None`` means the default, ``pcm-90nm``: the published model of
Nandakumar et al., ICECS 2019 and Joshi et al., Nat. Commun. 11, 2473, 2020, also used by
IBM aihwkit's ``PCMLikeNoiseModel``; see Nandakumar et al. ICECS 2019 and Joshi et al. Nat. Commun. 2020 in docs/references.md). Time ``t_s`` is always counted from a device's last pulse.
Conductances in µS; ``x = G / g_max`` is the normalized state.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from harness.virtual.personality import Personality, default_personality

FloatArray = npt.NDArray[np.float64]

#: Smallest x fed to ln() in the drift statistics (keeps ln finite for RESET devices).
X_LOG_FLOOR = 1e-6

# --- Operation timing of this virtual chip (not a device constant, docs/virtual-chip.md) ------
#: Simulated duration of one batched pulse and of one batched read (array-parallel chip).
PULSE_OP_TIME_S = 1e-6
READ_OP_TIME_S = 1e-6
#: Delay from a pulse to the read that verifies it in a write-verify loop on this chip.
T_VERIFY_S = PULSE_OP_TIME_S + READ_OP_TIME_S


def _p(p: Personality | None) -> Personality:
    return default_personality() if p is None else p


@dataclass(frozen=True)
class DeviceParams:
    """Per-device constants drawn once when the chip is made (device-to-device variability)."""

    g_sat_uS: FloatArray
    set_rate: FloatArray


def device_params(
    z_sat: FloatArray, u_weak: FloatArray, u_weak_g: FloatArray, z_rate: FloatArray, p: Personality | None = None
) -> DeviceParams:
    """Saturation conductance and SET rate of devices from their standard-normal (``z_*``)
    and uniform (``u_*``) fabrication draws, one of each per device; a fraction
    ``weak_fraction`` are weak devices with a uniform, low saturation conductance."""
    p = _p(p)
    g_sat = p.g_sat_mean_uS + p.g_sat_std_uS * z_sat
    weak = u_weak < p.weak_fraction
    g_sat[weak] = p.weak_g_sat_min_uS + (p.weak_g_sat_max_uS - p.weak_g_sat_min_uS) * u_weak_g[weak]
    rate = p.set_rate_median * np.exp(p.set_rate_log_std * z_rate)
    return DeviceParams(g_sat_uS=g_sat, set_rate=rate)


def set_pulse_response(
    g_uS: FloatArray,
    amplitude: FloatArray,
    g_sat_uS: FloatArray,
    set_rate: FloatArray,
    rng: np.random.Generator,
    p: Personality | None = None,
) -> FloatArray:
    """Conductance after one SET pulse of normalized ``amplitude`` from state ``g_uS``.

    Partial crystallization: the mean increment is a fraction ``1 − exp(−rate·amplitude)``
    of the remaining window ``g_sat − g``; its cycle-to-cycle spread is proportional to
    the increment (small pulses are precise, large ones are not) plus a small floor.
    """
    p = _p(p)
    mean_step = (g_sat_uS - g_uS).clip(min=0.0) * -np.expm1(-set_rate * amplitude)
    noise = rng.standard_normal(g_uS.size)
    step = mean_step + (p.set_c2c_rel * mean_step + p.set_c2c_abs_uS) * noise
    return np.maximum(g_uS + step, 0.0)


def reset_response(n: int, rng: np.random.Generator, p: Personality | None = None) -> FloatArray:
    """Conductance after a RESET pulse: small residual, never negative."""
    return reset_conductance(rng.standard_normal(n), p)


def reset_conductance(z: FloatArray, p: Personality | None = None) -> FloatArray:
    """RESET residual conductance from standard-normal draws ``z`` (one per device)."""
    p = _p(p)
    return np.abs(p.reset_g_mean_uS + p.reset_g_std_uS * z)


def normalized(g_uS: npt.ArrayLike, g_max_uS: float | None = None) -> FloatArray:
    """x = G / g_max, floored at 0 (``g_max_uS`` default: the default personality's)."""
    g_max = default_personality().g_max_uS if g_max_uS is None else g_max_uS
    return np.maximum(np.asarray(g_uS, dtype=np.float64) / g_max, 0.0)


def programming_noise_std(x: npt.ArrayLike, p: Personality | None = None) -> FloatArray:
    """σ_prog(x) = Σ c_k x^k in µS (Nandakumar 2019; Joshi 2020; terms evaluated left to right, c_k·x·x…)."""
    xa = np.asarray(x, dtype=np.float64)
    coeffs = _p(p).prog_noise_coeffs_uS
    out = coeffs[0] + 0.0 * xa
    if len(coeffs) > 1:
        out = coeffs[0] + coeffs[1] * xa
    for k, c in enumerate(coeffs[2:], start=2):
        term = c * xa
        for _ in range(k - 1):
            term = term * xa
        out = out + term
    return out


def drift_exponent_stats(x: npt.ArrayLike, p: Personality | None = None) -> tuple[FloatArray, FloatArray]:
    """(μ_ν, σ_ν) of the drift exponent for normalized state ``x`` (Nandakumar 2019; Joshi 2020)."""
    p = _p(p)
    ln_x = np.log(np.maximum(np.asarray(x, dtype=np.float64), X_LOG_FLOOR))
    m, s = p.nu_mean, p.nu_std
    mu = np.clip(m.ln_coef * ln_x + m.offset, m.min, m.max)
    sigma = np.clip(s.ln_coef * ln_x + s.offset, s.min, s.max)
    return mu, sigma


def draw_drift_exponents(x: FloatArray, rng: np.random.Generator, p: Personality | None = None) -> FloatArray:
    """ν = |N(μ_ν(x), σ_ν(x))|, drawn once per device when it is programmed."""
    return drift_exponents(x, rng.standard_normal(x.size), p)


def drift_exponents(x: FloatArray, z: FloatArray, p: Personality | None = None) -> FloatArray:
    """ν = |μ_ν(x) + σ_ν(x)·z| for standard-normal draws ``z`` (one per device)."""
    mu, sigma = drift_exponent_stats(x, p)
    return np.abs(mu + sigma * z)


def drift_factor(t_s: npt.ArrayLike, nu: npt.ArrayLike, p: Personality | None = None) -> FloatArray:
    """G(t)/G(t0) = (max(t, t0)/t0)^−ν: no drift before t0 (the model's time origin)."""
    return np.exp(-np.asarray(nu, dtype=np.float64) * drift_log_age(t_s, p))


def drift_log_age(t_s: npt.ArrayLike, p: Personality | None = None) -> FloatArray:
    """ln(max(t, t0)/t0): the drift factor is exp(−ν · this), so a read can evaluate it once
    per distinct pulse time and apply each device's ν to it."""
    t0 = _p(p).t0_s
    return np.log(np.maximum(np.asarray(t_s, dtype=np.float64), t0) / t0)


def read_noise_q(x: npt.ArrayLike, p: Personality | None = None) -> FloatArray:
    """Q_s(x) = min(q_coef / max(x^q_exp, q_x_floor), q_max) (pcm-90nm: 0.0088, 0.65, 1e-3, 0.2)."""
    p = _p(p)
    xp = np.maximum(np.power(np.maximum(np.asarray(x, dtype=np.float64), 0.0), p.q_exp), p.q_x_floor)
    return np.minimum(p.q_coef / xp, p.q_max)


def read_noise_time_factor(t_s: npt.ArrayLike, p: Personality | None = None) -> FloatArray:
    """sqrt(ln((t + t_read)/(2·t_read))), zero for t ≤ t_read (no negative variance)."""
    t_read = _p(p).t_read_s
    t = np.asarray(t_s, dtype=np.float64)
    return np.sqrt(np.maximum(np.log((t + t_read) / (2.0 * t_read)), 0.0))


def read_noise_std(
    g_uS: npt.ArrayLike, x_prog: npt.ArrayLike, t_s: npt.ArrayLike, p: Personality | None = None
) -> FloatArray:
    """σ_read(t) = G(t)·Q_s(x)·sqrt(ln((t + t_read)/(2 t_read))) in µS (Nandakumar 2019; Joshi 2020)."""
    return np.abs(np.asarray(g_uS, dtype=np.float64)) * read_noise_q(x_prog, p) * read_noise_time_factor(t_s, p)


def relaxation_std(x: npt.ArrayLike, p: Personality | None = None, *, q_s: npt.ArrayLike | None = None) -> FloatArray:
    """Std of the post-programming relaxation (µS), calibrated so that a device verified
    ``T_VERIFY_S`` after its pulse and read at t0 shows the published σ_prog (Nandakumar 2019; Joshi 2020).

    The published σ_prog is a hardware measurement of closed-loop-programmed devices read
    at ~t0, so it already holds the verify read's noise (which limits the loop's
    precision, Nandakumar IEDM 2020) and the read noise at t0; the relaxation is the rest:
    σ_relax² = σ_prog² − σ_read(t_verify)² − σ_read(t0)².
    ``q_s``: :func:`read_noise_q` of ``x`` when the caller has it already (the same numbers).
    """
    p = _p(p)
    xa = np.asarray(x, dtype=np.float64)
    s_prog = programming_noise_std(xa, p)
    g_q = xa * p.g_max_uS * (read_noise_q(xa, p) if q_s is None else np.asarray(q_s, dtype=np.float64))
    var_read = g_q**2 * (read_noise_time_factor(p.t0_s, p) ** 2 + read_noise_time_factor(T_VERIFY_S, p) ** 2)
    return np.sqrt(np.maximum(s_prog**2 - var_read, 0.0))


def relaxation_progress(t_s: npt.ArrayLike, p: Personality | None = None) -> FloatArray:
    """Fraction of the relaxation completed ``t_s`` after the last pulse: 0 before
    the personality's relax_onset_s, growing as ln(t), 1 from t0 on. Verify reads (µs after a pulse)
    do not see it; a read at t0 sees all of it."""
    p = _p(p)
    onset = p.relax_onset_s
    t = np.maximum(np.asarray(t_s, dtype=np.float64), onset)
    return np.clip(np.log(t / onset) / np.log(p.t0_s / onset), 0.0, 1.0)
