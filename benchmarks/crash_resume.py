"""Crash/resume soak: many SIGKILLs of a real ``harness session run`` at seeded random moments.

Each trial starts ``harness session run sessions/drift-20h.toml`` on a small seeded virtual
chip, reads k of its progress lines (k drawn from the whole run: programming iterations,
header, readouts) and SIGKILLs it; then ``harness session resume`` (or, if it died before
the recording existed, a fresh ``session run``) finishes the session. Every trial that
leaves readouts to take also SIGKILLs that first ``resume`` after k' of the readout lines it
has left to print (a kill during resume), and every
fifth trial kills the run exactly after its last readout's commit, before the file is
closed (the writer's ``close`` is replaced by a SIGKILL), then the resume after its last
commit too. The result must be complete, ordered, without lost or repeated readouts,
bit-identical to an uninterrupted run with the same seed, open with plain h5py (no
"already open for write"), and leave no ``.partial-PID`` or ``.lock`` file. The test suite
runs 6 such trials; this runs as many as asked.

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

import h5py
import numpy as np

from harness.recording import open_recording, partial_paths
from harness.chip.registry import open_chip
from harness.sessions.schedule import load_session
from harness.sessions.runner import run_session

REPO = Path(__file__).resolve().parent.parent
SESSION = REPO / "sessions" / "drift-20h.toml"
CLI = "import sys; from harness.cli import app; sys.argv[0] = 'harness'; app()"
#: The CLI with the recording writer's close replaced by SIGKILL: dies right after the last commit.
CLI_DIE_AT_CLOSE = (
    "import os, signal, sys; from harness.recording import RecordingWriter; "
    "RecordingWriter.close = lambda self: os.kill(os.getpid(), signal.SIGKILL); "
    "from harness.cli import app; sys.argv[0] = 'harness'; app()"
)


def harness(*args: str, stderr: int | None = subprocess.PIPE, die_at_close: bool = False) -> subprocess.Popen[str]:
    code = CLI_DIE_AT_CLOSE if die_at_close else CLI
    return subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.DEVNULL, stderr=stderr,
                            text=True, cwd=REPO)


def kill_after_lines(proc: subprocess.Popen[str], k: int) -> bool:
    """SIGKILL ``proc`` once it printed ``k`` stderr lines; True if the kill landed."""
    assert proc.stderr is not None
    for _ in range(k):
        if not proc.stderr.readline():
            break
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    return proc.returncode == -signal.SIGKILL


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=30)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    spec = load_session(SESSION)
    landed: collections.Counter[str] = collections.Counter()
    failures = 0
    kills = 0
    wall0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for trial in range(args.trials):
            uri = f"virtual?rows=64&cols=160&seed={1000 + trial}"
            ref, out = Path(tmp) / f"ref{trial}.h5", Path(tmp) / f"out{trial}.h5"
            with open_chip(uri) as chip:
                run_session(spec, chip, ref)
            at_close = trial % 5 == 4
            k = 10**6 if at_close else int(rng.integers(1, 64))
            proc = harness("session", "run", str(SESSION), "--chip", uri, "--out", str(out), die_at_close=at_close)
            killed = kill_after_lines(proc, k)
            kills += killed
            done = -1
            if out.exists():
                with open_recording(out) as rec:
                    done = rec.n_readouts
                    where = f"after {done:2d} readouts" + (" (after the last commit)" if at_close else "")
                cmd = ("session", "resume", str(out))
            else:
                where = "before the recording existed"
                cmd = ("session", "run", str(SESSION), "--chip", uri, "--out", str(out))
            if not killed:
                where = "not killed (finished first)"
            landed[where] += 1
            if at_close or 0 <= done < 29:
                # kill the resume too: during it (after 1 .. all but one of the readout lines
                # it has left to print), or right after its own last commit
                k2 = 10**6 if at_close else int(rng.integers(1, 30 - done))
                resumed = harness(*cmd, die_at_close=at_close)
                if kill_after_lines(resumed, k2):
                    kills += 1
                    with open_recording(out) as rec:
                        landed[f"resume killed after {rec.n_readouts:2d} readouts"] += 1
            rc = harness(*cmd, stderr=subprocess.DEVNULL).wait()
            ok = rc == 0 and not partial_paths(out) and not out.with_name(out.name + ".lock").exists()
            if ok:
                try:
                    with h5py.File(out, "r") as f:  # plain HDF5, not SWMR: the file was closed cleanly
                        ok = int(f["commit"][0]) == 30
                except OSError:
                    ok = False
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
    print(f"\n{args.trials} trials, {kills} SIGKILLs landed, {failures} failures, {time.perf_counter() - wall0:.0f} s")
    for where, count in sorted(landed.items()):
        print(f"  {count:3d}  {where}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
