"""Fast paths that must give exactly the numbers of the plain computation they replace
(issue 21): the recording's CRC-32, the per-pulse-time table of the virtual chip's reads,
and the code-to-µS table."""

from __future__ import annotations

import json
import zlib

import numpy as np
import pytest

from harness.chip.protocol import Geometry
from harness.recording.crc import crc32
from harness.virtual.chip import VirtualPCMChip
from harness.virtual.pulse_times import PulseTimes


@pytest.mark.parametrize("n_bytes", [0, 1, 100, 1 << 16, (1 << 20) + 3])
@pytest.mark.parametrize("seed", [0, 1, 0xFFFFFFFF, 0x2F1C_0DE5])
def test_recording_crc_is_zlib_crc32(n_bytes: int, seed: int) -> None:
    """Whichever implementation harness.recording.crc picked, its values are zlib's."""
    row = np.random.default_rng(n_bytes).integers(0, 256, n_bytes, dtype=np.uint8)
    assert crc32(row, seed) == zlib.crc32(row, seed)
    wide = row.view(np.uint8).astype(np.uint16)
    assert crc32(wide, seed) == zlib.crc32(wide.tobytes(), seed)


def test_pulse_times_compact_and_restore_keep_every_time() -> None:
    t = PulseTimes(50, -1e6)
    rng = np.random.default_rng(3)
    want = np.full(50, -1e6)
    for k in range(10_000):  # many more distinct times than the compaction threshold
        cells = rng.choice(50, size=3, replace=False)
        t.set(cells, float(k))
        want[cells] = float(k)
    np.testing.assert_array_equal(t.of(slice(None)), want)
    assert t.table.size <= 2 * 4096
    np.testing.assert_array_equal(t.ages(np.arange(50), 1e5), 1e5 - want)
    r = PulseTimes(50, 0.0)
    r.set_all(want)
    np.testing.assert_array_equal(r.of(slice(None)), want)


def test_read_of_a_subset_and_of_all_cells_give_the_plain_formula() -> None:
    """The table path against the per-cell formula (τ, ln, sqrt per device), on a chip with
    cells pulsed at many different times, read past t0 and, for a subset, before it."""
    chip = VirtualPCMChip(Geometry(rows=16, cols=64), seed=4)
    n = chip.geometry.n_cells
    rng = np.random.default_rng(5)
    for _ in range(5):
        cells = np.sort(rng.choice(n, size=200, replace=False))
        chip.set_pulse(cells, rng.uniform(0.1, 1.0, cells.size))
    chip.wait_until(chip.now() + 30.0)
    state = chip.snapshot()
    codes = chip.read_codes(np.arange(n))
    clone = VirtualPCMChip(Geometry(rows=16, cols=64), seed=4)
    clone.restore(state)  # times rebuilt from the t_pulse array: a fresh table
    np.testing.assert_array_equal(clone.read_codes(np.arange(n)), codes)
    plain = _plain_read_codes(clone, np.arange(n), state)
    np.testing.assert_array_equal(plain, codes)


def test_codes_to_uS_table_matches_the_formula() -> None:
    g = Geometry(adc_bits=12, adc_min_uS=-1.5, adc_max_uS=40.0)
    codes = np.arange(1 << 16, dtype=np.uint16)
    want = g.adc_min_uS + codes.astype(np.float64) * g.adc_lsb_uS
    np.testing.assert_array_equal(g.codes_to_uS(codes), want)
    np.testing.assert_array_equal(g.codes_to_uS(codes.astype(np.int64)), want)


def _plain_read_codes(chip: VirtualPCMChip, cells: np.ndarray, state: dict[str, np.ndarray]) -> np.ndarray:
    """The read of every cell with each age term evaluated per cell (the pre-table formula)."""
    pers = chip.personality
    rng = np.random.Generator(np.random.PCG64())
    rng.bit_generator.state = json.loads(bytes(state["rng_state"]).decode())  # the draw the chip made
    t_s = float(state["clock_s"]) + 1e-6
    tau = t_s - state["t_pulse_s"][cells]
    g = chip._g_relaxed[cells] * np.exp(-(np.log(tau / pers.t0_s) * chip._nu[cells]))
    f = np.sqrt(np.maximum(np.log((tau + pers.t_read_s) / (2.0 * pers.t_read_s)), 0.0))
    return chip.geometry.to_codes(g + g * chip._q_s[cells] * f * rng.standard_normal(cells.size))


def _programmed_pair(monkeypatch: pytest.MonkeyPatch) -> tuple[VirtualPCMChip, VirtualPCMChip, np.ndarray]:
    """Two chips of the same seed, programmed alike (262,144 cells: 8 read blocks)."""
    from harness.chip.registry import open_chip
    from harness.programming.write_verify import ProgrammingParams, program_cells

    chips = []
    for _ in range(2):
        chip = open_chip("virtual?rows=512&cols=512&seed=4")
        n = chip.geometry.n_cells
        targets = np.random.default_rng(2).uniform(0.0, 20.0, n // 2)
        program_cells(chip, np.arange(0, n, 2), targets, ProgrammingParams())
        chips.append(chip)
    return chips[0], chips[1], np.arange(chips[0].geometry.n_cells)


def test_a_read_drawing_on_a_second_thread_is_bit_identical_to_one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reads of PIPELINE_MIN_CELLS or more draw z on a second thread: the codes (and the
    generator's state after them) are those of the one-thread read, for a whole-array read
    before t0 (relaxation in progress), after t0, and of a scattered subset."""
    import harness.virtual.chip as chip_module

    assert 512 * 512 >= chip_module.PIPELINE_MIN_CELLS
    one, two, cells = _programmed_pair(monkeypatch)
    subset = np.sort(np.random.default_rng(3).choice(cells.size, 4 * chip_module.READ_BLOCK + 7, replace=False))
    for t_s, which in ((5.0, cells), (3600.0, cells), (86400.0, subset[::-1].copy()), (1e6, subset)):
        for chip in (one, two):
            chip.wait_until(chip.now() + t_s)
        monkeypatch.setattr(chip_module, "PIPELINE_MIN_CELLS", 1 << 62)
        serial = one.read_codes(which)
        monkeypatch.undo()
        piped = two.read_codes(which)
        assert np.array_equal(serial, piped), t_s
        assert one._rng.bit_generator.state == two._rng.bit_generator.state


def test_a_failing_read_leaves_no_drawing_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    _, chip, cells = _programmed_pair(monkeypatch)
    calls = {"n": 0}
    real = Geometry.to_codes

    def fail_on_the_second_block(self: Geometry, *a: object, **k: object) -> np.ndarray:
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("ADC fault")
        return real(self, *a, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(Geometry, "to_codes", fail_on_the_second_block)
    with pytest.raises(RuntimeError, match="ADC fault"):
        chip.read_codes(cells)
    assert not [t for t in threading.enumerate() if t.name == "pcm-read-draws"]
