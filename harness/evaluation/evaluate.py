"""Accuracy vs drift time: conductances from a live chip or a recording → CiM inference.

One code path for both sources. A **recording** (``harness session run`` output) holds the
layout, the programming outcome and readouts at recorded times. A **live chip** is run
through the session runner itself (:func:`harness.sessions.runner.run_session`: program the model,
then read the layout's cells at the requested times on the chip's clock) into a temporary
recording, which is then evaluated exactly like any other recording — so a recording and
the live virtual chip that made it (same URI, model, programming parameters and times)
give bit-identical readouts and identical accuracy tables.

From each chip's readouts the CiM simulator (:mod:`harness.evaluation.cim`) runs the model on the
dataset's test split at every (chip, time, bit-width), in batched tensor operations:

* **Simulated chips.** ``--chip virtual?seed=S`` with ``runs=N`` programs and reads N
  virtual chips with seeds ``S, S+1, …, S+N−1`` (each on its own simulated clock: a year
  takes no wall time), all with the URI's geometry. A non-virtual chip (serial, VISA) is
  one chip, and so is a recording: ``runs > 1`` then means repeated evaluations of that
  chip's readouts with fresh per-read noise draws, and is refused without ``read_noise``
  (they would be identical).
* **GDC reference.** The calibration readout "right after programming" is the final
  verify read of the write-verify loop (``programming/final_uS`` in every recording).
* **Time matching (recordings).** Requested times must lie within the recorded range
  (first to last readout, 1 ms slack). ``match="nearest"`` (default) takes the recorded
  readout nearest on a log time axis (``ln(t + 1 s)``, the distance that matters for
  power-law drift); ``match="exact"`` requires a readout (actual or scheduled time)
  within 1 ms. The actual readout times used are part of the result.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import numpy as np
import numpy.typing as npt
import torch

from harness.chip.protocol import Chip, FloatArray, Geometry
from harness.evaluation.cim import CimSimulator, ConverterRanges, check_bits, converter_ranges
from harness.data import check_dataset_fits, fixtures_dir, load_dataset
from harness.errors import EvaluationError, RecordingError
from harness.programming.mapping import Layout, map_model
from harness.models.format import Model, default_model_path, load_model
from harness.programming.write_verify import ProgrammingParams
from harness.recording import Recording, open_recording
from harness.units import DAY_S, HOUR_S, MONTH_S, YEAR_S, format_duration

#: The seed paper's evaluation times (AnalogNets §6.2, REFERENCE §8): 25 s, 1 h, 1 d, 1 mo, 1 y.
DEFAULT_TIMES_S: tuple[float, ...] = (25.0, HOUR_S, DAY_S, MONTH_S, YEAR_S)
#: Activation precisions of the seed paper (REFERENCE §8).
DEFAULT_BITS: tuple[int, ...] = (8, 6, 4)
#: Simulated chips per evaluation on a virtual chip (REFERENCE §8: 25 runs).
DEFAULT_VIRTUAL_RUNS = 25
MAX_RUNS = 10_000
MATCH_MODES = ("nearest", "exact")
#: Slack (s) when checking requested times against the recorded range, and the tolerance
#: of ``match="exact"`` (covers the read's own duration on the simulated clock).
TIME_SLACK_S = 1e-3
#: Offset of the log time axis used by ``match="nearest"`` (s).
LOG_TIME_OFFSET_S = 1.0


# ----------------------------------------------------------------------------- data types


@dataclass(frozen=True, eq=False)
class ChipReadouts:
    """One chip's conductances at the evaluated times, in layout order.

    Attributes:
        label: the chip URI, or the recording's path.
        layout: the mapped model the chip was programmed with.
        g_ref_uS: ``(n_devices,)`` the calibration readout right after programming (GDC t0).
        times_s: ``(T,)`` actual readout times (s since the end of programming).
        g_uS: ``(T, n_devices)`` read conductances (µS).
    """

    label: str
    layout: Layout
    g_ref_uS: FloatArray
    times_s: FloatArray
    g_uS: FloatArray


@dataclass(frozen=True)
class EvaluationProgress:
    """Reported while evaluating: ``phase`` is ``"chip"`` (``done`` of ``total`` chips
    programmed and read, reported after each), ``"readout"`` (a readout of chip ``done + 1``)
    or ``"inference"`` (bit-width ``done + 1`` of ``total`` starts)."""

    phase: str
    done: int
    total: int
    label: str = ""


ProgressCallback = Callable[[EvaluationProgress], None]


@dataclass(frozen=True)
class EvaluationTiming:
    """Wall time (s): programming and reading the chips (sessions; 0 for recordings),
    loading readouts from recordings, CiM inference, and the whole evaluation."""

    program_read_s: float = 0.0
    load_s: float = 0.0
    inference_s: float = 0.0
    total_s: float = 0.0


@dataclass(frozen=True, eq=False)
class EvaluationResult:
    """Accuracy per bit-width, time and run, with the float baseline and what made it.

    Attributes:
        model: the model's name; ``model_path`` its file (None if not from a file).
        source: ``"chip"`` or ``"recording"``; ``location`` the chip URI or recording path.
        runs_labels: per run, the chip it ran on (URI or recording path).
        digital_accuracy: float accuracy of the model on the test split (no converters).
        n_test: test samples.
        bits: activation precisions (None: ideal converters).
        times_s: requested times (s since programming), increasing.
        read_times_s: ``(runs, T)`` the actual readout times used.
        accuracy: ``(len(bits), T, runs)`` top-1 accuracy in ``[0, 1]``.
        gdc, read_noise, seed: the evaluation switches; ``seed`` seeds the read noise.
        ranges: the DAC ranges and ADC gain used.
        timing: wall-time breakdown.
    """

    model: str
    model_path: str | None
    source: str
    location: str
    runs_labels: tuple[str, ...]
    digital_accuracy: float
    n_test: int
    bits: tuple[int | None, ...]
    times_s: tuple[float, ...]
    read_times_s: npt.NDArray[np.float64]
    accuracy: npt.NDArray[np.float64]
    gdc: bool
    read_noise: bool
    seed: int
    ranges: ConverterRanges
    timing: EvaluationTiming = field(default_factory=EvaluationTiming)

    def __post_init__(self) -> None:
        for arr in (self.read_times_s, self.accuracy):
            arr.setflags(write=False)

    @property
    def runs(self) -> int:
        return int(self.accuracy.shape[2])

    def mean(self) -> npt.NDArray[np.float64]:
        """``(len(bits), T)`` mean accuracy over runs."""
        return self.accuracy.mean(axis=2)

    def std(self) -> npt.NDArray[np.float64]:
        """``(len(bits), T)`` sample std over runs (ddof = 1; 0 for a single run)."""
        if self.runs < 2:
            return np.zeros(self.accuracy.shape[:2])
        return self.accuracy.std(axis=2, ddof=1)

    def time_labels(self) -> list[str]:
        """Short unique labels of :attr:`times_s` (``25s``, ``1h``, ``1mo``…)."""
        labels = [format_duration(t) for t in self.times_s]
        if len(set(labels)) < len(labels):
            labels = [f"{t:.9g}s" for t in self.times_s]
        if len(set(labels)) < len(labels):  # repeated recorded times: number them
            labels = [f"{label}#{i}" for i, label in enumerate(labels, start=1)]
        return labels

    @staticmethod
    def bits_label(bits: int | None) -> str:
        return "ideal" if bits is None else str(bits)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``digital_accuracy`` and ``accuracy[bits][time] = {t_s, t_read_s,
        mean, std, min, max, runs}`` plus the evaluation's settings and timing."""
        mean, std = self.mean(), self.std()
        labels = self.time_labels()
        table: dict[str, dict[str, Any]] = {}
        for i, b in enumerate(self.bits):
            row: dict[str, Any] = {}
            for j, label in enumerate(labels):
                acc = self.accuracy[i, j]
                row[label] = {
                    "t_s": self.times_s[j],
                    "t_read_s": float(self.read_times_s[:, j].mean()),
                    "mean": float(mean[i, j]),
                    "std": float(std[i, j]),
                    "min": float(acc.min()),
                    "max": float(acc.max()),
                    "runs": [float(a) for a in acc],
                }
            table[self.bits_label(b)] = row
        return {
            "model": self.model,
            "model_path": self.model_path,
            "source": self.source,
            self.source: self.location,
            "runs": self.runs,
            "chips": list(self.runs_labels),
            "test_samples": self.n_test,
            "gdc": self.gdc,
            "read_noise": self.read_noise,
            "seed": self.seed,
            "digital_accuracy": self.digital_accuracy,
            "bits": [self.bits_label(b) for b in self.bits],
            "times_s": list(self.times_s),
            "times": labels,
            "accuracy": table,
            "ranges": self.ranges.to_dict(),
            "timing_s": dataclasses.asdict(self.timing),
        }


