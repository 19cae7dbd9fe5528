"""Session definitions: a TOML file parsed once into frozen objects, and readout schedules.

A session file says what to program, which cells to read and when::

    [session]
    name = "drift-20h"
    description = "..."            # optional

    [program]
    model = "default"              # the embedded default model, a zoo model name, or a model file path
                                   # (relative paths are relative to the session file)
    [program.params]               # optional; names and meaning as in ProgrammingParams
    tolerance_uS = 0.5

    [readout]
    cells = "layout"               # "layout": every device of the model's layout (G+ and G-)
                                   # "array": every cell on the chip
    encoding = "adc_code"          # how readouts are stored; see docs/recording-format.md
    repeats = 1                    # reads back to back at every scheduled time (k >= 1):
                                   # k > 1 separates read noise from drift (harness calibrate)
    [refresh]                      # optional: re-program on a rule (harness.sessions.refresh_spec)
    below_pp = 2.0

    [schedule]
    kind = "log"                   # "log": start_s, stop_s, points (geometric spacing)
    start_s = 25.0                 # "linear": start_s, stop_s and points or step_s
    stop_s = 72000.0               # "list": times_s = [...]
    points = 30

Times are absolute seconds since the end of programming, so a resumed session keeps its
timetable. Every table and key is checked: unknown keys, wrong types and bad schedules
raise :class:`~harness.errors.ConfigError` / :class:`~harness.errors.ScheduleError`
naming the key and the file.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from harness.errors import ConfigError, HarnessError, ScheduleError
from harness.sessions.refresh_spec import RefreshSpec, parse_refresh
from harness.units import format_duration

#: Upper bound on readouts in one schedule: a guard against a typo such as ``points = 3e6``
#: turning into a multi-terabyte recording.
MAX_READOUTS = 100_000

SCHEDULE_KINDS = ("log", "linear", "list")
READOUT_CELLS = ("layout", "array")
READOUT_ENCODINGS = ("adc_code", "float64")
#: Upper bound on back-to-back reads per scheduled time (a guard against typos).
MAX_REPEATS = 1000
DEFAULT_MODEL = "default"


@dataclass(frozen=True)
class Schedule:
    """Readout times in seconds since the end of programming, strictly increasing, all >= 0.

    ``kind`` and ``params`` say how the times were specified (for display and provenance);
    ``times_s`` is the resolved timetable.
    """

    kind: str
    times_s: tuple[float, ...]
    params: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        check_times(self.times_s)

    @property
    def n_readouts(self) -> int:
        return len(self.times_s)

    def as_array(self) -> npt.NDArray[np.float64]:
        return np.asarray(self.times_s, dtype=np.float64)

    def describe(self) -> str:
        p = dict(self.params)
        if self.kind == "log":
            return f"{p['points']} log-spaced readouts from {fmt_duration(p['start_s'])} to {fmt_duration(p['stop_s'])}"
        if self.kind == "linear":
            return f"{self.n_readouts} readouts every {fmt_duration(self.times_s[1] - self.times_s[0]) if self.n_readouts > 1 else '-'} from {fmt_duration(self.times_s[0])}"
        return f"{self.n_readouts} listed readouts from {fmt_duration(self.times_s[0])} to {fmt_duration(self.times_s[-1])}"


def check_times(times_s: Sequence[float], where: str = "schedule") -> None:
    """Raise ScheduleError unless ``times_s`` is non-empty, finite, >= 0 and strictly increasing."""
    t = np.asarray(times_s, dtype=np.float64)
    if t.ndim != 1 or t.size == 0:
        raise ScheduleError(f"{where}: no readout times given")
    if t.size > MAX_READOUTS:
        raise ScheduleError(f"{where}: {t.size} readouts exceed the limit of {MAX_READOUTS}")
    bad = np.flatnonzero(~np.isfinite(t))
    if bad.size:
        raise ScheduleError(f"{where}: readout time #{bad[0] + 1} is {t[bad[0]]}; times must be finite seconds")
    neg = np.flatnonzero(t < 0)
    if neg.size:
        raise ScheduleError(
            f"{where}: readout time #{neg[0] + 1} is {t[neg[0]]:g} s; times are seconds since the end of "
            "programming and must be >= 0"
        )
    d = np.diff(t)
    dup = np.flatnonzero(d == 0)
    if dup.size:
        raise ScheduleError(f"{where}: readout time {t[dup[0]]:g} s appears twice (#{dup[0] + 1} and #{dup[0] + 2})")
    back = np.flatnonzero(d < 0)
    if back.size:
        i = back[0]
        raise ScheduleError(
            f"{where}: readout times are not in increasing order: #{i + 2} ({t[i + 1]:g} s) comes after "
            f"#{i + 1} ({t[i]:g} s)"
        )


def log_schedule(start_s: float, stop_s: float, points: int) -> Schedule:
    """``points`` geometrically spaced times from ``start_s`` to ``stop_s`` inclusive (0 < start < stop)."""
    if not (math.isfinite(start_s) and math.isfinite(stop_s)) or not 0 < start_s < stop_s:
        raise ScheduleError(f"log schedule needs 0 < start_s < stop_s, got start_s={start_s:g} s, stop_s={stop_s:g} s")
    _check_points(points, "log")
    times = np.geomspace(start_s, stop_s, points)
    times[0], times[-1] = start_s, stop_s
    return Schedule("log", tuple(float(x) for x in times), (("start_s", start_s), ("stop_s", stop_s), ("points", points)))


def linear_schedule(start_s: float, stop_s: float, *, points: int | None = None, step_s: float | None = None) -> Schedule:
    """Evenly spaced times from ``start_s`` to ``stop_s`` inclusive, by ``points`` or by ``step_s``."""
    if (points is None) == (step_s is None):
        raise ScheduleError("linear schedule needs exactly one of 'points' or 'step_s'")
    if not (math.isfinite(start_s) and math.isfinite(stop_s)) or not 0 <= start_s < stop_s:
        raise ScheduleError(
            f"linear schedule needs 0 <= start_s < stop_s, got start_s={start_s:g} s, stop_s={stop_s:g} s"
        )
    if step_s is not None:
        if not (math.isfinite(step_s) and step_s > 0):
            raise ScheduleError(f"linear schedule step_s={step_s:g} s must be > 0")
        n = math.floor((stop_s - start_s) / step_s * (1 + 1e-12)) + 1
        if n > MAX_READOUTS:
            raise ScheduleError(f"linear schedule gives {n} readouts, more than the limit of {MAX_READOUTS}")
        times = start_s + step_s * np.arange(n)
        params: tuple[tuple[str, Any], ...] = (("start_s", start_s), ("stop_s", stop_s), ("step_s", step_s))
    else:
        points = int(points or 0)
        _check_points(points, "linear")
        times = np.linspace(start_s, stop_s, points)
        params = (("start_s", start_s), ("stop_s", stop_s), ("points", points))
    return Schedule("linear", tuple(float(x) for x in times), params)


def list_schedule(times_s: Sequence[float]) -> Schedule:
    """An explicit list of times (seconds since programming), checked but never reordered."""
    times = tuple(float(x) for x in times_s)
    return Schedule("list", times, (("times_s", times),))


def _check_points(points: int, kind: str) -> None:
    if not 2 <= points <= MAX_READOUTS:
        raise ScheduleError(f"{kind} schedule needs 2..{MAX_READOUTS} points, got {points}")


def fmt_duration(t_s: float) -> str:
    """Alias of :func:`harness.units.format_duration`, the one duration format."""
    return format_duration(t_s)


# ----------------------------------------------------------------------------- session files


@dataclass(frozen=True)
class ProgramSpec:
    """What to program: ``model`` is ``"default"`` or a resolved model file path; ``params``
    are ProgrammingParams overrides as sorted ``(name, value)`` pairs."""

    model: str = DEFAULT_MODEL
    params: tuple[tuple[str, Any], ...] = ()

    def programming_params(self) -> Any:
        """The :class:`harness.programming.write_verify.ProgrammingParams` these overrides give."""
        from harness.programming.write_verify import ProgrammingParams

        try:
            return ProgrammingParams(**dict(self.params))
        except (TypeError, ValueError, HarnessError) as exc:
            raise ConfigError(f"bad programming parameters {dict(self.params)}: {exc}") from exc


@dataclass(frozen=True)
class ReadoutSpec:
    """Which cells each readout reads, how the values are stored, and how many reads
    (``repeats``, back to back) are taken at every scheduled time."""

    cells: str = "layout"
    encoding: str = "adc_code"
    repeats: int = 1


@dataclass(frozen=True)
class SessionSpec:
    """A parsed session file. ``source_text`` is the file's exact text (recorded verbatim in
    the recording's provenance); ``source_path`` where it was read from."""

    name: str
    program: ProgramSpec
    readout: ReadoutSpec
    schedule: Schedule
    description: str = ""
    source_text: str = ""
    source_path: str = ""
    #: the ``[refresh]`` rule (:mod:`harness.sessions.refresh_spec`); None: program once
    refresh: RefreshSpec | None = None


