"""Sweep files: a TOML grid parsed once into a frozen :class:`SweepSpec`, and its tasks.

A sweep file names the grid of a Monte Carlo evaluation (AnalogNets §6.2: models ×
activation bit-widths × drift times, each cell the mean ± std over simulated chips)::

    [sweep]
    name = "kws-ablation"          # optional; default: the file's stem
    seed = 0                       # seeds every task (see task_seed)
    runs = 25                      # simulated chips per (model, chip)
    ranges = "auto"                # converter ranges: auto, trained, calibrated, percentile

    [grid]
    models = ["default", "fixtures/models/digits_mlp_noise_aware.h5"]
    chips = ["virtual"]            # virtual chip URIs (no seed=: the sweep seeds them)
    personalities = []             # optional: shorthand for "virtual?personality=NAME"
    times = ["25s", "1h", "1d", "1mo", "1y"]
    bits = [8, 6, 4]               # 0 = ideal converters
    gdc = [true]                   # global drift compensation on / off
    read_noise = [false]           # per-read 1/f noise in the CiM inference on / off
    compensate = ["gdc", "adabs"]  # optional: drift compensation methods (docs/compensation.md);
                                   # replaces the gdc axis (then leave gdc out)

One **task** is one simulated chip of one model: program it, read it at every time,
evaluate every (bits, gdc, read_noise) combination on those readouts. Its seeds depend
only on the sweep seed and the task's coordinates (model, chip, run), never on the order
or place it runs, so results are bit-identical whatever the executor.

Relative model paths are relative to the sweep file. Unknown tables or keys, wrong
types, an empty axis, duplicate entries and non-virtual chips raise
:class:`~harness.errors.ConfigError` naming the key and the file.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from harness.errors import ConfigError
from harness.units import format_duration, parse_duration

#: Guard against a typo turning into a million-task grid.
MAX_TASKS = 1_000_000
MAX_RUNS = 100_000
#: harness.evaluation.ranges.RANGE_POLICIES, repeated so that parsing a sweep imports no torch.
RANGE_POLICIES = ("auto", "trained", "calibrated", "percentile")

_TABLES: dict[str, frozenset[str]] = {
    "sweep": frozenset({"name", "seed", "runs", "ranges"}),
    "grid": frozenset({"models", "chips", "personalities", "times", "bits", "gdc", "read_noise", "compensate"}),
}


@dataclass(frozen=True)
class SweepTask:
    """One simulated chip of one model. ``task_id`` is stable across runs of the sweep."""

    model: str
    chip: str
    run: int
    task_id: str
    chip_seed: int
    noise_seed: int

    def coordinates(self) -> str:
        """How a person names this task in a message: ``model=… chip=… run=…``."""
        return f"model={self.model} chip={self.chip} run={self.run}"


@dataclass(frozen=True)
class SweepSpec:
    """A parsed sweep file. ``bits`` uses ``None`` for ideal converters."""

    name: str
    seed: int
    runs: int
    models: tuple[str, ...]
    chips: tuple[str, ...]
    times_s: tuple[float, ...]
    bits: tuple[int | None, ...]
    gdc: tuple[bool, ...]
    read_noise: tuple[bool, ...]
    source: str = "<string>"
    ranges: str = "auto"
    #: drift compensation methods (harness.evaluation.compensation); empty: the ``gdc`` axis decides.
    compensate: tuple[str, ...] = ()

    def canonical(self) -> dict[str, Any]:
        """Everything that determines the results (not the name or where it came from)."""
        return {
            "seed": self.seed,
            "runs": self.runs,
            "models": list(self.models),
            "chips": list(self.chips),
            "times_s": list(self.times_s),
            "bits": [0 if b is None else b for b in self.bits],
            "gdc": list(self.gdc),
            "read_noise": list(self.read_noise),
            "ranges": self.ranges,
            **({"compensate": list(self.compensate)} if self.compensate else {}),  # old digests unchanged
        }

    def digest(self) -> str:
        """Content hash of :meth:`canonical`: a results folder belongs to one digest."""
        text = json.dumps(self.canonical(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def tasks(self) -> list[SweepTask]:
        """Every task, model-major then chip then run."""
        return [task_for(self.seed, m, c, r) for m in self.models for c in self.chips for r in range(self.runs)]

    @property
    def rows_per_task(self) -> int:
        return len(self.times_s) * len(self.bits) * len(self.compensate or self.gdc) * len(self.read_noise)


def task_for(sweep_seed: int, model: str, chip: str, run: int) -> SweepTask:
    """The task at ``(model, chip, run)``: its id and seeds are a hash of the sweep seed and
    the coordinates (blake2b), so adding a model or a run leaves every other task as it was."""
    key = json.dumps([sweep_seed, model, chip, run]).encode()
    digest = hashlib.blake2b(key, digest_size=16).digest()
    chip_seed = int.from_bytes(digest[:4], "little") & 0x7FFF_FFFF
    noise_seed = int.from_bytes(digest[4:8], "little") & 0x7FFF_FFFF
    return SweepTask(model, chip, run, digest[8:].hex(), chip_seed, noise_seed)


def seeded_chip_uri(chip: str, seed: int) -> str:
    """``chip`` with ``seed=`` added (chips of a sweep carry no seed of their own)."""
    from harness.chip.registry import parse_uri

    parsed = parse_uri(chip)
    params = dict(parsed.params)
    params["seed"] = str(seed)
    return f"{parsed.scheme}?{urlencode(params)}"


def load_sweep(path: str | Path) -> SweepSpec:
    """Parse the sweep file at ``path``.

    Raises:
        ConfigError: unreadable file, malformed TOML, unknown keys or bad values.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"sweep file {str(p)!r} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"sweep file {str(p)!r} is a directory") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read sweep file {str(p)!r}: {exc}") from exc
    return parse_sweep(text, source=str(p), base_dir=p.parent, default_name=p.stem)


