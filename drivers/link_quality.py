"""What the driver learns about its link from every exchange, and the sizes it derives.

* :class:`ChunkSizer` — the per-byte damage rate λ, and from it the bulk frame size (about
  ``1/λ`` payload bytes, the throughput optimum).
* :class:`GapClock` — the longest pause inside good replies, and from it how long a silence
  mid-frame must last before the rest of the frame is judged lost.
* :func:`quiet_s` and :func:`copies` — the two decisions of one attempt that follow from
  those estimates: when to give up on a frame that stopped, and how many copies of a
  command to send at once.

Pure arithmetic: nothing here touches the link (see ``docs/protocol.md`` §5 and §7).
"""

from __future__ import annotations

import math

#: Bounds of the quiet time that ends an attempt once bytes stopped mid-frame or after
#: garbage (s); in between it follows the gaps seen inside good replies (:class:`GapClock`).
SETTLE_MIN_S = 0.002
SETTLE_S = 0.05
#: Largest command bytes, and expected reply bytes, in flight in one bulk window (or in the
#: copies of one command): below what a pty (20 KiB each way on Linux) or a socket buffers,
#: so neither end blocks for long.
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


def quiet_s(sizer: ChunkSizer, gaps: GapClock, nbytes: int, timeout_s: float) -> float:
    """How long a silence mid-frame (or after garbage) must last to end an attempt of
    ``nbytes``: the learnt gap where damage is likely; a quarter of the timeout where
    the link looks clean, since there a pause is more likely a busy peer than a lost
    byte, and judging it lost would cost a resend of the whole frame."""
    if sizer.error_rate * nbytes > NOISY_EXCHANGE:
        return gaps.quiet_s
    return timeout_s / 4


def copies(sizer: ChunkSizer, frame_bytes: int, reply_bytes: int) -> int:
    """How many copies of a command to send at once: on a noisy link one round trip
    should succeed about ``ROUND_SUCCESS`` of the time (each copy passes with
    ``(1 - λ)^n``; the chip answers copies of a transaction from its reply cache)."""
    q = math.exp(-sizer.error_rate * (frame_bytes + reply_bytes))
    if q >= ROUND_SUCCESS:
        return 1
    k = math.ceil(math.log(1.0 - ROUND_SUCCESS) / math.log1p(-q)) if q > 0 else MAX_COPIES
    fit = max(1, min(WINDOW_BYTES // max(frame_bytes, 1), WINDOW_REPLY_BYTES // max(reply_bytes, 1)))
    return max(1, min(k, MAX_COPIES, fit))