# ----------------------------------------------------------------------------- checks


def normalize_times(times_s: Sequence[float]) -> tuple[float, ...]:
    """Sorted, de-duplicated, validated times (s since programming).

    Raises:
        EvaluationError: empty, negative or non-finite times.
    """
    ts = sorted({float(t) for t in times_s})
    if not ts:
        raise EvaluationError("no evaluation times given; e.g. 25s,1h,1d,1mo,1y")
    for t in ts:
        if not math.isfinite(t) or t < 0:
            raise EvaluationError(f"evaluation time {t!r} s must be a finite number >= 0 (s since programming)")
    return tuple(ts)


def normalize_bits(bits: Sequence[int | None]) -> tuple[int | None, ...]:
    """De-duplicated bit-widths in the given order, each validated by :func:`harness.evaluation.cim.check_bits`."""
    out: list[int | None] = []
    for b in bits:
        b = check_bits(b)
        if b not in out:
            out.append(b)
    if not out:
        raise EvaluationError("no bit-widths given; e.g. 8,6,4")
    return tuple(out)


def check_model_matches_layout(model: Model, layout: Layout, where: str) -> None:
    """Raise EvaluationError unless ``layout`` is what mapping ``model`` onto its geometry gives.

    Checks layer names and shapes, which layers are unipolar (single devices), then the
    target conductances (a model with the same shapes but other weights was not what was
    programmed).
    """
    wanted = [(a.name, a.weight.shape[0], a.weight.shape[1]) for a in model.analog_layers()]
    placed = [(p.name, p.out_features, p.fan_in) for p in layout.layers]
    if wanted != placed:
        fmt = lambda ls: ", ".join(f"{n} {o}x{f}" for n, o, f in ls)  # noqa: E731
        raise EvaluationError(
            f"model {model.name!r} (layers {fmt(wanted)}) does not match the layout in {where} "
            f"(layers {fmt(placed)}); pass the model that was programmed with --model"
        )
    model_uni = set(model.unipolar_layers)
    for p in layout.layers:
        if p.unipolar != (p.name in model_uni):
            kinds = ("unipolar (one device per weight)", "differential")
            rec_kind, model_kind = kinds if p.unipolar else kinds[::-1]
            raise EvaluationError(
                f"layer {p.name!r} is {rec_kind} in {where} but {model_kind} in model {model.name!r}; "
                "pass the model that was programmed with --model"
            )
    expected = map_model(model, layout.geometry)
    if not np.array_equal(expected.cells, layout.cells):
        raise EvaluationError(
            f"model {model.name!r} maps onto other cells than the layout in {where}; pass the model that was programmed"
        )
    diff = float(np.abs(expected.target_uS - layout.target_uS).max(initial=0.0))
    # Targets are scale-free (s = g_max / max|W|): a uniformly scaled layer shows in its scale only.
    for p_exp, p_rec in zip(expected.layers, layout.layers):
        if not math.isclose(p_exp.scale_uS, p_rec.scale_uS, rel_tol=1e-6):
            diff = max(diff, abs(p_exp.weight_max - p_rec.weight_max) * p_rec.scale_uS)
    if diff > 1e-6 * layout.geometry.g_max_uS:
        raise EvaluationError(
            f"the weights of model {model.name!r} differ from the targets programmed in {where} "
            f"(largest difference {diff:.3g} µS); pass the model that was programmed with --model"
        )


