"""Says when a link's throughput collapses, and gives up on a link that stalled.

:class:`LinkWatch` is told when a chip command begins and completes (a command with
all of its bulk transfers: a whole RESET, SET or READ), of every frame that got through
(a reply, a bulk window's answered frames) and of every attempt that failed. While frames
fail it emits, at most every ``notice_s``, one line with the frame error rate measured
since the last line; when a command has not completed for ``stall_s`` (URI ``stall=``,
default 120 s) it raises :class:`~harness.errors.ChipTimeoutError`, one line naming the
link quality (``docs/protocol.md`` §7). Progress is a completed command, not a frame:
a link that moves a frame now and then but never finishes a READ is stalled.
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
        notice_s: shortest interval between link-quality lines (s).
        notice: where lines go (default: stderr).
        clock: monotonic seconds (tests may pass a simulated one).
    """

    def __init__(
        self,
        description: str,
        stall_s: float,
        notice_s: float,
        notice: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.description = description
        self.stall_s = stall_s
        self.notice_s = notice_s
        self.notice = notice or stderr_notice
        self._clock = clock
        now = clock()
        self._progress_t = now
        self._window_t = now
        self._ok = 0  # frames through since the last line
        self._failed = 0  # attempts failed since the last line
        self._reconnects0 = 0  # reconnects before the last line
        self.total_ok = 0
        self.total_failed = 0
        self.lines = 0

    @property
    def frame_error_rate(self) -> float:
        """Failed attempts per attempt over the whole link's life (0 before any)."""
        n = self.total_ok + self.total_failed
        return self.total_failed / n if n else 0.0

    def begin(self) -> None:
        """A chip command starts: its stall clock starts."""
        self._progress_t = self._clock()

    def done(self) -> None:
        """A chip command completed: progress."""
        self._progress_t = self._clock()

    def passed(self, frames: int = 1) -> None:
        """``frames`` frames got through (counted for the error rate; not yet progress)."""
        self._ok += frames
        self.total_ok += frames

    def failed(self, what: str, reconnects: int) -> None:
        """One attempt failed; say so when due, give up when stalled.

        Raises:
            ChipTimeoutError: the command has not completed for ``stall_s``.
        """
        self._failed += 1
        self.total_failed += 1
        self.check(what, reconnects)

    def check(self, what: str, reconnects: int) -> None:
        """Emit a line when one is due; raise when the link stalled (see :meth:`failed`)."""
        now = self._clock()
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
                f"(gives up after {self.stall_s:g} s)"
            )
            self._window_t = now
            self._ok = self._failed = 0
            self._reconnects0 = reconnects

    @staticmethod
    def _quality(ok: int, failed: int, reconnects: int) -> str:
        n = ok + failed
        rate = failed / n if n else 0.0
        return f"frame error rate {100 * rate:.1f} % ({failed} of {n} frames failed), {reconnects} reconnects"


__all__ = ["LinkWatch", "stderr_notice"]
