"""Helpers for the driver tests: a byte-exact scripted link, an in-memory link to a real
ChipServer, and frame builders. Test code only; no driver imports these."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator, Sequence

from drivers import protocol as p
from drivers.client import RemoteChip
from drivers.emulator import Emulator
from drivers.link_settings import LinkSettings
from drivers.server import ChipServer
from harness.chip.protocol import Geometry

#: Small enough for fast tests, large enough for ranges, lists and several chunks.
SMALL = Geometry(rows=64, cols=128)
#: The ``serve`` fixture: ``serve(kind, geometry=SMALL, seed=0, faults=None)`` → Emulator.
ServeFn = Callable[..., Emulator]

SCRIPT_SESSION = 0x0000ABCD
SCRIPT_IDN = "PCM-HARNESS,SCRIPTED,SN1,P1"


def cmd(seq: int, body: bytes | str, session: int = p.NO_SESSION) -> bytes:
    """The exact bytes of command ``body`` with sequence ``seq``."""
    raw = body.encode() if isinstance(body, str) else body
    return p.frame_bytes(p.COMMAND, p.make_tag(session, seq), [raw])


def rep(seq: int, body: bytes | str, session: int = p.NO_SESSION) -> bytes:
    """The exact bytes of the reply ``body`` to sequence ``seq``."""
    raw = body.encode() if isinstance(body, str) else body
    return p.frame_bytes(p.REPLY, p.make_tag(session, seq), [raw])


def handshake(
    rows: int = 4, cols: int = 8, max_amp: str = "0.8", idn: str = SCRIPT_IDN, session: int = SCRIPT_SESSION
) -> list[tuple[bytes, bytes]]:
    """The exchange of opening a chip: identify, version, geometry, limits, session."""
    return [
        (cmd(1, "*IDN?"), rep(1, f'OK "{idn}"')),
        (cmd(2, "SYST:VERS?"), rep(2, "OK 1")),
        (cmd(3, "GEOM?"), rep(3, f"OK {rows},{cols}")),
        (cmd(4, "GEOM:COND?"), rep(4, "OK 0.0,25.0")),
        (cmd(5, "GEOM:ADC?"), rep(5, "OK 8,0.0,32.0")),
        (cmd(6, "LIM:AMPL?"), rep(6, f"OK {max_amp}")),
        (cmd(7, "SYST:SESS?"), rep(7, f"OK {session:08X}")),
    ]


class ScriptedLink:
    """A Link that plays a byte-exact script (PyMeasure ``expected_protocol`` style).

    Each write must equal the next scripted command exactly; its scripted reply (None:
    silence) becomes readable. ``assert_done`` checks that the script was consumed.
    Silence reads wait their timeout, like a real transport.
    """

    def __init__(self, script: Sequence[tuple[bytes, bytes | None]], description: str = "scripted") -> None:
        self.script = list(script)
        self.position = 0
        self.opens = 0
        self.closes = 0
        self._out = bytearray()
        self._description = description
        self.is_open = False

    @property
    def description(self) -> str:
        return self._description

    def open(self) -> None:
        self.opens += 1
        self.is_open = True

    def close(self) -> None:
        if self.is_open:
            self.closes += 1
        self.is_open = False
        self._out.clear()

    def write(self, pieces: list[p.Piece], timeout_s: float) -> None:
        """Each frame written (a bulk window writes several at once) must be the next
        scripted command."""
        data = b"".join(bytes(x) for x in pieces)
        while data:
            assert self.position < len(self.script), f"unexpected extra write {data!r}"
            expected, reply = self.script[self.position]
            sent, data = data[: len(expected)], data[len(expected) :]
            assert sent == expected, f"write #{self.position}:\n  sent     {sent!r}\n  expected {expected!r}"
            self.position += 1
            if reply is not None:
                self._out += reply

    def read(self, n: int, timeout_s: float, partial: bool = False) -> bytes:
        if not self._out:
            time.sleep(timeout_s)  # silence: a real transport waits its timeout
            return b""
        data = bytes(self._out[:n])
        del self._out[:n]
        return data

    def discard_input(self) -> None:
        self._out.clear()

    def assert_done(self) -> None:
        left = len(self.script) - self.position
        assert not left, f"script not consumed: {left} exchanges left, next {self.script[self.position][0]!r}"


@contextlib.contextmanager
def expected_protocol(
    script: Sequence[tuple[bytes, bytes | None]], settings: LinkSettings | None = None
) -> Iterator[RemoteChip]:
    """Run a real RemoteChip against ``script``; the script must be consumed completely."""
    link = ScriptedLink(script)
    chip = RemoteChip(link, "scripted://", settings or LinkSettings(timeout_s=0.05, retries=2))
    try:
        yield chip
    finally:
        chip.close()
    link.assert_done()


class LoopbackLink:
    """An in-memory Link straight into a real :class:`ChipServer`; records every byte sent."""

    def __init__(self, server: ChipServer) -> None:
        self.server = server
        self.wire = bytearray()
        self._parser = p.FrameParser(p.COMMAND)
        self._out = bytearray()

    @property
    def description(self) -> str:
        return "loopback"

    def open(self) -> None:
        pass

    def close(self) -> None:
        self._out.clear()

    def write(self, pieces: list[p.Piece], timeout_s: float) -> None:
        data = b"".join(bytes(x) for x in pieces)
        self.wire += data
        self._parser.feed(data)
        while not isinstance(event := self._parser.next(), int):
            reply = self.server.handle(event) if isinstance(event, p.Frame) else self.server.nak(event)
            self._out += b"".join(bytes(x) for x in reply)

    def read(self, n: int, timeout_s: float, partial: bool = False) -> bytes:
        data = bytes(self._out[:n])
        del self._out[:n]
        return data

    def discard_input(self) -> None:
        self._out.clear()


def command_frames(wire: bytes) -> list[p.Frame]:
    """Every command frame in recorded wire bytes (which must hold nothing else)."""
    parser = p.FrameParser(p.COMMAND)
    parser.feed(wire)
    frames = []
    while not isinstance(event := parser.next(), int):
        assert isinstance(event, p.Frame), f"garbled bytes on a clean wire: {event}"
        frames.append(event)
    assert parser.buffered == 0
    return frames


def hardware_uri() -> str | None:
    """The physical chip named by ``PCM_HARNESS_HW_URI``, if any."""
    return os.environ.get("PCM_HARNESS_HW_URI") or None
