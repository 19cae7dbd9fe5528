"""Deterministic Ctrl-C for every command (imports only the standard library: start-up).

Python turns SIGINT into a ``KeyboardInterrupt`` raised wherever the main thread happens to
be; raised inside a weakref or ``__del__`` callback it is printed ("Exception ignored in …")
and swallowed, and raised after the command's work it ends the process with status −2 and no
message. So the CLI installs one handler for the whole run (:func:`guard`):

* while the work runs (*armed*, the default) SIGINT raises ``KeyboardInterrupt`` as usual,
  which :func:`harness.commands.common.user_errors` turns into ``error: interrupted`` and
  exit 130 (outputs are written to temporary names and renamed when whole, so nothing
  half-written is left);
* every SIGINT is also *noted*; a noted interrupt that did not stop the work (it was
  swallowed, or it came after the work was done: :func:`disarm`) still ends the command with
  exit 130 and one line saying that the output is complete.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

#: Exit status of a command stopped by SIGINT (128 + SIGINT, as shells report it).
EXIT_INTERRUPTED = 130


class _State:
    armed = True
    seen = False


_STATE = _State()


def _on_sigint(signum: int, frame: Any) -> None:
    _STATE.seen = True
    if _STATE.armed:
        raise KeyboardInterrupt


def disarm() -> None:
    """The command's work (and every output file) is complete: a later SIGINT only notes."""
    _STATE.armed = False


def arm() -> None:
    """Work is starting: SIGINT raises ``KeyboardInterrupt``."""
    _STATE.armed = True


def was_interrupted() -> bool:
    """True once any SIGINT arrived during this run."""
    return _STATE.seen


def complete_but_interrupted() -> None:
    """If an interrupt arrived but did not stop the work, say so and exit 130."""
    if _STATE.seen:
        sys.stderr.write("error: interrupted after the work was complete; its output is whole\n")
        sys.stderr.flush()
        raise SystemExit(EXIT_INTERRUPTED)


@contextlib.contextmanager
def guard() -> Iterator[None]:
    """Install the handler for one CLI run (main thread only; a no-op elsewhere) and
    restore the previous one afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    _STATE.armed, _STATE.seen = True, False
    signal.signal(signal.SIGINT, _on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        _STATE.armed = True
