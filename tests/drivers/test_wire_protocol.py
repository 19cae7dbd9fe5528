"""The wire protocol module: framing, integrity, resynchronisation, bulk encodings."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers import protocol as p
from harness.errors import ProtocolError


def test_frame_bytes_are_pinned() -> None:
    # The wire format itself: changing any of this breaks every deployed chip firmware.
    assert p.frame_bytes(p.COMMAND, 1, [b"*IDN?"]) == b">0000000000000001 00000005 8FF32C0F *IDN? 0440BDA5\n"
    assert p.frame_bytes(p.REPLY, p.make_tag(0xABCD, 2), [b"OK"]) == (
        b"<0000ABCD00000002 00000002 44A9F9FE OK D736D92D\n"
    )
    assert b"".join(p.block(b"abc")) == b"#13abc"
    assert b"".join(p.block(b"")) == b"#10"


def test_parser_roundtrip_and_stream_split_anywhere() -> None:
    frames = [p.frame_bytes(p.REPLY, i, p.ok_body([str(i), p.block(bytes(range(256)) * i)])) for i in range(1, 5)]
    stream = b"".join(frames)
    for cut in (1, 7, 36, 37, 100, 1000):
        parser = p.FrameParser(p.REPLY)
        got = []
        for i in range(0, len(stream), cut):
            parser.feed(stream[i : i + cut])
            while not isinstance(ev := parser.next(), int):
                got.append(ev)
        assert [f.tag for f in got] == [1, 2, 3, 4]
        assert all(isinstance(f, p.Frame) for f in got)


@settings(max_examples=300, deadline=None)
@given(position=st.integers(0, 10_000), delta=st.integers(1, 255), body=st.binary(max_size=200))
def test_any_single_corrupted_byte_is_detected(position: int, delta: int, body: bytes) -> None:
    good = p.frame_bytes(p.COMMAND, p.make_tag(7, 9), [b"CELL:SET 1,L,S,", *p.block(body)])
    i = position % len(good)
    bad = bytearray(good)
    bad[i] = (bad[i] + delta) % 256
    parser = p.FrameParser(p.COMMAND)
    parser.feed(bytes(bad) + good)  # the intact retry follows the damaged frame
    events = []
    while not isinstance(ev := parser.next(), int):
        events.append(ev)
    frames = [e for e in events if isinstance(e, p.Frame)]
    # the damaged copy is never delivered; the intact one always is, unchanged
    assert frames and frames[-1].body == good[36:-10]
    assert all(f.body == good[36:-10] for f in frames)
    assert any(isinstance(e, p.Garbled) for e in events)


def test_resync_after_junk_and_bad_header() -> None:
    good = p.frame_bytes(p.REPLY, 3, [b"OK"])
    parser = p.FrameParser(p.REPLY)
    parser.feed(b"\x00garbage<<<" + good[:5] + b"X" + good[6:] + good)
    events = []
    while not isinstance(ev := parser.next(), int):
        events.append(ev)
    assert isinstance(events[-1], p.Frame) and events[-1].tag == 3
    assert sum(isinstance(e, p.Frame) for e in events) == 1


def test_parse_body_tokens_strings_blocks() -> None:
    head, args = p.parse_body(b'ERR -222,"say ""no"", twice"')
    assert head == "ERR" and args == ["-222", 'say "no", twice']
    head, args = p.parse_body(b"CELL:SET 3,R,S,#216" + bytes(range(16)))
    assert head == "CELL:SET" and args[:3] == ["3", "R", "S"] and args[3] == bytes(range(16))
    assert isinstance(args[3], p.Block)
    assert p.parse_body(b"*IDN?") == ("*IDN?", [])
    for bad in (b"X ", b"X a,,b", b"X #5", b"X #3999ab", b'X "open', b"X a b", b" X"):
        with pytest.raises(ProtocolError):
            p.parse_body(bad)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 999), max_size=300))
def test_cell_encoding_roundtrip(cells: list[int]) -> None:
    arr = np.array(cells, dtype=np.int64)
    fmt, data = p.encode_cells(arr)
    assert len(data) <= 4 * arr.size
    np.testing.assert_array_equal(p.decode_cells(fmt, data, arr.size, 1000), arr)


def test_contiguous_cells_travel_as_one_range() -> None:
    fmt, data = p.encode_cells(np.arange(1_048_576, dtype=np.int64))
    assert (fmt, len(data)) == ("R", 8)


def test_decode_cells_rejects_inconsistent_data() -> None:
    ranges = np.array([[5, 3]], dtype="<u4").tobytes()
    with pytest.raises(ProtocolError):
        p.decode_cells("R", ranges, 4, 100)  # covers 3 cells, not 4
    with pytest.raises(ProtocolError):
        p.decode_cells("R", ranges, 3, 7)  # runs past the array
    with pytest.raises(ProtocolError):
        p.decode_cells("L", b"\x00" * 7, 2, 100)
    with pytest.raises(ProtocolError):
        p.decode_cells("L", np.array([100], "<u4").tobytes(), 1, 100)
    with pytest.raises(ProtocolError):
        p.decode_cells("Q", b"", 0, 100)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(min_value=1e-300, max_value=1.0), min_size=1, max_size=50))
def test_amplitudes_are_bit_exact(values: list[float]) -> None:
    a = np.array(values)
    mode, data = p.encode_amplitudes(a)
    out = p.decode_amplitudes(mode, data, a.size)
    assert out.tobytes() == a.tobytes()
    assert (mode == "S") == bool(np.all(a == a[0]))


def test_code_format_follows_adc_bits() -> None:
    assert p.code_format(8) == "U1" and p.code_format(1) == "U1"
    assert p.code_format(9) == "U2" and p.code_format(16) == "U2"
