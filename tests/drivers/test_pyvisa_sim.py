"""Smoke tests of the VISA command layer on pyvisa-sim: the real VisaLink and RemoteChip
open a simulated instrument defined in ``fixtures/pyvisa_sim/pcm_chip.yaml``."""

from __future__ import annotations

import pytest
import sim_fixture

from harness.chip.protocol import Geometry
from harness.errors import IdentityError
from harness.chip.registry import open_chip

LIBRARY = f"{sim_fixture.FIXTURE}@sim"


def test_fixture_is_current() -> None:
    assert sim_fixture.FIXTURE.read_text() == sim_fixture.render(), (
        "fixtures/pyvisa_sim/pcm_chip.yaml is stale: run python tests/drivers/sim_fixture.py"
    )


def test_simulated_chip_identifies_and_reports_geometry() -> None:
    chip = open_chip(f"visa://TCPIP::pcm-chip.sim::5025::SOCKET?library={LIBRARY}&timeout=0.5")
    try:
        assert chip.identity == sim_fixture.IDN
        assert chip.geometry == Geometry(rows=512, cols=2048)
        assert chip.stats.failures == 0
    finally:
        chip.close()


def test_simulated_foreign_instrument_is_refused() -> None:
    uri = f"visa://TCPIP::acme-dmm.sim::5025::SOCKET?library={LIBRARY}&timeout=0.2&retries=3"
    with pytest.raises(IdentityError, match="ACME INSTRUMENTS,DMM-1000"):
        open_chip(uri)
