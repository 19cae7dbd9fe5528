"""The RESET level of a calibration: a forward model of the RESET partners' readouts.

A RESET partner (target 0) is RESET and verified by the write-verify loop; its conductance
after programming is |N(m, s)| (the virtual chip's RESET response, a folded normal at 0), but
the loop RESETs it again while its verify read lands above the tolerance, so the devices
that remain are a selection of the draws, truncated from above: at 0.2 µS most draws read
as 2 ADC steps (0.25 µS) and are redrawn. A relaxation N(0, s_r²) (σ_prog near x = 0, floored
at 0), drift and read noise follow, and the k reads at the first readout t1 ≥ t0 go through
the ADC. :func:`fit_reset_mean` solves the unknowns so that this model reproduces the
readouts' mean, variance and (with repeats) mean within-time variance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from harness.chip.protocol import Geometry
from harness.virtual import physics as ph
from harness.virtual.personality import Personality

FloatArray = npt.NDArray[np.float64]

#: Monte Carlo devices of the forward model: 4 per observed device, within these bounds.
MC_DEVICES_MIN = 20_000
MC_DEVICES_MAX = 50_000
#: Newton iterations of the moment equations at most, and their tolerance in units of the
#: observed moments' sampling errors.
NEWTON_ITERATIONS = 8
NEWTON_TOLERANCE = 0.05


@dataclass(frozen=True)
class ResetLoop:
    """The write-verify loop as a RESET partner sees it (``ProgrammingParams``' fields):
    converged when its verify read is within ``tolerance_uS`` of 0; a read above it is read
    again one round later (unless beyond ``reset_margin_uS``) and RESET if still above;
    ``max_iterations`` rounds in all."""

    tolerance_uS: float = 0.2
    reset_margin_uS: float = 1.0
    max_iterations: int = 30

    @classmethod
    def from_params(cls, params: dict[str, float | int] | None) -> ResetLoop:
        known = {k: v for k, v in (params or {}).items() if k in ("tolerance_uS", "reset_margin_uS", "max_iterations")}
        return cls(**{k: (int(v) if k == "max_iterations" else float(v)) for k, v in known.items()})  # type: ignore[arg-type]


def fit_reset_mean(
    y_obs: FloatArray, p: Personality, t1_s: float, reads: float, geometry: Geometry, g_std_uS: float,
    rng: np.random.Generator, *, within_var: FloatArray | None = None, loop: ResetLoop | None = None,
    with_se: bool = True,
) -> tuple[float, float, float]:
    """RESET mean m such that the forward model (module docstring) reproduces the RESET
    partners' mean readouts ``y_obs`` at t1 (one per device, the mean of ``reads`` reads).

    The relaxation s_r dominates their spread and, floored at 0, pushes the mean up, so m and
    s_r are solved together from the readouts' mean and variance (Newton's method, common
    random numbers). The read noise of devices at x ≈ 0.002-0.02
    is the Q_s law's ceiling q_max, which the programmed devices do not reach (not fitted):
    with repeats (``within_var``: each device's variance of its ``reads`` reads at t1) a scale
    factor on the read noise is solved as well, so that the model's mean within-time variance
    matches the observed one. ``loop``: the write-verify loop that selects the RESET draws
    (default: ``ProgrammingParams``' defaults).

    Returns (m, SE of m from the moments' sampling errors, read-noise scale); ``with_se=False``
    gives NaN for the SE."""
    loop = loop or ResetLoop()
    n = int(min(max(4 * y_obs.size, MC_DEVICES_MIN), MC_DEVICES_MAX))
    k = max(int(reads), 1)
    attempts = 1 + loop.max_iterations // 2
    z_level = rng.standard_normal((attempts, n))
    z_verify = rng.standard_normal((2, attempts, n))
    z = rng.standard_normal((2, n))
    z_read = rng.standard_normal((k, n))
    f_t1 = float(ph.read_noise_time_factor(t1_s, p))
    f_verify = ph.read_noise_time_factor(np.array([ph.T_VERIFY_S, 2 * ph.T_VERIFY_S]), p)

    def adc(g: FloatArray) -> FloatArray:
        return geometry.codes_to_uS(geometry.to_codes(g))

    def programmed(m: float, scale: float) -> FloatArray:
        """Each device's RESET level after the loop: the first draw whose verify read (or its
        re-read) is within tolerance, else the last draw."""
        g = np.abs(m + g_std_uS * z_level[0])
        active = np.arange(n)
        for a in range(attempts):
            if a:
                g[active] = np.abs(m + g_std_uS * z_level[a, active])
            ga = g[active]
            q = ph.read_noise_q(ga / p.g_max_uS, p) * scale
            v = adc(ga * (1 + q * f_verify[0] * z_verify[0, a, active]))
            ok = v <= loop.tolerance_uS
            if 2 * a + 1 <= loop.max_iterations:  # a slight overshoot is read again first
                again = ~ok & (v <= loop.reset_margin_uS)
                v2 = adc(ga * (1 + q * f_verify[1] * z_verify[1, a, active]))
                ok |= again & (v2 <= loop.tolerance_uS)
            active = active[~ok]
            if active.size == 0 or 2 * (a + 1) > loop.max_iterations:
                break
        return g

    cache: dict[tuple[float, float], FloatArray] = {}

    def moments(m: float, s_r: float, scale: float) -> tuple[float, float, float]:
        key = (m, scale)
        if key not in cache:
            cache.clear()  # the solves move one of (m, scale) at a time
            cache[key] = programmed(m, scale)
        g_r = cache[key]
        x = g_r / p.g_max_uS
        g = np.maximum(g_r + z[0] * s_r, 0.0)
        mu, sd = ph.drift_exponent_stats(x, p)
        g = g * ph.drift_factor(t1_s, np.abs(mu + sd * z[1]), p)
        sig = g * ph.read_noise_q(x, p) * (scale * f_t1)
        ys = np.stack([adc(g + sig * zr) for zr in z_read])
        y = ys.mean(axis=0)
        wv = float(ys.var(axis=0, ddof=1).mean()) if k >= 2 else math.nan
        return float(y.mean()), float(y.var()), wv

    target_m, target_v = float(y_obs.mean()), float(y_obs.var())
    n_obs = max(y_obs.size, 2)
    targets = [target_m, target_v]
    scales = [math.sqrt(target_v / n_obs), target_v * math.sqrt(2.0 / (n_obs - 1))]  # their sampling SEs
    repeats = within_var is not None and k >= 2 and bool(np.isfinite(within_var).any())
    if repeats:
        w_obs = np.asarray(within_var)[np.isfinite(within_var)]
        targets.append(float(w_obs.mean()))
        scales.append(max(float(w_obs.std()) / math.sqrt(w_obs.size), 1e-12))
    t_arr, s_arr = np.array(targets), np.array(scales)

    def residual(v: FloatArray) -> FloatArray:
        out = moments(float(v[0]), float(v[1]), math.exp(float(v[2])))
        return (np.array(out[: t_arr.size]) - t_arr) / s_arr

    # unknowns (m, s_r, ln scale), solved by Newton's method with a forward-difference Jacobian
    # (common random numbers make the Monte Carlo moments smooth in them); ln scale stays 0
    # without repeats. A variable at a bound that the step would push outside is held there
    # and the equations solved in least squares over the rest.
    lower = np.array([0.0, 0.0, math.log(0.1)])
    upper = np.array([max(1.0, 4 * target_m), max(2.0 * math.sqrt(target_v), 0.05), math.log(10.0)])
    steps = np.array([0.004, 0.004, 0.02])
    n_var = 3 if repeats else 2
    v = np.array([target_m, math.sqrt(target_v), 0.0])
    f = residual(v)
    jac = np.zeros((t_arr.size, 3))
    for _ in range(NEWTON_ITERATIONS):
        for j in range(n_var):
            vj = v.copy()
            vj[j] += steps[j]
            jac[:, j] = (residual(vj) - f) / steps[j]
        free = np.ones(n_var, dtype=bool)
        for _hold in range(n_var):
            step = np.zeros(3)
            step[:n_var][free] = np.linalg.lstsq(jac[:, :n_var][:, free], -f, rcond=None)[0]
            held = free & (((v[:n_var] <= lower[:n_var]) & (step[:n_var] < 0))
                           | ((v[:n_var] >= upper[:n_var]) & (step[:n_var] > 0)))
            if not held.any():
                break
            free &= ~held
        v = np.clip(v + step, lower, upper)
        f = residual(v)
        if np.all(np.abs(f) < NEWTON_TOLERANCE) or not np.any(step):
            break
    m, s_r, scale = float(v[0]), float(v[1]), math.exp(float(v[2]))
    if not with_se:
        return m, math.nan, scale
    # SE of m: the observed moments' sampling errors (the residuals' units) through the
    # inverse Jacobian (implicit function theorem)
    inv = np.linalg.pinv(jac[:, :n_var])
    return m, float(np.sqrt(np.sum(inv[0] ** 2))), scale
