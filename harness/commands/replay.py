"""``harness replay FILE.h5``: drift summary of a recording, and its plots."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from harness.commands.common import (
    PLOT_SUFFIXES,
    check_output,
    console_for,
    emit_json,
    user_errors,
)
from harness.units import format_duration


def replay_command(
    recording: Path = typer.Argument(..., help="A recording (HDF5) with readouts."),
    png: Optional[Path] = typer.Option(
        None, "--png", help=f"Also draw conductance-vs-time and histograms into this file ({', '.join(PLOT_SUFFIXES)})."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --png if it exists."),
    json_out: bool = typer.Option(False, "--json", help="Print only a JSON summary on stdout."),
) -> None:
    """Per target level: mean G(t)/G(t0), spread, and the fitted drift exponent vs time."""
    console = console_for(json_out)
    with user_errors():
        if png is not None:
            png = check_output(png, option="--png", suffixes=PLOT_SUFFIXES, overwrite=overwrite)
        from harness.recording import reading
        from harness.sessions.replay import summarize_recording

        with reading(recording) as rec:
            summary = summarize_recording(rec)
            if png is not None:
                from harness.sessions.replay_plots import plot_recording

                summary["png"] = str(plot_recording(rec, summary, png))
    if json_out:
        emit_json(summary)
        return
    render(console, summary)


def render(console: Console, s: dict[str, Any]) -> None:
    console.print(
        f"[bold]{s['path']}[/]: {s['readouts_done']} readouts of {s['readout_cells']} cells "
        f"({s['session'] or 'no session'}, chip {s['chip_uri']}); t0 = {format_duration(s['t0_s'])}"
    )
    if s.get("epochs", 1) > 1:
        console.print(
            f"{s['epochs']} programming epochs ({s['epochs'] - 1} refreshes): t counts from each read's own epoch's "
            "programming, G(t0) is that epoch's first readout"
        )
    levels = s["levels"]
    lv_table = Table(title="per target level")
    for col in ("target µS", "devices", "G(t0) µS", "std(t0) µS", "G(last)/G(t0)", "ratio std", "ν fit"):
        lv_table.add_column(col, justify="right")
    for lv in levels:
        r_last = lv["mean_ratio"][-1]
        rs_last = lv["ratio_std"][-1]
        lv_table.add_row(
            f"{lv['lo_uS']:.1f}–{lv['hi_uS']:.1f}" + (" (RESET)" if lv["reset_level"] else ""),
            str(lv["n"]),
            f"{lv['mean_uS'][0]:.3f}",
            f"{lv['std_uS'][0]:.3f}",
            "-" if r_last is None or lv["reset_level"] else f"{r_last:.4f}",
            "-" if rs_last is None or lv["reset_level"] else f"{rs_last:.4f}",
            "-" if lv["nu_fit"] is None else f"{lv['nu_fit']:.4f}",
        )
    console.print(lv_table)
    drift = [lv for lv in levels if not lv["reset_level"]]
    t_table = Table(title="mean G(t)/G(t0) · effective ν = −ln(ratio)/ln(t/t0), by readout")
    t_table.add_column("t", justify="right")
    epochs = s.get("epoch")
    if epochs is not None:
        t_table.add_column("epoch", justify="right")
    for lv in drift:
        t_table.add_column(f"{lv['lo_uS']:.0f}–{lv['hi_uS']:.0f} µS", justify="right")
    for i, t in enumerate(s["t_s"]):
        cells = []
        for lv in drift:
            r, nu = lv["mean_ratio"][i], lv["nu_eff"][i]
            cells.append("-" if r is None else f"{r:.4f}" + ("" if nu is None else f" · {nu:.3f}"))
        t_table.add_row(format_duration(t), *([str(epochs[i])] if epochs is not None else []), *cells)
    console.print(t_table)
    if "png" in s:
        console.print(f"plot: [bold]{s['png']}[/]")