def match_times(
    recorded_s: npt.ArrayLike,
    requested_s: Sequence[float],
    *,
    match: str = "nearest",
    scheduled_s: npt.ArrayLike | None = None,
    where: str = "the recording",
) -> npt.NDArray[np.int64]:
    """Index of the recorded readout used for each requested time (see the module docstring).

    Raises:
        EvaluationError: no readouts, an unknown mode, a time outside the recorded range,
            or (``exact``) no readout within 1 ms.
    """
    if match not in MATCH_MODES:
        raise EvaluationError(f"unknown time matching {match!r}; use one of {', '.join(MATCH_MODES)}")
    rec = np.asarray(recorded_s, dtype=np.float64)
    if rec.size == 0:
        raise EvaluationError(f"{where} holds no readouts to evaluate")
    sched = np.full_like(rec, np.nan) if scheduled_s is None else np.asarray(scheduled_s, dtype=np.float64)
    both = np.concatenate([rec, sched[np.isfinite(sched)]])
    lo, hi = float(both.min()), float(both.max())
    out = []
    for t in requested_s:
        if t < lo - TIME_SLACK_S or t > hi + TIME_SLACK_S:
            raise EvaluationError(
                f"time {format_duration(t)} ({t:g} s) is outside the recorded range "
                f"{format_duration(lo)}..{format_duration(hi)} of {where}; choose --times within it"
            )
        if match == "exact":
            dist = np.minimum(np.abs(rec - t), np.where(np.isfinite(sched), np.abs(sched - t), np.inf))
            i = int(np.argmin(dist))
            if dist[i] > TIME_SLACK_S:
                raise EvaluationError(
                    f"no readout at {format_duration(t)} ({t:g} s) in {where} (nearest: {rec[i]:g} s); "
                    "use --match nearest or one of the recorded times"
                )
        else:
            i = int(np.argmin(np.abs(np.log(rec + LOG_TIME_OFFSET_S) - math.log(t + LOG_TIME_OFFSET_S))))
        out.append(i)
    return np.asarray(out, dtype=np.int64)


# ----------------------------------------------------------------------------- recordings


