"""Measurement: converter-range policies side by side on the same simulated chips (issue 18).

For each model, every chip (``virtual?seed=S``, S = 0..runs−1, the default 512 × 2048 array) is
programmed and read once at the given times; the same readouts are then evaluated under
``--ranges calibrated`` and ``--ranges percentile`` (and ``trained`` where the file has
ranges), so the comparison is paired on chips, reads and test examples. Prints, per model,
bit width and time, each policy's mean accuracy with its 95 % interval
(:func:`harness.evaluation.uncertainty.accuracy_interval`) and the paired difference
calibrated − percentile with its paired-bootstrap interval, and the shared ADC gain ρ of each.

    nice -n 10 python benchmarks/range_policies.py --runs 25 --bits 6,4 --times 1d \\
        --model analognet-kws --model fixtures/models/analognet-kws-noise.h5

``--png F`` also draws accuracy vs time, one panel per bit width, one colour per model, one line
style per policy, each with its 95 % interval band (Figure 7 of the AnalogNets paper under both
policies); ``--from-json J --png F`` draws it from an earlier run's ``--json`` without running.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from typing import Any

import numpy as np


def main() -> None:
    from harness.chip.registry import open_chip
    from harness.evaluation.evaluate import resolve_model
    from harness.evaluation.evaluator import ReadoutEvaluator
    from harness.evaluation.uncertainty import accuracy_interval, paired_difference
    from harness.units import format_duration, parse_durations

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", default=[])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--bits", default="6,4")
    ap.add_argument("--times", default="1d")
    ap.add_argument("--chip", default="virtual")
    ap.add_argument("--json", dest="json_out", default=None, help="also write the figures to this JSON file")
    ap.add_argument("--png", default=None, help="also plot accuracy vs time per bit width to this file")
    ap.add_argument("--from-json", default=None, help="plot an earlier --json (with --png) instead of running")
    args = ap.parse_args()
    if args.from_json:
        if not args.png:
            ap.error("--from-json needs --png")
        with open(args.from_json) as fh:
            plot(json.load(fh), args.png)
        return
    if not args.model:
        ap.error("give at least one --model (or --from-json with --png)")
    bits = [int(b) for b in args.bits.split(",")]
    times = parse_durations(args.times)
    sep = "&" if "?" in args.chip else "?"
    out: dict[str, Any] = {"runs": args.runs, "chip": args.chip, "bits": bits, "times_s": list(times), "models": {}}
    for ref in args.model:
        model = resolve_model(ref)
        policies = (["trained"] if model.ranges else []) + ["calibrated", "percentile"]
        evs = {p: ReadoutEvaluator(model, range_policy=p) for p in policies}
        t0 = time.perf_counter()
        readouts = []
        for s in range(args.runs):
            with contextlib.closing(open_chip(f"{args.chip}{sep}seed={s}")) as chip:
                readouts.append(evs[policies[0]].read_chip(chip, times))
        t_read = time.perf_counter() - t0
        correct = {p: ev.correct_batch(readouts, bits=bits, gdc=True, read_noise=False, seed=0) for p, ev in evs.items()}
        t_all = time.perf_counter() - t0
        rho = {p: {b: ev.calibrator.at(b).adc_norm_range for b in bits} for p, ev in evs.items()}
        print(f"\n{model.name}: {args.runs} chips ({args.chip}, seeds 0..{args.runs - 1}), float "
              f"{evs[policies[0]].digital_accuracy * 100:.2f} %; program+read {t_read:.0f} s, total {t_all:.0f} s")
        rows: dict[str, Any] = {}
        for i, b in enumerate(bits):
            for j, t in enumerate(times):
                cell: dict[str, Any] = {}
                line = [f"  {b}-bit {format_duration(t):>4}:"]
                for p in policies:
                    x = correct[p][i, j]
                    lo, hi = accuracy_interval(x)
                    cell[p] = {"mean": float(x.mean()), "ci95": [float(lo), float(hi)], "rho": rho[p][b]}
                    line.append(f"{p} {x.mean() * 100:6.2f} [{lo * 100:.1f}, {hi * 100:.1f}] (ρ {rho[p][b]:.3g})")
                d, dlo, dhi = paired_difference(correct["percentile"][i, j], correct["calibrated"][i, j])
                cell["calibrated_minus_percentile"] = {"mean": d, "ci95": [dlo, dhi]}
                line.append(f"calibrated − percentile {d * 100:+.2f} [{dlo * 100:+.2f}, {dhi * 100:+.2f}]")
                print("  ".join(line), flush=True)
                rows[f"{b}/{format_duration(t)}"] = cell
        out["models"][model.name] = {"digital_accuracy": evs[policies[0]].digital_accuracy,
                                     "chance_accuracy": evs[policies[0]].chance_accuracy, "cells": rows}
    if args.json_out:
        with open(args.json_out, "w") as fh:
            json.dump(out, fh, indent=1)
    if args.png:
        plot(out, args.png)


def plot(out: dict[str, Any], path: str) -> None:
    """Accuracy vs time, one panel per bit width: a colour per model, a line style per policy
    (solid calibrated, dashed percentile, dotted trained), the 95 % interval as a band, each
    model's float accuracy as a thin line, chance level where the run recorded it."""
    from matplotlib.figure import Figure

    from harness.sessions.replay_plots import time_axis
    from harness.units import format_duration

    bits, times = out["bits"], np.asarray(out["times_s"], dtype=np.float64)
    styles = {"calibrated": "-", "percentile": "--", "trained": ":"}
    fig = Figure(figsize=(4.2 * len(bits) + 2.6, 4.0), layout="constrained")
    axes = fig.subplots(1, len(bits), sharey=True, squeeze=False)[0]
    for ax, b in zip(axes, bits, strict=True):
        for k, (name, m) in enumerate(out["models"].items()):
            colour = f"C{k}"
            cells = [m["cells"][f"{b}/{format_duration(t)}"] for t in times]
            for policy, ls in styles.items():
                if policy not in cells[0]:
                    continue
                mean = np.array([100 * c[policy]["mean"] for c in cells])
                lo = np.array([100 * c[policy]["ci95"][0] for c in cells])
                hi = np.array([100 * c[policy]["ci95"][1] for c in cells])
                ax.plot(times, mean, ls, marker="o", ms=3, color=colour, label=f"{name}, {policy}")
                ax.fill_between(times, lo, hi, color=colour, alpha=0.12, lw=0)
            ax.axhline(100 * m["digital_accuracy"], color=colour, lw=0.6, alpha=0.6)
            if "chance_accuracy" in m:
                ax.axhline(100 * m["chance_accuracy"], color="grey", lw=0.8, ls="-.")
        time_axis(ax, times)
        ax.set_title(f"{b}-bit ADC, {out['runs']} chips")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test accuracy (%), GDC on")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right center", fontsize=8)
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
