"""``harness program``: map a model onto a chip and program it with write-verify."""

from __future__ import annotations

import datetime as _dt
import time
from pathlib import Path
from typing import Any, Optional

import typer
from rich.table import Table

from harness.chip import Chip
from harness.commands.common import console_for, emit_json, progress_bar, user_errors
from harness.errors import ConfigError
from harness.mapping import map_weights
from harness.models.format import default_model_path, load_model
from harness.programming import ProgrammingParams, ProgrammingProgress, program_layout
from harness.provenance import collect_provenance
from harness.recording import create_recording
from harness.registry import chip_seed, open_chip, with_seed

DEFAULT_RUNS_DIR = Path("runs")


def default_out_path() -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return DEFAULT_RUNS_DIR / f"program-{stamp}.h5"


def check_out_path(out: Path, overwrite: bool) -> None:
    """Fail before any work if the output would clobber a file or cannot be written."""
    if out.exists() and not overwrite:
        raise ConfigError(f"output file {out} already exists; choose another --out or pass --overwrite")
    if out.exists() and out.is_dir():
        raise ConfigError(f"output path {out} is a directory; give a file name ending in .h5")
    if not out.parent.exists():
        if out.parent == DEFAULT_RUNS_DIR:
            out.parent.mkdir(parents=True, exist_ok=True)
        else:
            raise ConfigError(f"output directory {out.parent} does not exist")


def program_command(
    chip: str = typer.Option("virtual", "--chip", help="Chip URI: virtual[?seed=N&rows=R&cols=C], serial://…, visa://…"),
    model: Optional[Path] = typer.Option(None, "--model", help="Model file (HDF5). Default: the bundled digits MLP."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed of the virtual chip (same seed, same chip)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Recording to write (HDF5). Default: runs/program-<time>.h5"),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --out if it exists."),
    tolerance_uS: float = typer.Option(ProgrammingParams.tolerance_uS, "--tolerance", help="Verify tolerance (µS)."),
    max_iterations: int = typer.Option(ProgrammingParams.max_iterations, "--max-iterations", help="Pulse-verify rounds."),
    gain: float = typer.Option(ProgrammingParams.gain, "--gain", help="Fraction of the estimated step per pulse."),
    json_out: bool = typer.Option(False, "--json", help="Print only a JSON summary on stdout."),
) -> None:
    """Program a model's weights onto a chip with closed-loop write-read-verify."""
    console = console_for(json_out)
    with user_errors():
        wall0 = time.perf_counter()
        params = ProgrammingParams(tolerance_uS=tolerance_uS, max_iterations=max_iterations, gain=gain)
        chip_uri = with_seed(chip, seed)
        out_path = out if out is not None else default_out_path()
        check_out_path(out_path, overwrite)
        model_path = model if model is not None else default_model_path()
        net = load_model(model_path)
        the_chip: Chip = open_chip(chip_uri)
        try:
            layout = map_weights([(layer.name, layer.weight) for layer in net.analog_layers()], the_chip.geometry)
            console.print(
                f"programming [bold]{net.name}[/] ({layout.n_devices} devices, {len(layout.layers)} layers) "
                f"on {the_chip.identity}"
            )
            with progress_bar("write-verify", total=params.max_iterations) as update:

                def on_progress(p: ProgrammingProgress) -> None:
                    update(p.iteration, description=f"write-verify: {p.n_converged}/{p.n_cells} converged")

                result = program_layout(the_chip, layout, params, on_progress)
                update(params.max_iterations)
            provenance = collect_provenance(
                chip_uri=chip_uri,
                chip_identity=the_chip.identity,
                seed=chip_seed(chip_uri),
                model=str(model_path),
                model_name=net.name,
                command="program",
            )
            with create_recording(out_path, provenance=provenance, layout=layout, programming=result, overwrite=overwrite):
                pass
        finally:
            the_chip.close()
        summary: dict[str, Any] = {
            **result.summary(),
            "wall_s": time.perf_counter() - wall0,
            "programming_wall_s": result.wall_s,
            "chip": chip_uri,
            "chip_identity": the_chip.identity,
            "model": str(model_path),
            "out": str(out_path),
        }
    if json_out:
        emit_json(summary)
        return
    render_summary(console, summary)


def render_summary(console: Any, s: dict[str, Any]) -> None:
    """Human summary: headline figures and error statistics per target level."""
    console.print(
        f"[bold]{s['devices_programmed']}[/] devices programmed, "
        f"converged [bold]{100 * s['converged_fraction']:.2f}%[/], "
        f"error std [bold]{s['error_std_uS']:.3f} µS[/] (non-zero targets), "
        f"iterations mean {s['iterations_mean']:.1f} / max {s['iterations_max']}"
    )
    table = Table(title="Verify error by target level")
    for col in ("target µS", "devices", "converged", "mean error µS", "error std µS"):
        table.add_column(col, justify="right")
    for lv in s["levels"]:
        table.add_row(
            f"{lv['lo_uS']:.1f}–{lv['hi_uS']:.1f}", str(lv["n"]), f"{100 * lv['converged_fraction']:.2f}%",
            f"{lv['error_mean_uS']:+.3f}", f"{lv['error_std_uS']:.3f}",
        )
    console.print(table)
    console.print(
        f"simulated chip time {s['sim_s']:.6g} s, wall time {s['wall_s']:.2f} s; recording: [bold]{s['out']}[/]"
    )
