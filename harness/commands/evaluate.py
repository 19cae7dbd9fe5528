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
# harness.evaluation.ranges' policies and calibration budget, repeated for the same reason.
RANGE_POLICIES: tuple[str, ...] = ("auto", "trained", "calibrated", "percentile")
DEFAULT_CALIBRATION_SAMPLES = 512

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


def _ranges_line(result: EvaluationResult) -> str:
    ranges = result.ranges
    summary = getattr(ranges, "summary", None)
    return summary() if summary is not None else f"DAC/ADC ranges: {ranges.source}"


def _estimate_line(first_chip_s: float, n_chips: int) -> None:
    """One line on stderr before the long part: the whole run, extrapolated from the first
    chip (model load, programming, readouts and its CiM inference; later chips share the
    model and are evaluated in batches, so this errs long)."""
    import sys

    sys.stderr.write(
        f"estimate: {n_chips} chips × {format_duration(first_chip_s, digits=2)} (the first chip) ≈ "
        f"{format_duration(n_chips * first_chip_s, digits=2)} at most; choose the number of chips with --runs\n"
    )
    sys.stderr.flush()


def _note_normalised(bits: tuple[int | None, ...], times_s: tuple[float, ...] | None) -> None:
    """Say on stderr when the evaluation will not use the lists exactly as given: times are
    evaluated in increasing order without repeats, bit-widths without repeats."""
    import sys

    kept_bits = tuple(dict.fromkeys(bits))
    if kept_bits != bits:
        shown = ",".join("0" if b is None else str(b) for b in kept_bits)
        sys.stderr.write(f"note: --bits has repeats; evaluating each once: {shown}\n")
    if times_s is not None:
        kept = tuple(sorted(set(times_s)))
        if kept != tuple(times_s):
            sys.stderr.write(
                "note: --times evaluated in increasing order without repeats: "
                + ",".join(format_duration(t) for t in kept) + "\n"
            )


