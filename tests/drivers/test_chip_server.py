"""The device side: at-most-once transactions, staging, stale and foreign tags, NAKs."""

from __future__ import annotations

import time

import numpy as np
import pytest

from drivers import protocol as p
from drivers.emulator import default_identity
from drivers.server import CACHE_SIZE, ChipServer
from harness.chip.protocol import Geometry
from harness.virtual.chip import VirtualPCMChip

G = Geometry(rows=4, cols=8)


def blk(data: bytes) -> bytes:
    return b"".join(p.block(data))


def u32(*cells: int) -> bytes:
    return np.array(cells, dtype="<u4").tobytes()


@pytest.fixture
def server() -> ChipServer:
    chip = VirtualPCMChip(G, seed=3)
    return ChipServer(chip, default_identity(chip), session_base=0x100)


def ask(server: ChipServer, tag: int, body: bytes) -> p.Reply:
    reply = b"".join(bytes(x) for x in server.handle(p.Frame(tag, body)))
    parser = p.FrameParser(p.REPLY)
    parser.feed(reply)
    frame = parser.next()
    assert isinstance(frame, p.Frame) and frame.tag == tag
    return p.parse_reply(frame.body)


def session(server: ChipServer) -> int:
    reply = ask(server, 1, b"SYST:SESS?")
    return int(str(reply.args[0]), 16)


def test_retried_read_is_answered_from_cache_without_new_noise(server: ChipServer) -> None:
    s = session(server)
    read = b"CELL:READ? 3,L,1000," + blk(u32(0, 5, 9))
    first = ask(server, p.make_tag(s, 1), read)
    state = server.chip.snapshot(include_devices=False)["rng_state"].copy()  # type: ignore[attr-defined]
    again = ask(server, p.make_tag(s, 1), read)
    assert first == again and server.executed == 1
    np.testing.assert_array_equal(server.chip.snapshot(include_devices=False)["rng_state"], state)  # type: ignore[attr-defined]
    # the same cached result, rendered without the inline block for a smaller max-inline
    header_only = ask(server, p.make_tag(s, 1), b"CELL:READ? 3,L,2," + blk(u32(0, 5, 9)))
    assert header_only.args == first.args[:4]


def test_retried_pulse_is_not_applied_twice(server: ChipServer) -> None:
    s = session(server)
    pulse = b"CELL:SET 1,L,S," + blk(u32(7) + np.array([0.9]).tobytes())
    for _ in range(3):
        assert ask(server, p.make_tag(s, 1), pulse).status == p.OK
    assert server.executed == 1
    reference = VirtualPCMChip(G, seed=3)
    reference.set_pulse([7], 0.9)
    np.testing.assert_array_equal(server.chip.read([7]), reference.read([7]))


def test_stale_tags_beyond_the_cache_are_refused_not_executed(server: ChipServer) -> None:
    s = session(server)
    for seq in range(1, CACHE_SIZE + 3):
        ask(server, p.make_tag(s, seq), b"CELL:RES 1,L," + blk(u32(seq % G.n_cells)))
    executed = server.executed
    reply = ask(server, p.make_tag(s, 1), b"CELL:RES 1,L," + blk(u32(1)))
    assert reply.error[0] == p.ErrorCode.STALE_TRANSACTION and server.executed == executed


def test_transactions_need_a_session_this_chip_issued(server: ChipServer) -> None:
    assert ask(server, p.make_tag(0, 1), b"CELL:RES 1,L," + blk(u32(1))).error[0] == p.ErrorCode.NO_SESSION
    foreign = ask(server, p.make_tag(0xDEAD, 1), b"CELL:RES 1,L," + blk(u32(1)))
    assert foreign.error[0] == p.ErrorCode.UNKNOWN_SESSION and server.executed == 0


def test_staged_data_must_match_length_and_crc(server: ChipServer) -> None:
    s = session(server)
    txn = p.make_tag(s, 5)
    payload = u32(1, 2, 3)
    assert ask(server, p.make_tag(s, 6), b"BUF:WRIT " + p.fmt_tag(txn).encode() + b",0," + blk(payload)).status == p.OK
    wrong = ask(server, txn, b"CELL:RES 3,L,BUF,12,%08X" % (p.crc32(payload) ^ 1))
    assert wrong.error[0] == p.ErrorCode.STAGING_MISMATCH and server.executed == 0
    right = ask(server, txn, b"CELL:RES 3,L,BUF,12,%08X" % p.crc32(payload))
    assert right.status == p.OK and server.executed == 1


def test_chip_side_safety_refusal_applies_nothing(server: ChipServer) -> None:
    s = session(server)
    reply = ask(server, p.make_tag(s, 1), b"CELL:SET 1,L,S," + blk(u32(2) + np.array([1.5]).tobytes()))
    assert reply.error[0] == p.ErrorCode.DATA_OUT_OF_RANGE
    np.testing.assert_array_equal(server.chip.read([2]), VirtualPCMChip(G, seed=3).read([2]))


@pytest.mark.parametrize(
    "body",
    [
        b"CELL:RES 2,L,#18" + bytes(8) + b"x",
        b"CELL:SET 1,Q,S,#10",
        b"CELL:READ? 1,R,0,#18" + u32(30, 5),
        b"NOPE?",
    ],
)
def test_malformed_commands_are_refused(server: ChipServer, body: bytes) -> None:
    s = session(server)
    assert ask(server, p.make_tag(s, 1), body).status == p.ERR
    assert server.executed == 0


def test_error_queue_and_nak(server: ChipServer) -> None:
    s = session(server)
    nak = b"".join(bytes(x) for x in server.nak(p.Garbled("frame header fails its check", 1)))
    assert nak.startswith(b"<0000000000000000 ") and b"NAK" in nak
    reply = ask(server, p.make_tag(s, 1), b"SYST:ERR?")
    assert reply.args[0] == str(int(p.ErrorCode.COMMAND_ERROR))
    assert ask(server, p.make_tag(s, 2), b"SYST:ERR?").args == ["0", "No error"]


def test_wall_clock_waits_block_at_most_the_slice() -> None:
    chip = VirtualPCMChip(G, seed=0, clock="wall")
    server = ChipServer(chip, default_identity(chip), session_base=7)
    s = session(server)
    t0 = time.perf_counter()
    reply = ask(server, p.make_tag(s, 1), b"TIME:WAIT 1000.0,0.05")
    assert time.perf_counter() - t0 < 0.5
    assert float(str(reply.args[0])) < 1000.0  # not there yet: the host asks again