def readouts_from_recording(
    rec: Recording,
    model: Model,
    times_s: Sequence[float] | None = None,
    *,
    match: str = "nearest",
    label: str | None = None,
) -> ChipReadouts:
    """The readouts of ``rec`` at ``times_s`` (None: every recorded readout), checked against ``model``.

    Raises:
        EvaluationError: the model does not match the recorded layout; times outside the
            recorded range; no readouts.
        RecordingError: the layout's cells were not read, or the file is damaged.
    """
    where = str(rec.path)
    layout = rec.layout
    check_model_matches_layout(model, layout, where)
    recorded = rec.times_s
    if recorded.size == 0:
        raise EvaluationError(f"{where} holds no readouts to evaluate")
    scheduled = rec.extra("t_scheduled_s") if "t_scheduled_s" in rec.extra_names else None
    if times_s is None:
        idx = np.arange(recorded.size, dtype=np.int64)
    else:
        idx = match_times(recorded, normalize_times(times_s), match=match, scheduled_s=scheduled, where=where)
    pos = _positions(layout.cells, rec.readout_cells, rec.geometry)
    if np.any(pos < 0):
        missing = int(layout.cells[np.flatnonzero(pos < 0)[0]])
        raise RecordingError(f"{where} did not read cell {missing} of the model's layout; it cannot be evaluated")
    prog = rec.programming
    ppos = _positions(layout.cells, prog.cells, rec.geometry)
    if np.any(ppos < 0):
        raise RecordingError(f"{where}: the programming outcome lacks cells of the layout")
    g = np.stack([rec.readout(int(i))[pos] for i in idx])
    return ChipReadouts(
        label=label or where,
        layout=layout,
        g_ref_uS=np.asarray(prog.final_uS, dtype=np.float64)[ppos],
        times_s=recorded[idx].astype(np.float64),
        g_uS=g,
    )


def _positions(cells: npt.NDArray[np.int64], among: npt.NDArray[np.int64], geometry: Geometry) -> npt.NDArray[np.int64]:
    """Position of each of ``cells`` in ``among`` (−1 where absent); O(n log n) in the cells
    involved, never in the chip's size (``geometry`` is kept for callers' symmetry)."""
    among = np.asarray(among, dtype=np.int64)
    cells = np.asarray(cells, dtype=np.int64)
    if among.size == 0:
        return np.full(cells.shape, -1, dtype=np.int64)
    order = np.argsort(among, kind="stable")
    ranked = among[order]
    k = np.minimum(np.searchsorted(ranked, cells), among.size - 1)
    return np.where(ranked[k] == cells, order[k], -1)


def model_of_recording(rec: Recording) -> Model:
    """The model a recording was programmed with, from its provenance.

    Tries the recorded path, then a file of the same name in ``fixtures/models``.

    Raises:
        EvaluationError: the recording names no model, or no such file exists here.
    """
    recorded = str(rec.provenance.get("model") or "")
    if not recorded:
        raise EvaluationError(f"{rec.path} does not record which model was programmed; pass it with --model")
    candidates = [Path(recorded)]
    if recorded in ("default", ""):
        candidates = [default_model_path()]
    candidates.append(fixtures_dir() / "models" / Path(recorded).name)
    for path in candidates:
        if path.is_file():
            return load_model(path)
    raise EvaluationError(
        f"{rec.path} was programmed with model {recorded!r}, which is not available here; pass it with --model"
    )


# ----------------------------------------------------------------------------- live chips


def virtual_chip_uris(uri: str, runs: int) -> list[str]:
    """``runs`` URIs of consecutive seeds from a ``virtual`` URI (the URI itself first).

    Raises:
        ConfigError: not a parseable chip URI. EvaluationError: a non-integer seed.
    """
    from harness.chip.registry import parse_uri

    parsed = parse_uri(uri)
    params = dict(parsed.params)
    try:
        seed0 = int(params.get("seed", "0"), 10)
    except ValueError as exc:
        raise EvaluationError(f"seed {params.get('seed')!r} in chip URI {uri!r} is not an integer") from exc
    out = [uri]
    for i in range(1, runs):
        params["seed"] = str(seed0 + i)
        out.append(f"{parsed.scheme}?{urlencode(params)}")
    return out


def _session_spec(model_path: Path, times_s: Sequence[float], params: ProgrammingParams) -> Any:
    """The session a live evaluation runs: program the model, read its layout at ``times_s``."""
    from harness.sessions.schedule import parse_session

    lines = [
        "[session]",
        'name = "evaluate"',
        'description = "harness evaluate: program the model, read its layout at the evaluation times"',
        "[program]",
        f"model = {json.dumps(str(model_path.resolve()))}",
        "[program.params]",
        *(f"{k} = {v!r}" for k, v in dataclasses.asdict(params).items()),
        "[readout]",
        'cells = "layout"',
        'encoding = "float64"',  # exact for any backend's values; nothing is stored long-term
        "[schedule]",
        'kind = "list"',
        "times_s = [" + ", ".join(repr(float(t)) for t in times_s) + "]",
    ]
    return parse_session("\n".join(lines) + "\n", source="<harness evaluate>")


