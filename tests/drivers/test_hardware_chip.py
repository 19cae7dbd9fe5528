"""Tests on a physical chip, named by ``PCM_HARNESS_HW_URI`` (e.g. ``serial:///dev/ttyUSB0?baud=921600``).

Skipped unless the variable is set. They only read and pulse a few cells at the end of the
array, at low amplitude, and never assume the chip's state.
"""

from __future__ import annotations

import numpy as np
import pytest
from linkkit import hardware_uri

from drivers.protocol import MANUFACTURER
from harness.errors import SafetyLimitError
from harness.chip.registry import open_chip

URI = hardware_uri()
pytestmark = [
    pytest.mark.hardware,
    pytest.mark.skipif(URI is None, reason="set PCM_HARNESS_HW_URI to a physical chip's URI to run"),
]


@pytest.fixture
def chip():
    assert URI is not None
    c = open_chip(URI)
    yield c
    c.close()


def test_identity_geometry_and_clock(chip) -> None:
    assert chip.identity.split(",")[0] == MANUFACTURER
    assert chip.geometry.n_cells > 0
    t0 = chip.now()
    chip.wait_until(t0 + 0.2)
    assert chip.now() >= t0 + 0.2


def test_read_and_gentle_pulse(chip) -> None:
    g = chip.geometry
    cells = np.arange(g.n_cells - 16, g.n_cells)
    before = chip.read(cells)
    assert before.shape == (16,) and np.all((before >= g.adc_min_uS) & (before <= g.adc_max_uS))
    chip.reset(cells)
    chip.set_pulse(cells, min(0.1, g.max_set_amplitude))
    after = chip.read(cells)
    assert after.shape == (16,)


def test_limits_are_refused_before_sending(chip) -> None:
    with pytest.raises(SafetyLimitError):
        chip.set_pulse([0], chip.geometry.max_set_amplitude * 1.01)
