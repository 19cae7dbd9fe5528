"""Says when a link's throughput collapses, and gives up on a link that stalled or collapsed.

:class:`LinkWatch` is told when a chip command begins and completes (a command with
all of its bulk transfers: a whole RESET, SET or READ), of every frame that got through
(a reply, a bulk window's answered frames, with their payload bytes) and of every attempt
that failed. While frames fail it emits, at most every ``notice_s``, one line with the
frame error rate measured since the last line. It raises
:class:`~harness.errors.ChipTimeoutError`, one line naming the link quality
(``docs/protocol.md`` §7), when

* **stalled**: a command has not completed for ``stall_s`` (URI ``stall=``, default 120 s).
  Progress is a completed command, not a frame: a link that moves a frame now and then but
  never finishes a READ is stalled;
* **collapsed**: the frame error rate of every window (the interval between two lines) has
  been above ``max_fer`` (URI ``fer=``, default 0.9) for ``giveup_s`` (URI ``giveup=``,
  default 120 s), though commands still complete — the 3 % corruption of issue 19, where
  each command takes seconds and the whole job hours. One window at or below ``max_fer``
  starts the count again.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from harness.errors import ChipTimeoutError


def stderr_notice(line: str) -> None:
    """Default notice sink: one line on stderr (the CLI's channel for warnings)."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


class LinkWatch:
    """Progress and frame-error bookkeeping of one link (see module docstring).

    Args:
        description: the link, for messages.
        stall_s: longest time one command may take, bulk transfers included (s).
        notice_s: shortest interval between link-quality lines (s); also the window over
            which the frame error rate is judged against ``max_fer``.
        notice: where lines go (default: stderr).
        clock: monotonic seconds (tests may pass a simulated one; also settable as ``clock``).
        giveup_s: longest time the frame error rate may stay above ``max_fer`` (s).
        max_fer: frame error rate above which a window counts as collapsed, in (0, 1].
    """

    def __init__(
        self,
        description: str,
        stall_s: float,
        notice_s: float,
        notice: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        giveup_s: float = float("inf"),
        max_fer: float = 1.0,
    ) -> None:
        self.description = description
        self.stall_s = stall_s
        self.notice_s = notice_s
        self.giveup_s = giveup_s
        self.max_fer = max_fer
        self.notice = notice or stderr_notice
        self.clock = clock
        now = clock()
        self._progress_t = now
        self._window_t = now
        self._ok = 0  # frames through since the last line
        self._failed = 0  # attempts failed since the last line
        self._reconnects0 = 0  # reconnects before the last line
        self.total_ok = 0
        self.total_failed = 0
        self.total_bytes = 0  # payload bytes of the frames that got through
        self.commands = 0  # commands completed
        self.lines = 0
        # the collapse that has lasted since _bad.t (None: the last window was fine), and
        # the counters when it began: (t, ok, failed, bytes, commands, reconnects)
        self._bad: tuple[float, int, int, int, int, int] | None = None
        self._window0 = (now, 0, 0, 0, 0, 0)  # the same counters when this window began

    @property
    def frame_error_rate(self) -> float:
        """Failed attempts per attempt over the whole link's life (0 before any)."""
        n = self.total_ok + self.total_failed
        return self.total_failed / n if n else 0.0

    def begin(self) -> None:
        """A chip command starts: its stall clock starts."""
        self._progress_t = self.clock()

    def done(self) -> None:
        """A chip command completed: progress."""
        self._progress_t = self.clock()
        self.commands += 1

    def passed(self, frames: int = 1, nbytes: int = 0) -> None:
        """``frames`` frames carrying ``nbytes`` of payload got through (counted for the
        error rate and the throughput; not yet progress)."""
        self._ok += frames
        self.total_ok += frames
        self.total_bytes += nbytes

    def failed(self, what: str, reconnects: int) -> None:
        """One attempt failed; say so when due, give up when stalled.

        Raises:
            ChipTimeoutError: the command has not completed for ``stall_s``.
        """
        self._failed += 1
        self.total_failed += 1
        self.check(what, reconnects)

    def check(self, what: str, reconnects: int) -> None:
        """Emit a line when one is due; raise when the link stalled or collapsed (see
        :meth:`failed`)."""
        now = self.clock()
        self._check_collapse(now, what, reconnects)
        stalled_s = now - self._progress_t
        if stalled_s >= self.stall_s:
            raise ChipTimeoutError(
                f"link to {self.description} made no progress for {stalled_s:.0f} s ({what} not done): "
                f"{self._quality(self.total_ok, self.total_failed, reconnects)}; the link is too poor to use "
                f"(measured limits: docs/protocol.md §7); fix the cable or line, or raise stall= in the chip URI"
            )
        if self._failed and now - self._window_t >= self.notice_s:
            self.lines += 1
            self.notice(
                f"link: {self.description}: {self._quality(self._ok, self._failed, reconnects - self._reconnects0)} "
                f"in the last {now - self._window_t:.0f} s; {what} running for {stalled_s:.0f} s "
                f"(gives up after {self.stall_s:g} s{self._giveup_note()})"
            )
            self._close_window(now, reconnects)

    def _giveup_note(self) -> str:
        if self.max_fer >= 1.0 or self.giveup_s == float("inf"):
            return ""
        if self._bad is None:
            return f", or after {self.giveup_s:g} s above {100 * self.max_fer:g} % frame errors"
        return f", or at {self.giveup_s:g} s above {100 * self.max_fer:g} % frame errors: now {self.clock() - self._bad[0]:.0f} s"

    def _counters(self, now: float, reconnects: int) -> tuple[float, int, int, int, int, int]:
        return (now, self.total_ok, self.total_failed, self.total_bytes, self.commands, reconnects)

    def _window_bad(self) -> bool:
        n = self._ok + self._failed
        return bool(n) and self._failed > self.max_fer * n

    def _close_window(self, now: float, reconnects: int) -> None:
        """A window ends (a line was due): judge its frame error rate, start the next."""
        if not self._window_bad():
            self._bad = None
        elif self._bad is None:
            self._bad = self._window0
        self._window_t = now
        self._ok = self._failed = 0
        self._reconnects0 = reconnects
        self._window0 = self._counters(now, reconnects)

    def _check_collapse(self, now: float, what: str, reconnects: int) -> None:
        """Raise when every window since ``_bad`` (and the current one so far) was above
        ``max_fer`` for ``giveup_s``."""
        since = self._bad if self._bad is not None else self._window0
        if now - since[0] < self.giveup_s or not self._window_bad():
            return
        t0, ok0, failed0, bytes0, commands0, reconnects0 = since
        span_s = max(now - t0, 1e-9)
        ok, failed = self.total_ok - ok0, self.total_failed - failed0
        raise ChipTimeoutError(
            f"link to {self.description} too poor to use ({what} running): "
            f"{self._quality(ok, failed, reconnects - reconnects0)}, "
            f"{(self.total_bytes - bytes0) / span_s:.0f} B/s of payload through and "
            f"{self.commands - commands0} commands done in the last {span_s:.0f} s (frame error rate above "
            f"{self.max_fer:g} for over {self.giveup_s:g} s; measured limits: "
            f"docs/protocol.md §7); fix the cable or line, or raise giveup= or fer= in the chip URI"
        )

    @staticmethod
    def _quality(ok: int, failed: int, reconnects: int) -> str:
        n = ok + failed
        rate = failed / n if n else 0.0
        return f"frame error rate {100 * rate:.1f} % ({failed} of {n} frames failed), {reconnects} reconnects"


__all__ = ["LinkWatch", "stderr_notice"]