def read_live_chip(
    chip: Chip,
    model: Model,
    times_s: Sequence[float],
    *,
    params: ProgrammingParams | None = None,
    workdir: str | Path | None = None,
    progress: ProgressCallback | None = None,
    run_index: int = 0,
    n_runs: int = 1,
) -> ChipReadouts:
    """Program ``model`` onto ``chip`` and read it at ``times_s`` through the session runner.

    The session is recorded into a temporary file in ``workdir`` (deleted afterwards) and
    read back with :func:`readouts_from_recording`, so the readouts are exactly those a
    ``harness session run`` of the same chip, model, parameters and times records.

    Raises:
        HarnessError: from programming, the chip, or the recording.
    """
    from harness.sessions.runner import SessionProgress, run_session

    times = normalize_times(times_s)
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="harness-evaluate-"))
        model_path = model.path
        if model_path is None:
            from harness.models.format import save_model

            model_path = Path(workdir) / f"model-{run_index}.h5"
            save_model(model, model_path)
        spec = _session_spec(Path(model_path), times, params or ProgrammingParams())
        out = Path(workdir) / f"chip-{run_index}.h5"

        def on_session(p: SessionProgress) -> None:
            if progress and p.phase == "readout":
                progress(EvaluationProgress("readout", run_index, n_runs, f"{chip.uri} t={format_duration(p.t_s or 0)}"))

        try:
            run_session(spec, chip, out, overwrite=True, progress=on_session, save_chip_state=False)
            with open_recording(out) as rec:
                return readouts_from_recording(rec, model, times, match="exact", label=chip.uri)
        finally:
            out.unlink(missing_ok=True)


def read_chips(
    chip_uri: str,
    model: Model,
    times_s: Sequence[float],
    runs: int,
    *,
    params: ProgrammingParams | None = None,
    progress: ProgressCallback | None = None,
) -> list[ChipReadouts]:
    """Open, program and read ``runs`` chips (virtual: consecutive seeds; else the one chip).

    Raises:
        EvaluationError: ``runs`` out of range. HarnessError: from the chips.
    """
    from harness.chip.registry import open_chip, parse_uri

    scheme = parse_uri(chip_uri).scheme
    uris = virtual_chip_uris(chip_uri, runs) if scheme == "virtual" else [chip_uri]
    out = []
    with tempfile.TemporaryDirectory(prefix="harness-evaluate-") as workdir:
        for i, uri in enumerate(uris):
            with contextlib.closing(open_chip(uri)) as chip:
                out.append(
                    read_live_chip(
                        chip, model, times_s, params=params, workdir=workdir, progress=progress,
                        run_index=i, n_runs=len(uris),
                    )
                )
            if progress:
                progress(EvaluationProgress("chip", i + 1, len(uris), uri))
    return out


# ----------------------------------------------------------------------------- evaluation


class ReadoutEvaluator:
    """CiM accuracy of one model on any number of chips' readouts, prepared once.

    The test split, the converter ranges, the float accuracy and the simulator of a layout
    are the same for every chip of the model, so a sweep worker makes them once per model
    (:mod:`harness.sweeps.runner`) and :func:`evaluate_readouts` once per call.

    Args:
        model: the programmed model; its ``dataset``'s test split is evaluated.
        ranges: converter ranges (default: the model's trained ranges, else
            :func:`harness.evaluation.cim.converter_ranges` calibrated on the training split).
    """

    def __init__(self, model: Model, *, ranges: ConverterRanges | None = None) -> None:
        self.model = model
        data = load_dataset(model.dataset)
        check_dataset_fits(data, input_shape=model.input_shape, n_classes=model.n_classes, model_name=model.name)
        self.ranges = ranges or converter_ranges(model, None if model.ranges else data.x_train)
        self.x = torch.from_numpy(np.array(data.x_test, dtype=np.float32))
        self.y = torch.from_numpy(np.array(data.y_test, dtype=np.int64))
        self.n_test = int(self.y.shape[0])
        self.digital_accuracy = _digital_accuracy(model, self.x, self.y)
        self._sims: dict[int, tuple[Layout, CimSimulator]] = {}

    def simulator(self, layout: Layout) -> CimSimulator:
        """The CiM simulator of ``layout`` (cached per layout object)."""
        hit = self._sims.get(id(layout))
        if hit is None or hit[0] is not layout:
            hit = (layout, CimSimulator(self.model, layout, self.ranges))
            self._sims = {id(layout): hit}  # one layout at a time: chips of one model share it
        return hit[1]

    def read_chip(
        self, chip: Chip, times_s: Sequence[float], params: ProgrammingParams | None = None
    ) -> ChipReadouts:
        """Program the model onto ``chip`` and read its layout at ``times_s`` after programming.

        The same calls, in the same order, as :func:`read_live_chip` through the session
        runner (``programming.program_model``, then per time ``wait_until`` and one ``read``
        of the layout's cells; GDC reference = the final verify read), without writing and
        re-reading a temporary recording: the readouts are bit-identical to that path
        (``tests/test_sweep.py``), and a sweep task costs its chip operations only.
        """
        from harness.programming.write_verify import program_model

        times = normalize_times(times_s)
        layout, result = program_model(chip, self.model, params or ProgrammingParams())
        g = np.empty((len(times), layout.n_devices))
        t_read = np.empty(len(times))
        for j, t in enumerate(times):
            chip.wait_until(result.t_end_s + t)
            t_read[j] = chip.now() - result.t_end_s
            g[j] = chip.read(layout.cells)
        return ChipReadouts(
            label=chip.uri, layout=layout, g_ref_uS=np.asarray(result.final_uS, dtype=np.float64), times_s=t_read, g_uS=g
        )

    def accuracy(
        self, readouts: ChipReadouts, *, bits: Sequence[int | None], gdc: bool, read_noise: bool, seed: int
    ) -> npt.NDArray[np.float64]:
        """``(len(bits), T)`` accuracy of one chip's readouts."""
        return self.accuracy_batch([readouts], bits=bits, gdc=gdc, read_noise=read_noise, seed=seed)[:, :, 0]

    def accuracy_batch(
        self,
        chips: Sequence[ChipReadouts],
        *,
        bits: Sequence[int | None],
        gdc: bool,
        read_noise: bool,
        seed: int,
        repeats: int = 1,
        on_bits: Callable[[int, int | None], None] | None = None,
    ) -> npt.NDArray[np.float64]:
        """``(len(bits), T, len(chips)·repeats)`` accuracy, chips × times batched in tensors."""
        layout = chips[0].layout
        sim = self.simulator(layout)
        n_t = chips[0].times_s.shape[0]
        g = np.concatenate([np.tile(c.g_uS, (repeats, 1)) for c in chips])  # (runs·T, n), run-major
        ref = np.repeat(np.stack([c.g_ref_uS for c in chips]), repeats * n_t, axis=0)
        t_read = np.concatenate([np.tile(c.times_s, repeats) for c in chips])
        g_t = torch.from_numpy(g.astype(np.float32))
        ref_t = torch.from_numpy(ref.astype(np.float32))  # GDC reference and read-noise state
        generator = torch.Generator().manual_seed(int(seed)) if read_noise else None
        n_runs = len(chips) * repeats
        acc = np.empty((len(bits), n_t, n_runs))
        for i, b in enumerate(bits):
            if on_bits:
                on_bits(i, b)
            a = sim.accuracy(
                self.x, self.y, g_t, bits=b, g_ref_uS=ref_t if gdc else None,
                read_noise_t_s=t_read if read_noise else None, g_prog_uS=ref_t, generator=generator,
            )
            acc[i] = a.numpy().reshape(n_runs, n_t).T
        return acc


