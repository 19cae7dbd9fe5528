"""Benchmark: opening a legitimate recording whose header holds a 2^24-device layout
against the hostile-file budget (issue 19: 10 s and 512 MB RSS per consumer and file).

A version-4 recording's header digest (SHA-256 over every dataset that is not appended
to: layout, programming, session, readout cells, chip-state base; see
``harness/recording/integrity.py``) is computed on every open. This builds one synthetic
recording with ``2**--log2-cells`` devices (default 2^24: a 4096 × 4096 array, every cell
a device; programming outcome drawn, not simulated) and two readouts of every device, then
times in fresh processes, each with its own peak RSS (VmHWM):

* ``digest``: :func:`header_digest` alone (h5py open + the hash);
* ``open``: :func:`open_recording` (validation, digest, commit checks) and one readout;
* each CLI consumer named by ``--consumers`` (``session status --json`` by default).

    python benchmarks/big_header.py [--log2-cells 24] [--consumers status,replay] [--dir DIR] [--file F.h5]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

from harness.chip.protocol import Geometry
from harness.programming.mapping import map_weights
from harness.programming.write_verify import ProgrammingParams, ProgrammingResult
from harness.recording import create_recording

REPO = Path(__file__).resolve().parent.parent
CONSUMERS = {
    "status": ["session", "status", "{f}", "--json"],
    "replay": ["replay", "{f}", "--json"],
    "report": ["report", "{f}", "--html", "{f}.html", "--overwrite", "--json"],
}

PROBE = textwrap.dedent(
    """
    import json, sys, time
    def hwm_mb():
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    what, path = sys.argv[1], sys.argv[2]
    import h5py, numpy
    from harness.recording import open_recording
    from harness.recording.integrity import header_digest
    base = hwm_mb()
    t0 = time.perf_counter()
    if what == "digest":
        with h5py.File(path, "r") as f:
            header_digest(f)
        code = 0
    elif what == "open":
        with open_recording(path) as rec:
            rec.readout(rec.n_readouts - 1)
        code = 0
    else:
        sys.path.insert(0, {tests!r})
        from clikit import invoke
        base = hwm_mb()
        t0 = time.perf_counter()
        r = invoke(*json.loads(what))
        code = r.exit_code
        if code:
            print(r.stderr.strip().splitlines()[-1:], file=sys.stderr)
    print(json.dumps({{"s": time.perf_counter() - t0, "peak_mb": hwm_mb(), "base_mb": base, "code": code}}))
    """
)


def build(path: Path, log2_cells: int, seed: int = 0) -> None:
    """Write the synthetic recording."""
    side = 2 ** (log2_cells // 2)
    geometry = Geometry(rows=2 ** (log2_cells - log2_cells // 2), cols=side)
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(geometry.cols // 2, geometry.rows)).astype(np.float32)
    layout = map_weights([("full", w)], geometry)
    del w
    n = layout.n_devices
    final = np.clip(layout.target_uS + rng.normal(0.0, 0.3, n), 0.0, None)
    result = ProgrammingResult(
        cells=layout.cells, target_uS=layout.target_uS, final_uS=final, iterations=np.ones(n, np.int32),
        converged=np.ones(n, bool), params=ProgrammingParams(), t_start_s=0.0, t_end_s=1.0, wall_s=0.0,
    )
    prov = {"chip_uri": "synthetic", "chip_identity": "synthetic 2^%d" % log2_cells, "seed": seed}
    with create_recording(path, provenance=prov, layout=layout, programming=result) as writer:
        step = (geometry.adc_max_uS - geometry.adc_min_uS) / (2**geometry.adc_bits - 1)
        for i, t in enumerate((25.0, 3600.0)):
            g = final * (1 - 0.01 * (i + 1)) - geometry.adc_min_uS
            writer.append_codes(t, np.clip(np.rint(g / step), 0, 2**geometry.adc_bits - 1).astype(np.uint8))



def probe(what: str, path: Path) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(tests=str(REPO / "tests")), what, str(path)],
        cwd=REPO, capture_output=True, text=True, check=False, env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    if out.returncode:
        raise SystemExit(f"{what} failed: {out.stderr.strip().splitlines()[-1:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--log2-cells", type=int, default=24)
    ap.add_argument("--consumers", default="status")
    ap.add_argument("--dir", type=Path, default=None)
    ap.add_argument("--file", type=Path, default=None, help="use (or build and keep) this recording")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = args.file or Path(tmp) / "big.h5"
        if not path.exists():
            t0 = time.perf_counter()
            build(path, args.log2_cells)
            print(f"written in {time.perf_counter() - t0:.1f} s")
        print(f"2^{args.log2_cells} devices: {path.stat().st_size / 1e6:.0f} MB file")
        print(f"{'what':10s} {'seconds':>8s} {'peak MB':>8s} {'after imports MB':>17s}  exit")
        for what in ["digest", "open", *args.consumers.split(",")]:
            arg = what if what in ("digest", "open") else json.dumps([a.format(f=path) for a in CONSUMERS[what]])
            r = probe(arg, path)
            print(f"{what:10s} {r['s']:8.2f} {r['peak_mb']:8.0f} {r['base_mb']:17.0f}  {r['code']}")


if __name__ == "__main__":
    main()