def parse_sweep(
    text: str, *, source: str = "<string>", base_dir: str | Path | None = None, default_name: str = "sweep"
) -> SweepSpec:
    """Parse sweep-file text (see the module docstring)."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from exc
    for table in doc:
        if table not in _TABLES:
            raise ConfigError(f"{source}: unknown table [{table}]; allowed: {', '.join(f'[{t}]' for t in _TABLES)}")
    sweep = _table(doc, "sweep", source, required=False)
    grid = _table(doc, "grid", source, required=True)

    name = sweep.get("name", default_name)
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{source}: [sweep] name must be a non-empty string")
    seed = _int(sweep.get("seed", 0), "[sweep] seed", source, 0, 2**31 - 1)
    runs = _int(sweep.get("runs", 25), "[sweep] runs", source, 1, MAX_RUNS)
    ranges = sweep.get("ranges", "auto")
    if ranges not in RANGE_POLICIES:
        raise ConfigError(f"{source}: [sweep] ranges = {ranges!r}; use one of {', '.join(RANGE_POLICIES)}")

    models = tuple(_resolve_model(m, base_dir) for m in _str_list(grid, "models", source))
    chips = list(_str_list(grid, "chips", source, required=False))
    chips += [f"virtual?{urlencode({'personality': p})}" for p in _str_list(grid, "personalities", source, required=False)]
    if not chips:
        chips = ["virtual"]
    for chip in chips:
        _check_chip(chip, source)
    _no_duplicates(chips, "chips (and personalities)", source)
    times = tuple(_time(t, source) for t in _list(grid, "times", source))
    if list(times) != sorted(set(times)):
        raise ConfigError(f"{source}: [grid] times must be distinct and increasing; got {[format_duration(t) for t in times]}")
    bits = tuple(_bits(b, source) for b in _list(grid, "bits", source, default=[8, 6, 4]))
    _no_duplicates(bits, "bits", source)
    gdc = tuple(_bool(v, "gdc", source) for v in _list(grid, "gdc", source, default=[True]))
    read_noise = tuple(_bool(v, "read_noise", source) for v in _list(grid, "read_noise", source, default=[False]))
    _no_duplicates(gdc, "gdc", source)
    _no_duplicates(read_noise, "read_noise", source)
    compensate = tuple(_str_list(grid, "compensate", source, required=False))
    if compensate:
        from harness.errors import HarnessError
        from harness.evaluation.compensation import parse_methods

        if "gdc" in grid:
            raise ConfigError(f"{source}: [grid] gdc and compensate do not combine; name the methods in compensate")
        _no_duplicates(compensate, "compensate", source)
        try:
            parse_methods(compensate)
        except HarnessError as exc:
            raise ConfigError(f"{source}: [grid] compensate: {exc}") from None
    spec = SweepSpec(
        name=name.strip(), seed=seed, runs=runs, models=models, chips=tuple(chips), times_s=times,
        bits=bits, gdc=gdc, read_noise=read_noise, source=source, ranges=ranges, compensate=compensate,
    )
    n_tasks = len(models) * len(chips) * runs
    if n_tasks > MAX_TASKS:
        raise ConfigError(f"{source}: the grid has {n_tasks:,} tasks; the limit is {MAX_TASKS:,}")
    return spec


# ----------------------------------------------------------------------------- helpers


def _table(doc: Mapping[str, Any], name: str, source: str, *, required: bool) -> dict[str, Any]:
    table = doc.get(name)
    if table is None:
        if required:
            raise ConfigError(f"{source}: missing table [{name}]")
        return {}
    if not isinstance(table, dict):
        raise ConfigError(f"{source}: [{name}] must be a table")
    unknown = sorted(set(table) - _TABLES[name])
    if unknown:
        raise ConfigError(
            f"{source}: unknown key {unknown[0]!r} in [{name}]; allowed keys: {', '.join(sorted(_TABLES[name]))}"
        )
    return table


def _list(table: Mapping[str, Any], key: str, source: str, default: list[Any] | None = None) -> list[Any]:
    if key not in table:
        if default is None:
            raise ConfigError(f"{source}: [grid] needs {key!r}")
        return default
    value = table[key]
    if not isinstance(value, list):
        raise ConfigError(f"{source}: [grid] {key} must be a list, got {type(value).__name__}")
    if not value:
        raise ConfigError(f"{source}: [grid] {key} is empty; the grid would have no cells")
    return value


def _str_list(table: Mapping[str, Any], key: str, source: str, *, required: bool = True) -> list[str]:
    if not required and key not in table:
        return []
    items = _list(table, key, source)
    for item in items:
        if not isinstance(item, str) or not item.strip():
            raise ConfigError(f"{source}: [grid] {key} must hold non-empty strings, got {item!r}")
    _no_duplicates(items, key, source)
    return [i.strip() for i in items]


def _no_duplicates(items: Any, key: str, source: str) -> None:
    seen: set[Any] = set()
    for item in items:
        if item in seen:
            raise ConfigError(f"{source}: [grid] {key} lists {item!r} twice")
        seen.add(item)


def _int(value: Any, what: str, source: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{source}: {what} must be an integer, got {value!r}")
    if not lo <= value <= hi:
        raise ConfigError(f"{source}: {what} = {value} is out of range {lo}..{hi}")
    return value


def _bool(value: Any, key: str, source: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{source}: [grid] {key} must hold true/false, got {value!r}")
    return value


def _bits(value: Any, source: str) -> int | None:
    from harness.evaluation.cim import check_bits

    b = _int(value, "[grid] bits item", source, 0, 2**31 - 1)
    try:
        return check_bits(None if b == 0 else b)
    except Exception as exc:  # check_bits raises a HarnessError subclass with the limit
        raise ConfigError(f"{source}: [grid] bits: {exc}") from exc


def _time(value: Any, source: str) -> float:
    if isinstance(value, bool):
        raise ConfigError(f"{source}: [grid] times must hold durations like \"1h\", got {value!r}")
    if isinstance(value, (int, float)):
        value = repr(float(value))
    if not isinstance(value, str):
        raise ConfigError(f"{source}: [grid] times must hold durations like \"1h\", got {value!r}")
    try:
        return parse_duration(value)
    except ConfigError as exc:
        raise ConfigError(f"{source}: [grid] times: {exc}") from exc


def _resolve_model(ref: str, base_dir: str | Path | None) -> str:
    """A model file path (made absolute, relative to the sweep file) or a name kept as is."""
    looks_like_path = ref.endswith(".h5") or "/" in ref or "\\" in ref
    if looks_like_path:
        p = Path(ref).expanduser()
        if not p.is_absolute() and base_dir is not None:
            p = Path(base_dir) / p
        return str(p.resolve())
    return ref


def _check_chip(chip: str, source: str) -> None:
    from harness.chip.registry import parse_uri

    try:
        parsed = parse_uri(chip)
    except ConfigError as exc:
        raise ConfigError(f"{source}: [grid] chips: {exc}") from exc
    if parsed.scheme != "virtual":
        raise ConfigError(
            f"{source}: [grid] chips: {chip!r} is not a virtual chip; a sweep simulates many chips, "
            "so it takes virtual URIs (evaluate a real chip or a recording with harness evaluate)"
        )
    if "seed" in parsed.params:
        raise ConfigError(
            f"{source}: [grid] chips: {chip!r} fixes seed=; the sweep seeds each simulated chip itself "
            "(set [sweep] seed instead)"
        )
