"""The emulator as a server (issue 13, item 10): idle clients, one owner at a time, requests
bounded by the chip's size, truncated frames, ``--allow-remote``.

Clients are real: the driver over loopback TCP or a pty, or a raw socket speaking frames.
Waits are bounded socket or select timeouts, never sleeps.
"""

from __future__ import annotations

import os
import select
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from clikit import invoke
from linkkit import SMALL, ServeFn

from drivers import protocol as p
from drivers.emulator import Emulator
from harness.chip.protocol import Geometry
from harness.errors import ChipBusyError
from harness.chip.registry import open_chip
from harness.virtual.chip import VirtualPCMChip

ROOT = Path(__file__).resolve().parents[2]


class RawClient:
    """A TCP client that speaks frames by hand (a hostile or idle peer)."""

    def __init__(self, port: int, timeout_s: float = 5.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout_s)
        self.parser = p.FrameParser(p.REPLY)

    def send(self, seq: int, body: bytes, session: int = p.NO_SESSION) -> None:
        self.sock.sendall(p.frame_bytes(p.COMMAND, p.make_tag(session, seq), [body]))

    def reply(self) -> tuple[int, p.Reply]:
        """The next valid reply frame (tag, reply); fails on EOF or timeout."""
        while True:
            event = self.parser.next()
            if isinstance(event, p.Frame):
                return event.tag, p.parse_reply(event.body)
            if isinstance(event, int):
                data = self.sock.recv(65536)
                assert data, "the emulator closed the connection"
                self.parser.feed(data)

    def ask(self, seq: int, body: bytes, session: int = p.NO_SESSION) -> p.Reply:
        self.send(seq, body, session)
        return self.reply()[1]

    def closed_by_peer(self) -> bool:
        """Read until the emulator closes the connection (within the socket timeout)."""
        try:
            while self.sock.recv(65536):
                pass
        except TimeoutError:
            return False
        except OSError:
            return True
        return True

    def close(self) -> None:
        self.sock.close()


def tcp_port(emulator: Emulator) -> int:
    return int(emulator.uri.split("::")[2])


@pytest.fixture
def short_idle() -> Iterator[Emulator]:
    """A TCP emulator that hangs up on clients silent for 0.3 s."""
    emulator = Emulator(VirtualPCMChip(SMALL, seed=1), idle_timeout_s=0.3)
    emulator.start_tcp("127.0.0.1", 0)
    yield emulator
    emulator.close()
    assert emulator.error is None


# --- idle and competing clients ---------------------------------------------------------------
def test_idle_connections_do_not_starve_a_real_client(serve: ServeFn) -> None:
    # main served one connection at a time: the first silent peer blocked everyone (the
    # 7th connect timed out)
    emulator = serve("tcp", seed=3)
    idle = [RawClient(tcp_port(emulator)) for _ in range(8)]
    reference = VirtualPCMChip(SMALL, seed=3)
    chip = open_chip(emulator.uri + "?timeout=0.5&retries=2")
    cells = np.arange(10, 50)
    for target in (chip, reference):
        target.set_pulse(cells, 0.5)
    np.testing.assert_array_equal(chip.read(cells), reference.read(cells))
    chip.close()
    for client in idle:
        client.close()


def test_second_client_is_told_the_chip_is_busy_until_the_owner_idles(short_idle: Emulator) -> None:
    owner = RawClient(tcp_port(short_idle))
    assert owner.ask(1, b"*IDN?").status == p.OK  # first to speak: owns the chip
    with pytest.raises(ChipBusyError, match="busy: another client owns this chip"):
        open_chip(short_idle.uri + "?timeout=0.5&retries=1")
    assert short_idle.busy_refusals == 1
    assert owner.closed_by_peer()  # silent for 0.3 s: hung up on, the chip is free
    assert short_idle.idle_hangups >= 1
    chip = open_chip(short_idle.uri + "?timeout=0.5&retries=1")
    assert chip.read([1, 2]).shape == (2,)
    chip.close()
    owner.close()


