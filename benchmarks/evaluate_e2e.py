"""Benchmark: accuracy vs drift end to end, as a user runs it — one process from start-up to
the last accuracy — the harness against aihwkit on the same model, chips and times (issue 21).

Harness: ``harness evaluate --chip virtual --model M --runs R --json`` (write-verify
programming of every chip, reads at the five default times, GDC, 8 bits). aihwkit: a process
that loads the same model file, converts it with ``InferenceRPUConfig`` +
``PCMLikeNoiseModel`` + ``GlobalDriftCompensation`` (the settings of
``benchmarks/evaluate.py``'s ``run_aihwkit``: converter resolutions as ours at 8 bits) and
evaluates R runs × the same times on the test split. Both are pinned to one thread
(``OMP_NUM_THREADS=1``, ``torch.set_num_threads(1)``) and alternated for ``--rounds`` rounds;
medians and their ratio are printed. aihwkit does not program (it draws the programmed
weights from its statistical model), so the harness does more work per chip.

    python benchmarks/evaluate_e2e.py [--model default] [--runs 25] [--rounds 5]

Needs aihwkit importable in this interpreter (a benchmark-only environment: it is never a
dependency of the harness); without it only the harness is timed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

_AIHWKIT_CHILD = """
import sys
import torch
torch.set_num_threads(1)
sys.path.insert(0, {bench!r})
from evaluate import run_aihwkit
from harness.evaluation.evaluate import resolve_model
from harness.evaluation.settings import DEFAULT_TIMES_S
model = resolve_model(sys.argv[1])
r = run_aihwkit(model, DEFAULT_TIMES_S, int(sys.argv[2]), seed=0)
print(r["accuracy"].mean(axis=1).tolist())
"""


def _timed(cmd: list[str]) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, text=True, env=env, cwd=REPO)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--runs", type=int, default=25)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    harness_exe = shutil.which("harness") or str(Path(sys.executable).with_name("harness"))
    ours = [harness_exe, "evaluate", "--chip", "virtual", "--model", args.model, "--runs", str(args.runs), "--json"]
    try:
        import aihwkit  # noqa: F401
        theirs: list[str] | None = [sys.executable, "-c", _AIHWKIT_CHILD.format(bench=str(REPO / "benchmarks")),
                                    args.model, str(args.runs)]
    except ImportError:
        theirs = None
    t_ours, t_theirs = [], []
    for k in range(args.rounds):
        order = [("h", ours), ("a", theirs)] if k % 2 == 0 else [("a", theirs), ("h", ours)]
        for who, cmd in order:
            if cmd is None:
                continue
            (t_ours if who == "h" else t_theirs).append(_timed(cmd))
    print(f"model {args.model}, {args.runs} chips x 5 times, 8-bit, GDC, one thread; {args.rounds} alternated rounds")
    print(f"harness evaluate (process, end to end):  median {statistics.median(t_ours):.2f} s  "
          f"(range {min(t_ours):.2f}-{max(t_ours):.2f})")
    if not t_theirs:
        print("aihwkit is not importable in this interpreter: comparison skipped")
        return
    print(f"aihwkit (process, end to end):           median {statistics.median(t_theirs):.2f} s  "
          f"(range {min(t_theirs):.2f}-{max(t_theirs):.2f})")
    print(f"RATIO harness / aihwkit: {statistics.median(t_ours) / statistics.median(t_theirs):.2f}   target <= 1")


if __name__ == "__main__":
    main()
