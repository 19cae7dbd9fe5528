"""The accelerator's hardware description: a TOML file parsed once into frozen dataclasses.

Hardware is data (Timeloop/Accelergy style): every size, latency and energy the cost model
uses lives in the file, with its source in a comment. The default, ``hw/aon-cim-14nm.toml``
next to this module, describes AON-CiM (AnalogNets, Table 2); users copy and edit it.

File layout (every key required, unknown keys are errors)::

    [accelerator]  name, technology
    [array]        rows, cols, adcs                  (cols / adcs = column-mux ratio)
    [timing]       digital_clock_ns, cim_cycle_ns = {"8" = 130.0, ...}
                   (the keys of cim_cycle_ns are the supported activation bit-widths)
    [datapath]     words_per_clock                   (words the digital datapath finishes per clock)
    [sram]         kib, banks, read_bits_per_clock   (IM2COL read port)
    [energy]       dac_pJ_per_row, array_fJ_per_mac_lsb, adc_fJ_per_conversion_lsb,
                   digital_pJ_per_word, sram_pJ_per_byte_read, sram_pJ_per_byte_write,
                   static_mW

Errors (:class:`~harness.errors.ConfigError`, one line naming the file and key): unknown or
missing keys, wrong types, zero or negative sizes, latencies or energies (``static_mW`` may
be 0), ``cols`` not a multiple of ``adcs``, bit-widths outside 1..16.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from harness.errors import AccelError, ConfigError

DEFAULT_HW_NAME = "aon-cim-14nm.toml"


@dataclass(frozen=True)
class ArraySpec:
    """The CiM array: ``rows`` (fan-in, DAC inputs) × ``cols`` (outputs), ``adcs`` shared by a mux."""

    rows: int
    cols: int
    adcs: int

    @property
    def mux(self) -> int:
        """Columns per ADC (the analog column multiplexer's ratio, 4 on AON-CiM)."""
        return self.cols // self.adcs


@dataclass(frozen=True)
class TimingSpec:
    """Clocks: the digital clock period and the CiM cycle per supported activation bit-width (ns)."""

    digital_clock_ns: float
    cim_cycle_ns: tuple[tuple[int, float], ...]

    @property
    def bits(self) -> tuple[int, ...]:
        return tuple(b for b, _ in self.cim_cycle_ns)


@dataclass(frozen=True)
class DatapathSpec:
    """Digital activation datapath (scale, BN, ReLU, pool, add): words finished per digital clock."""

    words_per_clock: int


@dataclass(frozen=True)
class SramSpec:
    """Activation SRAM: total size, banks (double buffer: one read, one written), IM2COL read port."""

    kib: int
    banks: int
    read_bits_per_clock: int

    @property
    def bank_bytes(self) -> int:
        return self.kib * 1024 // self.banks


@dataclass(frozen=True)
class EnergySpec:
    """Per-component energies (the cost model's only energy constants).

    ``dac_pJ_per_row``: one active row driven for one CiM cycle (row line and PWM driver).
    ``array_fJ_per_mac_lsb``: cell conduction per MAC per LSB of pulse width (× 2^b).
    ``adc_fJ_per_conversion_lsb``: one column conversion per LSB of its counting window (× 2^b).
    ``digital_pJ_per_word``: one output word through the datapath (2 FP scalings, ReLU, ...).
    ``sram_pJ_per_byte_read`` / ``_write``: activation SRAM traffic. ``static_mW``: leakage.
    """

    dac_pJ_per_row: float
    array_fJ_per_mac_lsb: float
    adc_fJ_per_conversion_lsb: float
    digital_pJ_per_word: float
    sram_pJ_per_byte_read: float
    sram_pJ_per_byte_write: float
    static_mW: float


@dataclass(frozen=True)
class Hardware:
    """A whole accelerator description (see the module docstring for the file format)."""

    name: str
    technology: str
    array: ArraySpec
    timing: TimingSpec
    datapath: DatapathSpec
    sram: SramSpec
    energy: EnergySpec
    path: str | None = None

    @property
    def bits(self) -> tuple[int, ...]:
        """Supported activation bit-widths, as listed in the file."""
        return self.timing.bits

    def cim_cycle_ns(self, bits: int) -> float:
        """CiM cycle at ``bits``-bit activations; :class:`AccelError` if the hardware lacks it."""
        for b, t in self.timing.cim_cycle_ns:
            if b == bits:
                return t
        raise AccelError(
            f"{self.name} does not support {bits}-bit activations "
            f"(supported: {', '.join(str(b) for b in self.bits)}); choose one of those with --bits"
        )


_SCHEMA: dict[str, dict[str, type]] = {
    "accelerator": {"name": str, "technology": str},
    "array": {"rows": int, "cols": int, "adcs": int},
    "timing": {"digital_clock_ns": float, "cim_cycle_ns": dict},
    "datapath": {"words_per_clock": int},
    "sram": {"kib": int, "banks": int, "read_bits_per_clock": int},
    "energy": {
        "dac_pJ_per_row": float,
        "array_fJ_per_mac_lsb": float,
        "adc_fJ_per_conversion_lsb": float,
        "digital_pJ_per_word": float,
        "sram_pJ_per_byte_read": float,
        "sram_pJ_per_byte_write": float,
        "static_mW": float,
    },
}
#: Keys that may be zero (everything else must be > 0).
_MAY_BE_ZERO = frozenset({"energy.static_mW"})


def default_hardware_path() -> Path:
    """The shipped AON-CiM 14 nm description."""
    return Path(str(resources.files("harness.accel") / "hw" / DEFAULT_HW_NAME))


def load_hardware(path: str | Path | None = None) -> Hardware:
    """Parse a hardware TOML file (default: AON-CiM 14 nm) into a frozen :class:`Hardware`.

    Raises :class:`ConfigError` (one line, naming file and key) for anything malformed, and
    ``OSError`` if the file cannot be read.
    """
    p = default_hardware_path() if path is None else Path(path)
    text = p.read_text(encoding="utf-8")
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from exc
    return hardware_from_dict(doc, where=str(p))


def hardware_from_dict(doc: Mapping[str, Any], where: str = "<hardware>") -> Hardware:
    """Validate a parsed hardware document (the TOML's tables) and build :class:`Hardware`."""
    unknown = sorted(set(doc) - set(_SCHEMA))
    if unknown:
        raise ConfigError(f"{where}: unknown table [{unknown[0]}] (allowed: {', '.join(_SCHEMA)})")
    values: dict[str, dict[str, Any]] = {}
    for table, keys in _SCHEMA.items():
        got = doc.get(table)
        if not isinstance(got, Mapping):
            raise ConfigError(f"{where}: missing table [{table}]")
        extra = sorted(set(got) - set(keys))
        if extra:
            raise ConfigError(f"{where}: unknown key {table}.{extra[0]} (allowed: {', '.join(keys)})")
        values[table] = {}
        for key, kind in keys.items():
            if key not in got:
                raise ConfigError(f"{where}: missing key {table}.{key}")
            values[table][key] = _checked(got[key], kind, f"{table}.{key}", where)
    cycles = _cycle_table(values["timing"]["cim_cycle_ns"], where)
    arr = values["array"]
    if arr["cols"] % arr["adcs"]:
        raise ConfigError(
            f"{where}: array.cols={arr['cols']} is not a multiple of array.adcs={arr['adcs']} "
            "(each ADC serves cols/adcs columns through the mux)"
        )
    return Hardware(
        name=values["accelerator"]["name"],
        technology=values["accelerator"]["technology"],
        array=ArraySpec(**arr),
        timing=TimingSpec(digital_clock_ns=values["timing"]["digital_clock_ns"], cim_cycle_ns=cycles),
        datapath=DatapathSpec(**values["datapath"]),
        sram=SramSpec(**values["sram"]),
        energy=EnergySpec(**values["energy"]),
        path=where,
    )


def _checked(value: Any, kind: type, key: str, where: str) -> Any:
    if kind is str:
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{where}: {key} must be a non-empty string, got {value!r}")
        return value
    if kind is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: {key} must be a table such as {{\"8\" = 130.0}}, got {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{where}: {key} must be a number, got {value!r}")
    if kind is int and not isinstance(value, int):
        raise ConfigError(f"{where}: {key} must be an integer, got {value!r}")
    if not math.isfinite(value):
        raise ConfigError(f"{where}: {key} must be finite, got {value!r}")
    if value < 0 or (value == 0 and key not in _MAY_BE_ZERO):
        limit = ">= 0" if key in _MAY_BE_ZERO else "> 0"
        raise ConfigError(f"{where}: {key} = {value!r} must be {limit}")
    return kind(value)


def _cycle_table(table: Mapping[str, Any], where: str) -> tuple[tuple[int, float], ...]:
    out: list[tuple[int, float]] = []
    for key, t in table.items():
        try:
            bits = int(key)
        except ValueError:
            raise ConfigError(f"{where}: timing.cim_cycle_ns key {key!r} is not a bit-width") from None
        if not 1 <= bits <= 16:
            raise ConfigError(f"{where}: timing.cim_cycle_ns bit-width {bits} outside 1..16")
        out.append((bits, _checked(t, float, f"timing.cim_cycle_ns.{key}", where)))
    if not out:
        raise ConfigError(f"{where}: timing.cim_cycle_ns is empty (list at least one bit-width)")
    return tuple(sorted(out, reverse=True))
