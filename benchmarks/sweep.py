"""Sweep benchmark: serial vs 2 Dask workers, and what one task costs against its parts.

Run from the repository root (needs the ``sweep`` extra)::

    python benchmarks/sweep.py                  # 100 chips × 5 times × 3 bit-widths, default model
    python benchmarks/sweep.py --chips 20       # quicker
    python benchmarks/sweep.py --model analognet-kws   # another model (zoo name or file)

Prints, measured side by side in one run:

1. **Task cost vs its parts** (issue: "a task costs what its devices cost"): on fresh
   512 × 2048 virtual chips, the wall time of write-verify of the model's devices
   (``program_layout``), of the reads at the sweep's times, and of the CiM inference at all
   bit-widths — each measured separately — against one whole task (``run_task``: open the
   chip, program and read through the session runner, evaluate). Target: task ≤ 2 × sum.
2. **Serial vs 2 workers**: the same sweep with ``--workers 1`` (in-process) and
   ``--workers 2`` (LocalCluster): start-up (cluster and worker warm-up: models and data
   loaded once per worker) and task time separately, the speedup on the tasks (target ≥ 1.7×
   on 2 cores) and including start-up, the per-task scheduling overhead (task time × workers
   / tasks − mean task time) and the peak RSS per worker process; and the check that both
   tables are identical.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


def task_parts(model_ref: str, times_s: tuple[float, ...], bits: tuple[int, ...], reps: int) -> dict[str, float]:
    """Median wall time (s) of each part of a task, and of whole tasks, on fresh chips."""
    import torch

    from harness.evaluation.evaluate import resolve_model
    from harness.evaluation.evaluator import ReadoutEvaluator
    from harness.programming.mapping import map_weights
    from harness.programming.write_verify import program_layout
    from harness.chip.registry import open_chip
    from harness.sweeps.runner import run_task
    from harness.sweeps.spec import parse_sweep, task_for

    torch.set_num_threads(1)
    model = resolve_model(model_ref)
    ev = ReadoutEvaluator(model)
    chip0 = open_chip("virtual")
    layout = map_weights([(a.name, a.weight) for a in model.analog_layers()], chip0.geometry)
    times_txt = ", ".join(repr(f"{t}s") for t in times_s)
    spec = parse_sweep(
        f"[sweep]\nruns = 1\n[grid]\nmodels = [{model_ref!r}]\ntimes = [{times_txt}]\nbits = {list(bits)}\n"
    )
    run_task(spec, task_for(0, spec.models[0], "virtual", 999))  # warm caches (model, data, ranges)
    out: dict[str, list[float]] = {"program": [], "reads": [], "cim": [], "task": []}
    for i in range(reps):
        chip = open_chip(f"virtual?seed={1000 + i}")
        t0 = time.perf_counter()
        result = program_layout(chip, layout)
        t1 = time.perf_counter()
        end = chip.now()
        for t in times_s:
            chip.wait_until(end + t)
            chip.read(layout.cells)
        t2 = time.perf_counter()
        out["program"].append(t1 - t0)
        out["reads"].append(t2 - t1)
        del result
        readouts = ev.read_chip(open_chip(f"virtual?seed={2000 + i}"), times_s)
        t3 = time.perf_counter()
        ev.accuracy(readouts, bits=bits, gdc=True, read_noise=False, seed=0)
        out["cim"].append(time.perf_counter() - t3)
        t4 = time.perf_counter()
        run_task(spec, task_for(0, spec.models[0], "virtual", i))
        out["task"].append(time.perf_counter() - t4)
    return {k: statistics.median(v) for k, v in out.items()} | {"devices": float(layout.n_devices)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chips", type=int, default=100)
    ap.add_argument("--model", default="default")
    ap.add_argument("--reps", type=int, default=5, help="repetitions of the task-cost breakdown")
    args = ap.parse_args()

    import pandas as pd

    from harness.sweeps.runner import load_results, run_sweep
    from harness.sweeps.spec import parse_sweep

    times = (25.0, 3600.0, 86400.0, 30 * 86400.0, 365 * 86400.0)
    bits = (8, 6, 4)
    parts = task_parts(args.model, times, bits, args.reps)
    parts_sum = parts["program"] + parts["reads"] + parts["cim"]
    print(f"task cost, model {args.model!r} ({int(parts['devices']):,} devices on a 512x2048 chip), median of {args.reps}:")
    print(f"  write-verify {parts['program'] * 1e3:8.1f} ms   reads {parts['reads'] * 1e3:6.1f} ms   "
          f"CiM inference {parts['cim'] * 1e3:8.1f} ms   sum {parts_sum * 1e3:8.1f} ms")
    print(f"  whole task   {parts['task'] * 1e3:8.1f} ms   ratio task/sum {parts['task'] / parts_sum:5.2f}  (target <= 2)")

    text = (
        f"[sweep]\nname = 'bench'\nruns = {args.chips}\n[grid]\nmodels = [{args.model!r}]\n"
        "times = ['25s', '1h', '1d', '1mo', '1y']\nbits = [8, 6, 4]\n"
    )
    spec = parse_sweep(text, source="benchmark")
    with tempfile.TemporaryDirectory() as d:
        results = {}
        for workers in (1, 2):
            out = Path(d) / f"w{workers}"
            t0 = time.perf_counter()
            r = run_sweep(spec, out, workers=workers)
            wall = time.perf_counter() - t0
            mean_task = statistics.fmean(r.task_wall_s)
            results[workers] = (wall, r)
            overhead = r.run_s * workers / r.total - mean_task
            print(
                f"workers={workers}: {r.total} tasks in {wall:6.1f} s ({r.executor}): start-up and warm-up {r.startup_s:5.1f} s, "
                f"tasks {r.run_s:6.1f} s; mean task {mean_task * 1e3:6.1f} ms; scheduling overhead {overhead * 1e3:6.1f} ms/task; "
                f"peak RSS per worker {r.worker_peak_rss_mib:6.0f} MiB"
            )
        keys = ["task_id", "t_s", "bits", "gdc", "read_noise"]
        a = load_results(Path(d) / "w1").sort_values(keys).reset_index(drop=True)
        b = load_results(Path(d) / "w2").sort_values(keys).reset_index(drop=True)
        identical = a.equals(b)
        with contextlib.suppress(Exception):
            pd.testing.assert_frame_equal(a, b)
    speedup = results[1][1].run_s / results[2][1].run_s
    speedup_wall = results[1][0] / results[2][0]
    print(
        f"speedup 2 workers vs 1: {speedup:4.2f}x on the tasks (target >= 1.7), {speedup_wall:4.2f}x including "
        f"start-up; tables identical: {identical}"
    )


if __name__ == "__main__":
    main()
