"""Timed readout sessions: program, then read back on a schedule.

Times in a schedule are absolute seconds since the end of programming
(``ProgrammingResult.t_end_s`` on the chip's clock). Readout ``i`` waits with
``chip.wait_until(t_end_s + times_s[i])`` and is recorded with the chip time at which its
read actually started, so a late readout shows its real time. On the virtual chip the
clock is simulated: 20 hours take seconds, and the physics sees the scheduled times.

After every readout the recording is appended, flushed and committed; a chip that can
snapshot its state (:class:`RestorableChip`, e.g. the virtual chip) has that state saved
in the same commit, so :func:`harness.sessions.resume.resume_session` continues the physics
instead of restarting it. Continuing after a crash is :mod:`harness.sessions.resume`; a
recording's state is :mod:`harness.sessions.status`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from harness.chip.protocol import Chip, CodeReadingChip
from harness.chip.registry import chip_seed
from harness.errors import ConfigError, RecordingError
from harness.programming.mapping import map_model
from harness.recording import (
    RecordingLock,
    RecordingWriter,
    clean_stale_partials,
    create_recording,
)
from harness.sessions.refresh import MonitorFactory, RefreshLoop, start_loop
from harness.sessions.schedule import SessionSpec, fmt_duration


@runtime_checkable
class RestorableChip(Protocol):
    """A chip whose complete state can be saved and restored (the virtual chip).

    ``snapshot(include_devices=False)`` returns only what changes on a read (RNG, clock);
    ``restore`` accepts a full snapshot, or a runtime one merged over a full one.
    """

    def snapshot(self, *, include_devices: bool = True) -> dict[str, np.ndarray]: ...

    def restore(self, state: dict[str, np.ndarray]) -> None: ...


@dataclass(frozen=True)
class SessionProgress:
    """What the runner reports: before programming (``phase="programming"``), before each
    readout waits (``"waiting"``), after each readout (``"readout"``) and at the end (``"done"``).

    ``done``/``total``: readouts recorded / scheduled. ``t_next_s``: the next readout's
    scheduled time (s since programming), None when none is left. ``t_s``: the time of the
    readout just recorded. ``programming``: the programming progress object, if any.
    """

    phase: str
    done: int
    total: int
    t_next_s: float | None = None
    t_s: float | None = None
    programming: Any = None


ProgressCallback = Callable[[SessionProgress], None]


@dataclass(frozen=True)
class SessionResult:
    """Outcome of a run or resume."""

    path: Path
    session: str
    chip_uri: str
    readouts_done: int
    readouts_scheduled: int
    resumed_from: int
    late_readouts: int
    max_lateness_s: float
    wall_s: float
    sim_s: float
    programming: dict[str, Any] = field(default_factory=dict)
    chip_check: dict[str, Any] | None = None
    #: re-programmings by a refresh session's rule in this run (or resume)
    refreshes: int = 0

    def summary(self) -> dict[str, Any]:
        return {
            "out": str(self.path),
            "session": self.session,
            "chip": self.chip_uri,
            "readouts_done": self.readouts_done,
            "readouts_scheduled": self.readouts_scheduled,
            "complete": self.readouts_done >= self.readouts_scheduled,
            "resumed_from": self.resumed_from,
            "late_readouts": self.late_readouts,
            "max_lateness_s": self.max_lateness_s,
            "wall_s": self.wall_s,
            "chip_time_s": self.sim_s,
            **({"programming": self.programming} if self.programming else {}),
            **({"chip_check": self.chip_check} if self.chip_check else {}),
            **({"refreshes": self.refreshes} if self.refreshes else {}),
        }


#: A readout counts as late when it starts more than this after its scheduled time (s):
#: covers the batched read's own duration on the simulated chip.
LATE_TOLERANCE_S = 1e-3


def timetable(spec: SessionSpec) -> list[dict[str, Any]]:
    """The schedule as rows ``{readout, t_s, after}`` (for ``--dry-run``); readouts are
    numbered from 1, as everywhere in the CLI."""
    return [{"readout": i + 1, "t_s": t, "after": fmt_duration(t)} for i, t in enumerate(spec.schedule.times_s)]


def resolve_model_path(spec: SessionSpec) -> Path:
    """The file of the session's model: ``"default"``, a zoo/bundled name or a path
    (:func:`harness.models.resolve_model_path`)."""
    from harness.models import resolve_model_path as resolve

    return resolve(spec.program.model)


def run_session(
    spec: SessionSpec,
    chip: Chip,
    out: str | Path,
    *,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
    provenance_extra: Mapping[str, Any] | None = None,
    save_chip_state: bool = True,
    monitor_factory: MonitorFactory | None = None,
) -> SessionResult:
    """Program the session's model onto ``chip``, then record every scheduled readout in ``out``.

    A refresh session (``spec.refresh``) re-programs on its rule (:mod:`harness.sessions.refresh`);
    it needs ``monitor_factory`` (``harness.evaluation.monitor.build_monitor``), which is
    called, and the model's monitor set loaded, before anything is programmed.

    With ``save_chip_state`` (default) a chip that can snapshot its state (the virtual chip)
    has it recorded so the session can be resumed; pass False for a recording that will
    never be resumed (e.g. a temporary one inside an evaluation).

    Raises:
        RecordingError: ``out`` exists (and not ``overwrite``) or cannot be written; checked
            before anything is programmed.
        ModelError / MappingError / ProgrammingError / ChipIOError: from those stages.
        ConfigError: a refresh session without a monitor factory.
    """
    if spec.refresh is not None and monitor_factory is None:
        raise ConfigError(
            f"session {spec.name!r} has a [refresh] table: pass monitor_factory "
            "(harness.evaluation.monitor.build_monitor) to run it"
        )
    out_path = Path(out)
    if out_path.exists() and not overwrite:
        raise RecordingError(
            f"recording {out_path} already exists; choose another --out, resume it with "
            f"'harness session resume {out_path}', or pass --overwrite"
        )
    if not out_path.parent.is_dir():
        raise RecordingError(f"directory {out_path.parent} does not exist; create it or choose another --out")
    # Held from before programming until the writer closes: a live session's file is never
    # replaced by --overwrite, and nothing else writes it meanwhile.
    lock = RecordingLock.acquire(out_path)
    try:
        clean_stale_partials(out_path)
        return _run_locked(
            spec, chip, out_path, lock, overwrite, progress, provenance_extra, save_chip_state, monitor_factory
        )
    finally:
        lock.release()


def _run_locked(
    spec: SessionSpec,
    chip: Chip,
    out_path: Path,
    lock: RecordingLock,
    overwrite: bool,
    progress: ProgressCallback | None,
    provenance_extra: Mapping[str, Any] | None,
    save_chip_state: bool,
    monitor_factory: MonitorFactory | None = None,
) -> SessionResult:
    from harness.models.format import load_model
    from harness.programming.write_verify import program_layout
    from harness.provenance import collect_provenance, personality_provenance

    wall0 = time.perf_counter()
    chip_t0 = chip.now()
    params = spec.program.programming_params()
    model_path = resolve_model_path(spec)
    model = load_model(model_path)
    layout = map_model(model, chip.geometry)
    cells = np.arange(chip.geometry.n_cells, dtype=np.int64) if spec.readout.cells == "array" else layout.cells
    n = spec.schedule.n_readouts * spec.readout.repeats
    # A refresh session's monitor (its model's dataset, the training split) is made before
    # any pulse: a model without a dataset fails here, with nothing programmed or recorded.
    monitor = monitor_factory(model, layout, spec.refresh) if spec.refresh and monitor_factory else None
    if progress:
        progress(SessionProgress("programming", 0, n, spec.schedule.times_s[0]))

    def on_programming(p: Any) -> None:
        if progress:
            progress(SessionProgress("programming", 0, n, spec.schedule.times_s[0], programming=p))

    result = program_layout(chip, layout, params, on_programming)
    t_end_unix = time.time()
    restorable = save_chip_state and isinstance(chip, RestorableChip)
    provenance = collect_provenance(
        chip_uri=chip.uri,
        chip_identity=chip.identity,
        seed=chip_seed(chip.uri),
        model=str(model_path),
        model_name=model.name,
        command="session run",
        session=spec.name,
        session_file=spec.source_path,
        session_toml=spec.source_text,
        **personality_provenance(chip),
        **dict(provenance_extra or {}),
    )
    writer = create_recording(
        out_path,
        provenance=provenance,
        layout=layout,
        programming=result,
        session=spec,
        chip_state=chip.snapshot() if restorable else None,  # type: ignore[union-attr]
        readout_cells=cells,
        t_end_unix_s=t_end_unix,
        overwrite=overwrite,
        lock=lock,
        refresh_state_keys=_device_state_keys(chip) if restorable else (),
    )
    with writer:
        loop = None
        if spec.refresh is not None and monitor is not None:
            loop = start_loop(spec.refresh, chip, writer, layout, params, monitor, result, restorable)
        late, worst = record_readouts(
            writer, chip, spec.schedule.as_array(), result.t_end_s, 0, progress, restorable, spec.readout.repeats,
            refresh=loop,
        )
        done = writer.n_readouts
    return SessionResult(
        path=out_path,
        session=spec.name,
        chip_uri=chip.uri,
        readouts_done=done,
        readouts_scheduled=n,
        resumed_from=0,
        late_readouts=late,
        max_lateness_s=worst,
        wall_s=time.perf_counter() - wall0,
        sim_s=chip.now() - chip_t0,
        programming={k: v for k, v in result.summary().items() if k != "levels"},
        refreshes=0 if loop is None else loop.refreshes,
    )


def _device_state_keys(chip: Chip) -> tuple[str, ...]:
    """The keys of a restorable chip's full snapshot that a read does not change (saved per refresh)."""
    full = chip.snapshot()  # type: ignore[attr-defined]
    runtime = chip.snapshot(include_devices=False)  # type: ignore[attr-defined]
    return tuple(sorted(set(full) - set(runtime)))


