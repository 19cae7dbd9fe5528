"""``harness evaluate --compensate …``: drift compensation methods side by side (imported late)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.commands.common import console_for, emit_json, progress_bar
from harness.evaluation.uncertainty import difference_text

if TYPE_CHECKING:
    from rich.table import Table

    from harness.evaluation.result import EvaluationResult


def render_compensation_table(results: list[EvaluationResult], calibration_examples: int) -> Table:
    """Rows: times; columns: float baseline, then one group per method (mean ± std %, per bit-width)."""
    from rich.table import Table

    from harness.units import format_duration

    first = results[0]
    cal = any(r.compensation in ("adabs", "column") for r in results)
    title = (
        f"{first.model} on {first.location}: top-1 accuracy (%), mean ± std over {first.runs} run(s), "
        f"drift compensation compared on the same reads"
        + (f"; {calibration_examples} calibration examples (training split)" if cal else "")
    )
    table = Table(title=title, title_justify="left")
    table.add_column("time", justify="right")
    show_read = first.source == "recording"
    if show_read:
        table.add_column("read at", justify="right")
    table.add_column("float", justify="right")
    for r in results:
        for b in r.bits:
            table.add_column(f"{r.compensation}\n{'ideal' if b is None else f'{b}-bit'}", justify="right")
    stats = [(r.mean() * 100, r.std() * 100) for r in results]
    for j, label in enumerate(first.time_labels()):
        row = [label]
        if show_read:
            row.append(format_duration(float(first.read_times_s[:, j].mean())))
        row.append(f"{first.digital_accuracy * 100:.2f}")
        for (mean, std), r in zip(stats, results):
            row += [f"{mean[i, j]:.2f} ± {std[i, j]:.2f}" for i in range(len(r.bits))]
        table.add_row(*row)
    return table


def run_compensation(
    methods: str,
    *,
    chip: str | None,
    recording: Path | None,
    model: str | None,
    times_s: tuple[float, ...] | None,
    runs: int | None,
    bits: tuple[int, ...],
    read_noise: bool,
    seed: int,
    match: str,
    range_policy: str = "auto",
    calibration_samples: int = 512,
    png: Path | None,
    json_out: bool,
    calibration_examples: int,
) -> None:
    """Evaluate under each method of ``methods`` and print the table (or ``--json``); ``png``: plot."""
    from harness.evaluation.compensated import comparison_dict, evaluate_compensations
    from harness.evaluation.compensation import parse_methods
    from harness.evaluation.settings import DEFAULT_TIMES_S

    parse_methods(methods)
    console = console_for(json_out)
    options: dict[str, Any] = {
        "runs": runs, "bits": bits, "read_noise": read_noise, "match": match,
        "range_policy": range_policy, "calibration_samples": calibration_samples,
    }
    if chip is not None:
        options["times_s"] = times_s or DEFAULT_TIMES_S
    else:
        options["times_s"] = times_s
    with progress_bar("evaluate", total=None) as update:

        def on_progress(p: Any) -> None:
            if p.phase == "chip":
                update(p.done, description="chips programmed and read", total=p.total)
            elif p.phase == "inference":
                update(p.done, description="CiM inference", total=p.total)

        results = evaluate_compensations(
            methods, chip=chip, recording=None if recording is None else Path(str(recording)), model=model,
            calibration_examples_n=calibration_examples, seed=seed, progress=on_progress, **options,
        )
        update(len(results), description="evaluated", total=len(results))
    if png is not None:
        from harness.evaluation.plots import plot_accuracy

        plot_accuracy(results, png)
    summary = comparison_dict(results, calibration_examples)
    if png is not None:
        summary["png"] = str(png)
    if json_out:
        emit_json(summary)
        return
    console.print(render_compensation_table(results, calibration_examples))
    if "paired_vs_gdc" in summary:
        for name, per_bits in summary["paired_vs_gdc"].items():
            if name == "gdc":
                continue
            cells = [f"{b}-bit {t}: {difference_text(v)}" for b, row in per_bits.items() for t, v in row.items()]
            console.print(f"{name} − gdc (paired, points, [95 % bootstrap interval over chips and test examples]): "
                          + "; ".join(cells))
    timing = ", ".join(f"{r.compensation} {r.timing.inference_s:.2f}s" for r in results)
    console.print(f"CiM inference per method: {timing}")
    if png is not None:
        console.print(f"plot: {png}")