_TOP_KEYS = {"session", "program", "readout", "schedule", "refresh"}
_SESSION_KEYS = {"name", "description"}
_PROGRAM_KEYS = {"model", "params"}
_READOUT_KEYS = {"cells", "encoding", "repeats"}
_SCHEDULE_KEYS = {
    "log": {"kind", "start_s", "stop_s", "points"},
    "linear": {"kind", "start_s", "stop_s", "points", "step_s"},
    "list": {"kind", "times_s"},
}


def load_session(path: str | Path) -> SessionSpec:
    """Read and parse a session TOML file.

    Raises:
        ConfigError: missing/unreadable file, malformed TOML, unknown keys or bad values.
        ScheduleError: a schedule with negative, unordered or duplicate times.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(f"session file {p} does not exist") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read session file {p}: {exc}") from exc
    return parse_session(text, source=str(p))


def parse_session(text: str, *, source: str = "<string>", base_dir: str | Path | None = None) -> SessionSpec:
    """Parse session TOML ``text``; ``source`` names it in errors; relative model paths are
    resolved against ``base_dir`` (default: the directory of ``source``)."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source} is not valid TOML: {exc}") from exc
    where = source
    _check_keys(doc, _TOP_KEYS, "the top level", where)
    for required in ("session", "schedule"):
        if required not in doc:
            raise ConfigError(f"{where}: missing table [{required}]")

    sess = _table(doc, "session", where)
    _check_keys(sess, _SESSION_KEYS, "[session]", where)
    name = _get(sess, "name", str, "[session]", where, required=True)
    description = _get(sess, "description", str, "[session]", where, default="")

    prog = _table(doc, "program", where, default={})
    _check_keys(prog, _PROGRAM_KEYS, "[program]", where)
    model = _get(prog, "model", str, "[program]", where, default=DEFAULT_MODEL)
    if model != DEFAULT_MODEL and not _is_model_name(model):
        mp = Path(model).expanduser()
        if not mp.is_absolute():
            root = Path(base_dir) if base_dir is not None else Path(source).parent
            mp = root / mp
        model = str(mp)
    params = _program_params(_table(prog, "params", where, default={}, label="[program.params]"), where)

    ro = _table(doc, "readout", where, default={})
    _check_keys(ro, _READOUT_KEYS, "[readout]", where)
    cells = _get(ro, "cells", str, "[readout]", where, default="layout")
    if cells not in READOUT_CELLS:
        raise ConfigError(f"{where}: [readout] cells = {cells!r} is not one of {', '.join(READOUT_CELLS)}")
    encoding = _get(ro, "encoding", str, "[readout]", where, default="adc_code")
    if encoding not in READOUT_ENCODINGS:
        raise ConfigError(f"{where}: [readout] encoding = {encoding!r} is not one of {', '.join(READOUT_ENCODINGS)}")
    repeats = _get(ro, "repeats", int, "[readout]", where, default=1)
    if not 1 <= repeats <= MAX_REPEATS:
        raise ConfigError(f"{where}: [readout] repeats = {repeats} must be in 1..{MAX_REPEATS} (reads per scheduled time)")

    schedule = _parse_schedule(_table(doc, "schedule", where), where)
    if schedule.n_readouts * repeats > MAX_READOUTS:
        raise ScheduleError(
            f"{where}: {schedule.n_readouts} times × {repeats} repeats = {schedule.n_readouts * repeats} readouts "
            f"exceed the limit of {MAX_READOUTS}"
        )
    refresh = None
    if "refresh" in doc:
        refresh = parse_refresh(_table(doc, "refresh", where), where, schedule.times_s)
    return SessionSpec(
        name=name,
        refresh=refresh,
        description=description,
        program=ProgramSpec(model=model, params=params),
        readout=ReadoutSpec(cells=cells, encoding=encoding, repeats=repeats),
        schedule=schedule,
        source_text=text,
        source_path=source,
    )