def test_a_departed_owner_frees_the_chip_at_once(serve: ServeFn) -> None:
    emulator = serve("tcp")
    first = open_chip(emulator.uri)
    first.read([0])
    first.close()  # gone: the next client is served without waiting for any timeout
    second = open_chip(emulator.uri + "?timeout=0.5&retries=1")
    assert second.read([0]).shape == (1,)
    second.close()


def test_an_owner_back_on_a_new_connection_takes_over_its_stale_one(serve: ServeFn) -> None:
    emulator = serve("tcp")
    port = tcp_port(emulator)
    old = RawClient(port)
    session = int(str(old.ask(1, b"SYST:SESS?").args[0]), 16)
    assert old.ask(1, b"CELL:RES 1,L," + b"".join(p.block(np.array([7], "<u4").tobytes())), session).status == p.OK
    # the same client on a new connection (the old one is dead but not closed): its session
    # proves it is the owner, so it takes over instead of being told "busy"
    new = RawClient(port)
    assert new.ask(2, b"TIME?", session).status == p.OK
    assert old.closed_by_peer()
    stranger = RawClient(port)
    busy = stranger.ask(1, b"*IDN?")
    assert busy.status == p.ERR and busy.error[0] == p.ErrorCode.BUSY
    for client in (old, new, stranger):
        client.close()


def test_idle_pty_client_is_hung_up_so_the_device_is_free_again() -> None:
    emulator = Emulator(VirtualPCMChip(SMALL, seed=2), idle_timeout_s=0.3)
    path = emulator.start_pty()
    try:
        first = open_chip(emulator.uri)
        first.read([3])
        fd = first._link._ser.fd  # type: ignore[attr-defined]  # the open device
        ready, _, _ = select.select([fd], [], [], 5.0)  # hang-up makes it readable (EIO)
        assert ready and emulator.idle_hangups == 1
        second = open_chip(f"serial://{path}")  # the link path moved to a fresh pty
        assert second.read([3]).shape == (1,)
        second.close()
        first.close()
    finally:
        emulator.close()
    assert emulator.error is None


def test_a_truncated_command_is_nakked_not_waited_for(serve: ServeFn) -> None:
    emulator = serve("tcp")
    client = RawClient(tcp_port(emulator), timeout_s=2.0)
    frame = p.frame_bytes(p.COMMAND, 1, [b"GEOM?"])
    client.sock.sendall(frame[:-3])  # bytes lost on the way: the frame never completes
    _, reply = client.reply()
    assert reply.status == p.NAK and "incomplete frame" in reply.error[1]
    assert client.ask(2, b"GEOM?").args == ["64", "128"]  # and the stream is clean again
    client.close()


# --- requests bounded by the chip's size --------------------------------------------------------
def _rss_peak_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))


