"""``harness compare A.h5 B.h5``: two recordings of the same layout side by side."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from harness.commands.common import console_for, emit_json, user_errors


def _f(v: object, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def compare_command(
    a: Path = typer.Argument(..., help="First recording (e.g. the real chip)."),
    b: Path = typer.Argument(..., help="Second recording of the same layout (e.g. the fitted virtual chip)."),
    levels: int = typer.Option(8, "--levels", min=2, max=64, help="Target levels (equal width in ln x)."),
    json_out: bool = typer.Option(False, "--json", help="Print only a JSON object on stdout."),
) -> None:
    """Drift, read noise and write-verify convergence per target level, A vs B; KS per readout time."""
    console = console_for(json_out)
    with user_errors():
        from harness.recording import reading
        from harness.calibration.compare import compare_recordings

        with reading(a) as ra, reading(b) as rb:
            result = compare_recordings(ra, rb, levels=levels)
    if json_out:
        emit_json(result)
        return
    sa, sb = result["a"], result["b"]
    console.print(f"A: [bold]{sa['path']}[/] ({sa['chip']}, {sa['readouts']} readouts, read noise from {sa['read_noise_method']})")
    console.print(f"B: [bold]{sb['path']}[/] ({sb['chip']}, {sb['readouts']} readouts, read noise from {sb['read_noise_method']})")
    table = Table(title="per target level: A | B")
    for col in ("target µS", "devices", "converged", "iterations", "verify err std µS", "ν mean", "ν std",
                "G(last)/G(first)", "σ_read/G"):
        table.add_column(col, justify="right")
    for t, la, lb in zip(result["level_target_uS"], sa["levels"], sb["levels"]):
        def pair(key: str, fmt: str, la: dict = la, lb: dict = lb) -> str:
            return f"{_f(la.get(key), fmt)} | {_f(lb.get(key), fmt)}"
        table.add_row(f"{t:.3g}", pair("devices", "d"), pair("converged_fraction", ".4f"), pair("mean_iterations", ".2f"),
                      pair("verify_error_std_uS", ".3f"), pair("nu_mean", ".4f"), pair("nu_std", ".4f"),
                      pair("ratio_last_first", ".4f"), pair("read_noise_rel", ".4f"))
    console.print(table)
    ks = result["ks"]
    if ks:
        worst = max(ks["distance"])
        console.print(f"readout distributions (KS, {ks['devices']} devices): max distance {worst:.4f} over "
                      f"{len(ks['distance'])} times; α = 0.01 critical {ks['critical_alpha_0.01']:.4f}")
    else:
        console.print("the two recordings have different timetables: no per-time KS")