def _parse_schedule(tbl: Mapping[str, Any], where: str) -> Schedule:
    kind = _get(tbl, "kind", str, "[schedule]", where, required=True)
    if kind not in _SCHEDULE_KEYS:
        raise ConfigError(f"{where}: [schedule] kind = {kind!r} is not one of {', '.join(SCHEDULE_KINDS)}")
    _check_keys(tbl, _SCHEDULE_KEYS[kind], f"[schedule] (kind = {kind!r})", where)
    try:
        if kind == "list":
            raw = tbl.get("times_s")
            if not isinstance(raw, list) or not all(_is_number(x) for x in raw):
                raise ConfigError(f"{where}: [schedule] times_s must be a list of numbers (seconds)")
            return list_schedule(raw)
        start = _get(tbl, "start_s", float, "[schedule]", where, required=True)
        stop = _get(tbl, "stop_s", float, "[schedule]", where, required=True)
        if kind == "log":
            points = _get(tbl, "points", int, "[schedule]", where, required=True)
            return log_schedule(start, stop, points)
        return linear_schedule(
            start,
            stop,
            points=_get(tbl, "points", int, "[schedule]", where),
            step_s=_get(tbl, "step_s", float, "[schedule]", where),
        )
    except ScheduleError as exc:
        raise ScheduleError(f"{where}: {exc}") from exc


