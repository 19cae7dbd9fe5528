"""A link session: one identified connection to one chip, and its exchanges.

:class:`LinkSession` owns the :class:`~drivers.link.Link`, the reply parser, the protocol
session id and its tag sequence, and the link estimates (:mod:`drivers.link_quality`).
It sends one command and returns its reply (:meth:`LinkSession.exchange`), whatever the
link does in between (``docs/protocol.md`` §7):

* Every reply must arrive within ``timeout_s``. A damaged exchange (bad CRC, NAK, a reply
  cut short by dropped bytes: the line goes quiet mid-frame) is retried at once, with the
  same tag; a silent or broken link is closed, reopened (with a growing pause while it
  cannot be reopened) and re-identified (``*IDN?`` must name the same chip) before the retry.
* On a noisy link a command goes out in several copies with one tag (the chip answers
  copies of a transaction from its reply cache); the first good reply wins.
* The retry budget separates a dead link from a noisy one (:class:`~drivers.attempts.RetryBudget`).

Chip error replies become :mod:`harness.errors` exceptions in :meth:`LinkSession.ok_args`.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from drivers import protocol as p
from drivers.attempts import (
    AttemptFailed,
    RetryBudget,
    garbage_error,
    has_frame_trace,
    integrity_error,
    looks_foreign,
    timed_out,
)
from drivers.link import Link
from drivers.link_quality import ChunkSizer, GapClock, copies, quiet_s
from drivers.link_settings import LinkSettings, LinkStats
from drivers.link_watch import LinkWatch
from harness.errors import ChipBusyError, ChipIOError, IdentityError, ProtocolError, SafetyLimitError

#: Sessions a chip keeps (the emulator's ``drivers.server.MAX_SESSIONS``), for messages.
MAX_SESSIONS_HINT = 8
#: First and longest pause before reopening a link that could not be reopened (s); doubles.
REOPEN_PAUSE_MIN_S = 0.01
REOPEN_PAUSE_S = 1.0


class LinkSession:
    """One chip's end of a link: (re)connects, identifies, numbers and exchanges frames.

    The link opens on the first exchange. ``stats`` and ``sizer`` are shared with the bulk
    transfers (:mod:`drivers.bulk`), which read replies through ``parser`` from ``link``.

    Raises (from :meth:`exchange` and :meth:`ensure_link`): IdentityError, ChipBusyError,
    ChipTimeoutError, ProtocolError, ChipIOError, as listed on
    :class:`~drivers.client.RemoteChip`.
    """

    def __init__(self, link: Link, settings: LinkSettings, sleep: Callable[[float], None]) -> None:
        self.link = link
        self.settings = settings
        self._sleep = sleep
        self.parser = p.FrameParser(p.REPLY)
        self.stats = LinkStats()
        self.sizer = ChunkSizer(settings.min_chunk, settings.max_chunk)
        self._gaps = GapClock(settings.timeout_s)
        #: throughput lines and the stall and give-up bounds (``stall=``, ``giveup=``, ``fer=``);
        #: ``watch.notice`` is where lines go
        self.watch = LinkWatch(
            link.description, settings.stall_s, settings.notice_s, giveup_s=settings.giveup_s, max_fer=settings.max_fer
        )
        self._session_id = p.NO_SESSION
        self._seq = 0
        self._open = False
        self._identified = False
        self.identity = ""
        self._foreign_junk: bytes | None = None
        self._reopen_pause_s = REOPEN_PAUSE_MIN_S
        self._payload = 0  # body bytes of the last exchange that got through (both ways)

    def begin(self, session_id: int) -> None:
        """Tag every later command with ``session_id`` (as the chip issued it), from sequence 1."""
        self._session_id = session_id
        self._seq = 0

    def next_tag(self) -> int:
        self._seq += 1
        if self._seq > p.MAX_SEQ:
            raise ProtocolError("this session used up its 2**32 sequence numbers; close and reopen the chip")
        return p.make_tag(self._session_id, self._seq)

    def close(self) -> None:
        self.link.close()
        self._open = False

    # --- connection ------------------------------------------------------------------------
    def ensure_link(self) -> None:
        """Open and identify the link if a failure (or the first call) left it down."""
        if not self._open:
            try:
                self.link.open()
            except ChipIOError as exc:
                if not self.identity:  # never connected: a wrong path/port, not a glitch
                    raise
                # a device re-enumerating (USB serial) or restarting its server needs a
                # moment: back off, doubling, up to REOPEN_PAUSE_S (or half the timeout)
                pause = self._reopen_pause_s
                self._reopen_pause_s = min(2 * pause, REOPEN_PAUSE_S, self.settings.timeout_s / 2)
                self._sleep(pause)
                raise AttemptFailed(exc, reopen=True) from exc
            self._reopen_pause_s = REOPEN_PAUSE_MIN_S
            self._open = True
            self._identified = False
            self.parser.clear()
        if self._identified:
            return
        try:
            reply = self._attempt(self.next_tag(), p.build_body(p.IDN), p.IDN)
        except AttemptFailed as fail:
            text = fail.junk.strip()
            if text and looks_foreign(fail.junk):
                # the same non-protocol text twice: another instrument answering (a damaged
                # frame of ours never repeats itself byte for byte)
                if self._foreign_junk == text:
                    raise IdentityError(
                        f"the device at {self.link.description} answered *IDN? with "
                        f"{text[:80].decode('ascii', 'replace')!r}: not a PCM test chip speaking "
                        f"protocol {p.PROTOCOL_VERSION} (expected '{p.MANUFACTURER},…'); check the port or resource"
                    ) from fail.error
                self._foreign_junk = text
            else:
                self._foreign_junk = None
            raise
        (idn,) = self.ok_args(reply, p.IDN, 1)
        if not isinstance(idn, str) or idn.split(",")[0] != p.MANUFACTURER:
            raise IdentityError(
                f"the device at {self.link.description} is {str(idn)[:80]!r}, not a PCM test chip "
                f"(expected '{p.MANUFACTURER},…'); check the port or resource"
            )
        if self.identity and idn != self.identity:
            raise IdentityError(
                f"after reconnecting, {self.link.description} is {idn!r}, no longer {self.identity!r}; "
                "the chip was swapped or restarted: open it again and start over"
            )
        self.identity = idn
        self._identified = True
        self._foreign_junk = None

    def after_failure(self, fail: AttemptFailed) -> None:
        """Leave the stream clean for the next attempt: drop what was read, reconnect if asked."""
        self.parser.clear()
        if fail.reopen:
            self.stats.reconnects += 1
            self._drop_link()
        else:
            try:
                self.link.discard_input()
            except ChipIOError:  # the link hung up under us: reopen on the next attempt
                self.stats.reconnects += 1
                self._drop_link()

    def _drop_link(self) -> None:
        self.link.close()
        self._open = False
        self._identified = False

    # --- exchanges -------------------------------------------------------------------------
    def exchange(
        self,
        build: Callable[[], list[p.Piece]],
        tag: int | None = None,
        *,
        what: str = "",
        expect: Callable[[], int] | None = None,
    ) -> p.Reply:
        """Send a command and return its reply, retrying (same tag) within the budgets.

        ``build`` makes the body, once per attempt (after the link is up, so it may itself
        exchange: a staged upload). ``expect``: the reply's expected body size (for the
        chunk sizer's bookkeeping)."""
        budget = RetryBudget(self.settings)
        while True:
            try:
                self.ensure_link()
                if tag is None:  # after identifying, so tags go out in order
                    tag = self.next_tag()
                pieces = build()
                what = what or bytes(pieces[0]).decode("ascii", "replace")
                reply = self._attempt(tag, pieces, what, expect() if expect else 0)
            except AttemptFailed as fail:
                self.stats.failures += 1
                self.after_failure(fail)
                if budget.spent(fail):
                    raise fail.error from fail.error.__cause__
                self.watch.failed(what or "opening the link", self.stats.reconnects)
                continue
            self.stats.exchanges += 1
            self.watch.passed(1, self._payload)
            return reply

    def _attempt(self, tag: int, pieces: list[p.Piece], what: str, expect: int = 0) -> p.Reply:
        """One send-and-receive; raises AttemptFailed for anything a retry may fix.

        On a noisy link the command goes out in several copies (same tag) and the first
        good reply wins; damaged copies and their NAKs are then just noise, and the attempt
        ends when the line is quiet."""
        timeout = self.settings.timeout_s
        frame = p.encode_frame(p.COMMAND, tag, pieces)
        sent = sum(len(x) for x in frame)
        payload = max(sent - p.FRAME_OVERHEAD, expect)
        reply_bytes = expect + 64
        n_copies = 1 if what == p.SESSION else copies(self.sizer, sent, reply_bytes)  # each SESS? issues a session
        redundant = n_copies > 1
        try:
            self.link.write(frame * n_copies, timeout)
        except ChipIOError as exc:
            raise AttemptFailed(exc, reopen=True) from exc
        self.stats.bytes_out += sent * n_copies
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
        quiet = quiet_s(self.sizer, self._gaps, nbytes * n_copies, timeout)
        while True:
            event = self.parser.next()
            if isinstance(event, int):
                now = time.perf_counter()
                if t_header is None and self.parser.buffered >= p.HEADER_LEN:
                    t_header = now
                partial = self.parser.buffered > 0  # a frame stopped mid-way
                scanning = damaged or bool(junk) or (redundant and heard)
                if scanning and over and not partial and not redundant:
                    # a destroyed reply, read to its end (so the stream is clean): retry now
                    raise self._destroyed(what, bytes(junk), True, True, nbytes, payload, n_copies)
                end = min(deadline, last_rx + quiet) if scanning or partial else deadline
                try:
                    # while scanning, take bytes as they come: a destroyed frame is over when its last byte is
                    data = self.link.read(
                        max(event, 4096) if scanning else event, max(0.0, end - now), partial=scanning
                    )
                except ChipIOError as exc:
                    raise AttemptFailed(exc, reopen=True, junk=bytes(junk), alive=alive) from exc
                if not data and time.perf_counter() >= end:  # silence judged by a read, not a clock
                    if end < deadline:
                        # a reply cut short (bytes dropped) or garbage, then quiet: retry now,
                        # not at the timeout
                        alive = alive or self.parser.pending_tag() is not None or has_frame_trace(bytes(junk))
                        raise self._destroyed(what, bytes(junk), damaged or partial, alive, nbytes, payload, n_copies)
                    raise timed_out(what, bytes(junk), alive, self.link, timeout)
                if data:
                    now = time.perf_counter()
                    if partial:
                        gap = max(gap, now - last_rx)
                    last_rx = now
                    heard = True
                    self.stats.bytes_in += len(data)
                    self.parser.feed(data)
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
            reply = self.reply_of(event, what)
            if reply.status == p.ERR and reply.error[0] == p.ErrorCode.BUSY:
                raise ChipBusyError(
                    f"chip at {self.link.description} is busy: {reply.error[1]}; wait until the other "
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
                self._payload = sent + len(event.body) - p.FRAME_OVERHEAD
                if redundant:
                    self.stats.redundant_wins += 1
                return reply
            # a valid reply to an earlier attempt or command: already dealt with

    def _damaged(self, what: str, nbytes: int, payload: int, nak: str = "") -> AttemptFailed:
        self.sizer.failed(nbytes, payload)
        error = (
            ProtocolError(f"chip at {self.link.description} could not read {what}: {nak}")
            if nak
            else integrity_error(what, self.link)
        )
        return AttemptFailed(error, reopen=False, alive=True, damaged=True)

    def _destroyed(
        self, what: str, junk: bytes, damaged: bool, alive: bool, nbytes: int, payload: int, n_copies: int = 1
    ) -> AttemptFailed:
        if damaged or alive or not looks_foreign(junk):
            for _ in range(n_copies):
                self.sizer.failed(nbytes, payload)
        error = (
            integrity_error(what, self.link)
            if damaged or not looks_foreign(junk)
            else garbage_error(what, junk, self.link)
        )
        return AttemptFailed(error, reopen=False, junk=junk, alive=alive, damaged=True)

    # --- replies ---------------------------------------------------------------------------
    def reply_of(self, frame: p.Frame, what: str) -> p.Reply:
        try:
            return p.parse_reply(frame.body)
        except ProtocolError as exc:
            raise ProtocolError(f"chip at {self.link.description} sent a malformed reply to {what}: {exc}") from exc

    def ok_args(self, reply: p.Reply, what: str, n: int | None) -> list[p.Arg]:
        """The arguments of an OK reply (exactly ``n`` unless None); errors become exceptions."""
        if reply.status == p.OK:
            if n is not None and len(reply.args) != n:
                raise ProtocolError(f"chip answered {what} with {len(reply.args)} values, expected {n}")
            return reply.args
        code, message = reply.error
        desc = self.link.description
        if code == p.ErrorCode.DATA_OUT_OF_RANGE:
            raise SafetyLimitError(f"chip at {desc} refused {what}: {message}; nothing was applied")
        if code == p.ErrorCode.UNKNOWN_SESSION:
            raise ChipIOError(
                f"chip at {desc} no longer knows this session: it restarted (losing its state) or "
                f"{MAX_SESSIONS_HINT} other clients opened it since; open it again and start over"
            )
        raise ProtocolError(f"chip at {desc} answered {what} with error {code}: {message}")
