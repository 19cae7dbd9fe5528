"""Benchmark: the cost of each drift compensation method per (chip, time), as a ratio to one
plain evaluation of the same chip and time, measured side by side in one run.

Target (issue 20): AdaBS and column calibration each ≤ 1× an evaluation. "One plain
evaluation" is the default evaluation (GDC on: `ReadoutEvaluator.accuracy_batch` over the
test split at one bit-width) of the same (chip, time) sets. For each method it reports, as
medians over interleaved repeats (so every figure sees the same machine load):

* **correction**: the method's own work (`Compensation.correction`: GDC's factors, AdaBS's
  train-mode forward of the calibration examples through the chip, the column fit's
  calibration MVMs and least squares), and its ratio to the plain evaluation;
* **evaluation with it**: the whole evaluation under the method, and its ratio.

    python benchmarks/compensation.py [--model analognet-kws-analognets-4b] [--bits 4] [--chips 1]
                                      [--times 25s,1y] [--calibration-examples 256] [--repeats 3] [--threads N]

The chips are programmed and read once (not timed). On a real chip the calibration also costs
chip operations (docs/compensation.md): this benchmark measures the host-side computation.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from harness.evaluation.compensation import DEFAULT_CALIBRATION_EXAMPLES, METHODS, make_compensations
from harness.evaluation.evaluate import resolve_model
from harness.evaluation.evaluator import ReadoutEvaluator
from harness.evaluation.live import read_chips
from harness.units import parse_durations


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="fixtures/models/analognet-kws-analognets-4b.h5")
    ap.add_argument("--chip", default="virtual")
    ap.add_argument("--bits", type=int, default=4)
    ap.add_argument("--chips", type=int, default=1, help="virtual chips (consecutive seeds)")
    ap.add_argument("--times", default="25s,1y")
    ap.add_argument("--calibration-examples", type=int, default=DEFAULT_CALIBRATION_EXAMPLES)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = resolve_model(args.model)
    times = parse_durations(args.times)
    t0 = time.perf_counter()
    chips = read_chips(args.chip, model, times, args.chips)
    evaluator = ReadoutEvaluator(model)
    methods = make_compensations(args.methods, model, calibration_examples_n=args.calibration_examples)
    n_sets = args.chips * len(times)
    print(f"model {model.name}, {args.bits}-bit, {args.chips} chip(s) × {len(times)} time(s) = {n_sets} sets, "
          f"{evaluator.n_test} test examples, {args.calibration_examples} calibration examples (training split), "
          f"torch threads {torch.get_num_threads()}; chips programmed and read in {time.perf_counter() - t0:.1f} s")

    sim = evaluator.simulator(chips[0].layout)
    g = torch.from_numpy(np.concatenate([c.g_uS for c in chips]).astype(np.float32))
    ref = torch.from_numpy(np.repeat(np.stack([c.g_ref_uS for c in chips]), len(times), axis=0).astype(np.float32))
    for m in methods:  # one untimed warm-up each (init_baseline, torch kernels)
        m.correction(sim, g, ref, args.bits)

    def timed(fn) -> float:  # type: ignore[no-untyped-def]
        t = time.perf_counter()
        fn()
        return time.perf_counter() - t

    plain: list[float] = []
    corr: dict[str, list[float]] = {m.name: [] for m in methods}
    full: dict[str, list[float]] = {m.name: [] for m in methods}
    acc: dict[str, float] = {}
    for _ in range(args.repeats):
        plain.append(timed(lambda: evaluator.accuracy_batch(chips, bits=[args.bits], gdc=True, read_noise=False, seed=0)))
        for m in methods:
            corr[m.name].append(timed(lambda: m.correction(sim, g, ref, args.bits)))
            t = time.perf_counter()
            a = evaluator.accuracy_batch(chips, bits=[args.bits], gdc=True, read_noise=False, seed=0, compensation=m)
            full[m.name].append(time.perf_counter() - t)
            acc[m.name] = float(a.mean())
    p = statistics.median(plain)
    print(f"\none plain evaluation (GDC on): {p / n_sets * 1e3:.1f} ms per (chip, time)   [median of {args.repeats}]")
    print(f"{'method':8} {'accuracy':>9} {'correction ms/set':>18} {'ratio':>7} {'eval with it ms/set':>20} {'ratio':>7}")
    for m in methods:
        c, f = statistics.median(corr[m.name]), statistics.median(full[m.name])
        print(f"{m.name:8} {acc[m.name] * 100:8.2f}% {c / n_sets * 1e3:18.2f} {c / p:6.2f}× "
              f"{f / n_sets * 1e3:20.1f} {f / p:6.2f}×")


if __name__ == "__main__":
    main()