def _is_model_name(text: str) -> bool:
    """A bare name (``analognet-kws``, ``digits_mlp``): a zoo or bundled model, not a path."""
    return "/" not in text and "\\" not in text and not Path(text).suffix and not text.startswith("~")


def _program_params(tbl: Mapping[str, Any], where: str) -> tuple[tuple[str, Any], ...]:
    if not tbl:
        return ()
    from harness.programming.write_verify import ProgrammingParams

    fields = {f.name: f for f in dataclasses.fields(ProgrammingParams)}
    _check_keys(tbl, set(fields), "[program.params]", where)
    out = []
    for key, value in tbl.items():
        if not (_is_number(value) or isinstance(value, (bool, str))):
            raise ConfigError(f"{where}: [program.params] {key} = {value!r} must be a number, boolean or string")
        out.append((key, value))
    spec = ProgramSpec(params=tuple(sorted(out)))
    try:
        spec.programming_params()
    except ConfigError as exc:
        raise ConfigError(f"{where}: [program.params]: {exc}") from exc
    return spec.params


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _check_keys(tbl: Mapping[str, Any], allowed: set[str], label: str, where: str) -> None:
    for key in tbl:
        if key not in allowed:
            raise ConfigError(f"{where}: unknown key {key!r} in {label}; allowed keys: {', '.join(sorted(allowed))}")


def _table(
    doc: Mapping[str, Any], key: str, where: str, default: Mapping[str, Any] | None = None, label: str | None = None
) -> Mapping[str, Any]:
    if key not in doc:
        if default is None:
            raise ConfigError(f"{where}: missing table {label or f'[{key}]'}")
        return default
    value = doc[key]
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: {label or key!r} must be a table, got {value!r}")
    return value


def _get(
    tbl: Mapping[str, Any],
    key: str,
    kind: type,
    label: str,
    where: str,
    *,
    required: bool = False,
    default: Any = None,
) -> Any:
    if key not in tbl:
        if required:
            raise ConfigError(f"{where}: missing key {key!r} in {label}")
        return default
    value = tbl[key]
    if kind is float:
        if not _is_number(value):
            raise ConfigError(f"{where}: {label} {key} = {value!r} must be a number (seconds)")
        return float(value)
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: {label} {key} = {value!r} must be an integer")
        return value
    if not isinstance(value, kind):
        raise ConfigError(f"{where}: {label} {key} = {value!r} must be a {kind.__name__}")
    return value
