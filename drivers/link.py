"""The byte-stream seam under :class:`~drivers.client.RemoteChip`.

A link is the one thing a transport implements (serial port, VISA resource, a scripted
exchange in tests). It moves bytes and nothing else: framing, integrity, retries and
reconnects live in :mod:`drivers.session` (under :mod:`drivers.client`), once, for every
transport.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from drivers.protocol import Piece


@runtime_checkable
class Link(Protocol):
    """A bidirectional byte stream to a chip.

    Errors: every method raises :class:`~harness.errors.ChipIOError` (chained ``from`` the
    transport's own exception) when the link is broken — unplugged, reset, closed by the
    other end — and :class:`~harness.errors.ConfigError` when it cannot exist at all
    (malformed port or resource name). Nothing here retries.
    """

    @property
    def description(self) -> str:
        """Where the link goes, for messages (``/dev/ttyUSB0``, ``TCPIP::host::5025::SOCKET``)."""
        ...

    def open(self) -> None:
        """Open (or reopen) the link; a no-op if open."""
        ...

    def close(self) -> None:
        """Close the link (idempotent); buffered input is dropped."""
        ...

    def write(self, pieces: list[Piece], timeout_s: float) -> None:
        """Send all pieces, in order, within ``timeout_s`` (ChipTimeoutError otherwise)."""
        ...

    def read(self, n: int, timeout_s: float, partial: bool = False) -> bytes:
        """Up to ``n`` bytes: returns once ``n`` bytes arrived, or with what arrived (maybe
        ``b""``) when ``timeout_s`` has passed or the stream paused with part of them.
        With ``partial``, returns as soon as any bytes are available."""
        ...

    def discard_input(self) -> None:
        """Drop whatever input is already buffered, without waiting (best effort)."""
        ...