def evaluate_readouts(
    model: Model,
    chips: Sequence[ChipReadouts],
    *,
    times_s: Sequence[float],
    bits: Sequence[int | None] = DEFAULT_BITS,
    gdc: bool = True,
    read_noise: bool = False,
    repeats: int = 1,
    seed: int = 0,
    ranges: ConverterRanges | None = None,
    source: str = "chip",
    location: str = "",
    progress: ProgressCallback | None = None,
    timing: EvaluationTiming | None = None,
) -> EvaluationResult:
    """CiM accuracy of ``model`` on every chip's readouts, batched over chips × times.

    Args:
        model: the programmed model (its ``dataset``'s test split is evaluated).
        chips: readouts, all at ``len(times_s)`` times and with the same layout.
        times_s: the requested times the readouts answer (for the result's labels).
        bits: activation precisions; gdc / read_noise: the switches of :mod:`harness.evaluation.cim`.
        repeats: evaluations per chip (> 1 only with ``read_noise``: fresh draws each).
        seed: seeds the ``torch.Generator`` of the per-read noise.
        ranges: converter ranges (default: :func:`harness.evaluation.cim.converter_ranges` with the
            training split as calibration data when the model has no trained ranges).

    Raises:
        EvaluationError: no chips, mismatched readouts, bad bits, repeats without read noise.
    """
    wall0 = time.perf_counter()
    if not chips:
        raise EvaluationError("no chips to evaluate")
    times = tuple(float(t) for t in times_s)
    bits_t = normalize_bits(bits)
    if not 1 <= repeats <= MAX_RUNS:
        raise EvaluationError(f"repeats={repeats} must be in 1..{MAX_RUNS}")
    if repeats > 1 and not read_noise:
        raise EvaluationError(
            f"{repeats} runs of one chip's readouts would all be identical without per-read noise; "
            "use --runs 1, or --read-noise for repeated read-noise draws"
        )
    layout = chips[0].layout
    for c in chips:
        if c.g_uS.shape != (len(times), layout.n_devices) or c.g_ref_uS.shape != (layout.n_devices,):
            raise EvaluationError(f"readouts of {c.label} have shape {c.g_uS.shape}, expected ({len(times)}, {layout.n_devices})")
    evaluator = ReadoutEvaluator(model, ranges=ranges)
    ranges = evaluator.ranges
    n_t = len(times)
    labels = tuple(c.label for c in chips for _ in range(repeats))
    t_read = np.concatenate([np.tile(c.times_s, repeats) for c in chips])
    digital = evaluator.digital_accuracy
    t_inf = time.perf_counter()
    acc = evaluator.accuracy_batch(
        chips, bits=bits_t, gdc=gdc, read_noise=read_noise, seed=seed, repeats=repeats,
        on_bits=(lambda i, b: progress(EvaluationProgress("inference", i, len(bits_t), f"{EvaluationResult.bits_label(b)}-bit")))
        if progress else None,
    )
    inference_s = time.perf_counter() - t_inf
    base = timing or EvaluationTiming()
    return EvaluationResult(
        model=model.name,
        model_path=None if model.path is None else str(model.path),
        source=source,
        location=location,
        runs_labels=labels,
        digital_accuracy=digital,
        n_test=evaluator.n_test,
        bits=bits_t,
        times_s=times,
        read_times_s=t_read.reshape(len(labels), n_t),
        accuracy=acc,
        gdc=gdc,
        read_noise=read_noise,
        seed=int(seed),
        ranges=ranges,
        timing=EvaluationTiming(
            program_read_s=base.program_read_s,
            load_s=base.load_s,
            inference_s=inference_s,
            total_s=base.total_s + (time.perf_counter() - wall0),
        ),
    )


