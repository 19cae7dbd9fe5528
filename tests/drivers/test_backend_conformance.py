"""Backend conformance: the same tests over every backend, the same seed giving the same bits.

Backends: the in-process virtual chip, the serial backend over a pty to the emulator, and
the VISA backend over loopback TCP to the emulator. Each is compared with a fresh
in-process VirtualPCMChip of the same seed, driven by the same calls.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pytest
from linkkit import SMALL, ServeFn

from harness.chip.protocol import Chip, ChipBackend
from harness.errors import AddressError, ChipClosedError, SafetyLimitError
from harness.programming.write_verify import ProgrammingParams, program_cells
from harness.chip.registry import open_chip
from harness.virtual.chip import VirtualPCMChip

BACKENDS = ["virtual", "serial-pty", "visa-tcp"]
OpenFn = Callable[[int], Chip]


@pytest.fixture(params=BACKENDS)
def open_backend(request: pytest.FixtureRequest, serve: ServeFn) -> Iterator[OpenFn]:
    """``open_backend(seed)`` → a chip of geometry SMALL on the parametrized backend."""
    opened: list[Chip] = []

    def make(seed: int) -> Chip:
        if request.param == "virtual":
            chip = open_chip(f"virtual?seed={seed}&rows={SMALL.rows}&cols={SMALL.cols}")
        else:
            chip = open_chip(serve("pty" if request.param == "serial-pty" else "tcp", SMALL, seed).uri)
        opened.append(chip)
        return chip

    yield make
    for chip in opened:
        chip.close()


def reference(seed: int) -> VirtualPCMChip:
    return VirtualPCMChip(SMALL, seed=seed)


def test_is_a_chip_backend_with_the_same_geometry(open_backend: OpenFn) -> None:
    chip = open_backend(1)
    assert isinstance(chip, Chip) and isinstance(chip, ChipBackend)
    assert chip.geometry == SMALL
    assert chip.identity


def test_pulse_and_read_sequences_are_bit_identical(open_backend: OpenFn) -> None:
    chip, ref = open_backend(11), reference(11)
    rng = np.random.default_rng(5)
    everything = np.arange(SMALL.n_cells)
    for target in (chip, ref):
        target.reset(everything)
    for _ in range(4):
        cells = np.sort(rng.choice(SMALL.n_cells, 300, replace=False))
        amps = rng.uniform(0.01, 1.0, 300)
        shuffled = rng.permutation(cells)  # unordered, with repeats in reads
        for target in (chip, ref):
            target.set_pulse(cells, amps)
            target.set_pulse(cells[:10], 0.2)  # scalar amplitude
        np.testing.assert_array_equal(chip.read(shuffled), ref.read(shuffled))
        np.testing.assert_array_equal(chip.read(np.repeat(cells[:5], 3)), ref.read(np.repeat(cells[:5], 3)))
    np.testing.assert_array_equal(chip.read(everything), ref.read(everything))
    assert chip.now() == ref.now()


def test_clock_waits_are_identical(open_backend: OpenFn) -> None:
    chip, ref = open_backend(3), reference(3)
    cells = np.arange(0, SMALL.n_cells, 7)
    for target in (chip, ref):
        target.set_pulse(cells, 0.5)
    for t_s in (25.0, 3600.0, 86400.0, 10.0):  # the last one is in the past: no-op
        chip.wait_until(t_s)
        ref.wait_until(t_s)
        assert chip.now() == ref.now()
        np.testing.assert_array_equal(chip.read(cells), ref.read(cells))


def test_programming_results_are_identical(open_backend: OpenFn) -> None:
    chip, ref = open_backend(7), reference(7)
    rng = np.random.default_rng(2)
    cells = np.sort(rng.choice(SMALL.n_cells, 2000, replace=False))
    target = rng.uniform(0.0, 25.0, cells.size)
    target[::5] = 0.0
    params = ProgrammingParams(max_iterations=20)
    got = program_cells(chip, cells, target, params)
    want = program_cells(ref, cells, target, params)
    np.testing.assert_array_equal(got.final_uS, want.final_uS)
    np.testing.assert_array_equal(got.iterations, want.iterations)
    np.testing.assert_array_equal(got.converged, want.converged)
    assert (got.t_start_s, got.t_end_s) == (want.t_start_s, want.t_end_s)
    assert got.converged_fraction > 0.95


def test_safety_limits_refuse_before_anything_happens(open_backend: OpenFn) -> None:
    chip, ref = open_backend(5), reference(5)
    for bad in (1.0001, 0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(SafetyLimitError):
            chip.set_pulse([1, 2], bad)
    with pytest.raises(AddressError):
        chip.set_pulse([SMALL.n_cells], 0.5)
    with pytest.raises(AddressError):
        chip.reset([-1])
    with pytest.raises(AddressError):
        chip.read([0, SMALL.n_cells])
    with pytest.raises(AddressError):
        chip.set_pulse([4, 4], 0.5)
    with pytest.raises(SafetyLimitError):
        chip.set_pulse([1, 2, 3], [0.5, 0.5])
    chip.set_pulse([], 0.5)  # empty batches are no-ops
    chip.reset([])
    assert chip.read([]).shape == (0,)
    # none of the refused calls touched the chip: it still matches an untouched reference
    np.testing.assert_array_equal(chip.read(np.arange(64)), ref.read(np.arange(64)))


def test_closed_chip_refuses_calls(open_backend: OpenFn) -> None:
    chip = open_backend(0)
    chip.close()
    chip.close()
    with pytest.raises(ChipClosedError):
        chip.read([0])
    with pytest.raises(ChipClosedError):
        chip.set_pulse([0], 0.5)


def test_every_backend_reports_the_same_adc_codes(open_backend: OpenFn) -> None:
    # Sessions record codes straight from a CodeReadingChip: the codes must be the chip's own,
    # bit-identical across backends, and read() must be exactly their conversion to µS.
    from harness.chip.protocol import CodeReadingChip

    chip, ref = open_backend(21), reference(21)
    assert isinstance(chip, CodeReadingChip)
    cells = np.arange(0, SMALL.n_cells, 3)
    for target in (chip, ref):
        target.set_pulse(cells, 0.4)
    codes = chip.read_codes(cells)
    np.testing.assert_array_equal(codes, ref.read_codes(cells))
    assert codes.dtype.kind == "u" and codes.max() > 0
    np.testing.assert_array_equal(chip.read(cells), SMALL.codes_to_uS(ref.read_codes(cells)))
    assert chip.read_codes(np.array([], dtype=np.int64)).size == 0
