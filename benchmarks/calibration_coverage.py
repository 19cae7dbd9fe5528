"""Benchmark: coverage of ``harness calibrate``'s 95 % intervals on synthetic chips (issue 18).

Each chip's personality is drawn at random (every published constant of pcm-90nm scaled by its
own factor in [0.7, 1.3]; t0 log-uniform in 12–60 s; RESET mean log-uniform in 0.05–0.4 µS),
a calibration-pattern session is recorded on a small virtual chip of it and calibrated blind
(base pcm-90nm). Printed per constant: chips where it was identified, bias (absolute and
relative to the truth), RMSE, coverage of the 95 % interval, median interval width, and
whether the targets hold (coverage >= 85 %, |bias| < half the median width); then the RESET
mean's relative error by truth. ``--json FILE`` keeps every chip's truth and fit.

    python benchmarks/calibration_coverage.py [--chips 40] [--rows 128 --cols 256] [--points 20 --repeats 3]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

COVERAGE_TARGET = 0.85


def main() -> None:
    from harness.calibration.coverage import coverage_study, reset_relative_errors, true_value

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chips", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rows", type=int, default=128)
    ap.add_argument("--cols", type=int, default=256)
    ap.add_argument("--points", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", type=Path, default=None, help="write every chip's truth and fit here")
    a = ap.parse_args()
    t = time.perf_counter()

    def progress(i: int, _out: object) -> None:
        print(f"chip {i + 1}/{a.chips} done, {time.perf_counter() - t:.0f} s", file=sys.stderr)

    outcomes, table = coverage_study(a.chips, seed=a.seed, rows=a.rows, cols=a.cols, points=a.points,
                                     repeats=a.repeats, progress=progress)
    wall = time.perf_counter() - t
    print(f"{a.chips} chips of {a.rows}x{a.cols}, {a.points} readouts x {a.repeats} repeats, 10 s - 20 h, seed {a.seed}: "
          f"{wall:.0f} s")
    print(f"{'constant':24s} {'n':>3s} {'bias':>11s} {'rel.bias':>9s} {'rmse':>10s} {'coverage':>9s} "
          f"{'med.width':>10s}  targets")
    for name, r in table.items():
        ok_cov = r["coverage"] >= COVERAGE_TARGET
        ok_bias = abs(r["bias"]) < r["median_width"] / 2
        print(f"{name:24s} {int(r['n']):3d} {r['bias']:11.4g} {r['rel_bias']:+9.2%} {r['rmse']:10.4g} "
              f"{r['coverage']:9.0%} {r['median_width']:10.4g}  coverage {'ok' if ok_cov else 'MISSED'}, "
              f"bias {'ok' if ok_bias else 'MISSED'}")
    errs = reset_relative_errors(outcomes)
    rel = np.array([e for _, e in errs])
    truths = np.array([tr for tr, _ in errs])
    print(f"RESET mean, truths {truths.min():.3f}-{truths.max():.3f} µS: |rel. error| median {np.median(np.abs(rel)):.1%}, "
          f"max {np.max(np.abs(rel)):.1%}; within 10 %: {np.mean(np.abs(rel) <= 0.10):.0%} of chips")
    for lo, hi in ((0.05, 0.1), (0.1, 0.2), (0.2, 0.4)):
        m = (truths >= lo) & (truths < hi)
        if m.any():
            print(f"  truth {lo:.2f}-{hi:.2f} µS: {int(m.sum())} chips, mean rel. error {rel[m].mean():+.1%}, "
                  f"max |rel. error| {np.abs(rel[m]).max():.1%}")
    if a.json:
        a.json.write_text(json.dumps({
            "table": table,
            "chips": [{"truth": {n: true_value(o.truth, n) for n in table}, "fitted": o.fitted, "degree": o.degree}
                      for o in outcomes],
        }, indent=1))


if __name__ == "__main__":
    main()
