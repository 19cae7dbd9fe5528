"""Closed-loop programming: convergence, parameters, bad targets, progress."""

from __future__ import annotations

import numpy as np
import pytest

from harness.chip.protocol import Geometry
from harness.errors import AddressError, ProgrammingError
from harness.programming.write_verify import ProgrammingParams, ProgrammingProgress, program_cells
from harness.virtual.chip import VirtualPCMChip

GEO = Geometry(rows=32, cols=64)


def run(seed: int = 0, params: ProgrammingParams | None = None, progress=None):
    chip = VirtualPCMChip(GEO, seed=seed)
    cells = np.arange(GEO.n_cells)
    target = np.random.default_rng(seed).uniform(0, 25, cells.size)
    return chip, program_cells(chip, cells, target, params, progress)


def test_converged_cells_are_within_tolerance_and_counts_are_consistent() -> None:
    _, r = run()
    assert r.converged_fraction >= 0.99
    assert np.all(np.abs(r.final_uS - r.target_uS)[r.converged] <= r.params.tolerance_uS)
    assert np.all(np.abs(r.final_uS - r.target_uS)[~r.converged] > r.params.tolerance_uS)
    assert r.iterations.max() <= r.params.max_iterations
    assert sum(s.n for s in r.level_stats()) == r.n_cells


def test_tighter_tolerance_gives_smaller_verify_error() -> None:
    _, loose = run(params=ProgrammingParams(tolerance_uS=0.8, reset_margin_uS=2.0))
    _, tight = run(params=ProgrammingParams(tolerance_uS=0.2))
    assert tight.error_std_uS < loose.error_std_uS
    assert tight.iterations.mean() > loose.iterations.mean()


def test_iteration_limit_bounds_work_and_lowers_convergence() -> None:
    _, short = run(params=ProgrammingParams(max_iterations=2))
    assert short.iterations.max() <= 2
    assert short.converged_fraction < 0.9


def test_same_seed_same_outcome() -> None:
    _, a = run(seed=4)
    _, b = run(seed=4)
    np.testing.assert_array_equal(a.final_uS, b.final_uS)
    np.testing.assert_array_equal(a.iterations, b.iterations)


def test_progress_is_reported_every_iteration() -> None:
    events: list[ProgrammingProgress] = []
    _, r = run(progress=events.append)
    assert [e.iteration for e in events] == list(range(len(events)))
    assert events[-1].n_converged == int(r.converged.sum())
    assert all(b.n_converged >= 0 and b.n_cells == r.n_cells for b in events)


def test_partner_devices_at_zero_only_get_reset() -> None:
    chip = VirtualPCMChip(GEO, seed=1)
    r = program_cells(chip, np.arange(100), np.zeros(100))
    assert r.converged.all() and r.iterations.max() == 0


@pytest.mark.parametrize(
    ("target", "message"),
    [(np.full(10, 26.0), "outside the chip's range"), (np.full(10, -1.0), "outside"), (np.full(9, 1.0), "targets for 10 cells"), (np.full(10, np.nan), "NaN")],
)
def test_bad_targets_are_refused(target: np.ndarray, message: str) -> None:
    chip = VirtualPCMChip(GEO, seed=0)
    with pytest.raises(ProgrammingError, match=message):
        program_cells(chip, np.arange(10), target)


def test_bad_cells_are_refused() -> None:
    chip = VirtualPCMChip(GEO, seed=0)
    with pytest.raises(AddressError):
        program_cells(chip, [0, 0], [1.0, 1.0])


@pytest.mark.parametrize(
    "kwargs", [{"tolerance_uS": 0}, {"max_iterations": 0}, {"gain": 0}, {"gain": 3}, {"reset_margin_uS": 0.1}, {"initial_slope_uS": 0.5}]
)
def test_bad_parameters_are_refused(kwargs: dict) -> None:
    with pytest.raises(ProgrammingError):
        ProgrammingParams(**kwargs)
