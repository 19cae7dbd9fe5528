"""``harness evaluate``: accuracy vs drift time from a live chip or a recording."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer

from harness.commands.common import (
    PLOT_SUFFIXES,
    RECORDING_SUFFIXES,
    check_output,
    console_for,
    emit_json,
    progress_bar,
    user_errors,
)
from harness.errors import ConfigError
from harness.units import (
    DAY_S,
    HOUR_S,
    MONTH_S,
    YEAR_S,
    format_duration,
    parse_durations,
)

if TYPE_CHECKING:
    from rich.table import Table

    from harness.evaluation.result import EvaluationProgress, EvaluationResult

# harness.evaluation.settings' defaults, repeated so that this module imports no torch at start-up;
# tests/test_cli_conventions.py keeps them equal.
DEFAULT_TIMES_S: tuple[float, ...] = (25.0, HOUR_S, DAY_S, MONTH_S, YEAR_S)
DEFAULT_BITS: tuple[int, ...] = (8, 6, 4)
MATCH_MODES: tuple[str, ...] = ("nearest", "exact")

_DEFAULT_TIMES = ",".join(format_duration(t) for t in DEFAULT_TIMES_S)
_DEFAULT_BITS = ",".join(str(b) for b in DEFAULT_BITS)


def parse_bits(text: str) -> tuple[int, ...]:
    """``"8,6,4"`` → ``(8, 6, 4)``; raises ConfigError naming the bad item."""
    out = []
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        try:
            out.append(int(item, 10))
        except ValueError:
            raise ConfigError(f"bit-width {item!r} is not an integer; write e.g. --bits 8,6,4") from None
    if not out:
        raise ConfigError("no bit-widths given; write e.g. --bits 8,6,4")
    return tuple(out)


def render_table(result: EvaluationResult) -> Table:
    """Rows: times; columns: float baseline and mean ± std (%) per bit-width."""
    from rich.table import Table

    title = (
        f"{result.model} on {result.location}: top-1 accuracy (%), mean ± std over {result.runs} run(s), "
        f"GDC {'on' if result.gdc else 'off'}{', per-read noise' if result.read_noise else ''}"
    )
    table = Table(title=title, title_justify="left")
    table.add_column("time", justify="right")
    show_read = result.source == "recording"
    if show_read:
        table.add_column("read at", justify="right")
    table.add_column("float", justify="right")
    for b in result.bits:
        table.add_column("ideal" if b is None else f"{b}-bit", justify="right")
    mean, std = result.mean() * 100, result.std() * 100
    for j, label in enumerate(result.time_labels()):
        row = [label]
        if show_read:
            row.append(format_duration(float(result.read_times_s[:, j].mean())))
        row.append(f"{result.digital_accuracy * 100:.2f}")
        row += [f"{mean[i, j]:.2f} ± {std[i, j]:.2f}" for i in range(len(result.bits))]
        table.add_row(*row)
    return table


def evaluate_command(
    chip: Optional[str] = typer.Option(None, "--chip", help="Chip URI to program and read: virtual[?seed=N&rows=R&cols=C], serial://…, visa://…"),
    recording: Optional[Path] = typer.Option(None, "--recording", help="Evaluate the readouts of this recording (HDF5) instead."),
    model: Optional[str] = typer.Option(None, "--model", help="Zoo model name (its shipped baseline) or model file. Default: the bundled model (chip) or the recorded one."),
    times: Optional[str] = typer.Option(None, "--times", help=f"Times since programming. Default: {_DEFAULT_TIMES} (chip), every readout (recording)."),
    runs: Optional[int] = typer.Option(None, "--runs", help="Simulated chips (virtual URI, default 25); else repeated read-noise draws (default 1)."),
    bits: str = typer.Option(_DEFAULT_BITS, "--bits", help="Activation precisions: ADC bits (the DAC gets one more)."),
    gdc: bool = typer.Option(True, "--gdc/--no-gdc", help="Global drift compensation per layer."),
    read_noise: bool = typer.Option(False, "--read-noise/--no-read-noise", help="Fresh 1/f read noise on every MVM."),
    seed: int = typer.Option(0, "--seed", help="Seed of the per-read noise draws."),
    match: str = typer.Option("nearest", "--match", help=f"Recording time matching: {' or '.join(MATCH_MODES)}."),
    png: Optional[Path] = typer.Option(None, "--png", help=f"Write a plot of accuracy vs time ({', '.join(PLOT_SUFFIXES)})."),
    out: Optional[Path] = typer.Option(None, "--out", help="With --chip: also record the session of the (one) chip here (HDF5); by default nothing is written."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --png or --out if it exists."),
    json_out: bool = typer.Option(False, "--json", help="Print only one JSON object on stdout."),
) -> None:
    """Accuracy of a model vs time since programming, from a live chip or a recording."""
    console = console_for(json_out)
    with user_errors():
        if (chip is None) == (recording is None):
            raise ConfigError("give exactly one of --chip URI or --recording FILE.h5")
        bits_t = parse_bits(bits)
        times_s = parse_durations(times) if times is not None else None
        if match not in MATCH_MODES:
            raise ConfigError(f"unknown time matching --match {match!r}; use one of {', '.join(MATCH_MODES)}")
        if runs is not None and runs < 1:
            raise ConfigError(f"--runs {runs} must be >= 1")
        if png is not None:
            png = check_output(png, option="--png", suffixes=PLOT_SUFFIXES, overwrite=overwrite)
        if out is not None:
            if chip is None:
                raise ConfigError("--out records a live chip's session; it needs --chip (a recording is already recorded)")
            out = check_output(out, option="--out", suffixes=RECORDING_SUFFIXES, overwrite=overwrite)
            if out.exists():  # --overwrite given: the session runner writes a new file
                out.unlink()
        if chip is not None:
            from harness.chip.registry import check_uri

            check_uri(chip)
        elif not Path(str(recording)).is_file():
            raise ConfigError(f"--recording {recording} does not exist")
        from harness.evaluation.evaluate import evaluate_chip, evaluate_recording

        # Progress always goes to stderr (a bar on a terminal, plain lines in logs): it never
        # touches stdout, so --json output stays one object.
        with progress_bar("evaluate", total=None) as update:

            def on_progress(p: EvaluationProgress) -> None:
                if p.phase == "chip":
                    update(p.done, description="chips programmed and read", total=p.total)
                elif p.phase == "inference":  # reported as each bit-width starts
                    update(p.done, description="CiM inference", total=p.total)

            if chip is not None:
                result = evaluate_chip(
                    chip, model, times_s=times_s or DEFAULT_TIMES_S, runs=runs, bits=bits_t, gdc=gdc,
                    read_noise=read_noise, seed=seed, match=match, progress=on_progress, record=out,
                )
            else:
                result = evaluate_recording(
                    Path(str(recording)), model, times_s=times_s, runs=runs, bits=bits_t, gdc=gdc, read_noise=read_noise,
                    seed=seed, match=match, progress=on_progress,
                )
            update(len(result.bits), description="evaluated", total=len(result.bits))
        if png is not None:
            from harness.evaluation.plots import plot_accuracy

            plot_accuracy(result, png)
        summary: dict[str, Any] = result.to_dict()
        if png is not None:
            summary["png"] = str(png)
        if out is not None:
            summary["recording"] = str(out)
        if json_out:
            emit_json(summary)
            return
        console.print(render_table(result))
        t = result.timing
        phases = (("ranges", t.ranges_s), ("programming", t.program_s), ("reads", t.read_s), ("load", t.load_s),
                  ("CiM inference", t.inference_s), ("digital baseline", t.digital_s))
        console.print(
            f"DAC/ADC ranges: {result.ranges.source}; wall {format_duration(t.total_s)} "
            f"({', '.join(f'{name} {format_duration(v)}' for name, v in phases if v >= 1e-3)})"
        )
        if out is not None:
            console.print(f"recording: {out}")
        if png is not None:
            console.print(f"plot: {png}")
