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

    python benchmarks/program_array.py [--rows 512 --cols 2048 --seed 0 --repeats 15]
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


def read_vs_draw(chip: VirtualPCMChip, cells: np.ndarray, repeats: int, rng: np.random.Generator) -> tuple[float, float]:
    """Median seconds of one read of ``cells`` and of one Gaussian draw of as many values,
    interleaved so both see the same machine load."""
    read_s, draw_s = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        chip.read(cells)
        read_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        rng.standard_normal(cells.size)
        draw_s.append(time.perf_counter() - t0)
    return float(np.median(read_s)), float(np.median(draw_s))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=512)
    ap.add_argument("--cols", type=int, default=2048)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=15, help="read-row timing samples (medians are reported)")
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
    t0 = time.perf_counter()
    result = program_cells(chip, cells, target, progress=on_progress)
    wall = time.perf_counter() - t0
    peak = peak_rss_mib()
    chip.wait_until(result.t_end_s + 25.0)
    read_s, draw_s = read_vs_draw(chip, cells, args.repeats, np.random.default_rng(2))

    # Active cells at the start of each iteration (the last entry is after the final one).
    bare = bare_numpy_equivalent(active[:-1] if len(active) > 1 else active, n, np.random.default_rng(1))

    print(f"devices                 {n:,}")
    print(f"converged fraction      {result.converged_fraction:.4%}")
    print(f"iterations              mean {result.iterations.mean():.2f}, max {result.iterations.max()}, loop rounds {len(active) - 1}")
    print(f"error std (verify)      {result.error_std_uS:.3f} µS")
    print(f"fabrication (1st touch) {fab:.2f} s   (making the devices; not part of the loop)")
    print(f"wall time               {wall:.2f} s   (target ≤ 10 s; + fabrication {wall + fab:.2f} s)")
    print(f"peak RSS                {peak:.0f} MiB (process start {rss0:.0f} MiB; target ≤ 2048 MiB)")
    print(f"bare numpy, same work   {bare:.2f} s")
    print(f"overhead ratio          {wall / bare:.2f}x harness / bare numpy   (target ≤ 1.5x; "
          f"{(wall + fab) / bare:.2f}x with fabrication)")
    print(f"read of all devices     {read_s * 1e3:.1f} ms (25 s after programming; median of {args.repeats})")
    print(f"floor: Gaussian draw    {draw_s * 1e3:.1f} ms (standard_normal of {n:,}, interleaved)")
    print(f"read / floor            {read_s / draw_s:.2f}x   (target ≤ 1.5x)")


if __name__ == "__main__":
    main()
