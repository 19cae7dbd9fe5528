"""Durations as people write them: ``25s``, ``1.5h``, ``1d``, ``1mo``, ``1y`` (and lists of them).

Units (case-insensitive): ``s``; ``min``; ``h``; ``d``; ``w``; ``mo`` = 30 days; ``y`` = 365
days. Month and year follow the convention of the drift literature and of aihwkit's
examples (``t = 3600 * 24 * 30`` / ``3600 * 24 * 365``), so "1 month" and "1 year" mean the
same numbers here as in the AnalogNets paper's tables. A bare number is seconds. ``m`` is refused
as ambiguous (minute or month?).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from harness.errors import ConfigError

MINUTE_S = 60.0
HOUR_S = 3600.0
DAY_S = 86400.0
WEEK_S = 7 * DAY_S
#: 30 days (aihwkit examples, drift papers' "1 month").
MONTH_S = 30 * DAY_S
#: 365 days (aihwkit examples, drift papers' "1 year").
YEAR_S = 365 * DAY_S

#: Unit suffix → seconds.
UNITS_S: dict[str, float] = {
    "s": 1.0,
    "sec": 1.0,
    "min": MINUTE_S,
    "h": HOUR_S,
    "d": DAY_S,
    "w": WEEK_S,
    "mo": MONTH_S,
    "y": YEAR_S,
}

#: Largest units first: how :func:`format_duration` names a time.
_FORMAT_ORDER = (("y", YEAR_S), ("mo", MONTH_S), ("w", WEEK_S), ("d", DAY_S), ("h", HOUR_S), ("min", MINUTE_S))

_DURATION_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([a-zA-Z]*)\s*$")


def parse_duration(text: str) -> float:
    """Seconds in ``text`` (``"25s"``, ``"1.5h"``, ``"1mo"``, ``"90"``); always finite and >= 0.

    Raises:
        ConfigError: empty, negative, non-finite, malformed, or an unknown/ambiguous unit.
    """
    if text.strip().startswith("-"):
        raise ConfigError(f"duration {text!r} is negative; times count forward from the end of programming")
    m = _DURATION_RE.match(text)
    if not m:
        raise ConfigError(
            f"cannot read {text!r} as a duration; write a number and a unit, e.g. 25s, 1h, 1d, 1mo, 1y"
        )
    value = float(m.group(1))
    unit = m.group(2).lower() or "s"
    if unit == "m":
        raise ConfigError(f"unit 'm' in {text!r} is ambiguous; write 'min' (minutes) or 'mo' (months)")
    if unit not in UNITS_S:
        known = ", ".join(UNITS_S)
        raise ConfigError(f"unknown time unit {unit!r} in {text!r}; known units: {known}")
    seconds = value * UNITS_S[unit]
    if not math.isfinite(seconds):
        raise ConfigError(f"duration {text!r} is not a finite number of seconds")
    return seconds


def parse_durations(text: str | Sequence[str]) -> tuple[float, ...]:
    """Seconds of a comma-separated list (``"25s,1h,1d"``) or of a sequence of such strings.

    Raises:
        ConfigError: an empty list or any bad item (see :func:`parse_duration`).
    """
    items = text.split(",") if isinstance(text, str) else [p for t in text for p in t.split(",")]
    items = [t for t in (i.strip() for i in items) if t]
    if not items:
        raise ConfigError("no times given; write e.g. --times 25s,1h,1d,1mo,1y")
    return tuple(parse_duration(t) for t in items)


def format_duration(t_s: float, digits: int = 4) -> str:
    """The one way the harness shows a duration (tables, messages, progress, plot legends):
    the largest unit that keeps the number >= 1, ``digits`` significant digits, no space —
    ``25s``, ``0.35s``, ``1.03min``, ``20h``, ``1mo``, ``1.5d``. The label parses back with
    :func:`parse_duration` (exactly, for the round values it produces)."""
    t = float(t_s)
    if not math.isfinite(t):
        return f"{t}s"
    for unit, size in _FORMAT_ORDER:
        if abs(t) >= size:
            return f"{_num(t / size, digits)}{unit}"
    return f"{_num(t, digits)}s"


def _num(x: float, digits: int = 4) -> str:
    if x == round(x) and abs(x) < 1e6:
        return str(int(round(x)))
    return f"{x:.{digits}g}"


def format_bytes(n_bytes: float) -> str:
    """``1.49 TiB``, ``98.3 GiB``, ``512 B``: binary units, 3 significant digits."""
    n = float(n_bytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.3g} {unit}"
        n /= 1024
    raise AssertionError("unreachable")  # pragma: no cover