def _digital_accuracy(model: Model, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model.to_torch()(x).argmax(dim=1) == y).to(torch.float64).mean())


def _resolve_model(model: Model | str | Path | None) -> Model | None:
    if model is None or isinstance(model, Model):
        return model
    return resolve_model(model)


def resolve_model(ref: str | Path) -> Model:
    """A model by reference: ``"default"``, a zoo or bundled model's name (``analognet-kws``,
    ``digits_mlp``: its file in ``fixtures/models/``) or a file
    (:func:`harness.models.resolve_model_path`).

    Raises:
        ModelError: no such file, zoo or bundled model, or an unreadable file.
    """
    from harness.models import resolve_model_path

    return load_model(resolve_model_path(ref))


def evaluate_chip(
    chip_uri: str,
    model: Model | str | Path | None = None,
    *,
    times_s: Sequence[float] = DEFAULT_TIMES_S,
    runs: int | None = None,
    bits: Sequence[int | None] = DEFAULT_BITS,
    gdc: bool = True,
    read_noise: bool = False,
    seed: int = 0,
    params: ProgrammingParams | None = None,
    match: str = "nearest",
    progress: ProgressCallback | None = None,
) -> EvaluationResult:
    """Program ``model`` (default: the bundled default model) on the chip(s) named by
    ``chip_uri``, read them at ``times_s`` and evaluate (see the module docstring).

    ``runs``: simulated chips for a ``virtual`` URI (default 25); for any other chip,
    evaluations of its one set of readouts (default 1; > 1 needs ``read_noise``). A
    ``replay:FILE`` URI evaluates that recording (:func:`evaluate_recording`).

    Raises:
        EvaluationError / ConfigError / HarnessError: bad arguments or from the chip.
    """
    from harness.chip.registry import parse_uri

    parsed = parse_uri(chip_uri)
    if parsed.scheme == "replay":
        return evaluate_recording(
            parsed.path, model, times_s=times_s, runs=runs, bits=bits, gdc=gdc, read_noise=read_noise,
            seed=seed, match=str(parsed.params.get("match", match)), progress=progress,
        )
    wall0 = time.perf_counter()
    times = normalize_times(times_s)
    bits_t = normalize_bits(bits)
    virtual = parsed.scheme == "virtual"
    n_runs = (DEFAULT_VIRTUAL_RUNS if virtual else 1) if runs is None else int(runs)
    if not 1 <= n_runs <= MAX_RUNS:
        raise EvaluationError(f"--runs {n_runs} must be in 1..{MAX_RUNS}")
    repeats = 1 if virtual else n_runs
    if repeats > 1 and not read_noise:
        raise EvaluationError(
            f"{chip_uri!r} is one physical chip: {n_runs} runs would repeat identical readouts; use --runs 1, "
            "or --read-noise for repeated read-noise draws (simulated chips need a virtual URI)"
        )
    the_model = _resolve_model(model) or load_model(default_model_path())
    return _evaluate_chips_streaming(
        chip_uri, the_model, times, n_runs if virtual else 1, bits=bits_t, gdc=gdc, read_noise=read_noise,
        repeats=repeats, seed=seed, params=params, progress=progress, wall0=wall0,
    )


#: Chips whose readouts are held at once by :func:`evaluate_chip`: their CiM inference is
#: batched, then the readouts are dropped, so memory stays flat in ``--runs``. 32 > the
#: default 25 runs, so a default evaluation is one batch (and bit-identical to evaluating
#: all readouts together).
CHIP_BATCH = 32


def _batch_seed(seed: int, k: int) -> int:
    """Read-noise seed of the k-th chip batch: ``seed`` itself for the first batch (so one
    batch equals a whole-list evaluation), independent derived streams after it."""
    if k == 0:
        return int(seed)
    return int(np.random.SeedSequence([int(seed), k]).generate_state(1, dtype=np.uint64)[0] >> 1)


