"""Bulk transfers: staging uploads (``BUF:WRIT``) and fetching results (``DATA:FETC?``)
in windows of chunk-sized frames over a :class:`~drivers.session.LinkSession`.

Both commands are idempotent, so a window of frames goes out in one write (at most
``WINDOW_BYTES`` of commands and ``WINDOW_REPLY_BYTES`` of expected replies); the answered
pieces are done and only the rest go out again, re-split at the chunk size the session's
:class:`~drivers.link_quality.ChunkSizer` now gives (selective repeat: a noisy link costs
bytes, not round trips). See ``docs/protocol.md`` §5, "Bulk windows".
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable

from drivers import protocol as p
from drivers.attempts import AttemptFailed, RetryBudget, integrity_error, silence_error
from drivers.link_quality import WINDOW_BYTES, WINDOW_REPLY_BYTES, GapClock, copies, quiet_s
from drivers.session import LinkSession
from harness.errors import ChipBusyError, ChipIOError, ProtocolError


class BulkTransfer:
    """Moves large payloads to and from the chip for one transaction tag at a time.

    Errors are those of :meth:`LinkSession.exchange <drivers.session.LinkSession.exchange>`,
    plus ProtocolError when ``noisy_attempts`` windows in a row go unanswered."""

    def __init__(self, session: LinkSession) -> None:
        self._session = session
        # pauses inside a window's stream of replies differ from those inside one reply
        self._gaps = GapClock(session.settings.timeout_s)

    def upload(self, tag: int, payload: bytes) -> None:
        """Stage ``payload`` on the chip for transaction ``tag`` in windows of chunks."""
        mv = memoryview(payload)
        txn = p.fmt_tag(tag)

        def frame(offset: int, count: int) -> list[p.Piece]:
            return p.build_body(p.BUFFER_WRITE, [txn, str(offset), p.block(mv[offset : offset + count])])

        def accept(offset: int, count: int, reply: p.Reply) -> None:
            self._session.ok_args(reply, p.BUFFER_WRITE, 0)

        self._windows(p.BUFFER_WRITE, len(payload), frame, accept, reply_bytes=lambda count: 2)

    def fetch(self, tag: int, nbytes: int) -> bytes:
        """Fetch a stored result of ``nbytes`` in windows of chunks."""
        out = bytearray(nbytes)
        txn = p.fmt_tag(tag)

        def frame(offset: int, count: int) -> list[p.Piece]:
            return p.build_body(p.FETCH, [txn, str(offset), str(count)])

        def accept(offset: int, count: int, reply: p.Reply) -> None:
            (data,) = self._session.ok_args(reply, p.FETCH, 1)
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
        session = self._session
        todo: deque[tuple[int, int]] = deque([(0, nbytes)] if nbytes else [])
        budget = RetryBudget(session.settings)
        while todo:
            window: dict[int, tuple[int, int, int]] = {}  # tag -> offset, count, frame bytes
            try:
                session.ensure_link()
                chunk = session.sizer.chunk
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
                    window[session.next_tag()] = (offset, take, cost_out + cost_in)
                    out_bytes += cost_out
                    in_bytes += cost_in
                answered = self._run_window(what, window, frame, accept)
            except AttemptFailed as fail:
                session.stats.failures += 1
                session.after_failure(fail)
                todo = merged(todo, window.values())
                if budget.spent(fail):
                    raise fail.error from fail.error.__cause__
                session.watch.failed(what, session.stats.reconnects)
                continue
            todo = merged(todo, (window[t] for t in window if t not in answered))
            if answered:
                budget.progress()
                session.watch.passed(len(answered), sum(window[t][1] for t in answered))
                if len(answered) < len(window):
                    for _ in range(len(window) - len(answered)):
                        session.watch.failed(what, session.stats.reconnects)
                continue
            silent = AttemptFailed(integrity_error(what, session.link), reopen=False, alive=True, damaged=True)
            session.stats.failures += 1
            session.watch.failed(what, session.stats.reconnects)
            session.after_failure(silent)
            if budget.spent(silent):
                raise ProtocolError(
                    f"link to {session.link.description} is too noisy: {session.settings.noisy_attempts} windows of "
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
        session = self._session
        link, parser, stats, sizer = session.link, session.parser, session.stats, session.sizer
        timeout = session.settings.timeout_s
        last_tag = max(window)
        pieces: list[p.Piece] = []
        for tag, (offset, count, _) in window.items():
            pieces += p.encode_frame(p.COMMAND, tag, frame(offset, count))
        # On a noisy link the window ends with copies of a tiny query: the chip answers in
        # order, so the first answer to it says every other answer is in or lost (no need
        # to wait for the line to go quiet).
        marker_bytes = p.FRAME_OVERHEAD + len(p.VERSION)
        marks = copies(sizer, marker_bytes, 64)
        if marks > 1:
            last_tag = session.next_tag()
            pieces += p.encode_frame(p.COMMAND, last_tag, p.build_body(p.VERSION)) * marks
        try:
            link.write(pieces, timeout)  # one write: one wake-up of the other end
        except ChipIOError as exc:
            raise AttemptFailed(exc, reopen=True) from exc
        stats.bytes_out += sum(len(x) for x in pieces)
        stats.bulk_frames += len(window)
        answered: set[int] = set()
        t0 = last_rx = time.perf_counter()
        deadline = t0 + timeout
        heard = False  # any byte since the window went out
        gap = 0.0
        quiet = quiet_s(sizer, self._gaps, sum(nbytes for _, _, nbytes in window.values()), timeout)
        while True:
            event = parser.next()
            if isinstance(event, int):
                now = time.perf_counter()
                end = last_rx + quiet if heard else deadline
                try:
                    data = link.read(max(event, 4096), max(0.0, end - now), partial=True)
                except ChipIOError as exc:
                    raise AttemptFailed(exc, reopen=True, alive=bool(answered)) from exc
                if not data and time.perf_counter() >= end:
                    if heard:
                        break  # quiet after the last answer: the rest of the window is lost
                    raise AttemptFailed(silence_error(what, link, timeout), reopen=True)
                if data:
                    now = time.perf_counter()
                    if heard:
                        gap = max(gap, now - last_rx)
                    heard = True
                    last_rx = now
                    stats.bytes_in += len(data)
                    parser.feed(data)
                continue
            if isinstance(event, p.Garbled):
                continue  # a damaged answer: its piece goes out again
            reply = session.reply_of(event, what)
            if reply.status == p.NAK:
                stats.naks += 1
                continue
            if reply.status == p.ERR and reply.error[0] == p.ErrorCode.BUSY:
                raise ChipBusyError(f"chip at {link.description} is busy: {reply.error[1]}")
            if event.tag == last_tag and marks > 1:
                break  # the marker: everything before it is answered or lost
            piece = window.get(event.tag)
            if piece is None or event.tag in answered:
                continue  # an answer to an earlier window or command
            accept(piece[0], piece[1], reply)
            answered.add(event.tag)
            if event.tag == last_tag or len(answered) == len(window):
                break  # the chip answers in order: everything before is answered or lost
        self._gaps.observe(gap)
        stats.exchanges += len(answered)
        lost = len(window) - len(answered)
        stats.bulk_lost += lost
        for tag, (_, count, nbytes) in window.items():
            if tag in answered:
                sizer.passed(nbytes)
            else:
                sizer.failed(nbytes, count)
        return answered


def merged(todo: deque[tuple[int, int]], back: Iterable[tuple[int, int, int]]) -> deque[tuple[int, int]]:
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
