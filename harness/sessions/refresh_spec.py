"""The ``[refresh]`` table of a session file, parsed once into a frozen :class:`RefreshSpec`.

A refresh session re-programs the model's cells (write-verify, as the first programming)
when a rule fires after a readout::

    [refresh]
    below_pp = 2.0            # re-program when the monitor accuracy has fallen by more than
                              # this many percentage points below its value at the first read
                              # of the current programming epoch ...
    # every = "1mo"           # ... or periodically: once a read finds the epoch this old
    reference = "epoch"       # below_pp against the first read of the current epoch ("epoch",
                              # the default) or of the session ("session": the accuracy of
                              # the freshly programmed chip, kept across refreshes)
    monitor_examples = 128    # labelled examples of the model dataset's TRAINING split
    monitor_seed = 0          # draws them (fixed: the same set at every read and on resume)
    monitor_bits = 8          # ADC/DAC bits of the monitor's CiM evaluation (default: the
                              # model's trained bits, else 8)
    monitor_gdc = true        # global drift compensation in the monitor's evaluation

Exactly one of ``below_pp`` and ``every`` is given. Rules that would re-program on every
read are refused here, before anything is programmed: ``below_pp`` under the monitor set's
resolution (100 / monitor_examples pp: one example more or less) and ``every`` no longer than
the schedule's smallest gap between reads. Kept below :mod:`harness.sessions.schedule` (which
parses the rest of the file) so that the recording layer can read the spec it stores.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from harness.errors import ConfigError
from harness.units import format_duration, parse_duration

#: Monitor examples when the file gives none: small enough that a read's evaluation costs
#: milliseconds on the digits MLP, large enough for a 1 pp resolution.
DEFAULT_MONITOR_EXAMPLES = 128
DEFAULT_MONITOR_SEED = 0
#: Monitor bits when neither the file nor the model names any (the AnalogNets paper's widest).
DEFAULT_MONITOR_BITS = 8
MAX_MONITOR_EXAMPLES = 100_000
REFRESH_KEYS = frozenset({"below_pp", "every", "reference", "monitor_examples", "monitor_seed", "monitor_bits", "monitor_gdc"})
#: What ``below_pp`` is measured against: the first read of the current programming epoch, or
#: of the whole session (the freshly programmed chip's accuracy, kept across refreshes).
REFERENCES = ("epoch", "session")
#: Codes of the rule that fired, as stored in the recording's refresh table.
RULE_CODES = {"below_pp": 1, "every": 2}


@dataclass(frozen=True)
class RefreshSpec:
    """When to re-program, and how the monitor set is made.

    ``below_pp`` (percentage points) or ``every_s`` (seconds): exactly one is set.
    ``monitor_bits`` None means the model's trained bits, else :data:`DEFAULT_MONITOR_BITS`.
    """

    below_pp: float | None = None
    every_s: float | None = None
    monitor_examples: int = DEFAULT_MONITOR_EXAMPLES
    monitor_seed: int = DEFAULT_MONITOR_SEED
    monitor_bits: int | None = None
    monitor_gdc: bool = True
    reference: str = "epoch"

    @property
    def rule(self) -> str:
        """``"below_pp"`` or ``"every"``."""
        return "below_pp" if self.below_pp is not None else "every"

    @property
    def resolution_pp(self) -> float:
        """One monitor example, in percentage points."""
        return 100.0 / self.monitor_examples

    def describe(self) -> str:
        if self.below_pp is not None:
            against = "its first read in the session" if self.reference == "session" else "the epoch's first read"
            return (f"re-program when the monitor accuracy ({self.monitor_examples} training examples) drops by > "
                    f"{self.below_pp:g} pp below {against}")
        return f"re-program every {format_duration(float(self.every_s or 0.0))}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule, "below_pp": self.below_pp, "every_s": self.every_s,
            "monitor_examples": self.monitor_examples, "monitor_seed": self.monitor_seed,
            "monitor_bits": self.monitor_bits, "monitor_gdc": self.monitor_gdc, "reference": self.reference,
        }


def parse_refresh(tbl: Mapping[str, Any], where: str, times_s: Sequence[float]) -> RefreshSpec:
    """Parse a ``[refresh]`` table (``times_s``: the schedule, for the ``every`` check).

    Raises:
        ConfigError: one line naming the key, the value, the limit and what to do.
    """
    label = "[refresh]"
    for key in tbl:
        if key not in REFRESH_KEYS:
            raise ConfigError(f"{where}: unknown key {key!r} in {label}; allowed keys: {', '.join(sorted(REFRESH_KEYS))}")
    has_pp, has_every = "below_pp" in tbl, "every" in tbl
    if has_pp == has_every:
        raise ConfigError(
            f"{where}: {label} needs exactly one rule, below_pp = <percentage points> or every = \"<duration>\" "
            f"({'both' if has_pp else 'neither'} given)"
        )
    examples = _int(tbl, "monitor_examples", DEFAULT_MONITOR_EXAMPLES, where)
    if not 1 <= examples <= MAX_MONITOR_EXAMPLES:
        raise ConfigError(f"{where}: {label} monitor_examples = {examples} must be in 1..{MAX_MONITOR_EXAMPLES}")
    seed = _int(tbl, "monitor_seed", DEFAULT_MONITOR_SEED, where)
    if seed < 0:
        raise ConfigError(f"{where}: {label} monitor_seed = {seed} must be >= 0")
    bits = _int(tbl, "monitor_bits", None, where)
    if bits is not None and not 1 <= bits <= 16:
        raise ConfigError(f"{where}: {label} monitor_bits = {bits} must be in 1..16")
    gdc = tbl.get("monitor_gdc", True)
    if not isinstance(gdc, bool):
        raise ConfigError(f"{where}: {label} monitor_gdc = {gdc!r} must be true or false")
    reference = tbl.get("reference", "epoch")
    if reference not in REFERENCES:
        raise ConfigError(f"{where}: {label} reference = {reference!r} must be one of {', '.join(map(repr, REFERENCES))}")
    if "reference" in tbl and not has_pp:
        raise ConfigError(f"{where}: {label} reference applies to below_pp only (every counts from each refresh)")
    below = every = None
    if has_pp:
        value = tbl["below_pp"]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"{where}: {label} below_pp = {value!r} must be a number of percentage points")
        below = float(value)
        resolution = 100.0 / examples
        if below < resolution:
            raise ConfigError(
                f"{where}: {label} below_pp = {below:g} pp is below the monitor set's resolution of {resolution:.3g} pp "
                f"(100 / {examples} examples): noise of one example would re-program at every read; use below_pp >= "
                f"{resolution:.3g} or more monitor_examples"
            )
    else:
        text = tbl["every"]
        if not isinstance(text, str):
            raise ConfigError(f"{where}: {label} every = {text!r} must be a duration string such as \"1mo\"")
        try:
            every = parse_duration(text)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {label} every: {exc}") from exc
        gap = min_gap_s(times_s)
        if every <= gap:
            raise ConfigError(
                f"{where}: {label} every = {text!r} ({format_duration(every)}) is not longer than the schedule's smallest "
                f"gap between reads ({format_duration(gap)}): it would re-program at every read; choose a longer period"
            )
    return RefreshSpec(below_pp=below, every_s=every, monitor_examples=examples, monitor_seed=seed,
                       monitor_bits=bits, monitor_gdc=gdc, reference=reference)


def min_gap_s(times_s: Sequence[float]) -> float:
    """The smallest gap between consecutive scheduled reads (0 for a single read)."""
    t = list(times_s)
    return min((b - a for a, b in zip(t, t[1:])), default=0.0)


def _int(tbl: Mapping[str, Any], key: str, default: int | None, where: str) -> int | None:
    if key not in tbl:
        return default
    value = tbl[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{where}: [refresh] {key} = {value!r} must be an integer")
    return value


__all__ = ["DEFAULT_MONITOR_EXAMPLES", "RULE_CODES", "RefreshSpec", "min_gap_s", "parse_refresh"]
