"""Crash/resume soak: many SIGKILLs of a real ``harness session run`` at seeded random moments.

Each trial starts ``harness session run sessions/drift-20h.toml`` on a small seeded virtual
chip, reads k of its progress lines (k drawn from the whole run: programming iterations,
header, readouts) and SIGKILLs it; then ``harness session resume`` (or, if it died before
the recording existed, a fresh ``session run``) finishes the session. The result must be
complete, ordered, without lost or repeated readouts, and bit-identical to an uninterrupted
run with the same seed. The test suite runs 6 such trials; this runs as many as asked.

    python benchmarks/crash_resume.py [--trials 30 --seed 1]
"""

from __future__ import annotations

import argparse
import collections
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from harness.recording import open_recording, partial_paths
from harness.registry import open_chip
from harness.schedule import load_session
from harness.session import run_session

REPO = Path(__file__).resolve().parent.parent
SESSION = REPO / "sessions" / "drift-20h.toml"
CLI = "import sys; from harness.cli import app; sys.argv[0] = 'harness'; app()"


def harness(*args: str, stderr: int | None = subprocess.PIPE) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", CLI, *args], stdout=subprocess.DEVNULL, stderr=stderr,
                            text=True, cwd=REPO)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=30)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    spec = load_session(SESSION)
    landed: collections.Counter[str] = collections.Counter()
    failures = 0
    wall0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for trial in range(args.trials):
            uri = f"virtual?rows=64&cols=160&seed={1000 + trial}"
            ref, out = Path(tmp) / f"ref{trial}.h5", Path(tmp) / f"out{trial}.h5"
            with open_chip(uri) as chip:
                run_session(spec, chip, ref)
            k = int(rng.integers(1, 64))
            proc = harness("session", "run", str(SESSION), "--chip", uri, "--out", str(out))
            assert proc.stderr is not None
            for _ in range(k):
                if not proc.stderr.readline():
                    break
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            proc.stderr.close()
            if out.exists():
                with open_recording(out) as rec:
                    where = f"after {rec.n_readouts:2d} readouts"
                cmd = ("session", "resume", str(out))
            else:
                where = "before the recording existed"
                cmd = ("session", "run", str(SESSION), "--chip", uri, "--out", str(out))
            if proc.returncode != -signal.SIGKILL:
                where = "not killed (finished first)"
            landed[where] += 1
            rc = harness(*cmd, stderr=subprocess.DEVNULL).wait()
            ok = rc == 0 and not partial_paths(out)
            if ok:
                with open_recording(out) as rec, open_recording(ref) as r0:
                    ok = (
                        rec.n_readouts == 30
                        and np.array_equal(rec.extra("schedule_index"), np.arange(30))
                        and np.all(np.diff(rec.times_s) > 0)
                        and np.array_equal(rec.times_s, r0.times_s)
                        and np.array_equal(rec.readouts(), r0.readouts())
                    )
            failures += not ok
            print(f"trial {trial:3d}: kill after {k:2d} lines, landed {where}: {'ok' if ok else 'FAILED'}", flush=True)
    print(f"\n{args.trials} trials, {failures} failures, {time.perf_counter() - wall0:.0f} s")
    for where, count in sorted(landed.items()):
        print(f"  {count:3d}  {where}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
