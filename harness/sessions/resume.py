"""Resuming an interrupted session from its recording alone, after checking the chip.

:func:`plan_resume` decides from the recording what a resume will do (touching nothing);
:func:`verify_chip` makes sure the chip on the bench is the recorded one and puts a
restorable (virtual) chip back into its recorded state; :func:`resume_session` does both
under the writer lock and records the remaining readouts with the session runner's
:func:`~harness.sessions.runner.record_readouts`. Chips that cannot restore their state
(real hardware) kept drifting on the bench by themselves; resume then maps the recording's
timetable onto the chip clock through wall time.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from harness.chip.protocol import Chip
from harness.errors import ConfigError, HarnessError, RecordingError
from harness.recording import (
    RecordingLock,
    open_recording,
    partial_paths,
    recover_recording,
)
from harness.sessions.refresh import MonitorFactory
from harness.sessions.runner import ProgressCallback, RestorableChip, SessionResult, record_readouts
from harness.sessions.status import RESET_LEVEL_US, programmed_mask


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
    #: targets of the checked cells (µS), for the programming-noise fingerprint
    check_target_uS: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))
    #: when the reference readout's programming epoch began (s since the first programming):
    #: the drift law of the check counts from there
    check_epoch_origin_s: float = 0.0
    #: a refresh session's rule, model and where it stands (None: no [refresh])
    refresh: Any = None
    refresh_point: Any = None
    model_path: str = ""


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
        from harness.sessions.resume_check import sample_positions  # here: the physics loads only when a plan is made

        n = rec.n_readouts
        spec = rec.session
        refresh = spec.refresh if spec is not None else None
        point = None
        origin = 0.0
        if refresh is not None:
            from harness.sessions.refresh import resume_point

            point = resume_point(rec, refresh)
            origin = point.state.t_origin_s
        if n:
            on = programmed_mask(rec)
            last = rec.readout(n - 1)
            pos = sample_positions(np.where(on, last, 0.0))
            cells, ref, t_ref = rec.readout_cells[pos], last[pos], float(rec.times_s[n - 1]) - origin
            reference = f"last committed readout (#{n})"
            lay = rec.layout
            order = np.argsort(lay.cells)
            at = np.clip(np.searchsorted(lay.cells, cells, sorter=order), 0, max(lay.cells.size - 1, 0))
            target = np.asarray(lay.target_uS, dtype=np.float64)[order[at]] if lay.cells.size else np.zeros(0)
        else:
            on = prog.target_uS > RESET_LEVEL_US
            pos = sample_positions(np.where(on, prog.final_uS, 0.0))
            cells, ref, t_ref = prog.cells[pos], prog.final_uS[pos], 0.0
            reference = "programming outcome"
            target = np.asarray(prog.target_uS, dtype=np.float64)[pos]
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
            check_target_uS=target,
            check_epoch_origin_s=origin,
            refresh=refresh,
            refresh_point=point,
            model_path=str(rec.provenance.get("model") or (spec.program.model if spec is not None else "")),
        )


def resume_session(
    path: str | Path,
    *,
    chip: Chip | None = None,
    chip_uri: str | None = None,
    progress: ProgressCallback | None = None,
    accept_chip: bool = False,
    warn: Callable[[str], None] | None = None,
    monitor_factory: MonitorFactory | None = None,
) -> SessionResult:
    """Continue an interrupted session from its recording alone.

    A refresh session continues its rule from the recorded epochs and monitor accuracies;
    it needs ``monitor_factory`` as :func:`~harness.sessions.runner.run_session` does.

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
        monitor = _refresh_monitor(plan, monitor_factory)
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
                loop = None
                if monitor is not None:
                    from harness.sessions.refresh import resume_loop

                    loop = resume_loop(plan.refresh_point, plan.refresh, the_chip, writer, monitor[1], monitor[2],
                                       monitor[0], t_origin, restorable)
                late, worst = record_readouts(
                    writer, the_chip, plan.times_s, t_origin, plan.done, progress, restorable, plan.repeats,
                    refresh=loop,
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
                refreshes=0 if loop is None else loop.refreshes,
            )
        finally:
            if own:
                the_chip.close()
    finally:
        if lock is not None:
            lock.release()


def _refresh_monitor(plan: ResumePlan, factory: MonitorFactory | None) -> tuple[Any, Any, Any] | None:
    """(monitor, layout, programming parameters) of a refresh session's resume, made before
    the chip is touched; None for any other session."""
    if plan.refresh is None:
        return None
    if factory is None:
        raise ConfigError(
            f"{plan.path} is a refresh session: pass monitor_factory (harness.evaluation.monitor.build_monitor) to resume it"
        )
    from harness.models import resolve_model_path
    from harness.models.format import load_model
    from harness.recording import reading

    model = load_model(resolve_model_path(plan.model_path))
    with reading(plan.path) as rec:
        layout = rec.layout
        spec = rec.session
    params = spec.program.programming_params() if spec is not None else None
    return factory(model, layout, plan.refresh), layout, params


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
    clock_problem = ""
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
        chip_now = chip.now()
        t_origin = chip_now - (time.time() - plan.t_end_unix_s)
        # A chip clock behind the last recorded readout restarted since: an emulator
        # restarted (and perhaps reprogrammed with the very draws of the first programming,
        # which no noise fingerprint can tell apart), or a power-cycled chip.
        t_last = plan.t_end_s + plan.check_epoch_origin_s + plan.check_t_ref_s
        if chip_now < t_last:
            clock_problem = (
                f"the chip clock reads {chip_now:.6g} s, behind the {t_last:.6g} s of the {plan.check_reference}: "
                "the chip restarted since it was recorded"
            )
    check = None
    if plan.check_cells.size:
        # time since programming on the chip's own clock (what its physics saw), unless that
        # clock restarted: then the wall-time mapping
        t_now = chip.now() - (t_origin if clock_problem else plan.t_end_s) - plan.check_epoch_origin_s
        g_now = chip.read(plan.check_cells)
        g_again = chip.read(plan.check_cells)  # the fingerprint's own-noise reference
        if restorable:
            chip.restore(plan.chip_state)  # type: ignore[attr-defined]  # undo the check read's draws
        geom = chip.geometry
        check = check_against(
            plan.check_ref_uS, g_now, plan.check_t_ref_s, t_now, lsb_uS=geom.adc_lsb_uS,
            reference=plan.check_reference, personality=getattr(chip, "personality", None),
            target_uS=plan.check_target_uS if plan.check_target_uS.size == plan.check_cells.size else None,
            g_again_uS=g_again,
        )
        if not check.agrees:
            problems.append(f"the chip does not read like the recorded one: {check.explain()}")
    if clock_problem:
        problems.append(clock_problem)
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


__all__ = ["ResumePlan", "plan_resume", "resume_session", "verify_chip"]
