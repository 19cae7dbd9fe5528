"""``harness session run|resume|status``: timed readout sessions with crash-safe recordings."""

from __future__ import annotations

import datetime as _dt
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from harness.commands.common import (
    RECORDING_SUFFIXES,
    check_output,
    check_programmable_uri,
    console_for,
    default_output_path,
    emit_json,
    progress_bar,
    user_errors,
)
from harness.errors import ChipIOError
from harness.units import format_duration

if TYPE_CHECKING:
    from harness.sessions.runner import SessionProgress

app = typer.Typer(
    name="session",
    help="Timed readout sessions: program, then read back on a schedule; resume; status.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@contextmanager
def session_progress(enabled: bool = True) -> Iterator[Callable[[SessionProgress], None]]:
    """Turn runner callbacks into :func:`progress_bar` updates on stderr: a bar on a
    terminal, otherwise plain lines with elapsed time and ETA, at most one a second (the first
    and the last always; a wall-clock session's readouts are seconds apart or more, so its
    log still shows each one, while a simulated-clock session does not print 400 lines)."""
    with progress_bar("session", total=None, enabled=enabled) as update:

        def on_progress(p: SessionProgress) -> None:
            if p.phase == "programming":
                pp = p.programming
                if pp is None:
                    update(0, description="programming", total=None)
                else:
                    update(pp.iteration, description=f"programming ({pp.n_converged}/{pp.n_cells} devices converged)",
                           total=pp.max_iterations, unit="rounds")
            elif p.phase in ("readout", "done"):
                nxt = f", next at {format_duration(p.t_next_s)}" if p.t_next_s is not None else ""
                at = f" (last at {format_duration(p.t_s)}{nxt})" if p.t_s is not None else ""
                update(p.done, description=f"session{at}", total=p.total, unit="readouts")

        yield on_progress


def monitor_factory(model: Any, layout: Any, spec: Any) -> Any:
    """A refresh session's monitor (:func:`harness.evaluation.monitor.build_monitor`), imported
    only when a session has a [refresh] table: other sessions do not load torch."""
    from harness.evaluation.monitor import build_monitor

    return build_monitor(model, layout, spec)


@app.command("run")
def run_command(
    session_file: Path = typer.Argument(..., help="Session definition (TOML), e.g. sessions/drift-20h.toml."),
    chip: str = typer.Option("virtual", "--chip", help="Chip URI: virtual[?seed=N&rows=R&cols=C], serial://…, visa://…"),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed of the virtual chip (same as ?seed=N in the URI)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Recording to write (HDF5). Default: runs/<session>-<time>.h5"),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --out if it exists."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the timetable and exit; touch no chip."),
    model: Optional[str] = typer.Option(None, "--model", help="Model to program instead of the session's: zoo name or model file."),
    json_out: bool = typer.Option(False, "--json", help="Print only a JSON summary on stdout."),
) -> None:
    """Program the session's model, then read the chip back at every scheduled time."""
    console = console_for(json_out)
    with user_errors():
        import dataclasses

        from harness.chip.registry import check_uri, with_seed
        from harness.sessions.schedule import load_session
        from harness.sessions.runner import resolve_model_path, timetable

        spec = load_session(session_file)
        if model is not None:
            spec = dataclasses.replace(spec, program=dataclasses.replace(spec.program, model=model))
            resolve_model_path(spec)  # a bad --model fails here, before any chip is touched
        chip = with_seed(chip, seed)
        check_uri(chip)
        check_programmable_uri(chip)
        if dry_run:
            rows = timetable(spec)
            if json_out:
                emit_json({"session": spec.name, "chip": chip, "model": spec.program.model,
                           "cells": spec.readout.cells, "timetable": rows,
                           **({"refresh": spec.refresh.as_dict()} if spec.refresh else {})})
                return
            table = Table(title=f"{spec.name}: {spec.schedule.describe()} (s since the end of programming)")
            for col in ("readout", "t (s)", "after programming"):
                table.add_column(col, justify="right")
            for r in rows:
                table.add_row(str(r["readout"]), f"{r['t_s']:.6g}", r["after"])
            console.print(table)
            console.print(f"chip {chip}; model {spec.program.model}; cells: {spec.readout.cells}")
            if spec.refresh is not None:
                console.print(f"refresh: {spec.refresh.describe()}")
            return
        out_path = check_output(
            out if out is not None else default_output_path(spec.name),
            option="--out", suffixes=RECORDING_SUFFIXES, overwrite=overwrite,
        )
        from harness.chip.registry import open_chip
        from harness.models.format import load_model
        from harness.programming.mapping import map_model
        from harness.sessions.runner import run_session

        net = load_model(resolve_model_path(spec))  # a missing or bad model fails before any output
        the_chip = open_chip(chip)
        try:
            map_model(net, the_chip.geometry)  # so does a model that does not fit the chip
            console.print(f"session [bold]{spec.name}[/]: {spec.schedule.describe()} on {the_chip.identity} → {out_path}")
            try:
                with session_progress() as progress:
                    result = run_session(spec, the_chip, out_path, overwrite=overwrite, progress=progress,
                                         monitor_factory=monitor_factory)
            except KeyboardInterrupt:
                hint = f"; continue with: harness session resume {out_path}" if out_path.exists() else ""
                sys.stderr.write(f"error: interrupted{hint}\n")
                raise typer.Exit(130) from None
            except ChipIOError as exc:  # e.g. a stalled link: say what is kept and how to go on
                if not out_path.exists():
                    raise
                raise type(exc)(
                    f"{exc}; the readouts recorded so far are kept: continue with: harness session resume {out_path}"
                ) from exc
        finally:
            the_chip.close()
    _render_result(console, result.summary(), json_out)


@app.command("resume")
def resume_command(
    recording: Path = typer.Argument(..., help="The interrupted session's recording (HDF5)."),
    chip: Optional[str] = typer.Option(None, "--chip", help="Chip URI, if not the recorded one (e.g. a new serial port)."),
    accept_chip: bool = typer.Option(
        False, "--accept-chip", help="Resume even if the chip fails the identity/check-read test (noted in the file)."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print only a JSON summary on stdout."),
) -> None:
    """Continue an interrupted session from its recording: no readout lost or repeated.

    The chip is verified first (identity, and a check read of programmed cells against
    the drift law from the last readout); a chip that disagrees is refused."""
    console = console_for(json_out)
    with user_errors():
        from harness.sessions.resume import resume_session

        if chip is not None:
            from harness.chip.registry import check_uri

            check_uri(chip)
        try:
            with session_progress() as progress:
                result = resume_session(
                    recording, chip_uri=chip, progress=progress, accept_chip=accept_chip,
                    warn=lambda m: sys.stderr.write(f"warning: {m}\n"), monitor_factory=monitor_factory,
                )
        except KeyboardInterrupt:
            sys.stderr.write(f"error: interrupted; continue with: harness session resume {recording}\n")
            raise typer.Exit(130) from None
    summary = result.summary()
    if result.resumed_from >= result.readouts_scheduled and not json_out:
        console.print(f"{recording} is already complete ({result.readouts_done} readouts); nothing to resume")
        return
    _render_result(console, summary, json_out)


@app.command("status")
def status_command(
    recording: Path = typer.Argument(..., help="A session recording (HDF5), finished, running or interrupted."),
    json_out: bool = typer.Option(False, "--json", help="Print only a JSON object on stdout."),
) -> None:
    """Readouts done and pending, last time, next due, and conductance statistics."""
    console = console_for(json_out)
    with user_errors():
        from harness.sessions.status import session_status

        st = session_status(recording)
    if json_out:
        emit_json(st)
        return
    _render_status(console, st)


def _render_result(console: Console, s: dict[str, Any], json_out: bool) -> None:
    if json_out:
        emit_json(s)
        return
    resumed = f" (resumed after readout {s['resumed_from']})" if s["resumed_from"] else ""
    console.print(
        f"[bold]{s['readouts_done']}/{s['readouts_scheduled']}[/] readouts recorded{resumed}; "
        f"chip time {format_duration(s['chip_time_s'])}, wall time {format_duration(s['wall_s'])}; "
        f"late readouts: {s['late_readouts']}"
        + (f" (worst {format_duration(s['max_lateness_s'])})" if s["late_readouts"] else "")
    )
    if "programming" in s:
        p = s["programming"]
        console.print(
            f"programmed {p['devices_programmed']} devices, converged {100 * p['converged_fraction']:.2f}%, "
            f"error std {p['error_std_uS']:.3f} µS"
        )
    console.print(f"recording: [bold]{s['out']}[/]")


def _render_status(console: Console, st: dict[str, Any]) -> None:
    total = st["readouts_scheduled"]
    if st["state"] == "no session":
        console.print(
            f"[bold]{st['path']}[/]: a program-only recording on {st['chip_uri']}; it has no session "
            f"(nothing scheduled, {st['readouts_done']} readouts)"
        )
        return
    console.print(
        f"[bold]{st['path']}[/]: session {st['session'] or '-'} on {st['chip_uri']} — [bold]{st['state']}[/]"
        + (f" (pid {st['writer_pid']})" if st["writer_pid"] else "")
    )
    done = st["readouts_done"]
    line = f"readouts: {done} done" + (f", {st['readouts_pending']} pending of {total}" if total is not None else "")
    if st["last_t_s"] is not None:
        line += f"; last at {format_duration(st['last_t_s'])}"
    if st["next_due_s"] is not None:
        line += f"; next due at {format_duration(st['next_due_s'])} after programming"
        if st.get("next_due_unix_s") is not None:
            due = _dt.datetime.fromtimestamp(st["next_due_unix_s"]).strftime("%Y-%m-%d %H:%M:%S")
            line += f" (wall clock {due})"
        elif st.get("simulated_clock"):
            line += " (simulated clock)"
    console.print(line)
    if "conductance" in st:
        c = st["conductance"]
        table = Table(title=f"conductance over all {st['readout_cells']} cells read")
        for col in ("readout", "t", "mean µS", "std µS", "min µS", "max µS"):
            table.add_column(col, justify="right")
        for name in ("first", "last"):
            r = c[name]
            table.add_row(name, format_duration(r["t_s"]), f"{r['mean_uS']:.3f}", f"{r['std_uS']:.3f}",
                          f"{r['min_uS']:.3f}", f"{r['max_uS']:.3f}")
        console.print(table)
        if c["mean_ratio_last_first"] is not None:
            console.print(
                f"programmed devices ({c['programmed_cells']}): mean G(last)/G(first) = {c['mean_ratio_last_first']:.4f}"
            )
    if "refresh" in st:
        r = st["refresh"]
        when = ", ".join(format_duration(t) for t in r["refresh_times_s"][:8]) + (" …" if r["refreshes"] > 8 else "")
        console.print(
            f"refresh: {r['rule'] or '-'}; {r['epochs']} programming epoch(s), {r['refreshes']} refresh(es)"
            + (f" at {when}" if r["refreshes"] else "")
            + (f"; monitor accuracy {100 * r['monitor_min']:.1f}–{100 * r['monitor_max']:.1f}% "
               f"(last {100 * r['monitor_last']:.1f}%)" if r["monitor_min"] is not None else "")
        )
    if st.get("chip_accepted_despite_check"):
        console.print(f"resumed {st['chip_accepted_despite_check']} time(s) with --accept-chip on a chip that failed the check")
    if st.get("needs_repair"):
        console.print(
            "the file was left open by a writer killed after its last readout; "
            f"'harness session resume {st['path']}' rewrites it readable by any HDF5 tool"
        )
    if st["state"] == "interrupted":
        console.print(f"continue with: harness session resume {st['path']}")
