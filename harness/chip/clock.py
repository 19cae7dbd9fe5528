"""Clocks for chips: simulated (default on the virtual chip) and wall time."""

from __future__ import annotations

import math
import time

from harness.errors import ConfigError


class SimulatedClock:
    """A clock that only moves when told to: ``wait_until`` jumps, nothing sleeps.

    A 20-hour drift session on the virtual chip finishes in seconds, while the physics
    sees the scheduled times.
    """

    def __init__(self, start_s: float = 0.0) -> None:
        self._t = float(start_s)

    def now(self) -> float:
        return self._t

    def advance(self, dt_s: float) -> None:
        """Move time forward by ``dt_s`` seconds (``dt_s >= 0``)."""
        if not (dt_s >= 0.0 and math.isfinite(dt_s)):
            raise ConfigError(f"cannot advance a clock by {dt_s} s; time only moves forward")
        self._t += dt_s

    def wait_until(self, t_s: float) -> None:
        if not math.isfinite(t_s):
            raise ConfigError(f"cannot wait until t = {t_s} s")
        if t_s > self._t:
            self._t = float(t_s)

    def set(self, t_s: float) -> None:
        """Restore the clock to ``t_s`` (used when a chip's state is restored)."""
        self._t = float(t_s)


class WallClock:
    """Real time, in seconds since the clock was created (plus ``start_s``)."""

    def __init__(self, start_s: float = 0.0) -> None:
        self._origin = time.monotonic() - float(start_s)

    def now(self) -> float:
        return time.monotonic() - self._origin

    def advance(self, dt_s: float) -> None:
        """Wall time cannot be advanced by fiat; operations simply take real time."""

    def wait_until(self, t_s: float) -> None:
        while True:
            remaining = t_s - self.now()
            if remaining <= 0:
                return
            time.sleep(min(remaining, 1.0))

    def set(self, t_s: float) -> None:
        self._origin = time.monotonic() - float(t_s)
