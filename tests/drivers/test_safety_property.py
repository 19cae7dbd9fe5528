"""Property: no sequence of driver calls puts a pulse outside the safety limits on the wire.

The real RemoteChip talks to a real ChipServer through an in-memory link that records
every byte sent; the test decodes those bytes as a chip would (inline and staged data)
and checks every SET amplitude and every address.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from linkkit import LoopbackLink, command_frames

from drivers import protocol as p
from drivers.client import RemoteChip
from drivers.emulator import default_identity
from drivers.link_settings import LinkSettings
from drivers.server import ChipServer
from harness.chip.protocol import Geometry
from harness.errors import ConfigError, SafetyLimitError
from harness.virtual.chip import VirtualPCMChip

GEOMETRY = Geometry(rows=4, cols=8, max_set_amplitude=0.8)
N = GEOMETRY.n_cells

wild_floats = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=-1.0, max_value=2.0),
    st.sampled_from([0.0, -0.0, 5e-324, 0.8, math.nextafter(0.8, 1.0), 1.0, 1e308]),
)
cell_lists = st.one_of(
    st.lists(st.integers(-3, N + 3), max_size=12),
    st.lists(st.integers(0, N - 1), max_size=N, unique=True),
    st.lists(st.floats(0, N), max_size=4),  # non-integer addresses
)
amplitudes = st.one_of(wild_floats, st.lists(wild_floats, max_size=12))
wait_times = st.one_of(
    st.floats(min_value=-1e3, max_value=1e9), st.sampled_from([math.nan, math.inf, -math.inf])
)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("set"), cell_lists, amplitudes),
        st.tuples(st.just("reset"), cell_lists),
        st.tuples(st.just("read"), cell_lists),
        st.tuples(st.just("wait"), wait_times),
    ),
    max_size=10,
)


def set_pulses_on_wire(wire: bytes) -> list[tuple[np.ndarray, np.ndarray]]:
    """(cells, amplitudes) of every CELL:SET on the wire, staged data reassembled."""
    staging: dict[int, bytearray] = {}
    pulses = []
    for frame in command_frames(wire):
        head, args = p.parse_body(frame.body)
        if head == p.BUFFER_WRITE:
            txn, offset, data = p.parse_tag(args[0]), int(str(args[1])), args[2]
            buf = staging.setdefault(txn, bytearray())
            buf[len(buf) :] = bytes(max(0, offset + len(data) - len(buf)))
            buf[offset : offset + len(data)] = data
        elif head in (p.CELL_SET, p.CELL_RESET, p.CELL_READ):
            n = int(str(args[0]))
            rest = args[3:] if head != p.CELL_RESET else args[2:]
            data = bytes(rest[0]) if isinstance(rest[0], p.Block) else bytes(staging[frame.tag][: int(str(rest[1]))])
            if head == p.CELL_SET:
                split = len(data) - p.amplitude_bytes(str(args[2]), n)
                cells = p.decode_cells(str(args[1]), data[:split], n, N)
                pulses.append((cells, p.decode_amplitudes(str(args[2]), data[split:], n)))
            else:
                cells = p.decode_cells(str(args[1]), data, n, N)  # raises if off the array
            assert cells.size and cells.min() >= 0 and cells.max() < N
    return pulses


def make_chip(max_chunk: int) -> tuple[RemoteChip, LoopbackLink]:
    chip = VirtualPCMChip(GEOMETRY, seed=1)
    link = LoopbackLink(ChipServer(chip, default_identity(chip), session_base=0))
    settings_ = LinkSettings(timeout_s=0.5, retries=0, max_chunk=max_chunk, min_chunk=16)
    return RemoteChip(link, "loopback://", settings_), link


def apply(chip: RemoteChip, op: tuple[Any, ...]) -> None:
    kind = op[0]
    if kind == "set":
        chip.set_pulse(op[1], op[2])
    elif kind == "reset":
        chip.reset(op[1])
    elif kind == "read":
        chip.read(op[1])
    else:
        chip.wait_until(op[1])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=operations, max_chunk=st.sampled_from([16 * 2**20, 48]))
def test_no_call_sequence_sends_an_unsafe_pulse(ops: list[tuple[Any, ...]], max_chunk: int) -> None:
    chip, link = make_chip(max_chunk)
    for op in ops:
        before = len(link.wire)
        try:
            apply(chip, op)
        except (SafetyLimitError, ConfigError, TypeError, ValueError):
            # refused at the seam: not one byte went out for this call
            assert len(link.wire) == before
    for cells, amps in set_pulses_on_wire(bytes(link.wire)):
        assert np.all(np.isfinite(amps))
        assert np.all(amps > 0.0) and np.all(amps <= GEOMETRY.max_set_amplitude)
        assert np.unique(cells).size == cells.size
    chip.close()


def test_property_harness_sees_staged_pulses() -> None:
    # guard against a vacuous property: staged and inline pulses are both decoded
    chip, link = make_chip(48)
    chip.set_pulse(np.arange(0, 32, 2), np.linspace(0.1, 0.8, 16))  # 64 + 128 bytes: staged
    chip.set_pulse([1], 0.3)  # inline
    pulses = set_pulses_on_wire(bytes(link.wire))
    assert [c.size for c, _ in pulses] == [16, 1]
    np.testing.assert_array_equal(pulses[0][1], np.linspace(0.1, 0.8, 16))
