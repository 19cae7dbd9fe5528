"""``TIME:WAIT`` on a wall-clock emulator cannot freeze it (issue 19, item 6).

Main let one client send ``TIME:WAIT <now+1e6>,1e6`` and disconnect: the serving thread
slept in the wait, every other client timed out, and the idle timeout did not free it.
Now a wait longer than the idle timeout is refused (error 108) before anything happens,
a waiting client's reply is held while the emulator serves everyone else, and a client
that vanishes while waiting takes its wait with it.

Real clients over loopback TCP and a pty; the emulator's idle timeout is 0.5 s and every
wait is at most 0.4 s of wall time, so no test sleeps long. Socket timeouts (0.3 s, well
under the waits they race) are the detectors: a blocked emulator would miss them.
"""

from __future__ import annotations

import os
import select
from collections.abc import Iterator

import pytest
from test_emulator_serving import RawClient, tcp_port

from drivers import protocol as p
from drivers.emulator import Emulator
from harness.chip.registry import open_chip
from harness.virtual.chip import VirtualPCMChip
from linkkit import SMALL

IDLE_S = 0.5
WAIT_S = 0.4


@pytest.fixture
def wall_tcp() -> Iterator[Emulator]:
    emulator = Emulator(VirtualPCMChip(SMALL, seed=1, clock="wall"), idle_timeout_s=IDLE_S)
    emulator.start_tcp("127.0.0.1", 0)
    yield emulator
    emulator.close()
    assert emulator.error is None


def session_of(client: RawClient) -> int:
    reply = client.ask(1, b"SYST:SESS?")
    assert reply.status == p.OK
    return int(str(reply.args[0]), 16)


def chip_time(client: RawClient) -> float:
    return float(str(client.ask(2, b"TIME?").args[0]))


def test_a_wait_longer_than_the_idle_timeout_is_refused_at_once(wall_tcp: Emulator) -> None:
    client = RawClient(tcp_port(wall_tcp), timeout_s=1.0)
    sid = session_of(client)
    now = chip_time(client)
    reply = client.ask(3, f"TIME:WAIT {now + 1e6},{1e6}".encode(), sid)  # the request
    assert reply.status == p.ERR and reply.error[0] == p.ErrorCode.WAIT_TOO_LONG, reply
    assert "at most 0.5 s" in reply.error[1]
    assert chip_time(client) < now + 1.0  # nothing waited
    client.close()


def test_a_waiting_client_does_not_block_others(wall_tcp: Emulator) -> None:
    owner = RawClient(tcp_port(wall_tcp), timeout_s=2.0)
    sid = session_of(owner)
    target = chip_time(owner) + WAIT_S
    owner.send(3, f"TIME:WAIT {target},{WAIT_S}".encode(), sid)
    other = RawClient(tcp_port(wall_tcp), timeout_s=0.3)
    reply = other.ask(1, b"*IDN?")  # answered while the owner waits: told the chip is busy
    assert reply.status == p.ERR and reply.error[0] == p.ErrorCode.BUSY
    assert not select.select([owner.sock], [], [], 0)[0]  # the owner's wait is still on
    tag, done = owner.reply()
    assert tag == p.make_tag(sid, 3) and done.status == p.OK
    assert float(str(done.args[0])) >= target and chip_time(owner) >= target
    owner.close()
    other.close()


def test_a_vanished_clients_wait_is_cancelled(wall_tcp: Emulator) -> None:
    owner = RawClient(tcp_port(wall_tcp), timeout_s=1.0)
    sid = session_of(owner)
    owner.send(3, f"TIME:WAIT {chip_time(owner) + WAIT_S},{WAIT_S}".encode(), sid)
    owner.close()  # gone while waiting
    other = RawClient(tcp_port(wall_tcp), timeout_s=0.2)
    reply = other.ask(1, b"*IDN?")  # answered at once, and the chip is free (not busy)
    assert reply.status == p.OK, reply
    other.close()
    with open_chip(wall_tcp.uri + "?timeout=0.3&retries=0") as chip:
        assert chip.read([1, 2]).shape == (2,)


def test_a_wait_over_a_pty_is_bounded_too() -> None:
    emulator = Emulator(VirtualPCMChip(SMALL, seed=1, clock="wall"), idle_timeout_s=IDLE_S)
    path = emulator.start_pty()
    try:
        with open_chip(f"serial://{path}?timeout=1") as chip:
            chip.wait_until(chip.now() + 0.05)  # the driver's own waits (≤ timeout/2) still work
        fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
        try:
            os.write(fd, p.frame_bytes(p.COMMAND, p.make_tag(0, 1), [b"SYST:SESS?"]))
            parser = p.FrameParser(p.REPLY)
            replies: list[p.Reply] = []

            def next_reply() -> p.Reply:
                while True:
                    event = parser.next()
                    if isinstance(event, p.Frame):
                        return p.parse_reply(event.body)
                    if isinstance(event, int):
                        assert select.select([fd], [], [], 1.0)[0], "no reply within 1 s"
                        parser.feed(os.read(fd, 65536))

            replies.append(next_reply())
            sid = int(str(replies[0].args[0]), 16)
            os.write(fd, p.frame_bytes(p.COMMAND, p.make_tag(sid, 2), [b"TIME:WAIT 1e9,1e6"]))
            reply = next_reply()
            assert reply.status == p.ERR and reply.error[0] == p.ErrorCode.WAIT_TOO_LONG
        finally:
            os.close(fd)
    finally:
        emulator.close()
    assert emulator.error is None
