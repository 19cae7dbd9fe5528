"""What a :class:`~drivers.client.RemoteChip` is told about its link, and what it counts.

:class:`LinkSettings` holds the timeouts, the retry budget and the chunk bounds (from the
chip URI); :class:`LinkStats` the cumulative cost of the link; :class:`Sleeper` is where
the driver pauses, so tests can pass a simulated clock. The policies that use them live in
:mod:`drivers.session` (retries, reconnects) and :mod:`drivers.bulk` (windows).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from drivers import protocol as p
from harness.errors import ConfigError

#: Failed attempts a command may take while the chip keeps answering (damaged), per retry.
#: At 2 % damaged bytes a 130-byte exchange passes 7 % of the time: 576 attempts fail in a
#: row with probability 1e-18.
NOISY_ATTEMPTS_PER_RETRY = 64
#: Default of ``stall=`` (s): a link on which nothing got through for this long is given
#: up on with one line naming its quality (docs/protocol.md §7).
STALL_S = 120.0
#: Default of ``giveup=`` (s): a link whose frame error rate stays above ``fer=`` this long
#: is given up on, even though its commands still complete (docs/protocol.md §7).
GIVEUP_S = 120.0
#: Default of ``fer=``: the frame error rate above which a link counts as collapsed. Above the
#: 63 % that the chunk sizer aims at on any noisy link (frames of ``1/λ`` bytes pass with
#: probability ``1/e``; §5), so a link that is noisy but efficient is never given up on; a link
#: damaging more than about 1 % of its bytes crosses it (its framing alone then fails).
MAX_FER = 0.9
#: Longest interval between link-quality lines while the link is failing (s); a quarter
#: of the stall or give-up bound when that is shorter.
NOTICE_S = 10.0


class Sleeper:
    """Where the driver pauses (between reopen attempts): ``time.sleep`` by default;
    tests pass a simulated clock."""

    def __call__(self, seconds: float) -> None:
        time.sleep(seconds)


@dataclass(frozen=True)
class LinkSettings:
    """Timeouts, retry budget and chunk bounds of a :class:`~drivers.client.RemoteChip`.

    Attributes:
        timeout_s: longest wait for one reply (s); also bounds each write.
        retries: attempts in a row without any sign of the chip (silence, a broken link,
            bytes that are not frames) tolerated per command before its error is raised;
            each may include a reconnect. A damaged answer is a sign of the chip: those
            attempts have a budget of ``NOISY_ATTEMPTS_PER_RETRY * (retries + 1)``.
        max_chunk: largest bulk payload per frame (bytes).
        min_chunk: smallest chunk the adaptive sizing shrinks to (bytes).
        stall_s: longest time without any command or bulk window getting through before
            the link is given up on (``ChipTimeoutError`` naming its frame error rate).
        giveup_s: longest time the frame error rate may stay above ``max_fer`` before the
            link is given up on, though commands still complete (``ChipTimeoutError``).
        max_fer: frame error rate (failed frames per frame, in (0, 1]) above which the link
            counts as collapsed; 1 never gives up on the rate.
    """

    timeout_s: float = 2.0
    retries: int = 8
    max_chunk: int = 16 * 2**20
    min_chunk: int = 16
    stall_s: float = STALL_S
    giveup_s: float = GIVEUP_S
    max_fer: float = MAX_FER

    def __post_init__(self) -> None:
        if not (0.0 < self.stall_s <= 86400.0):
            raise ConfigError(f"stall bound {self.stall_s} s must be in (0, 86400] s; fix stall= in the chip URI")
        if not (0.0 < self.giveup_s <= 86400.0):
            raise ConfigError(f"give-up bound {self.giveup_s} s must be in (0, 86400] s; fix giveup= in the chip URI")
        if not (0.0 < self.max_fer <= 1.0):
            raise ConfigError(
                f"frame error rate bound {self.max_fer} must be in (0, 1] (a fraction; 1 = never give up on it); "
                "fix fer= in the chip URI"
            )
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

    @property
    def notice_s(self) -> float:
        return min(NOTICE_S, self.stall_s / 4, self.giveup_s / 4)


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
