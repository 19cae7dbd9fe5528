"""RemoteChip: the Chip backend that drives a chip through the wire protocol over any Link.

One class serves every transport (the serial and VISA backends only supply a
:class:`~drivers.link.Link`), so timeouts, retries, reconnects and chunking behave the same
everywhere. Safety limits are checked by :class:`~harness.chip.protocol.ChipBackend` before any
method here runs: nothing out of range is ever encoded, let alone sent.

Reliability (see ``docs/protocol.md`` §7), with default settings on any link from clean
to one that damages a few percent of its bytes:

* Every reply must arrive within ``timeout_s``. A damaged exchange (bad CRC, NAK, a reply
  cut short by dropped bytes: the line goes quiet mid-frame) is retried at once, with the
  same tag; a silent or broken link is closed, reopened (with a growing pause while it
  cannot be reopened) and re-identified before the retry.
* Side effects and random draws (RESET, SET, READ, clock advance) are transactions: the
  retry reuses the transaction's tag and the chip answers it from its reply cache, so a
  pulse is never applied twice and a read never draws noise twice.
* Frame sizes follow the link: :class:`ChunkSizer` estimates the fraction of damaged
  bytes from every exchange and sizes bulk frames near the throughput optimum
  (``1/error rate`` payload bytes), below the largest single command when needed — a
  38 KB RESET is then staged in small ``BUF:WRIT`` frames — and grows back after
  successes. On a clean link a whole 1,048,576-cell read is one round trip.
* Bulk uploads and fetches go out in windows of small frames (selective repeat: only the
  frames without an answer are resent), so a noisy link costs bytes, not round trips.
* The retry budget separates a dead link (``retries`` attempts in a row without a sign of
  the chip: silence, a broken link, bytes that are no frame) from a noisy one (the chip
  answers, damaged: up to ``NOISY_ATTEMPTS_PER_RETRY × (retries + 1)`` attempts).
"""

from __future__ import annotations

import math
import re
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from drivers import protocol as p
from drivers.link import Link
from harness.chip.protocol import CellArray, ChipBackend, FloatArray, Geometry, check_cells
from harness.errors import (
    ChipBusyError,
    ChipIOError,
    ChipTimeoutError,
    ConfigError,
    IdentityError,
    ProtocolError,
    SafetyLimitError,
)

#: Longest a single ``TIME:WAIT`` may block on a wall-clock chip (the driver repeats it).
MAX_WAIT_SLICE_S = 1.0
#: Bounds of the quiet time that ends an attempt once bytes stopped mid-frame or after
#: garbage (s); in between it follows the gaps seen inside good replies (:class:`GapClock`).
SETTLE_MIN_S = 0.002
SETTLE_S = 0.05
#: Sessions a chip keeps (the emulator's ``drivers.server.MAX_SESSIONS``), for messages.
MAX_SESSIONS_HINT = 8
#: First and longest pause before reopening a link that could not be reopened (s); doubles.
REOPEN_PAUSE_MIN_S = 0.01
REOPEN_PAUSE_S = 1.0
#: Failed attempts a command may take while the chip keeps answering (damaged), per retry.
#: At 2 % damaged bytes a 130-byte exchange passes 7 % of the time: 576 attempts fail in a
#: row with probability 1e-18.
NOISY_ATTEMPTS_PER_RETRY = 64
#: Largest command bytes, and expected reply bytes, in flight in one bulk window: below
#: what a pty (20 KiB each way on Linux) or a socket buffers, so neither end blocks for long.
WINDOW_BYTES = 12288
WINDOW_REPLY_BYTES = 8192
#: Step of the error-rate estimate (log scale) per exchange: about 13 failures take it
#: from "clean" to 1 % damaged bytes.
ERROR_STEP = 1.0
#: Error rate of a link believed clean (damaged bytes per byte): the estimate's floor and
#: start; about 17 failures take it to 1 %.
CLEAN_ERROR_RATE = 1e-9
#: Largest step down per pass (a pass of a frame the estimate gave no chance is strong
#: evidence, but one pass should not undo everything): at most a factor e^5.
MAX_PASS_STEP = 5.0
#: Expected damaged bytes per exchange above which a pause mid-frame is judged quickly.
NOISY_EXCHANGE = 0.1
#: Target probability that one round trip of a (redundantly sent) command succeeds, and
#: the most copies of one command sent at once.
ROUND_SUCCESS = 0.75
MAX_COPIES = 32