def render_table(result: EvaluationResult) -> Table:
    """Rows: times; columns: float baseline and, per bit-width, the mean (± std over runs when
    there are several) and its 95 % interval, in %."""
    from rich.table import Table

    spread = f"mean ± std [95 % interval] over {result.runs} runs" if result.runs > 1 else "one run [95 % Wilson interval]"
    title = (
        f"{result.model} on {result.location}: top-1 accuracy (%), {spread}, "
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
    mean, std, ci = result.mean() * 100, result.std() * 100, result.interval() * 100
    for j, label in enumerate(result.time_labels()):
        row = [label]
        if show_read:
            row.append(format_duration(float(result.read_times_s[:, j].mean())))
        row.append(f"{result.digital_accuracy * 100:.2f}")
        for i in range(len(result.bits)):
            sd = f" ± {std[i, j]:.2f}" if result.runs > 1 else ""  # one run has no spread to show
            row.append(f"{mean[i, j]:.2f}{sd} [{ci[i, j, 0]:.1f}, {ci[i, j, 1]:.1f}]")
        table.add_row(*row)
    return table


def difference_title(diff: dict[str, Any], result: EvaluationResult) -> str:
    return (
        f"{diff['model']} − {diff['baseline']}: paired accuracy difference (points) [95 % interval, "
        f"paired bootstrap over chips and test examples], same {result.runs} run(s)"
    )


def render_difference(diff: dict[str, Any], result: EvaluationResult) -> Table:
    """Rows: times; columns: the paired difference (points) per bit-width with its 95 % interval
    (the title: :func:`difference_title`, printed above it so it never wraps)."""
    from rich.table import Table

    table = Table()
    table.add_column("time", justify="right")
    for b in diff["difference"]:
        table.add_column("ideal" if b == "ideal" else f"{b}-bit", justify="right")
    for label in result.time_labels():
        row = [label]
        for cells in diff["difference"].values():
            c = cells[label]
            row.append(f"{c['mean'] * 100:+.2f} [{c['ci95'][0] * 100:+.2f}, {c['ci95'][1] * 100:+.2f}]")
        table.add_row(*row)
    return table


def _note_epochs(path: Path, epoch: int | None) -> None:
    """Say on stderr which programming epoch of a refresh session's recording is evaluated."""
    import sys

    from harness.recording import reading

    with reading(path) as rec:
        n = rec.n_epochs
    if n > 1:
        e = n - 1 if epoch is None else epoch
        sys.stderr.write(
            f"note: {path} holds {n} programming epochs ({n - 1} refreshes); evaluating epoch {e} only, times since "
            f"its programming{'' if epoch is not None else ' (choose another with --epoch)'}\n"
        )


def evaluate_command(
    chip: Optional[str] = typer.Option(None, "--chip", help="Chip URI to program and read: virtual[?seed=N&rows=R&cols=C], serial://…, visa://…"),
    recording: Optional[Path] = typer.Option(None, "--recording", help="Evaluate the readouts of this recording (HDF5) instead."),
    model: Optional[list[str]] = typer.Option(None, "--model", help="Zoo model name (its shipped baseline) or model file. Default: the bundled model (chip) or the recorded one. Repeat to compare models on the same chips (paired differences against the first)."),
    times: Optional[str] = typer.Option(None, "--times", help=f"Times since programming. Default: {_DEFAULT_TIMES} (chip), every readout (recording)."),
    runs: Optional[int] = typer.Option(None, "--runs", help="Simulated chips (virtual URI, default 25); else repeated read-noise draws (default 1)."),
    bits: str = typer.Option(_DEFAULT_BITS, "--bits", help="Activation precisions: ADC bits (the DAC gets one more); 0 = ideal converters."),
    gdc: bool = typer.Option(True, "--gdc/--no-gdc", help="Global drift compensation per layer."),
    read_noise: bool = typer.Option(False, "--read-noise/--no-read-noise", help="Fresh 1/f read noise on every MVM."),
    seed: int = typer.Option(0, "--seed", help="Seed of the per-read noise draws."),
    match: str = typer.Option("nearest", "--match", help=f"Recording time matching: {' or '.join(MATCH_MODES)}."),
    ranges: str = typer.Option("auto", "--ranges", help="DAC/ADC ranges: auto (trained if the file has them, else calibrated), trained, calibrated (least quantization error per bit width), percentile (AnalogNets Appendix C)."),
    calibration_samples: int = typer.Option(DEFAULT_CALIBRATION_SAMPLES, "--calibration-samples", help="Training examples the range calibration uses (fixed seed)."),
    png: Optional[Path] = typer.Option(None, "--png", help=f"Write a plot of accuracy vs time ({', '.join(PLOT_SUFFIXES)})."),
    out: Optional[Path] = typer.Option(None, "--out", help="With --chip: also record the session of the (one) chip here (HDF5); by default nothing is written."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --png or --out if it exists."),
    json_out: bool = typer.Option(False, "--json", help="Print only one JSON object on stdout."),
    compensate: Optional[str] = typer.Option(None, "--compensate", help="Drift compensation methods to compare on the same reads: none,gdc,adabs,column (docs/compensation.md)."),
    calibration_examples: int = typer.Option(256, "--calibration-examples", help="Unlabeled training-split examples for adabs/column."),
    epoch: Optional[int] = typer.Option(None, "--epoch", help="Of a refresh session's recording: the programming epoch to evaluate (default: the latest); times count from its programming."),
) -> None:
    """Accuracy of a model vs time since programming, from a live chip or a recording."""
    console = console_for(json_out)
    with user_errors():
        if (chip is None) == (recording is None):
            raise ConfigError("give exactly one of --chip URI or --recording FILE.h5")
        # --bits 0 means ideal converters (None), as in a sweep's grid (docs/sweeps.md).
        bits_t = tuple(None if b == 0 else b for b in parse_bits(bits))
        times_s = parse_durations(times) if times is not None else None
        _note_normalised(bits_t, times_s)
        if match not in MATCH_MODES:
            raise ConfigError(f"unknown time matching --match {match!r}; use one of {', '.join(MATCH_MODES)}")
        if runs is not None and runs < 1:
            raise ConfigError(f"--runs {runs} must be >= 1")
        if ranges not in RANGE_POLICIES:
            raise ConfigError(f"unknown --ranges {ranges!r}; use one of {', '.join(RANGE_POLICIES)}")
        if calibration_samples < 1:
            raise ConfigError(f"--calibration-samples {calibration_samples} must be >= 1")
        models: list[Optional[str]] = list(model) if model else [None]
        if len(models) > 1 and recording is not None:
            raise ConfigError("several --model need --chip: a recording holds the readouts of one programmed model")
        if len(models) > 1 and out is not None:
            raise ConfigError("--out records the session of one model on one chip; give one --model with --out")
        if png is not None:
            png = check_output(png, option="--png", suffixes=PLOT_SUFFIXES, overwrite=overwrite)
        if out is not None:
            if chip is None:
                raise ConfigError("--out records a live chip's session; it needs --chip (a recording is already recorded)")
            out = check_output(out, option="--out", suffixes=RECORDING_SUFFIXES, overwrite=overwrite)
        # With --overwrite the session is recorded beside the old file and replaces it only once
        # the evaluation has succeeded: a failed run never costs the old recording.
        record_to = out
        if out is not None and out.exists():
            import os

            record_to = out.with_name(f"{out.stem}.new-{os.getpid()}{out.suffix}")
        if chip is not None:
            from harness.chip.registry import check_uri

            check_uri(chip)
        elif not Path(str(recording)).is_file():
            raise ConfigError(f"--recording {recording} does not exist")
        if epoch is not None and recording is None:
            raise ConfigError("--epoch selects a programming epoch of a refresh session's recording; it needs --recording")
        if recording is not None:
            _note_epochs(Path(str(recording)), epoch)
        if compensate is not None:
            from harness.commands.evaluate_compensation import run_compensation

            if epoch is not None:
                raise ConfigError("--epoch does not combine with --compensate yet: a refresh session's recording is compared on its latest epoch")
            if not gdc:
                raise ConfigError("--no-gdc does not combine with --compensate; name the methods (e.g. --compensate none,gdc)")
            if len(models) > 1:
                raise ConfigError("--compensate compares methods on one model; give one --model (or compare models without it)")
            run_compensation(
                compensate, chip=chip, recording=recording, model=models[0], times_s=times_s, runs=runs, bits=bits_t,
                read_noise=read_noise, seed=seed, match=match, png=png, json_out=json_out,
                calibration_examples=calibration_examples, range_policy=ranges, calibration_samples=calibration_samples,
            )
            return
        from harness.evaluation.evaluate import evaluate_chip, evaluate_recording

        # Progress always goes to stderr (a bar on a terminal, plain lines in logs): it never
        # touches stdout, so --json output stays one object.
        import time

        t_start = time.perf_counter()
        with progress_bar("evaluate", total=None) as update:

            def on_progress(p: EvaluationProgress) -> None:
                if p.phase == "chip":
                    if p.done == 1 and p.total > 1:
                        _estimate_line(time.perf_counter() - t_start, p.total)
                    update(p.done, description="chips programmed and read", total=p.total, unit="chips")
                elif p.phase == "inference":  # reported as each bit-width starts
                    update(p.done, description=f"CiM inference ({p.label})", total=p.total, unit="bit-widths",
                           announce=True)

            results = []
            for ref in models:
                if chip is not None:
                    results.append(evaluate_chip(
                        chip, ref, times_s=times_s or DEFAULT_TIMES_S, runs=runs, bits=bits_t, gdc=gdc,
                        read_noise=read_noise, seed=seed, match=match, progress=on_progress, range_policy=ranges,
                        calibration_samples=calibration_samples, record=record_to,
                    ))
                else:
                    results.append(evaluate_recording(
                        Path(str(recording)), ref, times_s=times_s, runs=runs, bits=bits_t, gdc=gdc,
                        read_noise=read_noise, seed=seed, match=match, progress=on_progress, range_policy=ranges,
                        calibration_samples=calibration_samples, epoch=epoch,
                    ))
            update(len(bits_t), description="CiM inference", total=len(bits_t), unit="bit-widths")
        if record_to is not None and record_to != out:
            Path(record_to).replace(out)  # the evaluation succeeded: the new recording replaces the old
        diffs = []
        if len(results) > 1:
            from harness.evaluation.paired import paired_differences

            diffs = [paired_differences(results[0], other) for other in results[1:]]
        if png is not None:
            from harness.evaluation.plots import plot_accuracy

            plot_accuracy(results if len(results) > 1 else results[0], png)
        summaries = [r.to_dict() for r in results]
        summary: dict[str, Any] = summaries[0] if len(results) == 1 else {"models": summaries, "differences": diffs}
        if png is not None:
            summary["png"] = str(png)
        if out is not None:
            summary["recording"] = str(out)
        if json_out:
            emit_json(summary)
            return
        for result in results:
            # the ranges line is part of the table's header, printed unwrapped above it
            console.print(_ranges_line(result), soft_wrap=True)
            console.print(render_table(result))
            t = result.timing
            phases = (("ranges", t.ranges_s), ("programming", t.program_s), ("reads", t.read_s), ("load", t.load_s),
                      ("CiM inference", t.inference_s), ("digital baseline", t.digital_s))
            console.print(
                f"wall {format_duration(t.total_s)} "
                f"({', '.join(f'{name} {format_duration(v)}' for name, v in phases if v >= 1e-3)})"
            )
        for diff in diffs:
            console.print(difference_title(diff, results[0]), soft_wrap=True)
            console.print(render_difference(diff, results[0]))
        if out is not None:
            console.print(f"recording: {out}")
        if png is not None:
            console.print(f"plot: {png}")
