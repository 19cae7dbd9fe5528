"""CRC-32 of a readout row, computed on two cores while the row is written.

``zlib.crc32`` releases the GIL for large buffers. :meth:`RowCrc.start` hands the head of the
row (:data:`HEAD_FRACTION` of it) to a worker thread at once; the writer thread writes the row
to HDF5 meanwhile, then :meth:`PendingCrc.result` checksums the tail on the calling thread and
joins the two with zlib's ``crc32_combine`` (ported below: the CRC of a concatenation from the
CRCs of its parts, Mark Adler's zlib ``crc32.c``). An append then costs about the larger of
(write + tail) and head instead of write + whole CRC. The value is exactly ``zlib.crc32(row,
seed)`` (tests/test_crc_worker.py); rows under :data:`INLINE_BELOW` bytes are checksummed
inline, where a thread would cost more than it saves.
"""

from __future__ import annotations

import functools
import zlib
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

#: Rows smaller than this (bytes) are checksummed inline.
INLINE_BELOW = 1 << 16
#: Share of a row the worker checksums; the writer thread, busy writing first, does the rest.
HEAD_FRACTION = 0.75
#: CRC-32 (IEEE 802.3) polynomial, bit-reversed, as zlib uses it.
_POLY = 0xEDB88320


def _multmodp(a: int, b: int) -> int:
    """a·b modulo the CRC polynomial (bit-reversed representation; zlib's multmodp)."""
    m = 1 << 31
    p = 0
    while True:
        if a & m:
            p ^= b
            if not a & (m - 1):
                return p
        m >>= 1
        b = (b >> 1) ^ _POLY if b & 1 else b >> 1


def _x2n_table() -> list[int]:
    table = [1 << 30]  # x^1
    for _ in range(31):
        table.append(_multmodp(table[-1], table[-1]))
    return table


_X2N = _x2n_table()


@functools.lru_cache(maxsize=16)
def _shift_operator(n_bytes: int) -> int:
    """x^(8·n_bytes) modulo the polynomial (zlib's x2nmodp(n, 3))."""
    p = 1 << 31  # x^0
    k = 3
    while n_bytes:
        if n_bytes & 1:
            p = _multmodp(_X2N[k & 31], p)
        n_bytes >>= 1
        k += 1
    return p


def crc32_combine(crc1: int, crc2: int, len2: int) -> int:
    """CRC-32 of A‖B from crc1 = crc32(A, seed), crc2 = crc32(B) and len2 = len(B) bytes."""
    return _multmodp(_shift_operator(len2), crc1) ^ crc2


class PendingCrc:
    """A row's CRC being computed; :meth:`result` finishes it on the calling thread."""

    def __init__(self, head: Future[int] | int, tail: memoryview | None) -> None:
        self._head = head
        self._tail = tail

    def result(self) -> int:
        """``zlib.crc32(row, seed)``, unmasked (blocks until the worker's part is done)."""
        if self._tail is None:
            return self._head if isinstance(self._head, int) else self._head.result()
        tail_crc = zlib.crc32(self._tail)  # runs alongside the worker's head
        head_crc = self._head if isinstance(self._head, int) else self._head.result()
        return crc32_combine(head_crc, tail_crc, len(self._tail))

    def wait(self) -> None:
        """Return once the worker no longer reads the row (whatever happened)."""
        if isinstance(self._head, Future):
            self._head.exception()


class RowCrc:
    """One worker thread, made on first use; :meth:`close` ends it (idempotent)."""

    def __init__(self) -> None:
        self._pool: ThreadPoolExecutor | None = None

    def start(self, row: np.ndarray, seed: int) -> PendingCrc:
        """Start ``zlib.crc32(row, seed)``; the caller must not change ``row`` until
        :meth:`PendingCrc.result` or :meth:`PendingCrc.wait` has returned."""
        data = memoryview(np.ascontiguousarray(row)).cast("B")
        if data.nbytes < INLINE_BELOW:
            return PendingCrc(zlib.crc32(data, seed), None)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="recording-crc")
        cut = int(data.nbytes * HEAD_FRACTION)
        return PendingCrc(self._pool.submit(zlib.crc32, data[:cut], seed), data[cut:])

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
