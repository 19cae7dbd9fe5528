"""Statistical PCM device model, one function per effect.

Constants are those of the published model (Nandakumar et al., ICECS 2019; Joshi et al.,
Nat. Commun. 11, 2473, 2020), also used by IBM aihwkit's ``PCMLikeNoiseModel``; see
``shared/REFERENCE.md`` §1. Time ``t_s`` is always counted from a device's last pulse.
Conductances in µS; ``x = G / g_max`` is the normalized state.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

# --- REFERENCE §1 (Nandakumar 2019 / Joshi 2020; aihwkit PCMLikeNoiseModel) -----------------
G_MAX_US = 25.0
#: σ_prog(x) = c0 + c1·x + c2·x² µS: spread of closed-loop-programmed conductance, read at t0.
PROG_NOISE_COEFFS_US = (0.26348, 1.9650, -1.1731)
#: Drift reference time t0 (s): G(t) = G(t0)·(t/t0)^−ν for t ≥ t0.
T0_S = 20.0
#: μ_ν = clip(a·ln x + b, lo, hi)
NU_MEAN_LN_COEF, NU_MEAN_OFFSET, NU_MEAN_MIN, NU_MEAN_MAX = -0.0155, 0.0244, 0.049, 0.1
#: σ_ν = clip(a·ln x + b, lo, hi)
NU_STD_LN_COEF, NU_STD_OFFSET, NU_STD_MIN, NU_STD_MAX = -0.0125, -0.0059, 0.008, 0.045
#: 1/f read noise: σ_read(t) = G(t)·Q_s·sqrt(ln((t + t_read)/(2·t_read)))
T_READ_S = 250e-9
Q_S_COEF, Q_S_EXP, Q_S_MAX, Q_S_X_FLOOR = 0.0088, 0.65, 0.2, 1e-3
#: Smallest x fed to ln() in the drift statistics (keeps ln finite for RESET devices).
X_LOG_FLOOR = 1e-6

# --- Pulse response of this virtual chip (modelling choice, docs/virtual-chip.md) -------------
#: Saturation conductance reached by repeated full SET pulses, device-to-device N(mean, std).
G_SAT_MEAN_US, G_SAT_STD_US = 32.0, 2.0
#: Fraction of weak devices and the range of their (low) saturation conductance.
WEAK_FRACTION = 0.003
WEAK_G_SAT_RANGE_US = (4.0, 16.0)
#: Crystallization rate per unit SET amplitude: lognormal device-to-device spread.
SET_RATE_MEDIAN, SET_RATE_LOG_STD = 2.3, 0.25
#: Cycle-to-cycle noise of one SET pulse: relative to the mean increment, plus an absolute floor.
SET_C2C_REL, SET_C2C_ABS_US = 0.3, 0.05
#: RESET leaves a small residual conductance |N(mean, std)| µS.
RESET_G_MEAN_US, RESET_G_STD_US = 0.05, 0.03
#: Post-programming relaxation grows as ln(t) from T_RELAX_ONSET_S and is complete at T0_S.
T_RELAX_ONSET_S = 1e-3
#: Simulated duration of one batched pulse and of one batched read (array-parallel chip).
PULSE_OP_TIME_S = 1e-6
READ_OP_TIME_S = 1e-6
#: Delay from a pulse to the read that verifies it in a write-verify loop on this chip.
T_VERIFY_S = PULSE_OP_TIME_S + READ_OP_TIME_S


@dataclass(frozen=True)
class DeviceParams:
    """Per-device constants drawn once when the chip is made (device-to-device variability)."""

    g_sat_uS: FloatArray
    set_rate: FloatArray


def draw_device_params(n: int, rng: np.random.Generator) -> DeviceParams:
    """Saturation conductance and SET rate of ``n`` devices, including weak devices."""
    g_sat = rng.normal(G_SAT_MEAN_US, G_SAT_STD_US, n)
    weak = rng.random(n) < WEAK_FRACTION
    g_sat[weak] = rng.uniform(*WEAK_G_SAT_RANGE_US, int(weak.sum()))
    rate = SET_RATE_MEDIAN * np.exp(SET_RATE_LOG_STD * rng.standard_normal(n))
    return DeviceParams(g_sat_uS=g_sat, set_rate=rate)


def set_pulse_response(
    g_uS: FloatArray, amplitude: FloatArray, g_sat_uS: FloatArray, set_rate: FloatArray, rng: np.random.Generator
) -> FloatArray:
    """Conductance after one SET pulse of normalized ``amplitude`` from state ``g_uS``.

    Partial crystallization: the mean increment is a fraction ``1 − exp(−rate·amplitude)``
    of the remaining window ``g_sat − g``; its cycle-to-cycle spread is proportional to
    the increment (small pulses are precise, large ones are not) plus a small floor.
    """
    mean_step = (g_sat_uS - g_uS).clip(min=0.0) * -np.expm1(-set_rate * amplitude)
    noise = rng.standard_normal(g_uS.size)
    step = mean_step + (SET_C2C_REL * mean_step + SET_C2C_ABS_US) * noise
    return np.maximum(g_uS + step, 0.0)


def reset_response(n: int, rng: np.random.Generator) -> FloatArray:
    """Conductance after a RESET pulse: small residual, never negative."""
    return np.abs(RESET_G_MEAN_US + RESET_G_STD_US * rng.standard_normal(n))


def normalized(g_uS: npt.ArrayLike, g_max_uS: float = G_MAX_US) -> FloatArray:
    """x = G / g_max, floored at 0."""
    return np.maximum(np.asarray(g_uS, dtype=np.float64) / g_max_uS, 0.0)


def programming_noise_std(x: npt.ArrayLike) -> FloatArray:
    """σ_prog(x) in µS (REFERENCE §1)."""
    xa = np.asarray(x, dtype=np.float64)
    c0, c1, c2 = PROG_NOISE_COEFFS_US
    return c0 + c1 * xa + c2 * xa * xa


def drift_exponent_stats(x: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    """(μ_ν, σ_ν) of the drift exponent for normalized state ``x`` (REFERENCE §1)."""
    ln_x = np.log(np.maximum(np.asarray(x, dtype=np.float64), X_LOG_FLOOR))
    mu = np.clip(NU_MEAN_LN_COEF * ln_x + NU_MEAN_OFFSET, NU_MEAN_MIN, NU_MEAN_MAX)
    sigma = np.clip(NU_STD_LN_COEF * ln_x + NU_STD_OFFSET, NU_STD_MIN, NU_STD_MAX)
    return mu, sigma


def draw_drift_exponents(x: FloatArray, rng: np.random.Generator) -> FloatArray:
    """ν = |N(μ_ν(x), σ_ν(x))|, drawn once per device when it is programmed."""
    mu, sigma = drift_exponent_stats(x)
    return np.abs(mu + sigma * rng.standard_normal(x.size))


def drift_factor(t_s: npt.ArrayLike, nu: npt.ArrayLike) -> FloatArray:
    """G(t)/G(t0) = (max(t, t0)/t0)^−ν: no drift before t0 (the model's time origin)."""
    t = np.maximum(np.asarray(t_s, dtype=np.float64), T0_S)
    return np.exp(-np.asarray(nu, dtype=np.float64) * np.log(t / T0_S))


def read_noise_q(x: npt.ArrayLike) -> FloatArray:
    """Q_s(x) = min(0.0088 / x^0.65, 0.2), x^0.65 floored at 1e-3."""
    xp = np.maximum(np.power(np.maximum(np.asarray(x, dtype=np.float64), 0.0), Q_S_EXP), Q_S_X_FLOOR)
    return np.minimum(Q_S_COEF / xp, Q_S_MAX)


def read_noise_time_factor(t_s: npt.ArrayLike) -> FloatArray:
    """sqrt(ln((t + t_read)/(2·t_read))), zero for t ≤ t_read (no negative variance)."""
    t = np.asarray(t_s, dtype=np.float64)
    return np.sqrt(np.maximum(np.log((t + T_READ_S) / (2.0 * T_READ_S)), 0.0))


def read_noise_std(g_uS: npt.ArrayLike, x_prog: npt.ArrayLike, t_s: npt.ArrayLike) -> FloatArray:
    """σ_read(t) = G(t)·Q_s(x)·sqrt(ln((t + t_read)/(2 t_read))) in µS (REFERENCE §1)."""
    return np.abs(np.asarray(g_uS, dtype=np.float64)) * read_noise_q(x_prog) * read_noise_time_factor(t_s)


def relaxation_std(x: npt.ArrayLike) -> FloatArray:
    """Std of the post-programming relaxation (µS), calibrated so that a device verified
    ``T_VERIFY_S`` after its pulse and read at t0 shows the published σ_prog (REFERENCE §1).

    The published σ_prog is a hardware measurement of closed-loop-programmed devices read
    at ~t0, so it already holds the verify read's noise (which limits the loop's
    precision, Nandakumar IEDM 2020) and the read noise at t0; the relaxation is the rest:
    σ_relax² = σ_prog² − σ_read(t_verify)² − σ_read(t0)².
    """
    xa = np.asarray(x, dtype=np.float64)
    s_prog = programming_noise_std(xa)
    g_q = xa * G_MAX_US * read_noise_q(xa)
    var_read = g_q**2 * (read_noise_time_factor(T0_S) ** 2 + read_noise_time_factor(T_VERIFY_S) ** 2)
    return np.sqrt(np.maximum(s_prog**2 - var_read, 0.0))


def relaxation_progress(t_s: npt.ArrayLike) -> FloatArray:
    """Fraction of the relaxation completed ``t_s`` after the last pulse: 0 before
    T_RELAX_ONSET_S, growing as ln(t), 1 from T0_S on. Verify reads (µs after a pulse)
    do not see it; a read at t0 sees all of it."""
    t = np.maximum(np.asarray(t_s, dtype=np.float64), T_RELAX_ONSET_S)
    return np.clip(np.log(t / T_RELAX_ONSET_S) / np.log(T0_S / T_RELAX_ONSET_S), 0.0, 1.0)
