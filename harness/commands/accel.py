"""``harness accel``: latency, energy, TOPS and TOPS/W of a model on the AON-CiM accelerator."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from harness.commands.common import PLOT_SUFFIXES, check_output, console_for, emit_json, user_errors
from harness.commands.evaluate import parse_bits
from harness.errors import ConfigError


def _layer_table(report, cost) -> Table:  # type: ignore[no-untyped-def]
    table = Table(title=f"{report.workload.name}, {cost.bits}-bit activations: per layer", title_justify="left")
    for col in ("layer", "rows×cols", "MVMs", "φ", "cycles", "µs", "MACs", "nJ", "ADC%", "TOPS", "TOPS/W", "util"):
        table.add_column(col, justify="left" if col == "layer" else "right")
    for x in cost.layers:
        table.add_row(
            x.name, f"{x.rows}×{x.cols}", f"{x.pixels}", f"{x.phases}", f"{x.cim_cycles}",
            f"{x.latency_s * 1e6:.2f}", f"{x.macs / 1e6:.2f}M", f"{x.energy_total_J * 1e9:.1f}",
            f"{100 * x.energy_J['adc'] / x.energy_total_J:.0f}", f"{x.tops:.3f}", f"{x.tops_per_w:.2f}",
            f"{100 * x.utilization:.1f}%",
        )
    return table


def _summary_table(report) -> Table:  # type: ignore[no-untyped-def]
    table = Table(title=f"{report.workload.name} on {report.hardware.name}: whole model (ops = 2 per MAC)",
                  title_justify="left")
    for col in ("bits", "cycles", "µs", "inf/s", "µJ/inf", "TOPS", "TOPS/W", "peak TOPS", "peak TOPS/W", "MCU/CiM"):
        table.add_column(col, justify="right")
    for cost, pk in zip(report.costs, report.peaks, strict=True):
        ratio = report.mcu_ratio(cost)
        table.add_row(
            f"{cost.bits}", f"{cost.cim_cycles:,}", f"{cost.latency_s * 1e6:.2f}", f"{cost.inferences_per_s:,.0f}",
            f"{cost.uJ_per_inference:.3f}", f"{cost.tops:.4g}", f"{cost.tops_per_w:.3g}",
            f"{pk.tops:.3g}", f"{pk.tops_per_w:.3g}", "—" if ratio is None else f"{ratio:,.0f}×",
        )
    return table


def _stall_line(report) -> str:  # type: ignore[no-untyped-def]
    stalls = [(c.bits, x.name, x.stall_s) for c in report.costs for x in c.layers if x.stall_s > 0]
    if not stalls:
        return "datapath and IM2COL keep up with the array at every bit-width (no stall)"
    worst = max(stalls, key=lambda s: s[2])
    return (f"array stalls in {len(stalls)} layer/bit-width case(s); worst {worst[1]} at {worst[0]} bits: "
            f"{worst[2] * 1e6:.2f} µs (latency includes it)")


def accel_command(
    model: str = typer.Option(..., "--model", help="Zoo model name (see the model zoo) or a model file (.h5)."),
    hw: Path | None = typer.Option(None, "--hw", help="Hardware TOML (default: AON-CiM 14 nm, shipped)."),
    bits: str = typer.Option("8,6,4", "--bits", help="Activation bit-widths, e.g. 8,6,4."),
    png: Path | None = typer.Option(
        None, "--png", help="Write the Figure-8 scatter here and the placement map next to it (-placement.png)."
    ),
    split: bool = typer.Option(False, "--split", help="Split layers taller or wider than the array into chunks."),
    max_gemm_cols: int | None = typer.Option(
        None, "--max-gemm-cols", help="Split depthwise layers into block-diagonal GEMMs of at most N columns."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the --png files if they exist."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
) -> None:
    """Tile a model on the AON-CiM array (layer-serial) and report latency, energy, TOPS, TOPS/W."""
    with user_errors():
        from harness.accel.hardware import load_hardware
        from harness.accel.paper import MCU_BASELINE_UJ
        from harness.accel.report import analyze, load_workload

        bit_list = parse_bits(bits)
        if png is not None:
            check_output(png, option="--png", suffixes=PLOT_SUFFIXES, overwrite=overwrite)
            check_output(png.with_name(png.stem + "-placement" + png.suffix), option="--png (placement map)",
                         suffixes=PLOT_SUFFIXES, overwrite=overwrite)
        if hw is not None and not hw.is_file():
            raise ConfigError(f"--hw {hw}: no such hardware file (a TOML like the shipped hw/aon-cim-14nm.toml)")
        try:
            hardware = load_hardware(hw)
        except ConfigError as exc:
            raise ConfigError(f"--hw {exc}" if hw is not None else str(exc)) from exc
        for b in bit_list:
            hardware.cim_cycle_ns(b)
        workload, task = load_workload(model)
        from harness.accel.cells import cells_for_spec

        cells = cells_for_spec(model)  # devices per weight and weight levels of a model file
        report = analyze(workload, hardware, bit_list, split=split, max_gemm_cols=max_gemm_cols, task=task)
        pictures = []
        if png is not None:
            from harness.accel.plots import figure8_png, placement_png

            pictures.append(str(figure8_png(report, png)))
            pictures.append(str(placement_png(report, png.with_name(png.stem + "-placement" + png.suffix))))
        console: Console = console_for(json_out)  # not hard-wrapped when piped
        pl = report.placement
        console.print(
            f"{workload.name}: {len(workload.layers)} analog layers, {workload.mvms:,} MVMs, "
            f"{workload.macs:,} MACs; {len(pl.tiles)} tiles cover {100 * pl.area_fraction:.1f} % of the "
            f"{pl.rows}×{pl.cols} array (effective utilization {100 * pl.effective_utilization:.1f} %)"
        )
        for cost in report.costs:
            console.print(_layer_table(report, cost))
        console.print(_summary_table(report))
        console.print(_stall_line(report))
        bank = hardware.sram.bank_bytes
        too_big = [c.bits for c in report.costs if report.largest_activation_bytes(c.bits) > bank]
        if too_big:
            console.print(f"warning: the largest activation exceeds one {bank:,} B SRAM bank at "
                          f"{', '.join(map(str, too_big))} bits; AON-CiM's double buffer cannot hold it")
        if report.task in MCU_BASELINE_UJ:
            console.print(f"MCU/CiM: MicroNets on an MCU use {MCU_BASELINE_UJ[report.task] / 1e3:g} mJ/inference "
                          "for this task (AnalogNets §6.5)")
        if cells is not None:
            console.print(f"storage: {cells['weights']:,} weights on {cells['devices']:,} devices"
                          + ("" if cells["weight_storage_bits"] is None
                             else f", {cells['weight_storage_bits'] / 8:,.0f} B of discrete-level weights"))
        console.print(f"model time (tiling + cost at {len(bit_list)} bit-widths): {report.model_time_s * 1e3:.2f} ms")
        for p in pictures:
            console.print(f"wrote {p}")
        if json_out:
            out = report.as_json()
            out["pictures"] = pictures
            out["cells"] = cells
            emit_json(out)
