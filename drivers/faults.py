"""Fault injection for the emulator: what a bad cable, a noisy line or a flaky host does.

Seeded and independent of the chip's seed, so a faulty run is reproducible and the chip
sees exactly the calls of a fault-free run (that is what the fault tests compare).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from harness.errors import ConfigError


@dataclass(frozen=True)
class FaultSpec:
    """Faults applied by the emulator to the bytes it receives and sends.

    Attributes:
        corrupt_rate: probability that a byte (either direction) is replaced by another.
        drop_rate: probability that a byte (either direction) is lost.
        delay_s: extra delay before every reply (s).
        disconnect_every: hang up after executing every N-th command, before its reply
            leaves (0 = never). The chip keeps its state; the client must reconnect.
        seed: seed of the fault generator.
    """

    corrupt_rate: float = 0.0
    drop_rate: float = 0.0
    delay_s: float = 0.0
    disconnect_every: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("corrupt_rate", "drop_rate"):
            value = getattr(self, name)
            if not (0.0 <= value < 1.0):
                raise ConfigError(f"{name.replace('_', ' ')} {value} must be in [0, 1) (a fraction of bytes)")
        if not (0.0 <= self.delay_s <= 60.0 and math.isfinite(self.delay_s)):
            raise ConfigError(f"reply delay {self.delay_s} s must be in [0, 60] s")
        if self.disconnect_every < 0:
            raise ConfigError(f"disconnect-every {self.disconnect_every} must be >= 0 (0 = never)")

    @property
    def mangles(self) -> bool:
        return self.corrupt_rate > 0 or self.drop_rate > 0


class FaultInjector:
    """Applies a :class:`FaultSpec` to byte streams and counts commands for hang-ups."""

    def __init__(self, spec: FaultSpec) -> None:
        self.spec = spec
        self._rng = np.random.default_rng(spec.seed)
        self._commands = 0
        self.corrupted = 0
        self.dropped = 0

    def mangle(self, data: bytes) -> bytes:
        """``data`` with bytes corrupted and dropped at the spec's rates."""
        if not data or not self.spec.mangles:
            return data
        arr = np.frombuffer(data, dtype=np.uint8).copy()
        if self.spec.corrupt_rate:
            hit = np.flatnonzero(self._rng.random(arr.size) < self.spec.corrupt_rate)
            # adding 1..255 modulo 256 always changes the byte
            arr[hit] += self._rng.integers(1, 256, hit.size, dtype=np.uint8)
            self.corrupted += hit.size
        if self.spec.drop_rate:
            keep = self._rng.random(arr.size) >= self.spec.drop_rate
            self.dropped += int(arr.size - keep.sum())
            arr = arr[keep]
        return arr.tobytes()

    def hang_up_now(self) -> bool:
        """Count one executed command; True when the link should drop before its reply."""
        self._commands += 1
        every = self.spec.disconnect_every
        return bool(every) and self._commands % every == 0
