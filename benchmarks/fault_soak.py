"""Fault soak: ``harness program`` on a full 512 × 2048 emulated chip through a noisy, flaky
link with default URIs must give a recording bit-identical to a clean run (issue 13).

For each transport (pty → ``serial://…``, loopback TCP → ``visa://…``) it runs
``harness emulate`` and ``harness program --chip <URI>`` (the URI exactly as the emulator
printed it: no options) as their own processes, once on a clean link and once per fault
seed with 1 % of bytes corrupted and 1 % dropped (both directions) and a hang-up after
every 300th command. It compares the programming results stored in the recordings
(final conductances, iterations, converged flags, chip times) with the clean run's, and
prints the wall time of each run and its ratio to the clean run measured in the same
invocation.

    python benchmarks/fault_soak.py [--seeds 1 2 3] [--transports pty tcp]
        [--corrupt 0.01 --drop 0.01 --disconnect-every 300]
"""

from __future__ import annotations

import argparse
import json
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from harness.recording import open_recording

ROOT = Path(__file__).resolve().parents[1]
HARNESS = [sys.executable, "-c", "from harness.cli import app; app()"]


def start_emulator(transport: str, faults: list[str]) -> tuple[subprocess.Popen[str], str]:
    where = ["--pty"] if transport == "pty" else ["--tcp", "127.0.0.1:0"]
    proc = subprocess.Popen(
        [*HARNESS, "emulate", *where, *faults], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    ready, _, _ = select.select([proc.stdout], [], [], 120)
    if not ready:
        proc.kill()
        raise SystemExit("harness emulate printed no URI within 120 s")
    return proc, proc.stdout.readline().strip()  # type: ignore[union-attr]


def program(uri: str, out: Path, timeout_s: float) -> tuple[float, dict[str, object]]:
    t0 = time.perf_counter()
    result = subprocess.run(
        [*HARNESS, "program", "--chip", uri, "--out", str(out), "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout_s, check=False,
    )
    wall_s = time.perf_counter() - t0
    if result.returncode != 0:
        raise SystemExit(f"harness program failed on {uri}: {result.stderr.strip().splitlines()[-1:]}")
    return wall_s, json.loads(result.stdout)


def programming_of(path: Path) -> dict[str, np.ndarray]:
    with open_recording(path) as rec:
        prog = rec.programming
        return {
            "final_uS": np.asarray(prog.final_uS),
            "iterations": np.asarray(prog.iterations),
            "converged": np.asarray(prog.converged),
            "cells": np.asarray(prog.cells),
            "chip_times_s": np.array([prog.t_start_s, prog.t_end_s]),
        }


def identical(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--transports", nargs="+", default=["pty", "tcp"], choices=["pty", "tcp"])
    ap.add_argument("--corrupt", type=float, default=0.01)
    ap.add_argument("--drop", type=float, default=0.01)
    ap.add_argument("--disconnect-every", type=int, default=300)
    ap.add_argument("--timeout-s", type=float, default=1800.0, help="Give up on one run after this long.")
    args = ap.parse_args()

    rows = []
    all_ok = True
    with tempfile.TemporaryDirectory(prefix="fault-soak-") as tmp:
        for transport in args.transports:
            emu, uri = start_emulator(transport, [])
            try:
                clean_s, clean_json = program(uri, Path(tmp) / f"{transport}-clean.h5", args.timeout_s)
            finally:
                emu.terminate()
                emu.wait(30)
            clean = programming_of(Path(tmp) / f"{transport}-clean.h5")
            rows.append((transport, "clean", clean_s, 1.0, True, clean_json["devices_programmed"]))
            print(f"{transport} clean: {clean_s:.1f} s ({clean_json['devices_programmed']} devices)", flush=True)
            for seed in args.seeds:
                faults = ["--corrupt-rate", str(args.corrupt), "--drop-rate", str(args.drop),
                          "--disconnect-every", str(args.disconnect_every), "--fault-seed", str(seed)]
                emu, uri = start_emulator(transport, faults)
                out = Path(tmp) / f"{transport}-{seed}.h5"
                try:
                    wall_s, js = program(uri, out, args.timeout_s)
                finally:
                    emu.terminate()
                    emu.wait(30)
                same = identical(programming_of(out), clean)
                all_ok &= same
                rows.append((transport, f"seed {seed}", wall_s, wall_s / clean_s, same, js["devices_programmed"]))
                print(f"{transport} seed {seed}: {wall_s:.1f} s = {wall_s / clean_s:.1f} x clean, "
                      f"bit-identical: {same}", flush=True)

    print(f"\nfaults: {100 * args.corrupt:g} % corrupted + {100 * args.drop:g} % dropped bytes (both ways), "
          f"hang-up every {args.disconnect_every} commands; default URIs; 512 x 2048 emulated chip")
    print(f"{'transport':<10}{'run':<9}{'wall s':>9}{'x clean':>9}  bit-identical")
    for transport, run, wall_s, ratio, same, _ in rows:
        print(f"{transport:<10}{run:<9}{wall_s:>9.1f}{ratio:>9.1f}  {same}")
    if not all_ok:
        raise SystemExit("FAIL: a faulty run differs from the clean run")


if __name__ == "__main__":
    main()
