"""RemoteChip: the Chip backend that drives a chip through the wire protocol over any Link.

One class serves every transport (the serial and VISA backends only supply a
:class:`~drivers.link.Link`), so timeouts, retries, reconnects and chunking behave the same
everywhere. Safety limits are checked by :class:`~harness.chip.ChipBackend` before any
method here runs: nothing out of range is ever encoded, let alone sent.

Reliability (see ``docs/protocol.md`` §Retries):

* Every reply must arrive within ``timeout_s``; a corrupted or unreadable exchange is
  retried at once, a silent or broken link is closed, reopened and re-identified
  (``*IDN?`` must give the same identity) before the retry. At most ``retries`` failed
  attempts per command, then the last error is raised.
* Side effects and random draws (RESET, SET, READ, clock advance) are transactions: the
  retry reuses the transaction's tag and the chip answers it from its reply cache, so a
  pulse is never applied twice and a read never draws noise twice.
* Bulk transfers adapt their chunk size: halved after every failed attempt, doubled after
  every success, between ``min_chunk`` and ``max_chunk`` bytes. On a clean link a whole
  1,048,576-cell read is one round trip; on a noisy one the chunks shrink until they pass.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from drivers import protocol as p
from drivers.link import Link
from harness.chip import CellArray, ChipBackend, FloatArray, Geometry, check_cells
from harness.errors import (
    ChipIOError,
    ChipTimeoutError,
    ConfigError,
    IdentityError,
    ProtocolError,
    SafetyLimitError,
)

#: Longest a single ``TIME:WAIT`` may block on a wall-clock chip (the driver repeats it).
MAX_WAIT_SLICE_S = 1.0
#: Quiet time after garbage that ends an attempt early (s); bytes that keep coming extend it.
SETTLE_S = 0.05
#: Sessions a chip keeps (the emulator's ``drivers.server.MAX_SESSIONS``), for messages.
MAX_SESSIONS_HINT = 8
#: Pause before the next attempt after reopening the link failed (s).
REOPEN_PAUSE_S = 0.2
#: Consecutive non-frame replies to ``*IDN?`` after which the device is judged foreign.
FOREIGN_REPLIES = 2


@dataclass(frozen=True)
class LinkSettings:
    """Timeouts, retry budget and chunk bounds of a :class:`RemoteChip`.

    Attributes:
        timeout_s: longest wait for one reply (s); also bounds each write.
        retries: failed attempts tolerated per command before its error is raised; each
            may include a reconnect. A call therefore takes at most about
            ``(retries + 1) * timeout_s`` on a dead link.
        max_chunk: largest bulk payload per frame (bytes).
        min_chunk: smallest chunk the adaptive sizing shrinks to (bytes).
    """

    timeout_s: float = 2.0
    retries: int = 8
    max_chunk: int = 16 * 2**20
    min_chunk: int = 64

    def __post_init__(self) -> None:
        if not (0.0 < self.timeout_s <= 3600.0):
            raise ConfigError(f"link timeout {self.timeout_s} s must be in (0, 3600] s")
        if not 0 <= self.retries <= 1000:
            raise ConfigError(f"retries {self.retries} must be in 0..1000")
        limit = p.MAX_BODY - 4096
        if not 16 <= self.min_chunk <= limit:
            raise ConfigError(f"smallest chunk {self.min_chunk} bytes must be in 16..{limit}")
        if not self.min_chunk <= self.max_chunk <= limit:
            raise ConfigError(
                f"chunk {self.max_chunk} bytes must be in {self.min_chunk}..{limit} bytes; fix chunk= in the chip URI"
            )


@dataclass
class LinkStats:
    """Counters of one RemoteChip (cumulative): what the link cost and how often it failed."""

    exchanges: int = 0
    #: transactions completed (each executed exactly once on the chip)
    transactions: int = 0
    failures: int = 0
    reconnects: int = 0
    naks: int = 0
    bytes_out: int = 0
    bytes_in: int = 0
    #: time from sending a command until its reply's header was in (chip work + latency)
    wait_s: float = 0.0
    #: time from a reply's header until its last byte (the transfer proper)
    transfer_s: float = 0.0


class _AttemptFailed(Exception):
    """One attempt failed in a way a retry can fix; ``reopen`` asks for a reconnect first."""

    def __init__(self, error: Exception, reopen: bool, junk: bytes = b"") -> None:
        super().__init__(str(error))
        self.error = error
        self.reopen = reopen
        self.junk = junk


class RemoteChip(ChipBackend):
    """A chip on the other end of a :class:`~drivers.link.Link`, speaking protocol 1.

    Opening connects, identifies (``*IDN?`` manufacturer must be ``PCM-HARNESS``), checks
    the protocol version, reads geometry and limits from the chip and obtains a session.

    Raises (from the constructor and every method):
        IdentityError: the device is not a PCM test chip, or a different one answers
            after a reconnect.
        ChipTimeoutError: no valid reply within the timeout, ``retries + 1`` times.
        ProtocolError: replies that are not protocol frames, or that the protocol forbids.
        ChipIOError: the link cannot be (re)opened.
        SafetyLimitError: the chip itself refused a pulse (never expected: the host checks first).
    """

    def __init__(self, link: Link, uri: str, settings: LinkSettings | None = None) -> None:
        self._link = link
        self._settings = settings or LinkSettings()
        self._parser = p.FrameParser(p.REPLY)
        self._session = p.NO_SESSION
        self._seq = 0
        self._chunk = self._settings.max_chunk
        self._open = False
        self._identified = False
        self._identity = ""
        self._foreign = 0
        #: after garbage, this long without a byte ends the attempt (a destroyed reply)
        self._settle_s = min(self._settings.timeout_s / 4, SETTLE_S)
        self.stats = LinkStats()
        try:
            geometry = self._connect()
        except BaseException:
            link.close()
            raise
        super().__init__(geometry, uri)

    # --- Chip protocol ---------------------------------------------------------------------
    @property
    def identity(self) -> str:
        return self._identity

    @property
    def settings(self) -> LinkSettings:
        return self._settings

    def now(self) -> float:
        self._ensure_open()
        return p.parse_float(self._query(p.TIME)[0], "chip time")

    def wait_until(self, t_s: float) -> None:
        self._ensure_open()
        t = float(t_s)
        if not math.isfinite(t):
            raise ConfigError(f"cannot wait until t = {t_s} s; give a finite chip time")
        slice_s = min(MAX_WAIT_SLICE_S, self._settings.timeout_s / 2)
        while True:
            reply = self._transaction(p.TIME_WAIT, lambda: [p.fmt_float(t), p.fmt_float(slice_s)], None)
            if p.parse_float(self._ok_args(reply, p.TIME_WAIT, 1)[0], "chip time") >= t:
                return

    def _reset(self, cells: CellArray) -> None:
        fmt, addr = p.encode_cells(cells)
        n = str(cells.size)
        self._ok_args(self._transaction(p.CELL_RESET, lambda: [n, fmt], addr), p.CELL_RESET, 0)

    def _set_pulse(self, cells: CellArray, amplitude: FloatArray) -> None:
        fmt, addr = p.encode_cells(cells)
        mode, amp = p.encode_amplitudes(amplitude)
        n = str(cells.size)
        self._ok_args(self._transaction(p.CELL_SET, lambda: [n, fmt, mode], addr + amp), p.CELL_SET, 0)

    def read_codes(self, cells: npt.ArrayLike) -> npt.NDArray[np.unsignedinteger]:
        """The ADC codes of a read, as the chip sent them (``read`` converts these to µS);
        makes this backend a :class:`~harness.chip.CodeReadingChip`."""
        self._ensure_open()
        c = check_cells(cells, self.geometry)
        if not c.size:
            return np.empty(0, dtype=p.CODE_FORMATS[p.code_format(self.geometry.adc_bits)])
        return self._read_codes(c)

    def _read(self, cells: CellArray) -> FloatArray:
        return self.geometry.codes_to_uS(self._read_codes(cells))

    def _read_codes(self, cells: CellArray) -> npt.NDArray[np.unsignedinteger]:
        fmt, addr = p.encode_cells(cells)
        n = cells.size
        tag_box: list[int] = []
        reply = self._transaction(p.CELL_READ, lambda: [str(n), fmt, str(self._chunk)], addr, tag_box)
        args = self._ok_args(reply, p.CELL_READ, None)
        if len(args) not in (4, 5):
            raise ProtocolError(f"chip answered {p.CELL_READ} with {len(args)} values, expected 4 or 5")
        count = p.parse_int(args[0], "read count")
        cfmt = args[1]
        nbytes = p.parse_int(args[2], "read size")
        crc = p.parse_hex32(args[3], "read CRC")
        want = p.code_format(self.geometry.adc_bits)
        if count != n or cfmt != want or nbytes != n * p.CODE_FORMATS[want].itemsize:
            raise ProtocolError(
                f"chip answered a read of {n} cells with {count} codes of format {cfmt!r} in {nbytes} bytes; "
                f"expected {n} codes of format {want}"
            )
        data: bytes
        if len(args) == 5:  # inline: the frame's CRC already covered these bytes
            inline = args[4]
            if not isinstance(inline, p.Block) or len(inline) != nbytes:
                raise ProtocolError(f"read data must be a binary block of {nbytes} bytes")
            data = inline
        else:  # fetched in chunks: check the reassembled whole end to end
            data = self._fetch(tag_box[0], nbytes)
            if len(data) != nbytes or p.crc32(data) != crc:
                raise ProtocolError(f"read data of {len(data)} bytes fail the chip's CRC; refetching cannot help")
        dtype = p.CODE_FORMATS[want]
        codes = np.frombuffer(data, dtype=dtype)
        full_range = self.geometry.adc_bits >= 8 * dtype.itemsize  # every code of the dtype is valid
        if not full_range and codes.size and int(codes.max()) >= 2**self.geometry.adc_bits:
            raise ProtocolError(f"chip sent ADC code {int(codes.max())} beyond its {self.geometry.adc_bits}-bit range")
        return codes

    def _close(self) -> None:
        self._link.close()
        self._open = False

    # --- connection ------------------------------------------------------------------------
    def _connect(self) -> Geometry:
        self._exchange(lambda: p.build_body(p.VERSION), check_version=True)  # opens + identifies
        geometry = self._read_geometry()
        if geometry.n_cells > p.MAX_ADDRESS + 1:
            raise ProtocolError(f"chip has {geometry.n_cells} cells; protocol 1 addresses at most 2**32")
        session = p.parse_hex32(self._query(p.SESSION)[0], "session id")
        if session == p.NO_SESSION:
            raise ProtocolError("chip issued session 0, which the protocol reserves")
        self._session = session
        self._seq = 0
        return geometry

    def _read_geometry(self) -> Geometry:
        rows, cols = self._query(p.GEOMETRY, n=2)
        g_min, g_max = self._query(p.CONDUCTANCE_RANGE, n=2)
        bits, a_min, a_max = self._query(p.ADC, n=3)
        (max_amp,) = self._query(p.AMPLITUDE_LIMIT, n=1)
        try:
            return Geometry(
                rows=p.parse_int(rows, "rows", 1),
                cols=p.parse_int(cols, "cols", 1),
                g_min_uS=p.parse_float(g_min, "g_min"),
                g_max_uS=p.parse_float(g_max, "g_max"),
                adc_bits=p.parse_int(bits, "ADC bits", 1, 16),
                adc_min_uS=p.parse_float(a_min, "ADC min"),
                adc_max_uS=p.parse_float(a_max, "ADC max"),
                max_set_amplitude=p.parse_float(max_amp, "max SET amplitude"),
            )
        except ConfigError as exc:
            raise ProtocolError(f"chip at {self._link.description} reports an impossible geometry: {exc}") from exc

    def _ensure_link(self) -> None:
        """Open and identify the link if a failure (or the first call) left it down."""
        if not self._open:
            try:
                self._link.open()
            except ChipIOError as exc:
                if not self._identity:  # never connected: a wrong path/port, not a glitch
                    raise
                # a device re-enumerating (USB serial) or restarting its server needs a moment
                time.sleep(min(self._settings.timeout_s / 2, REOPEN_PAUSE_S))
                raise _AttemptFailed(exc, reopen=True) from exc
            self._open = True
            self._identified = False
            self._parser.clear()
        if self._identified:
            return
        try:
            reply = self._attempt(self._next_tag(), p.build_body(p.IDN), p.IDN)
        except _AttemptFailed as fail:
            if fail.junk and _looks_foreign(fail.junk):
                self._foreign += 1
                if self._foreign >= FOREIGN_REPLIES:
                    raise IdentityError(
                        f"the device at {self._link.description} answered *IDN? with "
                        f"{fail.junk.strip()[:80].decode('ascii', 'replace')!r}: not a PCM test chip speaking "
                        f"protocol {p.PROTOCOL_VERSION} (expected '{p.MANUFACTURER},…'); check the port or resource"
                    ) from fail.error
            raise
        (idn,) = self._ok_args(reply, p.IDN, 1)
        if not isinstance(idn, str) or idn.split(",")[0] != p.MANUFACTURER:
            raise IdentityError(
                f"the device at {self._link.description} is {str(idn)[:80]!r}, not a PCM test chip "
                f"(expected '{p.MANUFACTURER},…'); check the port or resource"
            )
        if self._identity and idn != self._identity:
            raise IdentityError(
                f"after reconnecting, {self._link.description} is {idn!r}, no longer {self._identity!r}; "
                "the chip was swapped or restarted: open it again and start over"
            )
        self._identity = idn
        self._identified = True
        self._foreign = 0

    # --- exchanges -------------------------------------------------------------------------
    def _next_tag(self) -> int:
        self._seq += 1
        if self._seq > p.MAX_SEQ:
            raise ProtocolError("this session used up its 2**32 sequence numbers; close and reopen the chip")
        return p.make_tag(self._session, self._seq)

    def _exchange(
        self,
        build: Callable[[], list[p.Piece]],
        tag: int | None = None,
        *,
        what: str = "",
        check_version: bool = False,
        retry_codes: frozenset[int] = frozenset(),
    ) -> p.Reply:
        """Send a command and return its reply, retrying (same tag) up to the budget."""
        failures = 0
        while True:
            try:
                self._ensure_link()
                if tag is None:  # after identifying, so tags go out in order
                    tag = self._next_tag()
                pieces = build()
                what = what or bytes(pieces[0]).decode("ascii", "replace")
                reply = self._attempt(tag, pieces, what)
                if reply.status == p.ERR and reply.error[0] in retry_codes:
                    raise _AttemptFailed(ProtocolError(f"chip answered {what}: {reply.error[1]}"), reopen=False)
            except _AttemptFailed as fail:
                failures += 1
                self.stats.failures += 1
                self._after_failure(fail)
                if failures > self._settings.retries:
                    raise fail.error from fail.error.__cause__
                continue
            self.stats.exchanges += 1
            self._chunk = min(self._settings.max_chunk, self._chunk * 2)
            if check_version:
                (version,) = self._ok_args(reply, p.VERSION, 1)
                if p.parse_int(version, "protocol version") != p.PROTOCOL_VERSION:
                    raise IdentityError(
                        f"chip at {self._link.description} speaks protocol {version!s}, this driver "
                        f"{p.PROTOCOL_VERSION}; update the harness or the chip firmware"
                    )
            return reply

    def _after_failure(self, fail: _AttemptFailed) -> None:
        self._chunk = max(self._settings.min_chunk, self._chunk // 2)
        self._parser.clear()
        if fail.reopen:
            self.stats.reconnects += 1
            self._link.close()
            self._open = False
            self._identified = False
        else:
            try:
                self._link.discard_input()
            except ChipIOError:
                self._link.close()
                self._open = False
                self._identified = False

    def _attempt(self, tag: int, pieces: list[p.Piece], what: str) -> p.Reply:
        """One send-and-receive; raises _AttemptFailed for anything a retry may fix."""
        timeout = self._settings.timeout_s
        frame = p.encode_frame(p.COMMAND, tag, pieces)
        try:
            self._link.write(frame, timeout)
        except ChipIOError as exc:
            raise _AttemptFailed(exc, reopen=True) from exc
        self.stats.bytes_out += sum(len(x) for x in frame)
        t0 = time.perf_counter()
        deadline = t0 + timeout
        junk = bytearray()  # bytes outside any frame seen in this attempt (first 256)
        junk_tail = b""
        damaged = False  # a frame header failed its check: scan to the end of that frame
        over = False  # the damaged stretch ended like a frame: nothing more is coming for it
        last_rx = t0
        t_header: float | None = None
        while True:
            event = self._parser.next()
            if isinstance(event, int):
                now = time.perf_counter()
                if t_header is None and self._parser.buffered >= p.HEADER_LEN:
                    t_header = now
                scanning = damaged or bool(junk)
                if scanning and (over and not self._parser.buffered or now >= last_rx + self._settle_s):
                    # a destroyed reply, read to its end (so the stream is clean), or garbage and
                    # then quiet: retry now, not at the timeout
                    raise self._destroyed(what, bytes(junk), damaged)
                remaining = deadline - now
                if remaining <= 0:
                    raise self._timed_out(what, bytes(junk))
                if scanning:
                    remaining = min(remaining, last_rx + self._settle_s - now)
                try:
                    # while scanning, take bytes as they come: a destroyed frame is over when its last byte is
                    data = self._link.read(max(event, 4096) if scanning else event, remaining, partial=scanning)
                except ChipIOError as exc:
                    raise _AttemptFailed(exc, reopen=True, junk=bytes(junk)) from exc
                if data:
                    last_rx = time.perf_counter()
                    self.stats.bytes_in += len(data)
                    self._parser.feed(data)
                continue
            if isinstance(event, p.Garbled):
                if event.tag is not None:  # valid header, damaged body: the whole frame is consumed
                    if event.tag in (tag, 0):  # ours, or a NAK
                        raise _AttemptFailed(self._integrity(what), reopen=False)
                    continue  # a damaged reply to an earlier attempt
                if event.sample:
                    junk += event.sample[: max(0, 256 - len(junk))]
                    junk_tail = (junk_tail + event.tail)[-16:]
                    over = p.ends_like_frame(junk_tail)
                else:
                    damaged = True
                    over = False
                continue
            reply = self._reply_of(event, what)
            if reply.status == p.NAK:
                # whatever its tag (a NAK's tag is a guess): retrying is always safe
                self.stats.naks += 1
                raise _AttemptFailed(
                    ProtocolError(f"chip at {self._link.description} could not read {what}: {reply.error[1]}"),
                    reopen=False,
                )
            if event.tag == tag:
                now = time.perf_counter()
                t_header = now if t_header is None else t_header
                self.stats.wait_s += t_header - t0
                self.stats.transfer_s += now - t_header
                return reply
            # a valid reply to an earlier attempt or command: already dealt with

    def _reply_of(self, frame: p.Frame, what: str) -> p.Reply:
        try:
            return p.parse_reply(frame.body)
        except ProtocolError as exc:
            raise ProtocolError(f"chip at {self._link.description} sent a malformed reply to {what}: {exc}") from exc

    def _integrity(self, what: str) -> ProtocolError:
        return ProtocolError(f"reply to {what} from {self._link.description} failed its integrity check")

    def _destroyed(self, what: str, junk: bytes, damaged: bool) -> _AttemptFailed:
        error = self._integrity(what) if damaged or not _looks_foreign(junk) else self._garbage(what, junk)
        return _AttemptFailed(error, reopen=False, junk=junk)

    def _garbage(self, what: str, junk: bytes) -> ProtocolError:
        # Only a serial link has a baud rate to get wrong.
        baud = getattr(self._link, "baudrate", None)
        baud_hint = f", at the right baud rate (now {baud})" if baud is not None else ""
        return ProtocolError(
            f"no valid reply to {what} from {self._link.description}, only bytes that are not protocol frames "
            f"(first: {junk[:40]!r}); is this a PCM test chip{baud_hint}?"
        )

    def _timed_out(self, what: str, junk: bytes) -> _AttemptFailed:
        desc = self._link.description
        if junk:
            return _AttemptFailed(self._garbage(what, junk), reopen=True, junk=junk)
        return _AttemptFailed(
            ChipTimeoutError(
                f"no reply to {what} from {desc} within {self._settings.timeout_s:g} s; check that the chip is "
                "powered and connected, or raise timeout= in the chip URI"
            ),
            reopen=True,
        )

    # --- command helpers -------------------------------------------------------------------
    def _query(self, header: str, args: list[str] | None = None, n: int | None = None) -> list[p.Arg]:
        reply = self._exchange(lambda: p.build_body(header, args or []), what=header)
        return self._ok_args(reply, header, n)

    def _ok_args(self, reply: p.Reply, what: str, n: int | None) -> list[p.Arg]:
        """The arguments of an OK reply (exactly ``n`` unless None); errors become exceptions."""
        if reply.status == p.OK:
            if n is not None and len(reply.args) != n:
                raise ProtocolError(f"chip answered {what} with {len(reply.args)} values, expected {n}")
            return reply.args
        code, message = reply.error
        desc = self._link.description
        if code == p.ErrorCode.DATA_OUT_OF_RANGE:
            raise SafetyLimitError(f"chip at {desc} refused {what}: {message}; nothing was applied")
        if code == p.ErrorCode.UNKNOWN_SESSION:
            raise ChipIOError(
                f"chip at {desc} no longer knows this session: it restarted (losing its state) or "
                f"{MAX_SESSIONS_HINT} other clients opened it since; open it again and start over"
            )
        raise ProtocolError(f"chip at {desc} answered {what} with error {code}: {message}")

    def _transaction(
        self,
        header: str,
        head_args: Callable[[], list[str]],
        payload: bytes | None,
        tag_box: list[int] | None = None,
    ) -> p.Reply:
        """Run a side-effecting command once: one tag for every retry, data inline or staged."""
        tag = self._next_tag()
        if tag_box is not None:
            tag_box.append(tag)

        def build() -> list[p.Piece]:
            args: list[str | list[p.Piece]] = list(head_args())
            if payload is not None:
                if len(payload) <= self._chunk:
                    args.append(p.block(payload))
                else:
                    self._upload(tag, payload)
                    args.append(f"{p.STAGED},{len(payload)},{p.crc32(payload):08X}")
            return p.build_body(header, args)

        reply = self._exchange(build, tag, what=header, retry_codes=frozenset({p.ErrorCode.STAGING_MISMATCH}))
        self.stats.transactions += 1
        return reply

    def _upload(self, tag: int, payload: bytes) -> None:
        """Stage ``payload`` on the chip for transaction ``tag`` in adaptive chunks."""
        mv = memoryview(payload)
        offset = 0
        while offset < len(payload):
            used = [0]

            def build(offset: int = offset, used: list[int] = used) -> list[p.Piece]:
                used[0] = min(self._chunk, len(payload) - offset)
                data = p.block(mv[offset : offset + used[0]])
                return p.build_body(p.BUFFER_WRITE, [p.fmt_tag(tag), str(offset), data])

            self._ok_args(self._exchange(build, what=p.BUFFER_WRITE), p.BUFFER_WRITE, 0)
            offset += used[0]

    def _fetch(self, tag: int, nbytes: int) -> bytes:
        """Fetch a stored result of ``nbytes`` in adaptive chunks."""
        out = bytearray()
        while len(out) < nbytes:

            def build(offset: int = len(out)) -> list[p.Piece]:
                count = min(self._chunk, nbytes - offset)
                return p.build_body(p.FETCH, [p.fmt_tag(tag), str(offset), str(count)])

            offset = len(out)
            reply = self._exchange(build, what=p.FETCH)
            (data,) = self._ok_args(reply, p.FETCH, 1)
            if not isinstance(data, p.Block) or not 0 < len(data) <= nbytes - offset:
                raise ProtocolError(f"chip answered {p.FETCH} at offset {offset} with no or too much data")
            out += data
        return bytes(out)


def _looks_foreign(junk: bytes) -> bool:
    """Whether bytes outside any frame look like another instrument's text reply, rather
    than one of our frames that lost its marker."""
    text = junk.strip()
    return (
        bool(text)
        and all(32 <= c < 127 for c in text)
        and b"<" not in text
        and _FRAME_TRACE_RE.search(junk) is None
    )


#: What survives of a frame whose marker was destroyed: the header's hex fields or the trailer.
_FRAME_TRACE_RE = re.compile(rb"[0-9A-F]{8} [0-9A-F]{8}| [0-9A-F]{8}\n")
