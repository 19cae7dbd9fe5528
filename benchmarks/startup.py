"""Benchmark: start-up time of every ``harness`` command vs ``python -c pass``, same run.

Target (issue 14): ``harness --help`` and ``harness session status FILE.h5`` ≤ 0.5 s on a
quiet machine. Each command runs in a fresh interpreter (what a user's shell does); the
rounds are interleaved (every command once per round, ``python -c pass`` first) so that all
see the same machine load, and the median and minimum over the rounds are reported, with
each command's median minus the bare interpreter's median (the harness's own cost).

Two "floor" rows import only the dependencies a command cannot avoid (typer with the
pydantic it uses for parameters, rich; plus numpy and h5py for reading a recording), so the
harness's own share is the difference. Commands measured: ``--help``, ``--version``, ``<command> --help`` for every registered
command (``harness.cli.COMMANDS``), and the real work of the fast read-only commands:
``session status`` and ``replay --json`` of the bundled demo recording, and
``session run --dry-run``.

    python benchmarks/startup.py [--rounds 7]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "fixtures" / "recordings" / "demo.h5"
SESSION = ROOT / "sessions" / "demo-short.toml"
TARGET_S = 0.5
TARGETS = {"--help", "session status demo.h5"}


def harness_argv() -> list[str]:
    """The installed console script next to this interpreter, else the same entry point via -c."""
    script = Path(sys.executable).with_name("harness")
    if script.is_file():
        return [str(script)]
    found = shutil.which("harness")
    if found:
        return [found]
    return [sys.executable, "-c", "import sys; from harness.cli import app; sys.argv[0] = 'harness'; app()"]


def cases() -> list[tuple[str, list[str]]]:
    from harness.cli import COMMANDS

    h = harness_argv()
    out = [
        ("python -c pass", [sys.executable, "-c", "pass"]),
        # Floors set by dependencies, not by the harness: typer 0.29 imports pydantic to
        # convert any command's parameters; reading a recording needs numpy and h5py.
        ("floor: typer+pydantic+rich", [sys.executable, "-c", "import typer.main, typer._adapters, rich.console"]),
        ("floor: + numpy + h5py", [sys.executable, "-c", "import typer.main, typer._adapters, rich.console, numpy, h5py"]),
        ("--help", [*h, "--help"]),
        ("--version", [*h, "--version"]),
    ]
    out += [(f"{name} --help", [*h, name, "--help"]) for name in COMMANDS]
    out += [
        ("session status demo.h5", [*h, "session", "status", str(DEMO)]),
        ("replay demo.h5 --json", [*h, "replay", str(DEMO), "--json"]),
        ("session run --dry-run", [*h, "session", "run", str(SESSION), "--dry-run"]),
    ]
    return out


def time_once(argv: list[str]) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system) of one run of ``argv``."""
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    r = subprocess.run(argv, capture_output=True, cwd=ROOT, env={**os.environ, "COLUMNS": "100"}, check=False)
    dt = time.perf_counter() - t0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({r.returncode}): {r.stderr.decode()[-500:]}")
    return dt, (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7, help="interleaved rounds (default 7)")
    args = ap.parse_args()
    todo = cases()
    for _, argv in todo:  # warm the OS file cache and byte-code caches once
        time_once(argv)
    times: dict[str, list[float]] = {name: [] for name, _ in todo}
    cpu: dict[str, list[float]] = {name: [] for name, _ in todo}
    for _ in range(args.rounds):
        for name, argv in todo:
            wall_s, cpu_s = time_once(argv)
            times[name].append(wall_s)
            cpu[name].append(cpu_s)
    base = statistics.median(times["python -c pass"])
    print(f"start-up, {args.rounds} interleaved rounds; load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    print("wall: elapsed seconds (the target, meant for a quiet machine); cpu: user+system seconds of the")
    print("process, which machine load inflates much less than wall time")
    print(f"{'command':28s} {'wall med':>8s} {'wall min':>8s} {'cpu med':>7s} {'- python':>8s} {'x python':>8s}  target (wall med)")
    ok = True
    for name, _ in todo:
        med, low, c = statistics.median(times[name]), min(times[name]), statistics.median(cpu[name])
        mark = ""
        if name in TARGETS:
            passed = med <= TARGET_S
            ok &= passed
            mark = f"≤ {TARGET_S} s: {'PASS' if passed else 'FAIL'}"
        print(f"{name:28s} {med:8.3f} {low:8.3f} {c:7.3f} {med - base:8.3f} {med / base:8.1f}  {mark}")
    print("targets met" if ok else "targets NOT met (if the load average is high, compare the cpu column)")


if __name__ == "__main__":
    main()
