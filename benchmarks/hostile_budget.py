"""Benchmark: the hostile-file budget (issue 19) -- every case of the hostile-recording table
against every consumer, with the worst time and the peak RSS per consumer.

The cases and consumers are those of ``tests/test_hostile_recordings.py`` (its table is the
one list). For each consumer one fresh driver process (the test's driver: CLI and torch
imported first) runs every case's file in turn; its own peak RSS (VmHWM) bounds every case
of that consumer, and each command's wall time is measured in the driver. A baseline driver
runs the consumer on the good file only, so the cost of the imports is visible. Printed: per
consumer the cases run, the failures (exit 0, more than one line, or a traceback), the worst
time and its case, the driver's peak RSS and the baseline's.

    python benchmarks/hostile_budget.py [--consumers status,compare,...] [--dir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

import test_hostile_recordings as table  # noqa: E402

from harness.chip.registry import open_chip  # noqa: E402
from harness.sessions.runner import run_session  # noqa: E402
from harness.sessions.schedule import load_session  # noqa: E402


def drive(plan: list, work: Path, name: str) -> tuple[list[dict], float]:
    """Run ``plan`` in one driver process; its results and its peak RSS (MB)."""
    (work / f"{name}.json").write_text(json.dumps(plan))
    log = work / f"{name}.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-c", table.DRIVER.format(tests=str(REPO / "tests")), str(work / f"{name}.json"), str(log)],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    proc.wait()
    results = [json.loads(x) for x in log.read_text().splitlines() if "start" not in json.loads(x)]
    # the driver's own VmHWM (ru_maxrss of a child would include this process's RSS at fork)
    return results, max(r["peak_mb"] or 0.0 for r in results)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--consumers", default=",".join(table.CONSUMERS))
    ap.add_argument("--dir", type=Path, default=None)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(dir=args.dir))
    try:
        bases = work / "bases"
        bases.mkdir()
        for key, uri in (("good", table.SMALL), ("other", table.OTHER_CHIP)):
            with open_chip(uri) as chip:
                run_session(load_session(table.DEMO), chip, bases / f"{key}.h5")
        subprocess.run(
            [sys.executable, "-c", table.KILL_AFTER_LAST_COMMIT, "session", "run", str(table.DEMO), "--chip",
             table.SMALL, "--out", str(bases / "crashed.h5")],
            cwd=REPO, capture_output=True, check=False, env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        table.BASES.update(good=bases / "good.h5", other=bases / "other.h5", crashed=bases / "crashed.h5")
        crafted = work / "crafted"
        crafted.mkdir()
        for case in table.CASES:
            table.craft(case, table.BASES, crafted)
        print(f"{len(table.CASES)} cases; budget: {table.LIMIT_S:g} s per file, {table.RSS_LIMIT_MB:g} MB RSS")
        print(f"{'consumer':15s} {'cases':>5s} {'failed':>6s} {'worst s':>8s}  {'worst case':32s} {'peak MB':>8s} {'baseline MB':>11s}")
        worst_all = (0.0, "")
        peak_all = 0.0
        for consumer in args.consumers.split(","):
            argv = table.CONSUMERS[consumer]
            d = work / consumer
            d.mkdir()
            plan = []
            for case in table.CASES:
                path = d / f"{case.id}.h5"
                shutil.copy(crafted / f"{case.id}.h5", path)
                plan.append((case.id, consumer, argv(str(path))))
            good = d / "good-copy.h5"
            shutil.copy(table.BASES["good"], good)
            _, base_mb = drive([("good", consumer, argv(str(good)))], work, f"{consumer}-baseline")
            results, peak_mb = drive(plan, work, consumer)
            by_id = {c.id: c for c in table.CASES}
            failed = []
            for r in results:
                lines = r["stderr"].strip().splitlines()
                case = by_id[r["case"]]
                named = case.fragment in lines[0] or (case.alt is not None and case.alt in lines[0]) if lines else False
                ok = r["code"] != 0 and len(lines) == 1 and lines[0].startswith("error: ") and named
                if not ok:
                    failed.append(r["case"])
            worst = max(results, key=lambda r: r["elapsed"])
            if worst["elapsed"] > worst_all[0]:
                worst_all = (worst["elapsed"], f"{worst['case']} / {consumer}")
            peak_all = max(peak_all, peak_mb)
            print(f"{consumer:15s} {len(results):5d} {len(failed):6d} {worst['elapsed']:8.2f}  {worst['case']:32.32s} "
                  f"{peak_mb:8.0f} {base_mb:11.0f}" + (f"   failed: {', '.join(failed[:5])}" if failed else ""))
        print(f"WORST time {worst_all[0]:.2f} s ({worst_all[1]}); WORST peak RSS {peak_all:.0f} MB")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
