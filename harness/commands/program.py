"""``harness program``: map a model onto a chip and program it with write-verify."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Optional

import typer

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
from harness.units import format_duration

# Defaults of harness.programming.write_verify.ProgrammingParams, repeated here so that this module does
# not import numpy at start-up; tests/test_cli_conventions.py keeps them equal.
DEFAULT_TOLERANCE_US = 0.2
DEFAULT_MAX_ITERATIONS = 30
DEFAULT_GAIN = 0.5


def program_command(
    chip: str = typer.Option("virtual", "--chip", help="Chip URI: virtual[?seed=N&rows=R&cols=C], serial://…, visa://…"),
    model: Optional[str] = typer.Option(None, "--model", help="Zoo model name (its shipped baseline) or model file (HDF5). Default: the bundled digits MLP."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed of the virtual chip (same seed, same chip)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Recording to write (HDF5). Default: runs/program-<time>.h5"),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --out if it exists."),
    tolerance_uS: float = typer.Option(DEFAULT_TOLERANCE_US, "--tolerance", help="Verify tolerance (µS)."),
    max_iterations: int = typer.Option(DEFAULT_MAX_ITERATIONS, "--max-iterations", help="Pulse-verify rounds."),
    gain: float = typer.Option(DEFAULT_GAIN, "--gain", help="Fraction of the estimated step per pulse."),
    json_out: bool = typer.Option(False, "--json", help="Print only a JSON summary on stdout."),
) -> None:
    """Program a model's weights onto a chip with closed-loop write-read-verify."""
    console = console_for(json_out)
    with user_errors():
        wall0 = time.perf_counter()
        from harness.chip.registry import check_uri, chip_seed, open_chip, with_seed

        chip_uri = with_seed(chip, seed)
        check_uri(chip_uri)
        check_programmable_uri(chip_uri)
        out_path = check_output(
            out if out is not None else default_output_path("program"),
            option="--out", suffixes=RECORDING_SUFFIXES, overwrite=overwrite,
        )
        from harness.programming.mapping import map_model
        from harness.models import resolve_model_path
        from harness.models.format import load_model
        from harness.programming.write_verify import (
            ProgrammingParams,
            ProgrammingProgress,
            program_layout,
        )
        from harness.provenance import collect_provenance
        from harness.recording import create_recording

        params = ProgrammingParams(tolerance_uS=tolerance_uS, max_iterations=max_iterations, gain=gain)
        model_path = resolve_model_path(model if model is not None else "default")
        net = load_model(model_path)
        the_chip = open_chip(chip_uri)
        try:
            layout = map_model(net, the_chip.geometry)
            console.print(
                f"programming [bold]{net.name}[/] ({layout.n_devices} devices, {len(layout.layers)} layers) "
                f"on {the_chip.identity}"
            )
            single = [p.name for p in layout.layers if p.unipolar]
            if single:
                console.print(f"unipolar (one device per weight, reference held digitally): {', '.join(single)}")
            placed = [f"{p.name} {p.how}" for p in layout.layers if p.how != "normal"]
            if placed:
                console.print(f"blocks stored {', '.join(placed)} (recorded in the layout)")
            with progress_bar("write-verify", total=params.max_iterations, unit="rounds") as update:

                def on_progress(p: ProgrammingProgress) -> None:
                    update(p.iteration, description=f"write-verify ({p.n_converged}/{p.n_cells} devices converged)")

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
            **device_counts(layout),
        }
    if json_out:
        emit_json(summary)
        return
    render_summary(console, summary)


def device_counts(layout: Any) -> dict[str, Any]:
    """Devices the mapped model uses, in total and per layer (``layout``: a
    :class:`harness.programming.mapping.Layout`); a unipolar layer uses one device per weight."""
    return {
        "devices_used": layout.n_devices,
        "unipolar_layers": [p.name for p in layout.layers if p.unipolar],
        "layers": [
            {
                "name": p.name,
                "out_features": p.out_features,
                "fan_in": p.fan_in,
                "unipolar": p.unipolar,
                "devices": p.n_devices,
                "placement": p.how,
                "weight_levels": list(p.levels) or None,  # the level set programmed (None: continuous)
            }
            for p in layout.layers
        ],
    }


def render_summary(console: Any, s: dict[str, Any]) -> None:
    """Human summary: headline figures and error statistics per target level."""
    from rich.table import Table

    console.print(
        f"[bold]{s['devices_programmed']}[/] devices programmed"
        f"{' (' + ', '.join(s['unipolar_layers']) + ' unipolar)' if s.get('unipolar_layers') else ''}, "
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
        f"simulated chip time {format_duration(s['sim_s'])}, wall time {format_duration(s['wall_s'])}; "
        f"recording: [bold]{s['out']}[/]"
    )
