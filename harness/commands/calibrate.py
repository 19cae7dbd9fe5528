"""``harness calibrate REC.h5 --out fitted.toml``: fit a virtual-chip personality to a recording."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from harness.commands.common import PLOT_SUFFIXES, check_output, console_for, emit_json, user_errors


def calibrate_command(
    recording: Path = typer.Argument(..., help="A recording (HDF5) of a session: targets, write-verify outcome, readouts."),
    out: Path = typer.Option(..., "--out", help="Personality file (TOML) to write; load it with virtual?personality=PATH."),
    png: Path | None = typer.Option(None, "--png", help="Also plot data vs fit per level into this PNG."),
    base: str = typer.Option("pcm-90nm", "--base", help="Personality supplying the constants the data cannot identify "
                             "(a name or TOML path; 'recorded': the one the recording names, hash-checked)."),
    name: str | None = typer.Option(None, "--name", help="Name of the fitted personality (default fitted-<recording>)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the hold-out split and the bootstrap."),
    bootstrap: int = typer.Option(16, "--bootstrap", help="Simulated re-recordings behind the bias correction and the "
                                  "95% intervals (0: off, per-stage intervals only)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --out if it exists."),
    json_out: bool = typer.Option(False, "--json", help="Print only a JSON summary on stdout."),
    epoch: int | None = typer.Option(None, "--epoch", help="Of a refresh session's recording: the programming epoch to "
                                     "fit (default: the one with the most readouts); times count from its programming."),
) -> None:
    """Fit σ_prog(x), the drift-exponent laws, the read-noise law and the RESET level, with CIs and KS."""
    console = console_for(json_out)
    with user_errors():
        from harness.recording import reading
        from harness.calibration.calibrate import calibrate_recording
        from harness.calibration.result import save_personality

        check_output(out, option="--out", suffixes=(".toml",), overwrite=overwrite)
        save_personality(None, out, overwrite=overwrite, check_only=True)
        if png is not None:
            check_output(png, option="--png", suffixes=PLOT_SUFFIXES, overwrite=overwrite)
        with reading(recording) as rec:
            result = calibrate_recording(rec, base=base, name=name, seed=seed, bootstrap=bootstrap, epoch=epoch)
        save_personality(result.personality, out, overwrite=overwrite)
        summary = result.to_dict()
        summary["out"] = str(out)
        if png is not None:
            from harness.calibration.plots import plot_calibration

            summary["png"] = str(plot_calibration(result, png))
    if json_out:
        emit_json(summary)
        return
    table = Table(title=f"{recording.name} → {out} (read noise from {summary['read_noise_method']})")
    for col in ("constant", "value", "95% CI", "identified", "note"):
        table.add_column(col)
    for c in summary["constants"]:
        lo, hi = c["ci95"]
        table.add_row(c["name"], f"{c['value']:.5g}", f"[{lo:.4g}, {hi:.4g}]", "yes" if c["identified"] else "no (see note)",
                      c["note"])
    console.print(table)
    g = summary["goodness_of_fit"]
    console.print(f"goodness of fit: KS of {g['held_out_devices']} held-out devices, {g['times_passing']}/"
                  f"{len(g['ks_per_time'])} readout times below the α = 0.01 critical value "
                  f"{g['ks_critical_alpha_0.01']:.4f} (max {g['ks_max']:.4f})")
    for w in summary["warnings"]:
        console.print(f"[yellow]warning:[/] {w}")
    if "png" in summary:
        console.print(f"plot: [bold]{summary['png']}[/]")
