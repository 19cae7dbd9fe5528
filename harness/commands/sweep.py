"""``harness sweep``: a Monte Carlo grid (models × chips × runs × times × bits) on Dask."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Optional

import typer

from harness.commands.common import console_for, emit_json, err_console, progress_bar, user_errors
from harness.errors import HarnessError


def sweep_command(
    sweep_file: Path = typer.Argument(..., help="Sweep definition (TOML): models, chips, runs, times, bits, gdc, read_noise."),
    out: Path = typer.Option(..., "--out", help="Results folder (Parquet, one file per task; pandas.read_parquet reads it)."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Local Dask workers: 1 (default) runs in this process, N starts a LocalCluster."),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help="Address of a running Dask scheduler, e.g. tcp://10.0.0.5:8786. Trust boundary: Dask exchanges pickles (code execution) with it and its workers; use only a scheduler on a host and network you trust (a non-loopback address prints a warning)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the results of another sweep in --out."),
    json_out: bool = typer.Option(False, "--json", help="Print only one JSON object on stdout."),
) -> None:
    """Monte Carlo grid of simulated chips (models × chips × times × bits) on Dask; resumes.

    Re-running the same sweep into the same folder skips the tasks already done.

    Trust boundary: with --scheduler, Dask sends pickles to and from the scheduler and its
    workers, and unpickling runs code, so whoever controls that host (or reaches its port)
    can run code as you. Use only schedulers you trust; see docs/sweeps.md.
    """
    with user_errors():
        from harness.sweeps.runner import (
            SweepProgress, check_results_folder, dask_available, load_results, run_sweep, scheduler_warning, summarize,
        )
        from harness.sweeps.spec import load_sweep

        spec = load_sweep(sweep_file)
        check_results_folder(out, spec, overwrite=overwrite)
        dask_available(workers, scheduler)
        warning = scheduler_warning(scheduler)
        if warning:
            sys.stderr.write(warning + "\n")
        total = len(spec.models) * len(spec.chips) * spec.runs
        console = console_for(json_out)
        with progress_bar(f"sweep {spec.name}", total=total, unit="tasks") as update:

            def on_progress(p: SweepProgress) -> None:
                update(p.done, description=f"sweep {spec.name} ({p.running} running, {p.failed} failed)")

            result = run_sweep(spec, out, workers=workers, scheduler=scheduler, overwrite=overwrite, progress=on_progress)
        for f in result.failures:
            err_console.print(f"failed: {f.task.coordinates()}: {f.error}", markup=False, highlight=False, soft_wrap=True)
        summary: dict[str, Any] = result.to_dict()
        if json_out:
            emit_json(summary)
        else:
            try:
                table = summarize(load_results(out))
            except HarnessError:
                table = None
            if table is not None:
                console.print(_render(table), soft_wrap=True)
            console.print(
                f"{result.ran} task(s) run, {result.skipped} already done, {len(result.failures)} failed, "
                f"{result.wall_s:.1f} s on {result.executor}; results in {out}",
                markup=False, highlight=False, soft_wrap=True,
            )
        if result.failures:
            sys.stderr.write(
                f"error: {len(result.failures)} of {result.total} tasks failed (listed above); "
                "run the same command again to retry them\n"
            )
            raise typer.Exit(1)


def _render(table: Any) -> Any:
    from rich.table import Table

    from harness.units import format_duration

    out = Table(title="accuracy (%), mean over runs [95 % interval: chip-to-chip spread and test-set sampling]",
                title_justify="left")
    for name in ("model", "chip", "bits", "gdc", "read noise"):
        out.add_column(name)
    times = sorted(table["t_s"].unique())
    for t in times:
        out.add_column(format_duration(float(t)), justify="right")
    keys = ["model", "chip", "bits", "gdc", "read_noise"]
    ordered = sorted(table.groupby(keys, sort=True), key=lambda kv: (kv[0][0], kv[0][1], -kv[0][2] if kv[0][2] else 1, kv[0][3], kv[0][4]))
    for key, group in ordered:
        by_t = {float(r.t_s): r for r in group.itertuples()}
        cells = []
        for t in times:
            r = by_t.get(float(t))
            if r is None:
                cells.append("")
            else:
                cells.append(f"{r.mean * 100:.2f} [{r.ci95_lo * 100:.1f}, {r.ci95_hi * 100:.1f}]")
        model, chip, bits, gdc, rn = key
        out.add_row(str(model), str(chip), "ideal" if bits == 0 else str(bits), "on" if gdc else "off", "on" if rn else "off", *cells)
    return out