def _evaluate_chips_streaming(
    chip_uri: str,
    model: Model,
    times: tuple[float, ...],
    n_chips: int,
    *,
    bits: tuple[int | None, ...],
    gdc: bool,
    read_noise: bool,
    repeats: int,
    seed: int,
    params: ProgrammingParams | None,
    progress: ProgressCallback | None,
    wall0: float,
) -> EvaluationResult:
    """Program and read the chips of ``chip_uri`` one by one and evaluate them in batches of
    :data:`CHIP_BATCH`, keeping only per-run accuracies (no readouts) between batches."""
    from harness.chip.registry import open_chip, parse_uri

    scheme = parse_uri(chip_uri).scheme
    uris = virtual_chip_uris(chip_uri, n_chips) if scheme == "virtual" else [chip_uri]
    evaluator = ReadoutEvaluator(model)
    acc_parts: list[npt.NDArray[np.float64]] = []
    t_parts: list[npt.NDArray[np.float64]] = []
    labels: list[str] = []
    batch: list[ChipReadouts] = []
    inference_s = 0.0

    def flush() -> None:
        nonlocal inference_s
        t_inf = time.perf_counter()
        acc_parts.append(evaluator.accuracy_batch(
            batch, bits=bits, gdc=gdc, read_noise=read_noise, seed=_batch_seed(seed, len(acc_parts)), repeats=repeats,
        ))
        inference_s += time.perf_counter() - t_inf
        for c in batch:
            if c.g_uS.shape != (len(times), c.layout.n_devices):
                raise EvaluationError(f"readouts of {c.label} have shape {c.g_uS.shape}, expected ({len(times)}, {c.layout.n_devices})")
            t_parts.extend([c.times_s] * repeats)
            labels.extend([c.label] * repeats)
        batch.clear()

    with tempfile.TemporaryDirectory(prefix="harness-evaluate-") as workdir:
        for i, uri in enumerate(uris):
            with contextlib.closing(open_chip(uri)) as chip:
                batch.append(read_live_chip(chip, model, times, params=params, workdir=workdir, run_index=i, n_runs=len(uris)))
            if len(batch) == CHIP_BATCH:
                flush()
            if progress:
                progress(EvaluationProgress("chip", i + 1, len(uris), uri))
        if batch:
            flush()
    total_s = time.perf_counter() - wall0
    return EvaluationResult(
        model=model.name,
        model_path=None if model.path is None else str(model.path),
        source="chip",
        location=chip_uri,
        runs_labels=tuple(labels),
        digital_accuracy=evaluator.digital_accuracy,
        n_test=evaluator.n_test,
        bits=bits,
        times_s=times,
        read_times_s=np.stack(t_parts),
        accuracy=np.concatenate(acc_parts, axis=2),
        gdc=gdc,
        read_noise=read_noise,
        seed=int(seed),
        ranges=evaluator.ranges,
        timing=EvaluationTiming(program_read_s=total_s - inference_s, inference_s=inference_s, total_s=total_s),
    )


def evaluate_recording(
    path: str | Path,
    model: Model | str | Path | None = None,
    *,
    times_s: Sequence[float] | None = None,
    runs: int | None = None,
    bits: Sequence[int | None] = DEFAULT_BITS,
    gdc: bool = True,
    read_noise: bool = False,
    seed: int = 0,
    match: str = "nearest",
    progress: ProgressCallback | None = None,
) -> EvaluationResult:
    """Evaluate the readouts recorded in ``path`` (see the module docstring for matching).

    ``model``: default, the model the recording names (:func:`model_of_recording`).
    ``times_s``: default, every recorded readout. ``runs``: evaluations of the recording's
    one chip (default 1; > 1 needs ``read_noise``).

    Raises:
        RecordingError: missing, foreign or damaged file.
        EvaluationError: model/layout mismatch, times outside the recording, bad arguments.
    """
    wall0 = time.perf_counter()
    bits_t = normalize_bits(bits)
    n_runs = 1 if runs is None else int(runs)
    if not 1 <= n_runs <= MAX_RUNS:
        raise EvaluationError(f"--runs {n_runs} must be in 1..{MAX_RUNS}")
    if n_runs > 1 and not read_noise:
        raise EvaluationError(
            f"a recording holds one chip: {n_runs} runs would repeat identical readouts; use --runs 1, "
            "or --read-noise for repeated read-noise draws"
        )
    with open_recording(path) as rec:
        the_model = _resolve_model(model) or model_of_recording(rec)
        chip = readouts_from_recording(rec, the_model, times_s, match=match)
        recorded_times = rec.times_s
    times = normalize_times(times_s) if times_s is not None else tuple(float(t) for t in recorded_times)
    load_s = time.perf_counter() - wall0
    return evaluate_readouts(
        the_model, [chip], times_s=times, bits=bits_t, gdc=gdc, read_noise=read_noise, repeats=n_runs, seed=seed,
        source="recording", location=str(path), progress=progress,
        timing=EvaluationTiming(load_s=load_s, total_s=load_s),
    )


__all__ = [
    "DEFAULT_BITS",
    "DEFAULT_TIMES_S",
    "DEFAULT_VIRTUAL_RUNS",
    "ChipReadouts",
    "EvaluationProgress",
    "EvaluationResult",
    "EvaluationTiming",
    "check_model_matches_layout",
    "evaluate_chip",
    "evaluate_readouts",
    "evaluate_recording",
    "match_times",
    "model_of_recording",
    "normalize_bits",
    "normalize_times",
    "read_chips",
    "read_live_chip",
    "readouts_from_recording",
    "virtual_chip_uris",
]
