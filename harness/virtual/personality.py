"""Chip personalities: a virtual chip's physical constants as a typed TOML file.

A personality holds every physical constant of :mod:`harness.virtual.physics` (conductance
range, programming-noise polynomial, drift and read-noise laws, RESET level, pulse response,
weak devices, ADC). It is parsed once into a frozen :class:`Personality`; unknown keys,
missing keys and non-physical values raise :class:`~harness.errors.ConfigError` with one
line naming the file, the key and the limit.

Shipped personalities (``harness/virtual/personalities/NAME.toml``): ``pcm-90nm`` (the
default; the published model of Nandakumar et al. 2019 / Joshi et al. 2020, docs/references.md)
and ``hermes-14nm`` (aihwkit's HermesNoiseModel constants). ``harness calibrate`` writes a
fitted one. :func:`load_personality` takes a shipped name or a path.

File layout (every key required; units in the names)::

    [personality]       name, description, source
    [conductance]       g_max_uS
    [programming_noise] coeffs_uS = [c0, c1, ...]      σ_prog(x) = Σ c_k x^k µS
    [drift]             t0_s, nu_mean = {ln_coef, offset, min, max}, nu_std = {...}
    [read_noise]        t_read_s, q_coef, q_exp, q_max, q_x_floor
    [reset]             g_mean_uS, g_std_uS
    [pulse]             g_sat_mean_uS, g_sat_std_uS, weak_fraction, weak_g_sat_min_uS,
                        weak_g_sat_max_uS, set_rate_median, set_rate_log_std, set_c2c_rel,
                        set_c2c_abs_uS, relax_onset_s
    [adc]               bits, min_uS, max_uS
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import tomllib
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from harness.errors import ConfigError

#: The personality a virtual chip gets when none is named.
DEFAULT_PERSONALITY = "pcm-90nm"
_SHIPPED_DIR = Path(__file__).with_name("personalities")


@dataclass(frozen=True)
class ClippedLog:
    """``clip(ln_coef·ln x + offset, min, max)``: the published form of μ_ν(x) and σ_ν(x)."""

    ln_coef: float
    offset: float
    min: float
    max: float


@dataclass(frozen=True)
class Personality:
    """The physical constants of one virtual chip (frozen; see the module docstring)."""

    name: str
    description: str
    source: str
    g_max_uS: float
    prog_noise_coeffs_uS: tuple[float, ...]
    t0_s: float
    nu_mean: ClippedLog
    nu_std: ClippedLog
    t_read_s: float
    q_coef: float
    q_exp: float
    q_max: float
    q_x_floor: float
    reset_g_mean_uS: float
    reset_g_std_uS: float
    g_sat_mean_uS: float
    g_sat_std_uS: float
    weak_fraction: float
    weak_g_sat_min_uS: float
    weak_g_sat_max_uS: float
    set_rate_median: float
    set_rate_log_std: float
    set_c2c_rel: float
    set_c2c_abs_uS: float
    relax_onset_s: float
    adc_bits: int
    adc_min_uS: float
    adc_max_uS: float

    def __post_init__(self) -> None:
        _check_physical(self, self.name or "<personality>")

    @functools.cached_property
    def content_hash(self) -> str:
        """sha256 (first 16 hex digits) of the physical constants, name and text excluded:
        two files with the same constants have the same hash."""
        consts = {k: v for k, v in asdict(self).items() if k not in ("name", "description", "source")}
        return hashlib.sha256(json.dumps(consts, sort_keys=True).encode()).hexdigest()[:16]

    def label(self) -> str:
        """``name@hash`` — what provenance and chip identities record."""
        return f"{self.name}@{self.content_hash}"

    def with_updates(self, **changes: Any) -> Personality:
        """A copy with some constants changed (checked like a file)."""
        return replace(self, **changes)

    def to_toml(self) -> str:
        """The personality as TOML text that :func:`parse_personality` reads back exactly."""
        def f(v: float) -> str:
            return repr(float(v))

        def cl(c: ClippedLog) -> str:
            return f"{{ ln_coef = {f(c.ln_coef)}, offset = {f(c.offset)}, min = {f(c.min)}, max = {f(c.max)} }}"

        coeffs = ", ".join(f(c) for c in self.prog_noise_coeffs_uS)
        return "\n".join([
            "[personality]",
            f"name = {json.dumps(self.name)}",
            f"description = {json.dumps(self.description)}",
            f"source = {json.dumps(self.source)}",
            "",
            "[conductance]",
            f"g_max_uS = {f(self.g_max_uS)}",
            "",
            "[programming_noise]",
            f"coeffs_uS = [{coeffs}]",
            "",
            "[drift]",
            f"t0_s = {f(self.t0_s)}",
            f"nu_mean = {cl(self.nu_mean)}",
            f"nu_std = {cl(self.nu_std)}",
            "",
            "[read_noise]",
            f"t_read_s = {f(self.t_read_s)}",
            f"q_coef = {f(self.q_coef)}",
            f"q_exp = {f(self.q_exp)}",
            f"q_max = {f(self.q_max)}",
            f"q_x_floor = {f(self.q_x_floor)}",
            "",
            "[reset]",
            f"g_mean_uS = {f(self.reset_g_mean_uS)}",
            f"g_std_uS = {f(self.reset_g_std_uS)}",
            "",
            "[pulse]",
            *(f"{k} = {f(getattr(self, k))}" for k in _PULSE_KEYS),
            "",
            "[adc]",
            f"bits = {int(self.adc_bits)}",
            f"min_uS = {f(self.adc_min_uS)}",
            f"max_uS = {f(self.adc_max_uS)}",
            "",
        ])


_PULSE_KEYS = (
    "g_sat_mean_uS", "g_sat_std_uS", "weak_fraction", "weak_g_sat_min_uS", "weak_g_sat_max_uS",
    "set_rate_median", "set_rate_log_std", "set_c2c_rel", "set_c2c_abs_uS", "relax_onset_s",
)
_TABLES: dict[str, tuple[str, ...]] = {
    "personality": ("name", "description", "source"),
    "conductance": ("g_max_uS",),
    "programming_noise": ("coeffs_uS",),
    "drift": ("t0_s", "nu_mean", "nu_std"),
    "read_noise": ("t_read_s", "q_coef", "q_exp", "q_max", "q_x_floor"),
    "reset": ("g_mean_uS", "g_std_uS"),
    "pulse": _PULSE_KEYS,
    "adc": ("bits", "min_uS", "max_uS"),
}
_CLIPPED_KEYS = ("ln_coef", "offset", "min", "max")


def _fail(where: str, msg: str) -> ConfigError:
    return ConfigError(f"personality {where}: {msg}")


def _num(where: str, label: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _fail(where, f"{label} = {value!r} must be a finite number")
    return float(value)


def _check_physical(p: Personality, where: str) -> None:
    """Non-physical values are errors (never clipped): noise and widths >= 0, times > 0, ..."""
    def need(cond: bool, msg: str) -> None:
        if not cond:
            raise _fail(where, msg)

    need(p.g_max_uS > 0, f"g_max_uS = {p.g_max_uS:g} µS must be > 0")
    need(len(p.prog_noise_coeffs_uS) >= 1, "programming_noise.coeffs_uS must list at least one coefficient")
    # σ_prog(x) must be >= 0 over the whole range x ∈ [0, 1] (checked on a fine grid).
    grid = [i / 200 for i in range(201)]
    worst = min(sum(c * x**k for k, c in enumerate(p.prog_noise_coeffs_uS)) for x in grid)
    need(worst >= 0, f"programming noise σ_prog(x) reaches {worst:.4g} µS on x ∈ [0, 1]; noise must be >= 0")
    need(p.t0_s > 0, f"drift.t0_s = {p.t0_s:g} s must be > 0")
    for label, c in (("nu_mean", p.nu_mean), ("nu_std", p.nu_std)):
        need(0 <= c.min <= c.max, f"drift.{label} needs 0 <= min <= max, got min={c.min:g}, max={c.max:g}")
    need(p.t_read_s > 0, f"read_noise.t_read_s = {p.t_read_s:g} s must be > 0")
    need(p.t_read_s < p.t0_s, f"read_noise.t_read_s = {p.t_read_s:g} s must be below t0 = {p.t0_s:g} s")
    need(p.q_coef >= 0 and p.q_max >= 0, f"read noise q_coef = {p.q_coef:g}, q_max = {p.q_max:g} must be >= 0")
    need(p.q_exp >= 0, f"read_noise.q_exp = {p.q_exp:g} must be >= 0")
    need(p.q_x_floor > 0, f"read_noise.q_x_floor = {p.q_x_floor:g} must be > 0")
    need(p.reset_g_mean_uS >= 0 and p.reset_g_std_uS >= 0,
         f"reset g_mean_uS = {p.reset_g_mean_uS:g}, g_std_uS = {p.reset_g_std_uS:g} µS must be >= 0")
    need(p.g_sat_mean_uS > 0 and p.g_sat_std_uS >= 0, "pulse g_sat_mean_uS must be > 0 and g_sat_std_uS >= 0")
    need(0 <= p.weak_fraction <= 1, f"pulse.weak_fraction = {p.weak_fraction:g} must be in [0, 1]")
    need(0 <= p.weak_g_sat_min_uS <= p.weak_g_sat_max_uS, "pulse needs 0 <= weak_g_sat_min_uS <= weak_g_sat_max_uS")
    need(p.set_rate_median > 0 and p.set_rate_log_std >= 0, "pulse set_rate_median must be > 0, set_rate_log_std >= 0")
    need(p.set_c2c_rel >= 0 and p.set_c2c_abs_uS >= 0, "pulse set_c2c_rel and set_c2c_abs_uS (noise) must be >= 0")
    need(0 < p.relax_onset_s < p.t0_s, f"pulse.relax_onset_s = {p.relax_onset_s:g} s must be in (0, t0)")
    need(isinstance(p.adc_bits, int) and 1 <= p.adc_bits <= 16, f"adc.bits = {p.adc_bits!r} must be an integer in 1..16")
    need(p.adc_min_uS < p.adc_max_uS, f"adc range [{p.adc_min_uS:g}, {p.adc_max_uS:g}] µS is empty")


def parse_personality(text: str, *, source: str = "<string>") -> Personality:
    """Parse personality TOML ``text`` (``source`` names it in errors).

    Raises:
        ConfigError: malformed TOML, unknown or missing tables/keys, wrong types, or
            non-physical values (negative noise, t0 <= 0, empty ranges, ...).
    """
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _fail(source, f"not valid TOML: {exc}") from exc
    for table in doc:
        if table not in _TABLES:
            raise _fail(source, f"unknown table [{table}]; allowed: {', '.join(_TABLES)}")
    vals: dict[str, dict[str, Any]] = {}
    for table, keys in _TABLES.items():
        tbl = doc.get(table)
        if not isinstance(tbl, dict):
            raise _fail(source, f"missing table [{table}]")
        for key in tbl:
            if key not in keys:
                raise _fail(source, f"unknown key {key!r} in [{table}]; allowed: {', '.join(keys)}")
        for key in keys:
            if key not in tbl:
                raise _fail(source, f"missing key {key!r} in [{table}]")
        vals[table] = tbl
    meta = vals["personality"]
    for key in ("name", "description", "source"):
        if not isinstance(meta[key], str):
            raise _fail(source, f"[personality] {key} must be a string")
    if not meta["name"].strip():
        raise _fail(source, "[personality] name must not be empty")

    def num(table: str, key: str) -> float:
        return _num(source, f"{table}.{key}", vals[table][key])

    def clipped(key: str) -> ClippedLog:
        raw = vals["drift"][key]
        if not isinstance(raw, dict):
            raise _fail(source, f"drift.{key} must be a table {{ln_coef, offset, min, max}}")
        unknown = sorted(set(raw) - set(_CLIPPED_KEYS))
        if unknown:
            raise _fail(source, f"unknown key {unknown[0]!r} in drift.{key}; allowed: {', '.join(_CLIPPED_KEYS)}")
        missing = [k for k in _CLIPPED_KEYS if k not in raw]
        if missing:
            raise _fail(source, f"missing key {missing[0]!r} in drift.{key}")
        return ClippedLog(*(_num(source, f"drift.{key}.{k}", raw[k]) for k in _CLIPPED_KEYS))

    coeffs = vals["programming_noise"]["coeffs_uS"]
    if not isinstance(coeffs, list):
        raise _fail(source, "programming_noise.coeffs_uS must be a list of numbers (µS)")
    bits = vals["adc"]["bits"]
    if isinstance(bits, bool) or not isinstance(bits, int):
        raise _fail(source, f"adc.bits = {bits!r} must be an integer")
    try:
        return _build(meta, vals, num, clipped, coeffs, bits, source)
    except ConfigError as exc:  # a non-physical value: name the file, not the personality
        prefix = f"personality {meta['name']}: "
        text = str(exc)
        raise _fail(source, text.removeprefix(prefix)) from None


def _build(meta: dict[str, Any], vals: dict[str, dict[str, Any]], num: Any, clipped: Any, coeffs: list[Any],
           bits: int, source: str) -> Personality:
    return Personality(
        name=meta["name"],
        description=meta["description"],
        source=meta["source"],
        g_max_uS=num("conductance", "g_max_uS"),
        prog_noise_coeffs_uS=tuple(_num(source, f"programming_noise.coeffs_uS[{i}]", c) for i, c in enumerate(coeffs)),
        t0_s=num("drift", "t0_s"),
        nu_mean=clipped("nu_mean"),
        nu_std=clipped("nu_std"),
        **{k: num("read_noise", k) for k in _TABLES["read_noise"]},
        reset_g_mean_uS=num("reset", "g_mean_uS"),
        reset_g_std_uS=num("reset", "g_std_uS"),
        **{k: num("pulse", k) for k in _PULSE_KEYS},
        adc_bits=bits,
        adc_min_uS=num("adc", "min_uS"),
        adc_max_uS=num("adc", "max_uS"),
    )


def shipped_personalities() -> list[str]:
    """Names of the personalities that ship with the harness."""
    return sorted(p.stem for p in _SHIPPED_DIR.glob("*.toml"))


@functools.lru_cache(maxsize=32)
def _load_cached(path: str, mtime_ns: int) -> Personality:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read personality file {p}: {exc}") from exc
    return parse_personality(text, source=str(p))


def load_personality(name_or_path: str | Path | Personality | None = None) -> Personality:
    """A shipped personality by name (``pcm-90nm``, ``hermes-14nm``), or a TOML file by path.

    ``None`` gives the default (``pcm-90nm``); a :class:`Personality` is returned as is.
    Parsed files are cached (keyed by path and modification time).

    Raises:
        ConfigError: no such name or file, or the file is invalid.
    """
    if isinstance(name_or_path, Personality):
        return name_or_path
    text = DEFAULT_PERSONALITY if name_or_path is None else str(name_or_path)
    shipped = _SHIPPED_DIR / f"{text}.toml"
    if "/" not in text and not text.endswith(".toml") and shipped.is_file():
        path = shipped
    else:
        path = Path(text).expanduser()
        if not path.is_file():
            raise ConfigError(
                f"no personality {text!r}: not a shipped name ({', '.join(shipped_personalities())}) "
                "nor an existing .toml file"
            )
    resolved = path.resolve()
    return _load_cached(str(resolved), resolved.stat().st_mtime_ns)


def default_personality() -> Personality:
    """The default personality (``pcm-90nm``)."""
    return load_personality(None)


__all__ = [
    "DEFAULT_PERSONALITY",
    "ClippedLog",
    "Personality",
    "default_personality",
    "load_personality",
    "parse_personality",
    "shipped_personalities",
]