class Sleeper:
    """Where the driver pauses (between reopen attempts): ``time.sleep`` by default;
    tests pass a simulated clock."""

    def __call__(self, seconds: float) -> None:
        time.sleep(seconds)


@dataclass(frozen=True)
class LinkSettings:
    """Timeouts, retry budget and chunk bounds of a :class:`RemoteChip`.

    Attributes:
        timeout_s: longest wait for one reply (s); also bounds each write.
        retries: attempts in a row without any sign of the chip (silence, a broken link,
            bytes that are not frames) tolerated per command before its error is raised;
            each may include a reconnect. A damaged answer is a sign of the chip: those
            attempts have a budget of ``NOISY_ATTEMPTS_PER_RETRY * (retries + 1)``.
        max_chunk: largest bulk payload per frame (bytes).
        min_chunk: smallest chunk the adaptive sizing shrinks to (bytes).
    """

    timeout_s: float = 2.0
    retries: int = 8
    max_chunk: int = 16 * 2**20
    min_chunk: int = 16

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

    @property
    def noisy_attempts(self) -> int:
        return NOISY_ATTEMPTS_PER_RETRY * (self.retries + 1)


class ChunkSizer:
    """Bulk frame size from the link's observed byte error rate.

    A frame of ``n`` bytes (command plus reply) passes with probability ``(1 - e)^n``;
    the payload per attempt ``L (1 - e)^(L + overhead)`` peaks at ``L = 1 / -ln(1 - e)``
    whatever the overhead, so the chunk is ``1 / λ`` with ``λ`` the estimated per-byte
    damage rate, kept between ``min_chunk`` and ``max_chunk``. ``λ`` follows every
    exchange by a stochastic-gradient step of the log-likelihood (in log λ: a pass lowers
    it by ``ERROR_STEP · λn``, a failure raises it by ``ERROR_STEP · λn / (e^{λn} - 1)``),
    so it settles on the maximum-likelihood rate and forgets old noise. A failed frame of
    more than ``4 × min_chunk`` payload bytes that the estimate expected to pass
    (``λ · payload < 0.5``) also caps the chunk at half that payload, so one bad 38 KB
    frame on a link believed clean splits the next try at once; the cap doubles again
    with every pass.
    """

    def __init__(self, min_chunk: int, max_chunk: int) -> None:
        self.min_chunk = min_chunk
        self.max_chunk = max_chunk
        self.error_rate = CLEAN_ERROR_RATE
        self.cap = max_chunk

    @property
    def chunk(self) -> int:
        return int(max(self.min_chunk, min(self.cap, self.max_chunk, 1.0 / self.error_rate)))

    def passed(self, nbytes: int) -> None:
        x = self.error_rate * nbytes
        self.error_rate = max(CLEAN_ERROR_RATE, self.error_rate * math.exp(-min(ERROR_STEP * x, MAX_PASS_STEP)))
        self.cap = min(self.max_chunk, self.cap * 2)

    def failed(self, nbytes: int, payload: int) -> None:
        x = self.error_rate * max(nbytes, 1)
        grad = x / math.expm1(x) if x > 1e-9 else 1.0
        self.error_rate = min(0.5, self.error_rate * math.exp(ERROR_STEP * grad))
        if payload > 4 * self.min_chunk and payload * self.error_rate < 0.5:
            # a big frame the estimate expected to pass failed (the estimate lags): split now
            self.cap = max(self.min_chunk, min(self.cap, payload // 2))


class GapClock:
    """How long a silence must last before bytes that stopped mid-frame are judged lost.

    Learns the longest pause seen inside good replies (decaying by ``0.8`` per sample) and
    answers twice that plus ``SETTLE_MIN_S``, within ``[SETTLE_MIN_S, min(SETTLE_S, timeout/4)]``.
    Starts at the upper bound until the link has shown how it delivers."""

    def __init__(self, timeout_s: float) -> None:
        self._max_s = min(SETTLE_S, timeout_s / 4)
        self._gap_s = self._max_s / 2

    @property
    def quiet_s(self) -> float:
        return min(self._max_s, max(SETTLE_MIN_S, 2 * self._gap_s + SETTLE_MIN_S))

    def observe(self, gap_s: float) -> None:
        self._gap_s = max(gap_s, 0.8 * self._gap_s)


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
    #: bulk frames sent in windows, and how many of them went unanswered (resent)
    bulk_frames: int = 0
    bulk_lost: int = 0
    #: commands that went out in several copies and got through that way
    redundant_wins: int = 0
    #: time from sending a command until its reply's header was in (chip work + latency)
    wait_s: float = 0.0
    #: time from a reply's header until its last byte (the transfer proper)
    transfer_s: float = 0.0


class _AttemptFailed(Exception):
    """One attempt failed in a way a retry may fix.

    ``reopen``: reconnect first. ``alive``: the chip showed itself (a frame header that
    passed its check, or the remains of one), so the failure counts against the noisy
    budget, not the dead-link one. ``damaged``: bytes were damaged or lost in transit,
    which the chunk sizer learns from."""

    def __init__(
        self, error: Exception, reopen: bool, junk: bytes = b"", alive: bool = False, damaged: bool = False
    ) -> None:
        super().__init__(str(error))
        self.error = error
        self.reopen = reopen
        self.junk = junk
        self.alive = alive
        self.damaged = damaged


class RemoteChip(ChipBackend):
    """A chip on the other end of a :class:`~drivers.link.Link`, speaking protocol 1.

    Opening connects, identifies (``*IDN?`` manufacturer must be ``PCM-HARNESS``), checks
    the protocol version, reads geometry and limits from the chip and obtains a session.

    Raises (from the constructor and every method):
        IdentityError: the device is not a PCM test chip (a valid reply naming another
            maker, or the same non-protocol text twice), or a different one answers after
            a reconnect. A damaged reply is never taken for another device.
        ChipBusyError: another client owns the chip.
        ChipTimeoutError: no reply at all within the timeout, ``retries + 1`` times in a row.
        ProtocolError: replies that are not protocol frames, or that the protocol forbids,
            or a link so noisy that the noisy-attempt budget ran out.
        ChipIOError: the link cannot be (re)opened.
        SafetyLimitError: the chip itself refused a pulse (never expected: the host checks first).
    """

    def __init__(
        self, link: Link, uri: str, settings: LinkSettings | None = None, sleep: Callable[[float], None] | None = None
    ) -> None:
        self._link = link
        self._settings = settings or LinkSettings()
        self._sleep = sleep or Sleeper()
        self._parser = p.FrameParser(p.REPLY)
        self._session = p.NO_SESSION
        self._seq = 0
        self.sizer = ChunkSizer(self._settings.min_chunk, self._settings.max_chunk)
        self._gaps = GapClock(self._settings.timeout_s)
        self._window_gaps = GapClock(self._settings.timeout_s)
        self._open = False
        self._identified = False
        self._identity = ""
        self._foreign_junk: bytes | None = None
        self._reopen_pause_s = REOPEN_PAUSE_MIN_S
        self.stats = LinkStats()
        try:
            geometry = self._connect()
        except BaseException:
            link.close()
            raise
        super().__init__(geometry, uri)

    @property
    def _chunk(self) -> int:
        return self.sizer.chunk

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
        makes this backend a :class:`~harness.chip.protocol.CodeReadingChip`."""
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
        want = p.code_format(self.geometry.adc_bits)
        dtype = p.CODE_FORMATS[want]
        tag_box: list[int] = []
        inline_box = [0]

        def head() -> list[str]:
            inline_box[0] = self._chunk
            return [str(n), fmt, str(inline_box[0])]

        reply = self._transaction(
            p.CELL_READ, head, addr, tag_box, expect=lambda: min(n * dtype.itemsize, inline_box[0])
        )
        args = self._ok_args(reply, p.CELL_READ, None)
        if len(args) not in (4, 5):
            raise ProtocolError(f"chip answered {p.CELL_READ} with {len(args)} values, expected 4 or 5")
        count = p.parse_int(args[0], "read count")
        cfmt = args[1]
        nbytes = p.parse_int(args[2], "read size")
        crc = p.parse_hex32(args[3], "read CRC")
        if count != n or cfmt != want or nbytes != n * dtype.itemsize:
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
                # a device re-enumerating (USB serial) or restarting its server needs a
                # moment: back off, doubling, up to REOPEN_PAUSE_S (or half the timeout)
                pause = self._reopen_pause_s
                self._reopen_pause_s = min(2 * pause, REOPEN_PAUSE_S, self._settings.timeout_s / 2)
                self._sleep(pause)
                raise _AttemptFailed(exc, reopen=True) from exc
            self._reopen_pause_s = REOPEN_PAUSE_MIN_S
            self._open = True
            self._identified = False
            self._parser.clear()
        if self._identified:
            return
        try:
            reply = self._attempt(self._next_tag(), p.build_body(p.IDN), p.IDN)
        except _AttemptFailed as fail:
            text = fail.junk.strip()
            if text and _looks_foreign(fail.junk):
                # the same non-protocol text twice: another instrument answering (a damaged
                # frame of ours never repeats itself byte for byte)
                if self._foreign_junk == text:
                    raise IdentityError(
                        f"the device at {self._link.description} answered *IDN? with "
                        f"{text[:80].decode('ascii', 'replace')!r}: not a PCM test chip speaking "
                        f"protocol {p.PROTOCOL_VERSION} (expected '{p.MANUFACTURER},…'); check the port or resource"
                    ) from fail.error
                self._foreign_junk = text
            else:
                self._foreign_junk = None
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
        self._foreign_junk = None

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
        expect: Callable[[], int] | None = None,
    ) -> p.Reply:
        """Send a command and return its reply, retrying (same tag) within the budgets.

        ``expect``: the reply's expected body size (for the chunk sizer's bookkeeping)."""
        budget = _Budget(self._settings)
        while True:
            try:
                self._ensure_link()
                if tag is None:  # after identifying, so tags go out in order
                    tag = self._next_tag()
                pieces = build()
                what = what or bytes(pieces[0]).decode("ascii", "replace")
                reply = self._attempt(tag, pieces, what, expect() if expect else 0)
                if reply.status == p.ERR and reply.error[0] in retry_codes:
                    raise _AttemptFailed(
                        ProtocolError(f"chip answered {what}: {reply.error[1]}"), reopen=False, alive=True
                    )
            except _AttemptFailed as fail:
                self.stats.failures += 1
                self._after_failure(fail)
                if budget.spent(fail):
                    raise fail.error from fail.error.__cause__
                continue
            self.stats.exchanges += 1
            if check_version:
                (version,) = self._ok_args(reply, p.VERSION, 1)
                if p.parse_int(version, "protocol version") != p.PROTOCOL_VERSION:
                    raise IdentityError(
                        f"chip at {self._link.description} speaks protocol {version!s}, this driver "
                        f"{p.PROTOCOL_VERSION}; update the harness or the chip firmware"
                    )
            return reply

    def _after_failure(self, fail: _AttemptFailed) -> None:
        self._parser.clear()
        if fail.reopen:
            self.stats.reconnects += 1
            self._drop_link()
        else:
            try:
                self._link.discard_input()
            except ChipIOError:  # the link hung up under us: reopen on the next attempt
                self.stats.reconnects += 1
                self._drop_link()

    def _drop_link(self) -> None:
        self._link.close()
        self._open = False
        self._identified = False

    def _quiet_s(self, gaps: GapClock, nbytes: int) -> float:
        """How long a silence mid-frame (or after garbage) must last to end an attempt of
        ``nbytes``: the learnt gap where damage is likely; a quarter of the timeout where
        the link looks clean, since there a pause is more likely a busy peer than a lost
        byte, and judging it lost would cost a resend of the whole frame."""
        if self.sizer.error_rate * nbytes > NOISY_EXCHANGE:
            return gaps.quiet_s
        return self._settings.timeout_s / 4

    def _copies(self, frame_bytes: int, reply_bytes: int) -> int:
        """How many copies of a command to send at once: on a noisy link one round trip
        should succeed about ``ROUND_SUCCESS`` of the time (each copy passes with
        ``(1 - λ)^n``; the chip answers copies of a transaction from its reply cache)."""
        q = math.exp(-self.sizer.error_rate * (frame_bytes + reply_bytes))
        if q >= ROUND_SUCCESS:
            return 1
        k = math.ceil(math.log(1.0 - ROUND_SUCCESS) / math.log1p(-q)) if q > 0 else MAX_COPIES
        fit = max(1, min(WINDOW_BYTES // max(frame_bytes, 1), WINDOW_REPLY_BYTES // max(reply_bytes, 1)))
        return max(1, min(k, MAX_COPIES, fit))

    def _attempt(self, tag: int, pieces: list[p.Piece], what: str, expect: int = 0) -> p.Reply:
        """One send-and-receive; raises _AttemptFailed for anything a retry may fix.

        On a noisy link the command goes out in several copies (same tag) and the first
        good reply wins; damaged copies and their NAKs are then just noise, and the attempt
        ends when the line is quiet."""
        timeout = self._settings.timeout_s
        frame = p.encode_frame(p.COMMAND, tag, pieces)
        sent = sum(len(x) for x in frame)
        payload = max(sent - p.FRAME_OVERHEAD, expect)
        reply_bytes = expect + 64
        copies = 1 if what == p.SESSION else self._copies(sent, reply_bytes)  # each SESS? issues a session
        redundant = copies > 1
        try:
            self._link.write(frame * copies, timeout)
        except ChipIOError as exc:
            raise _AttemptFailed(exc, reopen=True) from exc
        self.stats.bytes_out += sent * copies
        t0 = time.perf_counter()
        deadline = t0 + timeout
        junk = bytearray()  # bytes outside any frame seen in this attempt (first 256)
        junk_tail = b""
        damaged = False  # a frame header failed its check: scan to the end of that frame
        over = False  # the damaged stretch ended like a frame: nothing more is coming for it
        alive = False  # the chip showed itself: a header passed its check, or frame remains
        last_rx = t0
        heard = False
        gap = 0.0  # longest pause inside the reply, once its first byte was in
        t_header: float | None = None
        nbytes = sent + reply_bytes
        quiet = self._quiet_s(self._gaps, nbytes * copies)
        while True:
            event = self._parser.next()
            if isinstance(event, int):
                now = time.perf_counter()
                if t_header is None and self._parser.buffered >= p.HEADER_LEN:
                    t_header = now
                partial = self._parser.buffered > 0  # a frame stopped mid-way
                scanning = damaged or bool(junk) or (redundant and heard)
                if scanning and over and not partial and not redundant:
                    # a destroyed reply, read to its end (so the stream is clean): retry now
                    raise self._destroyed(what, bytes(junk), True, True, nbytes, payload, copies)
                end = min(deadline, last_rx + quiet) if scanning or partial else deadline
                try:
                    # while scanning, take bytes as they come: a destroyed frame is over when its last byte is
                    data = self._link.read(
                        max(event, 4096) if scanning else event, max(0.0, end - now), partial=scanning
                    )
                except ChipIOError as exc:
                    raise _AttemptFailed(exc, reopen=True, junk=bytes(junk), alive=alive) from exc
                if not data and time.perf_counter() >= end:  # silence judged by a read, not a clock
                    if end < deadline:
                        # a reply cut short (bytes dropped) or garbage, then quiet: retry now,
                        # not at the timeout
                        alive = alive or self._parser.pending_tag() is not None or _has_frame_trace(bytes(junk))
                        raise self._destroyed(what, bytes(junk), damaged or partial, alive, nbytes, payload, copies)
                    raise self._timed_out(what, bytes(junk), alive)
                if data:
                    now = time.perf_counter()
                    if partial:
                        gap = max(gap, now - last_rx)
                    last_rx = now
                    heard = True
                    self.stats.bytes_in += len(data)
                    self._parser.feed(data)
                continue
            if isinstance(event, p.Garbled):
                if event.tag is not None:  # valid header, damaged body: the whole frame is consumed
                    alive = True
                    if event.tag in (tag, 0) and not redundant:  # ours, or a NAK
                        raise self._damaged(what, nbytes, payload)
                    continue  # a damaged reply to an earlier attempt, or to one copy
                if event.sample:
                    junk += event.sample[: max(0, 256 - len(junk))]
                    junk_tail = (junk_tail + event.tail)[-16:]
                    over = p.ends_like_frame(junk_tail)
                else:
                    damaged = True
                    over = False
                continue
            alive = True
            reply = self._reply_of(event, what)
            if reply.status == p.ERR and reply.error[0] == p.ErrorCode.BUSY:
                raise ChipBusyError(
                    f"chip at {self._link.description} is busy: {reply.error[1]}; wait until the other "
                    "client is done (the chip serves one client at a time)"
                )
            if reply.status == p.NAK:
                # whatever its tag (a NAK's tag is a guess): retrying is always safe
                self.stats.naks += 1
                if redundant:
                    continue  # one copy was damaged; another may still get through
                raise self._damaged(what, nbytes, payload, nak=reply.error[1])
            if event.tag == tag:
                now = time.perf_counter()
                t_header = now if t_header is None else t_header
                self.stats.wait_s += t_header - t0
                self.stats.transfer_s += now - t_header
                self._gaps.observe(gap)
                self.sizer.passed(sent + event.size)
                if redundant:
                    self.stats.redundant_wins += 1
                return reply
            # a valid reply to an earlier attempt or command: already dealt with

    def _reply_of(self, frame: p.Frame, what: str) -> p.Reply:
        try:
            return p.parse_reply(frame.body)
        except ProtocolError as exc:
            raise ProtocolError(f"chip at {self._link.description} sent a malformed reply to {what}: {exc}") from exc

    def _integrity(self, what: str) -> ProtocolError:
        return ProtocolError(f"reply to {what} from {self._link.description} failed its integrity check")

    def _damaged(self, what: str, nbytes: int, payload: int, nak: str = "") -> _AttemptFailed:
        self.sizer.failed(nbytes, payload)
        error = (
            ProtocolError(f"chip at {self._link.description} could not read {what}: {nak}")
            if nak
            else self._integrity(what)
        )
        return _AttemptFailed(error, reopen=False, alive=True, damaged=True)

    def _destroyed(
        self, what: str, junk: bytes, damaged: bool, alive: bool, nbytes: int, payload: int, copies: int = 1
    ) -> _AttemptFailed:
        if damaged or alive or not _looks_foreign(junk):
            for _ in range(copies):
                self.sizer.failed(nbytes, payload)
        error = self._integrity(what) if damaged or not _looks_foreign(junk) else self._garbage(what, junk)
        return _AttemptFailed(error, reopen=False, junk=junk, alive=alive, damaged=True)

    def _garbage(self, what: str, junk: bytes) -> ProtocolError:
        # Only a serial link has a baud rate to get wrong.
        baud = getattr(self._link, "baudrate", None)
        baud_hint = f", at the right baud rate (now {baud})" if baud is not None else ""
        return ProtocolError(
            f"no valid reply to {what} from {self._link.description}, only bytes that are not protocol frames "
            f"(first: {junk[:40]!r}); is this a PCM test chip{baud_hint}?"
        )

    def _timed_out(self, what: str, junk: bytes, alive: bool) -> _AttemptFailed:
        if junk:
            return _AttemptFailed(self._garbage(what, junk), reopen=True, junk=junk, alive=alive)
        return _AttemptFailed(self._silence(what), reopen=True, alive=alive)

    def _silence(self, what: str) -> ChipTimeoutError:
        return ChipTimeoutError(
            f"no reply to {what} from {self._link.description} within {self._settings.timeout_s:g} s; check that "
            "the chip is powered and connected, or raise timeout= in the chip URI"
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
        expect: Callable[[], int] | None = None,
    ) -> p.Reply:
        """Run a side-effecting command once: one tag for every retry, data inline or staged
        (uploaded once; again only when the chip says the staged bytes do not match)."""
        tag = self._next_tag()
        if tag_box is not None:
            tag_box.append(tag)
        staged = [False]

        def build() -> list[p.Piece]:
            args: list[str | list[p.Piece]] = list(head_args())
            if payload is not None:
                if not staged[0] and len(payload) <= self._chunk:
                    args.append(p.block(payload))
                else:
                    if not staged[0]:
                        self._upload(tag, payload)
                        staged[0] = True
                    args.append(f"{p.STAGED},{len(payload)},{p.crc32(payload):08X}")
            return p.build_body(header, args)

        for _ in range(self._settings.retries + 1):
            reply = self._exchange(build, tag, what=header, expect=expect)
            if not (reply.status == p.ERR and reply.error[0] == p.ErrorCode.STAGING_MISMATCH and staged[0]):
                break
            # the chip lost the staged bytes (another client took over, its staging was
            # reused): nothing executed; upload again under the same tag
            self.stats.failures += 1
            staged[0] = False
        self.stats.transactions += 1
        return reply

    # --- bulk windows ----------------------------------------------------------------------
    def _upload(self, tag: int, payload: bytes) -> None:
        """Stage ``payload`` on the chip for transaction ``tag`` in windows of chunks."""
        mv = memoryview(payload)
        txn = p.fmt_tag(tag)

        def frame(offset: int, count: int) -> list[p.Piece]:
            return p.build_body(p.BUFFER_WRITE, [txn, str(offset), p.block(mv[offset : offset + count])])

        def accept(offset: int, count: int, reply: p.Reply) -> None:
            self._ok_args(reply, p.BUFFER_WRITE, 0)

        self._windows(p.BUFFER_WRITE, len(payload), frame, accept, reply_bytes=lambda count: 2)

    def _fetch(self, tag: int, nbytes: int) -> bytes:
        """Fetch a stored result of ``nbytes`` in windows of chunks."""
        out = bytearray(nbytes)
        txn = p.fmt_tag(tag)

        def frame(offset: int, count: int) -> list[p.Piece]:
            return p.build_body(p.FETCH, [txn, str(offset), str(count)])

        def accept(offset: int, count: int, reply: p.Reply) -> None:
            (data,) = self._ok_args(reply, p.FETCH, 1)
            if not isinstance(data, p.Block) or len(data) != count:
                raise ProtocolError(f"chip answered {p.FETCH} of {count} bytes at offset {offset} with no or other data")
            out[offset : offset + count] = data

        self._windows(p.FETCH, nbytes, frame, accept, reply_bytes=lambda count: count + 8)
        return bytes(out)

    def _windows(
        self,
        what: str,
        nbytes: int,
        frame: Callable[[int, int], list[p.Piece]],
        accept: Callable[[int, int, p.Reply], None],
        reply_bytes: Callable[[int], int],
    ) -> None:
        """Move ``nbytes`` as pieces ``(offset, count)`` with idempotent commands: a window
        of frames goes out (at most ``WINDOW_BYTES`` each way, or one frame), the answered
        pieces are done, the rest go out again (re-split at the current chunk size).

        Each window is one attempt for the retry budget: it is alive when anything was
        answered, dead on silence or a broken link."""
        todo: deque[tuple[int, int]] = deque([(0, nbytes)] if nbytes else [])
        budget = _Budget(self._settings)
        while todo:
            window: dict[int, tuple[int, int, int]] = {}  # tag -> offset, count, frame bytes
            try:
                self._ensure_link()
                chunk = self._chunk
                out_bytes = in_bytes = 0
                while todo:
                    offset, count = todo[0]
                    take = -(-count // -(-count // chunk))  # equal pieces of at most a chunk: no slivers
                    cost_out = take + 64 + p.FRAME_OVERHEAD
                    cost_in = reply_bytes(take) + 16 + p.FRAME_OVERHEAD
                    if window and (out_bytes + cost_out > WINDOW_BYTES or in_bytes + cost_in > WINDOW_REPLY_BYTES):
                        break
                    todo.popleft()
                    if take < count:
                        todo.appendleft((offset + take, count - take))
                    window[self._next_tag()] = (offset, take, cost_out + cost_in)
                    out_bytes += cost_out
                    in_bytes += cost_in
                answered = self._run_window(what, window, frame, accept)
            except _AttemptFailed as fail:
                self.stats.failures += 1
                self._after_failure(fail)
                todo = _merged(todo, window.values())
                if budget.spent(fail):
                    raise fail.error from fail.error.__cause__
                continue
            todo = _merged(todo, (window[t] for t in window if t not in answered))
            if answered:
                budget.progress()
                continue
            silent = _AttemptFailed(self._integrity(what), reopen=False, alive=True, damaged=True)
            self.stats.failures += 1
            self._after_failure(silent)
            if budget.spent(silent):
                raise ProtocolError(
                    f"link to {self._link.description} is too noisy: {self._settings.noisy_attempts} windows of "
                    f"{what} in a row went unanswered; check the cable, or raise retries= in the chip URI"
                )

    def _run_window(
        self,
        what: str,
        window: dict[int, tuple[int, int, int]],
        frame: Callable[[int, int], list[p.Piece]],
        accept: Callable[[int, int, p.Reply], None],
    ) -> set[int]:
        """Send every frame of ``window``, then collect answers until the last frame is
        answered, or the line is quiet after the last answer; returns the answered tags."""
        timeout = self._settings.timeout_s
        last_tag = max(window)
        pieces: list[p.Piece] = []
        for tag, (offset, count, _) in window.items():
            pieces += p.encode_frame(p.COMMAND, tag, frame(offset, count))
        # On a noisy link the window ends with copies of a tiny query: the chip answers in
        # order, so the first answer to it says every other answer is in or lost (no need
        # to wait for the line to go quiet).
        marker_bytes = p.FRAME_OVERHEAD + len(p.VERSION)
        marks = self._copies(marker_bytes, 64)
        if marks > 1:
            last_tag = self._next_tag()
            pieces += p.encode_frame(p.COMMAND, last_tag, p.build_body(p.VERSION)) * marks
        try:
            self._link.write(pieces, timeout)  # one write: one wake-up of the other end
        except ChipIOError as exc:
            raise _AttemptFailed(exc, reopen=True) from exc
        self.stats.bytes_out += sum(len(x) for x in pieces)
        self.stats.bulk_frames += len(window)
        answered: set[int] = set()
        t0 = last_rx = time.perf_counter()
        deadline = t0 + timeout
        heard = False  # any byte since the window went out
        gap = 0.0
        quiet = self._quiet_s(self._window_gaps, sum(nbytes for _, _, nbytes in window.values()))
        while True:
            event = self._parser.next()
            if isinstance(event, int):
                now = time.perf_counter()
                end = last_rx + quiet if heard else deadline
                try:
                    data = self._link.read(max(event, 4096), max(0.0, end - now), partial=True)
                except ChipIOError as exc:
                    raise _AttemptFailed(exc, reopen=True, alive=bool(answered)) from exc
                if not data and time.perf_counter() >= end:
                    if heard:
                        break  # quiet after the last answer: the rest of the window is lost
                    raise _AttemptFailed(self._silence(what), reopen=True)
                if data:
                    now = time.perf_counter()
                    if heard:
                        gap = max(gap, now - last_rx)
                    heard = True
                    last_rx = now
                    self.stats.bytes_in += len(data)
                    self._parser.feed(data)
                continue
            if isinstance(event, p.Garbled):
                continue  # a damaged answer: its piece goes out again
            reply = self._reply_of(event, what)
            if reply.status == p.NAK:
                self.stats.naks += 1
                continue
            if reply.status == p.ERR and reply.error[0] == p.ErrorCode.BUSY:
                raise ChipBusyError(f"chip at {self._link.description} is busy: {reply.error[1]}")
            if event.tag == last_tag and marks > 1:
                break  # the marker: everything before it is answered or lost
            piece = window.get(event.tag)
            if piece is None or event.tag in answered:
                continue  # an answer to an earlier window or command
            accept(piece[0], piece[1], reply)
            answered.add(event.tag)
            if event.tag == last_tag or len(answered) == len(window):
                break  # the chip answers in order: everything before is answered or lost
        self._window_gaps.observe(gap)
        self.stats.exchanges += len(answered)
        lost = len(window) - len(answered)
        self.stats.bulk_lost += lost
        for tag, (_, count, nbytes) in window.items():
            if tag in answered:
                self.sizer.passed(nbytes)
            else:
                self.sizer.failed(nbytes, count)
        return answered


def _merged(todo: deque[tuple[int, int]], back: Iterable[tuple[int, int, int]]) -> deque[tuple[int, int]]:
    """The ranges still to move: ``todo`` plus the pieces ``back`` (offset, count, …), sorted
    and with neighbours joined, so re-splitting at a new chunk size leaves no slivers."""
    ranges = sorted([*todo, *((o, c) for o, c, _ in back)])
    out: deque[tuple[int, int]] = deque()
    for offset, count in ranges:
        if out and out[-1][0] + out[-1][1] == offset:
            out[-1] = (out[-1][0], out[-1][1] + count)
        else:
            out.append((offset, count))
    return out


class _Budget:
    """The retry budget of one command (or one bulk transfer): ``retries + 1`` dead
    attempts in a row, or ``noisy_attempts`` failed attempts while the chip answers."""

    def __init__(self, settings: LinkSettings) -> None:
        self._settings = settings
        self._dead = 0
        self._noisy = 0

    def spent(self, fail: _AttemptFailed) -> bool:
        if fail.alive:
            self._dead = 0
            self._noisy += 1
        else:
            self._dead += 1
        return self._dead > self._settings.retries or self._noisy > self._settings.noisy_attempts

    def progress(self) -> None:
        self._dead = 0
        self._noisy = 0


def _looks_foreign(junk: bytes) -> bool:
    """Whether bytes outside any frame look like another instrument's text reply, rather
    than one of our frames that lost its marker."""
    text = junk.strip()
    return (
        bool(text)
        and all(32 <= c < 127 for c in text)
        and b"<" not in text
        and p.MANUFACTURER.encode() not in text
        and not _has_frame_trace(junk)
    )


def _has_frame_trace(junk: bytes) -> bool:
    """Whether junk holds the remains of one of our frames (hex header fields, a trailer)."""
    return _FRAME_TRACE_RE.search(junk) is not None


#: What survives of a frame whose marker was destroyed: the header's hex fields or the trailer.
_FRAME_TRACE_RE = re.compile(rb"[0-9A-F]{8} [0-9A-F]{8}| [0-9A-F]{8}\n")
