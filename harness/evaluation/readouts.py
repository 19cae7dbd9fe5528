"""One chip's readouts from a recording: the conductances an evaluation runs on.

A recording (``harness session run`` output) holds the layout, the programming outcome and
readouts at recorded times; :func:`readouts_from_recording` picks the readouts at the requested
times after checking that the model is the one that was programmed.

* **GDC reference.** The calibration readout "right after programming" is the final
  verify read of the write-verify loop (``programming/final_uS`` in every recording).
* **Time matching.** Requested times must lie within the recorded range
  (first to last readout, 1 ms slack). ``match="nearest"`` (default) takes the recorded
  readout nearest on a log time axis (``ln(t + 1 s)``, the distance that matters for
  power-law drift); ``match="exact"`` requires a readout (actual or scheduled time)
  within 1 ms. The actual readout times used are part of the result.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from harness.chip.protocol import FloatArray, Geometry
from harness.data import fixtures_dir
from harness.errors import EvaluationError, RecordingError
from harness.evaluation.settings import MATCH_MODES, normalize_times
from harness.models.format import Model, default_model_path, load_model
from harness.programming.mapping import Layout, map_model
from harness.recording import Recording
from harness.units import format_duration

#: Slack (s) when checking requested times against the recorded range, and the tolerance
#: of ``match="exact"`` (covers the read's own duration on the simulated clock).
TIME_SLACK_S = 1e-3
#: Offset of the log time axis used by ``match="nearest"`` (s).
LOG_TIME_OFFSET_S = 1.0


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
    levels = model.weight_levels
    for p in layout.layers:  # a levelled layer's targets are its levels: the sets must agree
        if tuple(p.levels) != tuple(levels.get(p.name, ())):
            raise EvaluationError(
                f"layer {p.name!r} has weight levels {list(p.levels) or 'none (continuous)'} in {where} but "
                f"{list(levels.get(p.name, ())) or 'none (continuous)'} in model {model.name!r}; "
                "pass the model that was programmed"
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


def readouts_from_recording(
    rec: Recording,
    model: Model,
    times_s: Sequence[float] | None = None,
    *,
    match: str = "nearest",
    label: str | None = None,
    epoch: int | None = None,
) -> ChipReadouts:
    """The readouts of ``rec`` at ``times_s`` (None: every recorded readout), checked against ``model``.

    A refresh session's recording holds several programming epoch (re-programmings): only
    the readouts of one ``epoch`` are used (default: the latest), with times counted from
    that epoch's programming and its programming outcome as the GDC reference, so epochs
    are never mixed (:func:`epoch_of`).

    Raises:
        EvaluationError: the model does not match the recorded layout; times outside the
            recorded range; no readouts.
        RecordingError: the layout's cells were not read, or the file is damaged.
    """
    where = str(rec.path)
    layout = rec.layout
    check_model_matches_layout(model, layout, where)
    e = epoch_of(rec, epoch)
    keep = np.flatnonzero(rec.readout_epochs == e)
    origin = rec.epochs[e].t_origin_s if e else 0.0
    recorded = rec.times_s[keep] - origin
    if recorded.size == 0:
        raise EvaluationError(f"{where} holds no readouts to evaluate")
    scheduled = rec.extra("t_scheduled_s")[keep] - origin if "t_scheduled_s" in rec.extra_names else None
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
    g = np.stack([rec.readout(int(keep[i]))[pos] for i in idx])
    return ChipReadouts(
        label=label or where,
        layout=layout,
        g_ref_uS=rec.epoch_final_uS(e)[ppos],
        times_s=recorded[idx].astype(np.float64),
        g_uS=g,
    )


def epoch_of(rec: Recording, epoch: int | None) -> int:
    """The programming epoch an evaluation of ``rec`` uses: ``epoch``, or the latest.

    Raises:
        EvaluationError: ``epoch`` is not one of the recording's.
    """
    n = rec.n_epochs
    if epoch is None:
        return n - 1
    if not 0 <= epoch < n:
        raise EvaluationError(f"--epoch {epoch} is not one of the {n} programming epoch(s) of {rec.path} (0..{n - 1})")
    return int(epoch)


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


__all__ = [
    "ChipReadouts",
    "check_model_matches_layout",
    "epoch_of",
    "match_times",
    "model_of_recording",
    "readouts_from_recording",
]