@pytest.fixture
def emulator_process() -> Iterator[tuple[subprocess.Popen[str], int]]:
    """``harness emulate --tcp`` (64 x 128) in its own process, so its memory can be read."""
    cmd = [sys.executable, "-c", "from harness.cli import app; app()", "emulate", "--tcp", "127.0.0.1:0",
           "--rows", "64", "--cols", "128"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        assert ready, "harness emulate printed nothing within 60 s"
        uri = proc.stdout.readline().strip()  # type: ignore[union-attr]
        yield proc, int(uri.split("::")[2])
    finally:
        proc.kill()
        proc.wait(10)


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads VmHWM from /proc")
def test_memory_bomb_requests_are_refused_with_bounded_memory(
    emulator_process: tuple[subprocess.Popen[str], int],
) -> None:
    proc, port = emulator_process
    client = RawClient(port)
    session = int(str(client.ask(1, b"SYST:SESS?").args[0]), 16)
    before = _rss_peak_kib(proc.pid)
    txn = p.fmt_tag(p.make_tag(session, 1)).encode()
    # ~700 bytes staged at a 256 MiB offset (main grew its staging buffer to 2.3 GB)
    bomb = client.ask(2, b"BUF:WRIT " + txn + b",268434756," + b"".join(p.block(bytes(700))), session)
    assert bomb.status == p.ERR and bomb.error[0] == p.ErrorCode.TOO_LARGE, bomb
    # a 16 KB read of 2048 repeated whole-array ranges: 16.7 M cells from an 8192-cell chip
    n_cells = 64 * 128
    ranges = np.tile(np.array([0, n_cells], "<u4"), 2048).tobytes()
    read = b"CELL:READ? %d,R,0," % (2048 * n_cells) + b"".join(p.block(ranges))
    refused = client.ask(3, read, session)
    assert refused.status == p.ERR and refused.error[0] == p.ErrorCode.TOO_LARGE, refused
    # a frame header announcing a 60 MB body is dropped at once (NAK), nothing is buffered
    head = b">%016X %08X" % (p.make_tag(session, 4), 60_000_000)
    client.sock.sendall(head + b" %08X " % p.crc32(head) + bytes(4096))
    assert client.reply()[1].status == p.NAK
    # still serving, and the emulator's peak memory barely moved
    assert client.ask(5, b"GEOM?").args == ["64", "128"]
    assert _rss_peak_kib(proc.pid) - before < 32 * 1024
    client.close()


def test_allow_remote_warns_that_the_port_has_no_authentication() -> None:
    result = invoke("emulate", "--tcp", "0.0.0.0:0", "--allow-remote", "--rows", "8", "--cols", "8",
                    "--duration", "0.1")
    assert result.exit_code == 0, result.stderr
    assert "no authentication" in result.stderr and "WARNING" in result.stderr
    quiet = invoke("emulate", "--tcp", "127.0.0.1:0", "--rows", "8", "--cols", "8", "--duration", "0.1")
    assert "no authentication" not in quiet.stderr


def test_staging_and_kept_results_are_bounded_by_the_chip() -> None:
    from drivers.server import READ_RESULTS_KEPT, ChipServer

    chip = VirtualPCMChip(Geometry(rows=4, cols=8), seed=3)
    server = ChipServer(chip, "PCM-HARNESS,T,1,1", session_base=0x100)
    assert server.max_staging == 12 * 32
    s = int(str(_ask(server, 1, b"SYST:SESS?").args[0]), 16)
    read = b"CELL:READ? 2,L,0," + b"".join(p.block(np.array([0, 1], "<u4").tobytes()))
    for seq in range(1, READ_RESULTS_KEPT + 3):
        assert _ask(server, p.make_tag(s, seq), read).status == p.OK
    # the newest results can be fetched; older ones are stale (refused, never re-read)
    newest = p.make_tag(s, READ_RESULTS_KEPT + 2)
    assert _ask(server, 9, b"DATA:FETC? %s,0,2" % p.fmt_tag(newest).encode()).status == p.OK
    oldest = _ask(server, p.make_tag(s, 1), read)
    assert oldest.status == p.ERR and oldest.error[0] == p.ErrorCode.STALE_TRANSACTION
    executed = server.executed
    over = _ask(server, p.make_tag(s, 50), b"CELL:RES 33,R," + b"".join(p.block(np.array([0, 33], "<u4").tobytes())))
    assert over.status == p.ERR and over.error[0] == p.ErrorCode.TOO_LARGE and server.executed == executed


def _body(pieces: list[p.Piece]) -> bytes:
    parser = p.FrameParser(p.REPLY)
    parser.feed(b"".join(bytes(x) for x in pieces))
    frame = parser.next()
    assert isinstance(frame, p.Frame)
    return frame.body


def _ask(server: object, tag: int, body: bytes) -> p.Reply:
    return p.parse_reply(_body(server.handle(p.Frame(tag, body))))  # type: ignore[attr-defined]
