"""Timed readout sessions: program, then read back on a schedule; resume after a crash.

Times in a schedule are absolute seconds since the end of programming
(``ProgrammingResult.t_end_s`` on the chip's clock). Readout ``i`` waits with
``chip.wait_until(t_end_s + times_s[i])`` and is recorded with the chip time at which its
read actually started, so a late readout shows its real time. On the virtual chip the
clock is simulated: 20 hours take seconds, and the physics sees the scheduled times.

After every readout the recording is appended, flushed and committed; a chip that can
snapshot its state (:class:`RestorableChip`, e.g. the virtual chip) has that state saved
in the same commit, so :func:`resume_session` continues the physics instead of restarting
it. Chips that cannot (real hardware) keep drifting on the bench by themselves; resume
then maps the recording's timetable onto the chip clock through wall time.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from harness.chip.protocol import Chip, CodeReadingChip
from harness.chip.registry import chip_seed
from harness.errors import HarnessError, RecordingError
from harness.programming.mapping import map_model
from harness.recording import (
    Recording,
    RecordingLock,
    RecordingWriter,
    clean_stale_partials,
    create_recording,
    open_recording,
    partial_paths,
    recover_recording,
)
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
) -> SessionResult:
    """Program the session's model onto ``chip``, then record every scheduled readout in ``out``.

    With ``save_chip_state`` (default) a chip that can snapshot its state (the virtual chip)
    has it recorded so the session can be resumed; pass False for a recording that will
    never be resumed (e.g. a temporary one inside an evaluation).

    Raises:
        RecordingError: ``out`` exists (and not ``overwrite``) or cannot be written; checked
            before anything is programmed.
        ModelError / MappingError / ProgrammingError / ChipIOError: from those stages.
    """
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
        return _run_locked(spec, chip, out_path, lock, overwrite, progress, provenance_extra, save_chip_state)
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
    )
    with writer:
        late, worst = record_readouts(
            writer, chip, spec.schedule.as_array(), result.t_end_s, 0, progress, restorable, spec.readout.repeats
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
    )


def record_readouts(
    writer: RecordingWriter,
    chip: Chip,
    times_s: npt.NDArray[np.float64],
    t_origin: float,
    start: int,
    progress: ProgressCallback | None,
    restorable: bool,
    repeats: int = 1,
) -> tuple[int, float]:
    """Record readouts ``start..`` of ``times_s`` (s since ``t_origin`` on the chip clock),
    ``repeats`` reads back to back at every scheduled time: readout ``j`` belongs to time
    ``j // repeats`` (its ``schedule_index``); ``start`` counts readouts, not times.

    Each readout waits for its time, reads ``writer.cells``, and appends the read with its
    actual start time, its scheduled time and index, the read's duration and (``restorable``)
    the chip's runtime state, committed together. Lateness counts the first read of each
    time only (repeats follow it by design). Returns (late count, worst lateness in s).
    """
    n = times_s.size * repeats
    cells = writer.cells
    direct = writer.stores_codes and isinstance(chip, CodeReadingChip)
    late, worst = 0, 0.0
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
        append(t_rel, data, chip_state=state, t_scheduled_s=t_sched, schedule_index=i, read_duration_s=duration)
        if progress:
            t_next = float(times_s[(j + 1) // repeats]) if j + 1 < n else None
            progress(SessionProgress("readout", j + 1, n, t_next, t_s=t_rel))
    if progress:
        progress(SessionProgress("done", n, n, None))
    return late, worst


@dataclass(frozen=True)
class ResumePlan:
    """What :func:`resume_session` will do, decided from the recording alone.

    ``check_cells`` / ``check_ref_uS`` / ``check_t_ref_s``: the sample of programmed cells
    the chip check reads, their conductance in the reference readout and its time.
    ``needs_repair``: the file was left "open for write" by a writer killed after its last
    commit, so it must be rewritten to be readable by any HDF5 tool.
    """

    path: Path
    session: str
    chip_uri: str
    done: int
    total: int
    times_s: npt.NDArray[np.float64]
    repeats: int
    t_end_s: float
    t_end_unix_s: float
    chip_state: dict[str, np.ndarray] | None
    geometry_json: dict[str, Any]
    identity: str
    check_cells: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    check_ref_uS: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))
    check_t_ref_s: float = 0.0
    check_reference: str = ""
    needs_repair: bool = False


def plan_resume(path: str | Path, chip_uri: str | None = None) -> ResumePlan:
    """Check that ``path`` can be resumed and say how; touches nothing.

    Raises:
        RecordingError: missing (with what that means), foreign, damaged, not a session,
            or still being written.
    """
    p = Path(path)
    if not p.exists():
        leftovers = partial_paths(p)
        hint = (
            f" (found {leftovers[0].name}: a header that was never finished)" if leftovers else ""
        )
        raise RecordingError(
            f"no recording at {p}{hint}: a session interrupted before programming finished and its header "
            f"was written leaves nothing to resume; start it again with 'harness session run SESSION.toml --out {p}'"
        )
    with open_recording(p) as rec:
        if not rec.has_session:
            raise RecordingError(f"{p} was not recorded by 'harness session run' (it has no session); nothing to resume")
        if rec.writer_running:
            raise RecordingError(f"{p} is still being written by process {rec.writer_info[0]}; stop it first or wait")
        times = rec.scheduled_times_s
        if times is None or times.size == 0:
            raise RecordingError(f"{p} has an empty session timetable")
        uri = chip_uri or str(rec.provenance.get("chip_uri", ""))
        if not uri:
            raise RecordingError(f"{p} does not record its chip URI; give one with --chip")
        prog = rec.programming
        state = rec.chip_state(rec.n_readouts) if rec.has_chip_state else None
        if rec.has_chip_state and state is None:
            raise RecordingError(
                f"{p} has no chip state after its {rec.n_readouts} readouts; the virtual chip's physics cannot be continued"
            )
        from harness.sessions.resume_check import sample_positions  # here: `session status` need not import physics

        n = rec.n_readouts
        if n:
            on = _programmed_mask(rec)
            last = rec.readout(n - 1)
            pos = sample_positions(np.where(on, last, 0.0))
            cells, ref, t_ref = rec.readout_cells[pos], last[pos], float(rec.times_s[n - 1])
            reference = f"last committed readout (#{n})"
        else:
            on = prog.target_uS > RESET_LEVEL_US
            pos = sample_positions(np.where(on, prog.final_uS, 0.0))
            cells, ref, t_ref = prog.cells[pos], prog.final_uS[pos], 0.0
            reference = "programming outcome"
        return ResumePlan(
            path=p,
            session=rec.session_name or "",
            chip_uri=uri,
            done=n,
            total=int(times.size) * rec.readout_repeats,
            times_s=times,
            repeats=rec.readout_repeats,
            t_end_s=prog.t_end_s,
            t_end_unix_s=prog.t_end_unix_s,
            chip_state=state,
            geometry_json=dataclasses.asdict(rec.geometry),
            identity=str(rec.provenance.get("chip_identity", "")),
            check_cells=np.asarray(cells, dtype=np.int64),
            check_ref_uS=np.asarray(ref, dtype=np.float64),
            check_t_ref_s=t_ref,
            check_reference=reference,
            needs_repair=rec.open_for_write,
        )


def resume_session(
    path: str | Path,
    *,
    chip: Chip | None = None,
    chip_uri: str | None = None,
    progress: ProgressCallback | None = None,
    accept_chip: bool = False,
    warn: Callable[[str], None] | None = None,
) -> SessionResult:
    """Continue an interrupted session from its recording alone.

    The committed readouts are kept (a readout in flight at the crash is dropped and
    done again), the timetable is the recorded one, and a restorable chip (virtual) is
    put back into the state it had right after the last committed readout. ``chip``
    (already open) or ``chip_uri`` override the recorded chip URI.

    Before anything is appended the chip is verified (:func:`verify_chip`): its identity,
    and a check read of programmed cells against the drift law from the last committed
    readout. ``accept_chip`` resumes even when that fails (the user's explicit choice;
    ``warn`` is told, and the recording's resume log says so). Every resume is logged in
    the recording. The writer lock is held from the start, so two resumes of one file
    cannot both proceed. A complete recording left "open for write" by a writer killed
    after its last commit is repaired (rewritten closed) and nothing else is done.

    Raises:
        RecordingError: see :func:`plan_resume`; the file is locked by a live writer; or
            the chip does not match the recording (and not ``accept_chip``).
    """
    from harness.chip.registry import open_chip

    wall0 = time.perf_counter()
    p = Path(path)
    lock = RecordingLock.acquire(p) if p.exists() else None
    try:
        plan = plan_resume(p, chip_uri if chip is None else chip.uri)
        if plan.done >= plan.total:
            if plan.needs_repair:
                recover_recording(plan.path, lock=lock).close()
            return SessionResult(plan.path, plan.session, plan.chip_uri, plan.done, plan.total, plan.done, 0, 0.0,
                                 time.perf_counter() - wall0, 0.0)
        own = chip is None
        the_chip = open_chip(plan.chip_uri) if chip is None else chip
        try:
            t_origin, restorable, note = verify_chip(plan, the_chip, accept_chip=accept_chip, warn=warn)
            chip_t0 = the_chip.now()
            writer = recover_recording(plan.path, lock=lock, note=note)
            with writer:
                if writer.n_readouts != plan.done:
                    raise RecordingError(
                        f"{plan.path} changed while resuming ({writer.n_readouts} != {plan.done} readouts)"
                    )
                late, worst = record_readouts(
                    writer, the_chip, plan.times_s, t_origin, plan.done, progress, restorable, plan.repeats
                )
                done = writer.n_readouts
            return SessionResult(
                path=plan.path,
                session=plan.session,
                chip_uri=plan.chip_uri,
                readouts_done=done,
                readouts_scheduled=plan.total,
                resumed_from=plan.done,
                late_readouts=late,
                max_lateness_s=worst,
                wall_s=time.perf_counter() - wall0,
                sim_s=the_chip.now() - chip_t0,
                chip_check=note,
            )
        finally:
            if own:
                the_chip.close()
    finally:
        if lock is not None:
            lock.release()


def verify_chip(
    plan: ResumePlan,
    chip: Chip,
    *,
    accept_chip: bool = False,
    warn: Callable[[str], None] | None = None,
) -> tuple[float, bool, dict[str, Any]]:
    """Make sure ``chip`` is the recorded chip, and put a restorable one back in its state.

    Checks, in order: geometry (always fatal); identity (``*IDN?`` / seed); for a
    recording with a virtual chip's state, that the chip can restore it, else for a
    virtual chip, that the recording holds its state (a new virtual chip is blank); and
    a check read of ``plan.check_cells`` against the drift law (:mod:`harness.sessions.resume_check`).
    A restorable chip is restored again after the check read, so the resumed physics are
    bit-identical to an uninterrupted run.

    Returns:
        (time origin of the timetable on the chip clock, whether the chip state is
        recorded with each readout, the resume-log entry).

    Raises:
        RecordingError: one line saying what disagrees, unless ``accept_chip``.
    """
    from harness.sessions.resume_check import check_against

    if dataclasses.asdict(chip.geometry) != plan.geometry_json:
        raise RecordingError(
            f"chip {plan.chip_uri!r} has geometry {chip.geometry} but {plan.path} was recorded on "
            f"{plan.geometry_json}; resume on the same chip"
        )
    problems: list[str] = []
    if plan.identity and chip.identity != plan.identity:
        problems.append(f"chip {chip.identity!r} is not the recorded chip {plan.identity!r}")
    restorable = isinstance(chip, RestorableChip)
    if plan.chip_state is not None:
        if not restorable:
            raise RecordingError(
                f"{plan.path} holds a virtual chip's state but {plan.chip_uri!r} cannot restore it; "
                "resume with the recorded chip URI"
            )
        if problems and not accept_chip:
            raise RecordingError(f"{problems[0]}; resume with the same seed, or pass --accept-chip")
        try:
            chip.restore(plan.chip_state)  # type: ignore[attr-defined]
        except HarnessError as exc:
            raise RecordingError(f"cannot restore the chip state recorded in {plan.path}: {exc}") from exc
        t_origin = plan.t_end_s
    else:
        if restorable:
            problems.append(
                f"{plan.path} holds no chip state, so a virtual chip cannot be put back into the recorded state "
                "(a new virtual chip is unprogrammed)"
            )
        restorable = False
        # Real chips kept drifting on the bench: map the timetable through wall time.
        t_origin = chip.now() - (time.time() - plan.t_end_unix_s)
    check = None
    if plan.check_cells.size:
        t_now = chip.now() - t_origin
        g_now = chip.read(plan.check_cells)
        if restorable:
            chip.restore(plan.chip_state)  # type: ignore[attr-defined]  # undo the check read's draws
        geom = chip.geometry
        check = check_against(
            plan.check_ref_uS, g_now, plan.check_t_ref_s, t_now, lsb_uS=geom.adc_lsb_uS,
            reference=plan.check_reference, personality=getattr(chip, "personality", None),
        )
        if not check.agrees:
            problems.append(f"the chip does not read like the recorded one: {check.explain()}")
    note: dict[str, Any] = {
        "unix_s": time.time(),
        "resumed_from": plan.done,
        "chip_uri": chip.uri,
        "chip_identity": chip.identity,
        "identity_matches": not plan.identity or chip.identity == plan.identity,
        "check": None if check is None else check.summary(),
        "accepted_despite": problems if accept_chip else [],
    }
    if problems:
        if not accept_chip:
            raise RecordingError(
                f"refusing to resume {plan.path}: {problems[0]} (restarted, reprogrammed or another chip?); "
                "pass --accept-chip to resume on it anyway"
            )
        if warn is not None:
            warn(f"--accept-chip: resuming {plan.path} although {problems[0]}; the recording notes this")
    return t_origin, restorable, note


def session_status(path: str | Path) -> dict[str, Any]:
    """State of a recording: readouts done/pending, last time, next due, conductance stats.

    Raises:
        RecordingError: missing, foreign or damaged file.
    """
    p = Path(path)
    if not p.exists():
        leftovers = partial_paths(p)
        if leftovers:
            raise RecordingError(
                f"no recording at {p}, only an unfinished header ({leftovers[0].name}): the session was interrupted "
                "before its recording was complete enough to resume; run it again"
            )
    with open_recording(p) as rec:
        return _status(rec)


def _status(rec: Recording) -> dict[str, Any]:
    n = rec.n_readouts
    times = rec.times_s
    sched = rec.scheduled_times_s
    total = rec.n_scheduled
    if rec.writer_running:
        state = "running"
    elif total is None:
        state = "no session"  # a program-only recording: nothing was scheduled
    elif n >= total:
        state = "complete"
    else:
        state = "interrupted"
    prog = rec.programming
    k = rec.readout_repeats
    next_due = float(sched[n // k]) if sched is not None and n // k < sched.size else None
    out: dict[str, Any] = {
        "path": str(rec.path),
        "session": rec.session_name,
        "state": state,
        "chip_uri": rec.provenance.get("chip_uri"),
        "chip_identity": rec.provenance.get("chip_identity"),
        "model": rec.provenance.get("model_name", rec.provenance.get("model")),
        "devices": rec.layout.n_devices,
        "readout_cells": rec.n_cells,
        "readouts_done": n,
        "readouts_scheduled": total,
        "readouts_pending": None if total is None else max(total - n, 0),
        "last_t_s": float(times[-1]) if n else None,
        "next_due_s": next_due,
        # Only a chip on wall-clock time has a wall-clock due time; a simulated clock's
        # schedule has no meaning in wall time (it would print a time in the past).
        "simulated_clock": _simulated_clock(rec.provenance.get("chip_uri")),
        "next_due_unix_s": (
            None if next_due is None or _simulated_clock(rec.provenance.get("chip_uri")) else prog.t_end_unix_s + next_due
        ),
        "programming": {
            "converged_fraction": prog.converged_fraction,
            "error_std_uS": prog.error_std_uS,
            "t_end_unix_s": prog.t_end_unix_s,
        },
        "writer_pid": rec.writer_info[0] if state == "running" else None,
        # left "open for write" by a writer killed after its last commit: 'session resume'
        # rewrites it closed (plain HDF5 tools refuse it until then)
        "needs_repair": rec.open_for_write and state != "running",
        "resumes": len(rec.resumes),
        "chip_accepted_despite_check": sum(1 for r in rec.resumes if r.get("accepted_despite")),
    }
    if n:
        first, last = rec.readout(0), rec.readout(n - 1)
        on = _programmed_mask(rec)
        out["conductance"] = {
            "first": _stats(first, float(times[0])),
            "last": _stats(last, float(times[-1])),
            "programmed_cells": int(on.sum()),
            "mean_ratio_last_first": (
                float(last[on].mean() / first[on].mean()) if on.any() and first[on].mean() > 0 else None
            ),
        }
    return out


def _simulated_clock(chip_uri: str | None) -> bool:
    """Whether the recorded chip ran on a simulated clock (a virtual chip without clock=wall)."""
    from harness.chip.registry import parse_uri

    try:
        parsed = parse_uri(chip_uri or "")
    except HarnessError:
        return False
    return parsed.scheme == "virtual" and parsed.params.get("clock", "sim") != "wall"


def _programmed_mask(rec: Recording) -> npt.NDArray[np.bool_]:
    """Readout positions whose target is above the RESET level."""
    lay = rec.layout
    target = np.full(rec.geometry.n_cells, math.nan)
    target[lay.cells] = lay.target_uS
    t = target[rec.readout_cells]
    return np.nan_to_num(t, nan=0.0) > RESET_LEVEL_US


#: Targets at or below this (µS) are the RESET partners of differential pairs.
RESET_LEVEL_US = 0.5


def _stats(g: npt.NDArray[np.float64], t_s: float) -> dict[str, float]:
    return {"t_s": t_s, "mean_uS": float(g.mean()), "std_uS": float(g.std()), "min_uS": float(g.min()),
            "max_uS": float(g.max())}


__all__ = [
    "record_readouts",
    "ResumePlan",
    "RestorableChip",
    "SessionProgress",
    "SessionResult",
    "plan_resume",
    "resume_session",
    "run_session",
    "session_status",
    "timetable",
]
