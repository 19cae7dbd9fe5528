"""Benchmark: closed-loop programming of a full 512 × 2048 virtual chip (1,048,576 devices).

Targets (issue 2): ≤ 10 s wall and ≤ 2 GiB peak memory on a 2-core machine. Issue 21:
write-verify ≤ 1.5 × the bare numpy algorithm, and one read of every device ≤ 1.5 × its floor,
one Gaussian draw of as many values (the read's only random draw), both timed side by side.

Prints wall time, peak RSS, iterations, and — measured in the same run — the time of the
bare numpy operations the loop performs (the same per-iteration batch sizes, with the
physics expressions applied directly to arrays, no Chip seam, no checks), so the overhead
of the harness over plain numpy is visible as a ratio. The chip's fabrication (the first touch
of each device makes its constants from (seed, cell), consuming no run-time randomness) is
timed on its own before the loop: the bare algorithm has no counterpart of it.

Then the read row: a read of all devices 25 s after programming (past t0: drift, 1/f noise,
ADC), interleaved with ``Generator.standard_normal`` of the same size; medians of ``--repeats``.

    python benchmarks/program_array.py [--rows 512 --cols 2048 --seed 0 --repeats 31 --wv-repeats 3]
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np

from harness.chip.protocol import Geometry
from harness.programming.write_verify import ProgrammingProgress, program_cells
from harness.virtual import physics as ph
from harness.virtual.chip import VirtualPCMChip

LEVELS_US = np.array([0.0, 1.0, 2.5, 5.0, 10.0, 15.0, 20.0, 25.0])


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def bare_numpy_equivalent(active_counts: list[int], n: int, rng: np.random.Generator) -> float:
    """Time the loop's numpy work alone: per iteration, for ``k`` active cells, the SET
    response, a read (relaxation, drift, 1/f noise, ADC) and the controller arithmetic."""
    g = rng.uniform(0, 25, n)
    g_sat = np.full(n, 32.0)
    rate = np.full(n, 2.3)
    nu = np.full(n, 0.05)
    z = rng.standard_normal(n)
    t_pulse = np.zeros(n)
    target = rng.uniform(0, 25, n)
    slope = np.full(n, 60.0)
    geo = Geometry()
    t0 = time.perf_counter()
    # initial RESET + read of all cells
    g[:] = ph.reset_response(n, rng)
    _ = geo.to_codes(g + ph.read_noise_std(g, g / 25, 1e-6) * rng.standard_normal(n))
    for k in active_counts:
        idx = np.arange(k)
        err = target[idx] - g[idx]
        amp = np.clip(0.5 * err / slope[idx], 1e-3, 1.0)
        g_new = ph.set_pulse_response(g[idx], amp, g_sat[idx], rate[idx], rng)
        g[idx] = g_new
        t_pulse[idx] = 1.0
        nu[idx] = ph.draw_drift_exponents(g_new / 25, rng)
        z[idx] = rng.standard_normal(k)
        # A verify read comes µs after the pulse: before the onsets of relaxation and drift,
        # so (as in the chip) neither is computed; read noise and the ADC are.
        tau = 1e-6 + t_pulse[idx] - t_pulse[idx]
        x = g[idx] / 25
        gt = g[idx]
        read = geo.codes_to_uS(geo.to_codes(gt + ph.read_noise_std(gt, x, tau) * rng.standard_normal(k)))
        slope[idx] = np.sqrt(slope[idx] * np.maximum(read - g[idx], 1.0))
    return time.perf_counter() - t0


def read_vs_draw(chip: VirtualPCMChip, cells: np.ndarray, repeats: int, rng: np.random.Generator) -> dict[str, float]:
    """Median seconds of one read of ``cells`` (µS, and as ADC codes) and of one Gaussian draw
    of as many values, interleaved so all see the same machine load, and the median of the
    per-round ratios (a round's three timings share its load)."""
    t: dict[str, list[float]] = {"read": [], "codes": [], "draw": []}
    for _ in range(repeats):
        for key, op in (("read", chip.read), ("codes", chip.read_codes), ("draw", None)):
            t0 = time.perf_counter()
            if op is None:
                rng.standard_normal(cells.size)
            else:
                op(cells)
            t[key].append(time.perf_counter() - t0)
    out = {k: float(np.median(v)) for k, v in t.items()}
    out["ratio"] = float(np.median(np.array(t["read"]) / np.array(t["draw"])))
    out["codes_ratio"] = float(np.median(np.array(t["codes"]) / np.array(t["draw"])))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=512)
    ap.add_argument("--cols", type=int, default=2048)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=31, help="read-row timing rounds (medians are reported)")
    ap.add_argument("--wv-repeats", type=int, default=3, help="write-verify rounds, each alternated with the bare loop")
    args = ap.parse_args()

    rss0 = peak_rss_mib()
    chip = VirtualPCMChip(Geometry(rows=args.rows, cols=args.cols), seed=args.seed)
    n = chip.geometry.n_cells
    rng = np.random.default_rng(args.seed)
    target = LEVELS_US[rng.integers(0, LEVELS_US.size, n)]
    cells = np.arange(n)

    active: list[int] = []

    def on_progress(p: ProgrammingProgress) -> None:
        active.append(p.n_cells - p.n_converged)

    t0 = time.perf_counter()
    chip.conductance_uS(cells)  # fabrication: makes every device (no run-time randomness drawn)
    fab = time.perf_counter() - t0
    # Write-verify and its bare-numpy counterpart, alternated --wv-repeats times (each round
    # RESETs every cell first, so every round is the same work); medians and the median of the
    # per-round ratios. The bare rounds replay the first round's active-cell counts.
    walls, bares = [], []
    for r in range(args.wv_repeats):
        t0 = time.perf_counter()
        result = program_cells(chip, cells, target, progress=on_progress if r == 0 else None)
        walls.append(time.perf_counter() - t0)
        if r == 0:
            peak = peak_rss_mib()  # the harness alone (the bare loop allocates its own arrays)
        # Active cells at the start of each iteration (the last entry is after the final one).
        bares.append(bare_numpy_equivalent(active[:-1] if len(active) > 1 else active, n, np.random.default_rng(1 + r)))
    wall, bare = float(np.median(walls)), float(np.median(bares))
    wv_ratio = float(np.median(np.array(walls) / np.array(bares)))
    chip.wait_until(result.t_end_s + 25.0)
    rd = read_vs_draw(chip, cells, args.repeats, np.random.default_rng(2))

    print(f"devices                 {n:,}")
    print(f"converged fraction      {result.converged_fraction:.4%}")
    print(f"iterations              mean {result.iterations.mean():.2f}, max {result.iterations.max()}, loop rounds {len(active) - 1}")
    print(f"error std (verify)      {result.error_std_uS:.3f} µS")
    print(f"fabrication (1st touch) {fab:.2f} s   (making the devices; not part of the loop)")
    print(f"wall time               {wall:.2f} s   (median of {args.wv_repeats}; target ≤ 10 s; + fabrication {wall + fab:.2f} s)")
    print(f"peak RSS                {peak:.0f} MiB (process start {rss0:.0f} MiB; target ≤ 2048 MiB)")
    print(f"bare numpy, same work   {bare:.2f} s   (median of {args.wv_repeats}, alternated with the harness)")
    print(f"overhead ratio          {wv_ratio:.2f}x harness / bare numpy   (median of per-round ratios; target ≤ 1.5x; "
          f"{(wall + fab) / bare:.2f}x with fabrication)")
    print(f"read of all devices     {rd['read'] * 1e3:.1f} ms (µS; 25 s after programming; median of {args.repeats})")
    print(f"  as ADC codes          {rd['codes'] * 1e3:.1f} ms (read_codes: what a session records)")
    print(f"floor: Gaussian draw    {rd['draw'] * 1e3:.1f} ms (standard_normal of {n:,}, interleaved)")
    print(f"read / floor            {rd['ratio']:.2f}x   (median of per-round ratios; target ≤ 1.5x; codes {rd['codes_ratio']:.2f}x)")


if __name__ == "__main__":
    main()
