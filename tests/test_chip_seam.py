"""The Chip seam: safety limits, addressing, registry URIs — checked for the virtual backend."""

from __future__ import annotations

import numpy as np
import pytest

from harness.chip.protocol import Chip, Geometry, cells_from_rc
from harness.errors import AddressError, ChipClosedError, ConfigError, SafetyLimitError
from harness.chip.registry import open_chip, parse_uri
from harness.virtual.chip import VirtualPCMChip

SMALL = Geometry(rows=16, cols=32)


@pytest.fixture
def chip() -> VirtualPCMChip:
    return VirtualPCMChip(SMALL, seed=3)


def test_virtual_chip_satisfies_protocol(chip: VirtualPCMChip) -> None:
    assert isinstance(chip, Chip)
    assert chip.geometry.n_cells == 16 * 32


@pytest.mark.parametrize("amp", [1.0001, 2.0, 0.0, -0.5, float("nan"), float("inf")])
def test_out_of_range_pulse_is_refused_and_changes_nothing(chip: VirtualPCMChip, amp: float) -> None:
    cells = np.arange(10)
    before = chip.conductance_uS(cells)
    t_before = chip.now()
    with pytest.raises(SafetyLimitError) as info:
        chip.set_pulse(cells, amp)
    assert "amplitude" in str(info.value).lower() or "nan" in str(info.value).lower()
    np.testing.assert_array_equal(chip.conductance_uS(cells), before)
    assert chip.now() == t_before


def test_error_names_value_and_limit(chip: VirtualPCMChip) -> None:
    with pytest.raises(SafetyLimitError, match=r"1\.5.*limit 1"):
        chip.set_pulse([0, 1], [0.2, 1.5])


@pytest.mark.parametrize("cells", [[-1], [16 * 32], [0, 10**9]])
def test_addresses_off_array_are_refused(chip: VirtualPCMChip, cells: list[int]) -> None:
    for op in (chip.read, chip.reset, lambda c: chip.set_pulse(c, 0.1)):
        with pytest.raises(AddressError, match="off the array"):
            op(cells)


def test_non_integer_and_2d_addresses_refused(chip: VirtualPCMChip) -> None:
    with pytest.raises(AddressError, match="integers"):
        chip.read(np.array([0.5, 1.0]))
    with pytest.raises(AddressError, match="1-D"):
        chip.read(np.zeros((2, 2), dtype=int))


def test_duplicate_cells_in_one_pulse_refused(chip: VirtualPCMChip) -> None:
    with pytest.raises(AddressError, match="more than once"):
        chip.set_pulse([3, 4, 3], 0.1)
    chip.read([3, 3])  # reading a cell twice is fine


def test_amplitude_shape_must_match(chip: VirtualPCMChip) -> None:
    with pytest.raises(SafetyLimitError, match="one per cell"):
        chip.set_pulse([1, 2, 3], [0.1, 0.2])


def test_callers_arrays_are_not_modified(chip: VirtualPCMChip) -> None:
    cells = np.array([5, 2, 9])
    amps = np.array([0.1, 0.2, 0.3])
    chip.set_pulse(cells, amps)
    np.testing.assert_array_equal(cells, [5, 2, 9])
    np.testing.assert_array_equal(amps, [0.1, 0.2, 0.3])


def test_closed_chip_refuses_operations(chip: VirtualPCMChip) -> None:
    chip.close()
    chip.close()  # idempotent
    with pytest.raises(ChipClosedError):
        chip.read([0])


def test_cells_from_rc() -> None:
    np.testing.assert_array_equal(cells_from_rc([0, 1, 15], [0, 2, 31], SMALL), [0, 34, 511])
    with pytest.raises(AddressError):
        cells_from_rc([16], [0], SMALL)


def test_registry_opens_virtual_with_params() -> None:
    chip = open_chip("virtual?seed=7&rows=8&cols=16&clock=sim")
    assert isinstance(chip, VirtualPCMChip)
    assert (chip.geometry.rows, chip.geometry.cols, chip.seed) == (8, 16, 7)
    assert chip.uri == "virtual?seed=7&rows=8&cols=16&clock=sim"


def test_default_virtual_chip_is_the_90nm_test_chip() -> None:
    g = open_chip("virtual").geometry
    assert (g.rows, g.cols, g.adc_bits, g.g_max_uS) == (512, 2048, 8, 25.0)


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("bogus://x", "unknown chip URI scheme 'bogus'"),
        ("", "empty chip URI"),
        ("virtual?sede=3", "unknown parameter 'sede'"),
        ("virtual?seed=abc", "bad value 'abc' for parameter 'seed'"),
        ("virtual?seed=1&seed=2", "given twice"),
        ("virtual?clock=moon", "unknown clock 'moon'"),
        ("virtual?rows=0", "must be positive"),
        ("virtual:extra", "takes no path"),
    ],
)
def test_bad_uris_give_one_clear_error(uri: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        open_chip(uri)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_parse_uri_parts() -> None:
    u = parse_uri("serial:///dev/ttyUSB0?baud=921600")
    assert (u.scheme, u.path, dict(u.params)) == ("serial", "/dev/ttyUSB0", {"baud": "921600"})
    assert parse_uri("replay:runs/x.h5").path == "runs/x.h5"


def test_same_seed_same_chip_different_seed_different_chip() -> None:
    cells = np.arange(SMALL.n_cells)

    def run(seed: int) -> np.ndarray:
        c = VirtualPCMChip(SMALL, seed=seed)
        c.reset(cells)
        c.set_pulse(cells, 0.3)
        c.wait_until(100.0)
        return c.read(cells)

    np.testing.assert_array_equal(run(11), run(11))
    assert not np.array_equal(run(11), run(12))


def test_simulated_clock_never_sleeps_and_moves_forward_only() -> None:
    chip = VirtualPCMChip(SMALL, seed=0)
    chip.wait_until(365 * 86400.0)
    assert chip.now() == pytest.approx(365 * 86400.0)
    chip.wait_until(10.0)  # the past: returns at once, time unchanged
    assert chip.now() == pytest.approx(365 * 86400.0)


def test_wall_clock_chip_uses_real_time_without_sleeping() -> None:
    import time

    chip = open_chip("virtual?rows=4&cols=4&clock=wall")
    t0_wall, t0 = time.monotonic(), chip.now()
    chip.read([0, 1])  # operations do not advance a wall clock by fiat
    chip.wait_until(t0 - 5.0)  # a past time returns at once
    elapsed_chip = chip.now() - t0
    assert 0.0 <= elapsed_chip <= time.monotonic() - t0_wall + 1e-6


def test_cli_version() -> None:
    from typer.testing import CliRunner

    from harness import __version__
    from harness.cli import app

    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and __version__ in result.stdout


def test_duplicate_check_names_the_same_cell_for_any_batch_size(chip: VirtualPCMChip) -> None:
    """Small batches are checked by sorting, large ones by a count over the array: both
    refuse a repeated cell and name the smallest one repeated."""
    n = chip.geometry.n_cells
    small = [9, 7, 5, 7, 9]
    large = list(range(n // 2)) + [9, 7]
    for cells in (small, large):
        with pytest.raises(AddressError, match="cell 7 appears more than once"):
            chip.reset(cells)
    chip.reset(list(range(n // 2)))  # unique: fine
