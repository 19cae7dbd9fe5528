"""Closed-loop (write-read-verify) programming over any Chip, vectorized over all cells.

The loop (Papandreou et al., ISCAS 2011; Nandakumar 2018): RESET every cell and read it;
then, each iteration, for every cell not yet within ``tolerance_uS`` of its target:

* below target → one SET pulse whose amplitude is ``gain · error / slope``, where
  ``slope`` (µS per unit amplitude) is the cell's own secant estimate from its previous
  pulse — a per-device Newton-secant step, so weak and strong devices both converge;
* far above target (overshoot beyond ``reset_margin_uS``) → RESET and start again;
* slightly above target → no pulse, verify again (a noisy read is not worth a RESET);
  still above at that second look → RESET and start again;

then one batched read of all those cells. A cell is converged when its last verify read
is within tolerance. Cells with target 0 (the partner of a differential pair) are only
RESET. One call per operation moves the whole batch: the loop's Python overhead is per
iteration, never per device.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from harness.chip.protocol import CellArray, Chip, FloatArray, check_cells
from harness.errors import ProgrammingError
from harness.programming.levels import check_layout_levels
from harness.programming.mapping import Layout, map_model

if TYPE_CHECKING:
    from harness.models.model import Model

#: Smallest SET amplitude the loop sends (the safety check requires > 0).
MIN_AMPLITUDE = 1e-3
#: Bounds on a cell's slope estimate (µS per unit amplitude) so one bad read cannot
#: produce a huge or vanishing step.
SLOPE_MIN_US, SLOPE_MAX_US = 2.0, 500.0


@dataclass(frozen=True)
class ProgrammingParams:
    """Parameters of the write-verify loop.

    Attributes:
        tolerance_uS: a cell is converged when ``|read − target| <= tolerance_uS``.
        max_iterations: pulse-and-verify rounds before giving up on a cell.
        gain: fraction of the estimated amplitude needed to close the error in one pulse
            (< 1 approaches from below; overshoot costs a RESET).
        reset_margin_uS: overshoot beyond which the cell is RESET and restarted.
        initial_slope_uS: first guess of µS gained per unit SET amplitude.
    """

    tolerance_uS: float = 0.2
    max_iterations: int = 30
    gain: float = 0.5
    reset_margin_uS: float = 1.0
    initial_slope_uS: float = 60.0

    def __post_init__(self) -> None:
        if not self.tolerance_uS > 0:
            raise ProgrammingError(f"tolerance {self.tolerance_uS} µS must be > 0")
        if not 1 <= self.max_iterations <= 10_000:
            raise ProgrammingError(f"max_iterations {self.max_iterations} must be in 1..10000")
        if not 0 < self.gain <= 2:
            raise ProgrammingError(f"gain {self.gain} must be in (0, 2]")
        if not self.reset_margin_uS >= self.tolerance_uS:
            raise ProgrammingError(
                f"reset margin {self.reset_margin_uS} µS must be >= tolerance {self.tolerance_uS} µS"
            )
        if not SLOPE_MIN_US <= self.initial_slope_uS <= SLOPE_MAX_US:
            raise ProgrammingError(
                f"initial slope {self.initial_slope_uS} µS must be in {SLOPE_MIN_US}..{SLOPE_MAX_US}"
            )


@dataclass(frozen=True)
class ProgrammingProgress:
    """Reported after every iteration."""

    iteration: int
    max_iterations: int
    n_converged: int
    n_cells: int


@dataclass(frozen=True)
class LevelStats:
    """Outcome for the cells whose target lies in ``[lo_uS, hi_uS)``."""

    lo_uS: float
    hi_uS: float
    n: int
    converged_fraction: float
    error_mean_uS: float
    error_std_uS: float


@dataclass(frozen=True, eq=False)
class ProgrammingResult:
    """Outcome of :func:`program_cells`, one entry per cell (all arrays shape ``(n,)``).

    ``final_uS`` is each cell's last verify read. ``t_end_s`` is the chip time when the
    loop finished: readout schedules count from it.
    """

    cells: CellArray
    target_uS: FloatArray
    final_uS: FloatArray
    iterations: npt.NDArray[np.int32]
    converged: npt.NDArray[np.bool_]
    params: ProgrammingParams
    t_start_s: float
    t_end_s: float
    wall_s: float

    @property
    def n_cells(self) -> int:
        return int(self.cells.size)

    @property
    def converged_fraction(self) -> float:
        return float(self.converged.mean()) if self.cells.size else 1.0

    @property
    def error_uS(self) -> FloatArray:
        return self.final_uS - self.target_uS

    @property
    def error_std_uS(self) -> float:
        """Std of (final verify read − target) over cells with a non-zero target."""
        e = self.error_uS[self.target_uS > 0]
        return float(e.std()) if e.size else 0.0

    def level_stats(self, edges_uS: Sequence[float] | None = None) -> list[LevelStats]:
        """Converged fraction and error statistics per target-conductance bin.

        Default bins: the RESET level ``[0, 0.5)`` µS and 2.5 µS wide bins above it.
        """
        if edges_uS is None:
            top = max(float(self.target_uS.max(initial=0.0)), 0.5) + 1e-9
            edges_uS = [0.0, 0.5, *np.arange(2.5, top + 2.5, 2.5)]
        edges = np.asarray(edges_uS, dtype=np.float64)
        which = np.digitize(self.target_uS, edges) - 1
        err = self.error_uS
        out = []
        for i in range(len(edges) - 1):
            m = which == i
            n = int(m.sum())
            if n:
                out.append(
                    LevelStats(
                        float(edges[i]), float(edges[i + 1]), n,
                        float(self.converged[m].mean()), float(err[m].mean()), float(err[m].std()),
                    )
                )
        return out

    def summary(self) -> dict[str, object]:
        """JSON-ready summary (counts, converged fraction, error std overall and by level)."""
        return {
            "devices_programmed": self.n_cells,
            "converged_fraction": self.converged_fraction,
            "error_std_uS": self.error_std_uS,
            "iterations_max": int(self.iterations.max(initial=0)),
            "iterations_mean": float(self.iterations.mean()) if self.n_cells else 0.0,
            "levels": [asdict(s) for s in self.level_stats()],
            "sim_s": self.t_end_s - self.t_start_s,
            "wall_s": self.wall_s,
            "params": asdict(self.params),
        }


ProgressCallback = Callable[[ProgrammingProgress], None]


def program_cells(
    chip: Chip,
    cells: npt.ArrayLike,
    target_uS: npt.ArrayLike,
    params: ProgrammingParams | None = None,
    progress: ProgressCallback | None = None,
) -> ProgrammingResult:
    """Program ``cells`` to ``target_uS`` with write-read-verify; see the module docstring.

    Args:
        chip: any Chip backend.
        cells: flat addresses, unique.
        target_uS: one target per cell, within the chip's ``[g_min_uS, g_max_uS]``.
        params: loop parameters (defaults: :class:`ProgrammingParams`).
        progress: called after every iteration.

    Raises:
        ProgrammingError: targets of the wrong shape, non-finite or out of range.
        AddressError / SafetyLimitError / ChipIOError: from the chip.
    """
    params = params or ProgrammingParams()
    geom = chip.geometry
    c = check_cells(cells, geom, unique=True)
    target = np.array(target_uS, dtype=np.float64)
    if target.shape != c.shape:
        raise ProgrammingError(f"got {target.shape} targets for {c.size} cells; give one target per cell")
    if target.size and not np.all(np.isfinite(target)):
        raise ProgrammingError("targets contain NaN or infinity")
    if target.size and (target.min() < geom.g_min_uS or target.max() > geom.g_max_uS):
        bad = float(target.min() if target.min() < geom.g_min_uS else target.max())
        raise ProgrammingError(
            f"target {bad:g} µS is outside the chip's range [{geom.g_min_uS:g}, {geom.g_max_uS:g}] µS"
        )

    wall0 = time.perf_counter()
    t_start = chip.now()
    n = c.size
    iterations = np.zeros(n, dtype=np.int32)
    slope = np.full(n, params.initial_slope_uS)  # µS per unit amplitude, per cell
    tol = params.tolerance_uS
    max_amp = geom.max_set_amplitude

    chip.reset(c)
    g = chip.read(c)
    done = np.abs(target - g) <= tol
    if progress:
        progress(ProgrammingProgress(0, params.max_iterations, int(done.sum()), n))

    # The loop works on compacted copies of the active cells' state (positions ``pos`` in
    # ascending order, as np.flatnonzero(~done) would give them), shrunk as cells converge:
    # every pass touches only active cells, and the chip sees the same calls in the same order.
    pos = np.flatnonzero(~done)
    a_cells, a_target, a_g = c[pos], target[pos], g[pos]
    a_slope = slope[pos]
    rechecked = np.zeros(pos.size, dtype=bool)  # last round was a re-verify of a slight overshoot
    rounds = 0
    for it in range(1, params.max_iterations + 1):
        if pos.size == 0:
            break
        rounds = it
        err = a_target - a_g
        under = err > tol
        slightly_over = (err < -tol) & ~(err < -params.reset_margin_uS)
        over = (err < -params.reset_margin_uS) | (slightly_over & rechecked)
        rechecked = slightly_over & ~over
        # Positions, not boolean masks, select the cells of each step: numpy gathers with an
        # index array in one pass, where a mask is counted and then gathered on every use.
        up = np.flatnonzero(under)
        slope_up = a_slope.take(up)
        amp = np.clip(params.gain * err.take(up) / slope_up, MIN_AMPLITUDE, max_amp)
        chip.set_pulse(a_cells.take(up), amp)
        chip.reset(a_cells[over])
        g_new = chip.read(a_cells)

        # Secant update of each pulsed cell's slope, from steps clearly above read noise
        # (computed for every pulsed cell, kept where informative: the same numbers there).
        step = g_new.take(up) - a_g.take(up)
        informative = step > 2 * tol
        with np.errstate(invalid="ignore", divide="ignore"):  # uninformative steps are discarded
            secant = np.clip(np.sqrt(slope_up * (step / amp)), SLOPE_MIN_US, SLOPE_MAX_US)
        a_slope[up] = np.where(informative, secant, slope_up)

        a_g = g_new
        fin = np.abs(a_target - g_new) <= tol
        if fin.any():
            hit = np.flatnonzero(fin)
            out = pos.take(hit)
            g[out] = g_new.take(hit)
            iterations[out] = it
            done[out] = True
            keep = np.flatnonzero(~fin)
            pos, a_cells, a_target, a_g, a_slope, rechecked = (
                a.take(keep) for a in (pos, a_cells, a_target, a_g, a_slope, rechecked)
            )
        if progress:
            progress(ProgrammingProgress(it, params.max_iterations, n - pos.size, n))
    g[pos] = a_g  # cells that never converged: their last verify read, after every round
    iterations[pos] = rounds

    return ProgrammingResult(
        cells=c,
        target_uS=target,
        final_uS=g,
        iterations=iterations,
        converged=done,
        params=params,
        t_start_s=t_start,
        t_end_s=chip.now(),
        wall_s=time.perf_counter() - wall0,
    )


def program_layout(
    chip: Chip, layout: Layout, params: ProgrammingParams | None = None, progress: ProgressCallback | None = None
) -> ProgrammingResult:
    """Program every device of a mapped model.

    Raises:
        MappingError: a layer's weight levels are closer than the chip can separate given its
            programming noise and the loop's tolerance (:func:`harness.programming.levels.check_layout_levels`),
            checked before any pulse.
    """
    check_layout_levels(layout, chip, (params or ProgrammingParams()).tolerance_uS)
    return program_cells(chip, layout.cells, layout.target_uS, params, progress)


def program_model(
    chip: Chip, model: Model, params: ProgrammingParams | None = None, progress: ProgressCallback | None = None
) -> tuple[Layout, ProgrammingResult]:
    """Map a model's analog layers onto the chip (:func:`harness.programming.mapping.map_model`: its
    unipolar layers on single devices) and program them; returns (layout, result)."""
    layout = map_model(model, chip.geometry)
    return layout, program_layout(chip, layout, params, progress)
