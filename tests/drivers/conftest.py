"""Fixtures of the driver tests: emulators on real transports, small geometries."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from linkkit import SMALL

from drivers.emulator import Emulator
from drivers.faults import FaultSpec
from harness.chip.protocol import Geometry
from harness.virtual.chip import VirtualPCMChip


@pytest.fixture
def serve() -> Iterator[Callable[..., Emulator]]:
    """``serve(kind, geometry=SMALL, seed=0, faults=None)`` → a started Emulator ("pty" or
    "tcp"), serving a VirtualPCMChip in a thread; all are closed at teardown."""
    started: list[Emulator] = []

    def start(kind: str, geometry: Geometry = SMALL, seed: int = 0, faults: FaultSpec | None = None) -> Emulator:
        emulator = Emulator(VirtualPCMChip(geometry, seed=seed), faults)
        started.append(emulator)
        if kind == "pty":
            emulator.start_pty()
        elif kind == "tcp":
            emulator.start_tcp("127.0.0.1", 0)
        else:
            raise ValueError(kind)
        return emulator

    yield start
    for emulator in started:
        emulator.close()
        assert emulator.error is None, f"emulator thread failed: {emulator.error!r}"
