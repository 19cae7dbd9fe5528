"""A noisy, flaky link changes nothing: 1% of bytes corrupted and 1% dropped both ways and
a hang-up every 300 commands, with default URI settings, and a full closed-loop programming
run gives bit-identical results to a fault-free run with the same seed, with every
transaction executed exactly once. (The full-size version: ``benchmarks/fault_soak.py``.)"""

from __future__ import annotations

import numpy as np
import pytest
from linkkit import ServeFn

from drivers.faults import FaultSpec
from harness.chip.protocol import Geometry
from harness.programming.write_verify import program_cells
from harness.chip.registry import open_chip
from harness.virtual.chip import VirtualPCMChip

TINY = Geometry(rows=8, cols=8)
NOISY = FaultSpec(corrupt_rate=0.01, drop_rate=0.01, disconnect_every=300, seed=2)


@pytest.mark.parametrize("kind", ["pty", "tcp"])
def test_programming_through_a_noisy_flaky_link_is_bit_identical(serve: ServeFn, kind: str) -> None:
    rng = np.random.default_rng(1)
    cells = np.arange(TINY.n_cells)
    target = rng.uniform(0.0, 25.0, cells.size)
    want = program_cells(VirtualPCMChip(TINY, seed=5), cells, target)

    emulator = serve(kind, TINY, seed=5, faults=NOISY)
    chip = open_chip(emulator.uri)  # no URI options
    got = program_cells(chip, cells, target)
    readback = chip.read(cells)
    stats = chip.stats
    chip.close()

    np.testing.assert_array_equal(got.final_uS, want.final_uS)
    np.testing.assert_array_equal(got.iterations, want.iterations)
    np.testing.assert_array_equal(got.converged, want.converged)
    assert got.t_end_s == want.t_end_s
    reference = VirtualPCMChip(TINY, seed=5)
    program_cells(reference, cells, target)
    np.testing.assert_array_equal(readback, reference.read(cells))
    # the faults really happened, and no pulse or read was executed twice
    assert emulator.faults.corrupted > 1000 and emulator.faults.dropped > 1000 and emulator.hangups >= 1
    assert stats.failures > 10 and stats.reconnects >= emulator.hangups
    assert emulator.server.executed == stats.transactions
