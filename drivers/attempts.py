"""How one attempt of an exchange fails, what the retry budget makes of it, and what the
user is told.

An *attempt* writes a frame and reads until its reply is in (:mod:`drivers.session`), or
sends one bulk window (:mod:`drivers.bulk`). One that fails in a way a retry may fix raises
:class:`AttemptFailed`, which says whether to reconnect first and whether the chip showed
itself; :class:`RetryBudget` decides when the failures of one command are enough to raise
the error they carry (``docs/protocol.md`` §7, "Retry budget"). The rest tells bytes that
are no frame apart: another instrument's text, or the remains of one of our frames.
"""

from __future__ import annotations

import re

from drivers import protocol as p
from drivers.link import Link
from drivers.link_settings import LinkSettings
from harness.errors import ChipTimeoutError, ProtocolError


class AttemptFailed(Exception):
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


class RetryBudget:
    """The retry budget of one command (or one bulk transfer): ``retries + 1`` dead
    attempts in a row, or ``noisy_attempts`` failed attempts while the chip answers."""

    def __init__(self, settings: LinkSettings) -> None:
        self._settings = settings
        self._dead = 0
        self._noisy = 0

    def spent(self, fail: AttemptFailed) -> bool:
        if fail.alive:
            self._dead = 0
            self._noisy += 1
        else:
            self._dead += 1
        return self._dead > self._settings.retries or self._noisy > self._settings.noisy_attempts

    def progress(self) -> None:
        self._dead = 0
        self._noisy = 0


# --- the errors an attempt carries ---------------------------------------------------------
def integrity_error(what: str, link: Link) -> ProtocolError:
    return ProtocolError(f"reply to {what} from {link.description} failed its integrity check")


def garbage_error(what: str, junk: bytes, link: Link) -> ProtocolError:
    # Only a serial link has a baud rate to get wrong.
    baud = getattr(link, "baudrate", None)
    baud_hint = f", at the right baud rate (now {baud})" if baud is not None else ""
    return ProtocolError(
        f"no valid reply to {what} from {link.description}, only bytes that are not protocol frames "
        f"(first: {junk[:40]!r}); is this a PCM test chip{baud_hint}?"
    )


def silence_error(what: str, link: Link, timeout_s: float) -> ChipTimeoutError:
    return ChipTimeoutError(
        f"no reply to {what} from {link.description} within {timeout_s:g} s; check that "
        "the chip is powered and connected, or raise timeout= in the chip URI"
    )


def timed_out(what: str, junk: bytes, alive: bool, link: Link, timeout_s: float) -> AttemptFailed:
    """Nothing that completes a reply within the timeout: garbage, or silence; reconnect."""
    if junk:
        return AttemptFailed(garbage_error(what, junk, link), reopen=True, junk=junk, alive=alive)
    return AttemptFailed(silence_error(what, link, timeout_s), reopen=True, alive=alive)


# --- bytes that are no frame ---------------------------------------------------------------
def looks_foreign(junk: bytes) -> bool:
    """Whether bytes outside any frame look like another instrument's text reply, rather
    than one of our frames that lost its marker."""
    text = junk.strip()
    return (
        bool(text)
        and all(32 <= c < 127 for c in text)
        and b"<" not in text
        and p.MANUFACTURER.encode() not in text
        and not has_frame_trace(junk)
    )


def has_frame_trace(junk: bytes) -> bool:
    """Whether junk holds the remains of one of our frames (hex header fields, a trailer)."""
    return _FRAME_TRACE_RE.search(junk) is not None


#: What survives of a frame whose marker was destroyed: the header's hex fields or the trailer.
_FRAME_TRACE_RE = re.compile(rb"[0-9A-F]{8} [0-9A-F]{8}| [0-9A-F]{8}\n")
