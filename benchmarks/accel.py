"""Benchmark: time per accelerator-model evaluation (issue 10: ≤ 10 ms for AnalogNet-KWS).

"Model time" is what an architecture-search loop pays per candidate once the workload is
known: tiling on the array plus the cost model at 8, 6 and 4 bits (``harness.accel.report.analyze``
without the peak figures). Printed side by side: the one-off workload extraction (a torch trace),
the tiler alone, one bit-width's cost alone, and the whole ``harness accel`` library call.

    python benchmarks/accel.py [--repeats 200]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from harness.accel import evaluate, evaluate_bits, extract_workload, load_hardware, tile
from harness.accel.report import analyze
from harness.models import get_model, model_info

TARGET_S = 10e-3
MODELS = ("analognet-kws", "analognet-vww", "micronet-kws-s")


def _median_s(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()
    hw = load_hardware()
    bits = (8, 6, 4)
    print(f"{'model':16s} {'layers':>6s} {'extract (once)':>15s} {'tile':>9s} {'cost 1 bw':>10s} "
          f"{'tile+cost 8,6,4':>16s} {'analyze()':>10s} {'target':>8s} {'ratio':>7s}")
    for name in MODELS:
        info = model_info(name)
        net = get_model(name)
        t0 = time.perf_counter()
        wl = extract_workload(net, info.input_shape, name=name)
        extract_s = time.perf_counter() - t0
        placement = tile(wl, hw)
        tile_s = _median_s(lambda wl=wl: tile(wl, hw), args.repeats)
        cost_s = _median_s(lambda pl=placement: evaluate(pl, hw, 8), args.repeats)
        model_s = _median_s(lambda wl=wl: evaluate_bits(tile(wl, hw), hw, bits), args.repeats)
        analyze_s = _median_s(lambda wl=wl: analyze(wl, hw, bits), max(1, args.repeats // 4))
        print(f"{name:16s} {len(wl.layers):6d} {extract_s * 1e3:12.1f} ms {tile_s * 1e3:6.3f} ms "
              f"{cost_s * 1e3:7.3f} ms {model_s * 1e3:13.3f} ms {analyze_s * 1e3:7.2f} ms "
              f"{TARGET_S * 1e3:5.0f} ms {model_s / TARGET_S:6.3f}×")
    print("ratio = (tile + cost at 8, 6, 4 bits) / 10 ms target; analyze() adds the peak figures.")


if __name__ == "__main__":
    main()
