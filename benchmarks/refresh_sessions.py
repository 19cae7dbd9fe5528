"""Refresh sessions measured: refreshes per simulated year and the monitor's saw-tooth.

Runs ``sessions/refresh-1y.toml`` (the default digits MLP, 40 log-spaced reads from 25 s to
1 year) on ``virtual?rows=64&cols=160`` with seeds 0..4 for each ``below_pp`` threshold, at
the monitor's default bits (8) and at 4 bits, and prints one row per (bits, below_pp):
refreshes per simulated year (mean and range over seeds) and the monitor accuracy's min and
max over every read of every seed. A measurement, not a timed test::

    PYTHONPATH=. python benchmarks/refresh_sessions.py [--seeds 5] [--thresholds 1,2,5] [--bits 8,4]
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np

from harness.chip.registry import open_chip
from harness.evaluation.monitor import build_monitor
from harness.recording import reading
from harness.sessions.runner import run_session
from harness.sessions.schedule import load_session
from harness.sessions.status import refresh_summary

SESSION = Path(__file__).resolve().parent.parent / "sessions" / "refresh-1y.toml"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--thresholds", default="1,2,5")
    ap.add_argument("--bits", default="8,4")
    args = ap.parse_args()
    base = load_session(SESSION)
    print(f"{'bits':>4} {'below_pp':>8} {'refreshes/y mean':>16} {'range':>8} {'monitor min %':>13} {'monitor max %':>13} {'wall s':>7}")
    with tempfile.TemporaryDirectory() as d:
        for bits in (int(b) for b in args.bits.split(",")):
            for pp in (float(p) for p in args.thresholds.split(",")):
                assert base.refresh is not None
                spec = dataclasses.replace(base, refresh=dataclasses.replace(base.refresh, below_pp=pp, monitor_bits=bits))
                per_year, acc = [], []
                t0 = time.perf_counter()
                for seed in range(args.seeds):
                    out = Path(d) / f"r-{bits}-{pp}-{seed}.h5"
                    with open_chip(f"virtual?rows=64&cols=160&seed={seed}") as chip:
                        run_session(spec, chip, out, monitor_factory=build_monitor)
                    with reading(out) as rec:
                        per_year.append(refresh_summary(rec)["refreshes_per_year"])
                        acc.append(rec.monitor_accuracy)
                a = np.concatenate(acc) * 100
                py = np.asarray(per_year)
                print(f"{bits:>4} {pp:>8g} {py.mean():>16.2f} {f'{py.min():g}-{py.max():g}':>8} {a.min():>13.1f} "
                      f"{a.max():>13.1f} {time.perf_counter() - t0:>7.1f}")


if __name__ == "__main__":
    main()