def record_readouts(
    writer: RecordingWriter,
    chip: Chip,
    times_s: npt.NDArray[np.float64],
    t_origin: float,
    start: int,
    progress: ProgressCallback | None,
    restorable: bool,
    repeats: int = 1,
    refresh: RefreshLoop | None = None,
) -> tuple[int, float]:
    """Record readouts ``start..`` of ``times_s`` (s since ``t_origin`` on the chip clock),
    ``repeats`` reads back to back at every scheduled time: readout ``j`` belongs to time
    ``j // repeats`` (its ``schedule_index``); ``start`` counts readouts, not times.

    Each readout waits for its time, reads ``writer.cells``, and appends the read with its
    actual start time, its scheduled time and index, the read's duration and (``restorable``)
    the chip's runtime state, committed together. Lateness counts the first read of each
    time only (repeats follow it by design). Returns (late count, worst lateness in s).

    ``refresh`` (a refresh session): each readout gets its epoch columns, and after the last
    read of a time with reads left the rule may re-program (:mod:`harness.sessions.refresh`);
    resuming at ``start > 0`` first takes the check of readout ``start - 1`` again (a refresh
    it fired is committed only with the next readout).
    """
    n = times_s.size * repeats
    cells = writer.cells
    direct = writer.stores_codes and isinstance(chip, CodeReadingChip)
    late, worst = 0, 0.0

    def check_refresh(j: int, t_rel: float) -> None:
        if refresh is None or j + 1 >= n or j % repeats != repeats - 1:
            return
        on_prog = (lambda p: progress(SessionProgress("programming", j + 1, n, float(times_s[(j + 1) // repeats]),
                                                      programming=p))) if progress else None
        refresh.after_read(j, t_rel, on_prog)

    if start > 0 and refresh is not None:
        check_refresh(start - 1, refresh.t_last_s)
    for j in range(start, n):
        i = j // repeats
        t_sched = float(times_s[i])
        if progress:
            progress(SessionProgress("waiting", j, n, t_sched))
        chip.wait_until(t_origin + t_sched)
        t_read = chip.now()
        data = chip.read_codes(cells) if direct else chip.read(cells)  # type: ignore[attr-defined]
        duration = chip.now() - t_read
        t_rel = t_read - t_origin
        lateness = t_rel - t_sched
        if j % repeats == 0 and lateness > LATE_TOLERANCE_S:
            late += 1
            worst = max(worst, lateness)
        state = chip.snapshot(include_devices=False) if restorable else None  # type: ignore[attr-defined]
        append = writer.append_codes if direct else writer.append_readout
        cols = refresh.columns(data, direct) if refresh is not None else {}
        append(t_rel, data, chip_state=state, t_scheduled_s=t_sched, schedule_index=i, read_duration_s=duration, **cols)
        check_refresh(j, t_rel)
        if progress:
            t_next = float(times_s[(j + 1) // repeats]) if j + 1 < n else None
            progress(SessionProgress("readout", j + 1, n, t_next, t_s=t_rel))
    if progress:
        progress(SessionProgress("done", n, n, None))
    return late, worst


__all__ = [
    "record_readouts",
    "RestorableChip",
    "SessionProgress",
    "SessionResult",
    "run_session",
    "timetable",
]
