"""Benchmark: accuracy-vs-drift evaluation of a model, 5 times × 25 simulated chips × 8-bit.

Target (issue 5): the CiM inference costs ≤ 2× plain torch inference per simulated chip
(each simulated chip at each time is one pass of the model over the test split; plain
torch does that pass once on the float weights), both measured in this run, on the same
inputs, with the same torch thread settings.

Reports, separately:

* programming and reading the chips (``read_chips``: 25 virtual chips, each programmed with
  write-verify and read at the 5 times, in memory as ``harness evaluate`` does);
* the CiM inference of all 125 (chip, time) sets in one batched call (median of repeats),
  next to plain ``model.to_torch()(x)`` (median of repeats, interleaved with the CiM runs so
  both see the same machine load);
* the whole library evaluation (``evaluate_readouts``: ranges, digital baseline, inference).

If aihwkit is importable in this interpreter, it also runs aihwkit's ``PCMLikeNoiseModel``
(the same published constants, Nandakumar 2019; Joshi 2020) with ``GlobalDriftCompensation`` on the same
model, times, chips count and 8-bit converters, and prints both accuracy curves and the
speed ratio. aihwkit is never a dependency of the harness.

    python benchmarks/evaluate.py [--model default|NAME|FILE] [--chip virtual] [--runs 25] [--repeats 15]
                                  [--threads N] [--no-aihwkit]

``--model analognet-kws`` (issue 8) runs the same measurement on AnalogNet-KWS's shipped float
baseline and the KWS test split (991 MVMs, 38.7 M MACs per inference): programming 25 chips of
601,440 devices, the 125-set CiM inference next to plain torch, and the process's peak
resident memory after each phase. For such a large model the kernel comparison times CiM on
``--kernel-sets`` (chip, time) sets per repeat (the per-set cost does not depend on how many
sets share a call once a set fills the activation bound) and runs at torch's default thread
count only, unless ``--threads`` is given.

``--memory-runs 5,25`` (issue 21) runs ``evaluate_chip`` — what ``harness evaluate --chip``
does: chips programmed and read in memory one by one, evaluated in byte-bounded batches — in a
fresh process per run count and prints each one's peak resident memory and per-phase wall
times (range calibration, programming, reads, CiM inference, digital baseline), then exits:

    python benchmarks/evaluate.py --model analognet-kws --memory-runs 5,25
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

import numpy as np
import torch

from harness.evaluation.cim import CimSimulator, converter_ranges
from harness.data import load_dataset
from harness.evaluation.evaluate import resolve_model
from harness.evaluation.evaluator import evaluate_readouts
from harness.evaluation.live import read_chips
from harness.evaluation.settings import DEFAULT_TIMES_S
from harness.models.format import Model
from harness.units import format_duration

BITS = 8


def _median_time(fn: Any, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


#: Models with more MACs per inference than this are "large": see the module docstring.
LARGE_MACS = 5_000_000


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MB; Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_kernels(model: Model, chips: list[Any], repeats: int, max_sets: int | None = None) -> dict[str, float]:
    """Median wall time of plain torch inference and of the batched CiM inference
    (over all (chip, time) sets, or the first ``max_sets``)."""
    data = load_dataset(model.dataset)
    x = torch.from_numpy(np.array(data.x_test, dtype=np.float32))
    y = torch.from_numpy(np.array(data.y_test, dtype=np.int64))
    net = model.to_torch()
    layout = chips[0].layout
    sim = CimSimulator(model, layout, converter_ranges(model, None if model.ranges else data.x_train))
    g = torch.from_numpy(np.concatenate([c.g_uS for c in chips]).astype(np.float32))
    ref = torch.from_numpy(np.stack([c.g_ref_uS for c in chips]).astype(np.float32))  # one row per chip
    ref_of_set = torch.arange(len(chips)).repeat_interleave(chips[0].g_uS.shape[0])
    if max_sets is not None:
        g, ref_of_set = g[:max_sets], ref_of_set[:max_sets]
    n_sets = int(g.shape[0])

    def plain() -> None:
        with torch.no_grad():
            net(x)

    def cim() -> None:
        sim.accuracy(x, y, g, bits=BITS, g_ref_uS=ref, ref_index=ref_of_set)

    for _ in range(1 if max_sets is not None else 3):  # warm up both paths (allocator, BLAS threads)
        plain()
        cim()
    plain_s, cim_s = [], []
    t0 = time.perf_counter()
    plain()
    # Plain passes per timing sample: enough for ~0.2 s (one digits pass is ~0.1 ms).
    inner = max(1, min(20, int(0.2 / max(time.perf_counter() - t0, 1e-6))))
    for _ in range(repeats):
        plain_s.append(_median_time(plain, inner))
        cim_s.append(_median_time(cim, 1))
    t_plain = statistics.median(plain_s)
    t_cim = statistics.median(cim_s)
    return {
        "sets": n_sets,
        "plain_torch_pass_s": t_plain,
        "cim_all_sets_s": t_cim,
        "cim_per_set_s": t_cim / n_sets,
        "ratio_per_set": t_cim / n_sets / t_plain,
    }


def run_aihwkit(model: Model, times_s: tuple[float, ...], runs: int, seed: int) -> dict[str, Any] | None:
    """aihwkit's PCM statistical model + GDC on the same model and times; None if absent."""
    try:
        from aihwkit.inference import GlobalDriftCompensation, PCMLikeNoiseModel
        from aihwkit.nn.conversion import convert_to_analog
        from aihwkit.simulator.configs import InferenceRPUConfig
    except ImportError:
        return None
    data = load_dataset(model.dataset)
    x = torch.from_numpy(np.array(data.x_test, dtype=np.float32))
    y = torch.from_numpy(np.array(data.y_test, dtype=np.int64))
    rpu = InferenceRPUConfig()
    rpu.noise_model = PCMLikeNoiseModel(g_max=25.0)
    rpu.drift_compensation = GlobalDriftCompensation()
    # Converter resolutions as ours at 8 bits (9-bit DAC, 8-bit ADC; aihwkit's res = 1/(2^b − 2))
    # on aihwkit's own converter model (per-input abs-max scaling, iterative bound management,
    # out_bound 12: its defaults); no output noise, which the harness does not model either.
    rpu.forward.inp_res = 1.0 / (2 ** (BITS + 1) - 2)
    rpu.forward.out_res = 1.0 / (2**BITS - 2)
    rpu.forward.out_noise = 0.0
    rpu.forward.w_noise = 0.0
    rpu.mapping.weight_scaling_omega = 1.0  # max|W| of each layer → g_max, as our mapping
    torch.manual_seed(seed)
    analog = convert_to_analog(model.to_torch(), rpu).eval()
    acc = np.zeros((len(times_s), runs))
    t0 = time.perf_counter()
    with torch.no_grad():
        for r in range(runs):
            analog.program_analog_weights()
            for j, t in enumerate(times_s):
                analog.drift_analog_weights(t)
                acc[j, r] = float((analog(x).argmax(1) == y).to(torch.float64).mean())
    wall = time.perf_counter() - t0
    return {"wall_s": wall, "accuracy": acc}


_MEMORY_CHILD = """
import json, resource, sys, time
from harness.evaluation.evaluate import evaluate_chip, resolve_model
from harness.evaluation.settings import DEFAULT_TIMES_S
model_ref, chip, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
model = resolve_model(model_ref)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
t0 = time.perf_counter()
r = evaluate_chip(chip, model, times_s=DEFAULT_TIMES_S, runs=runs, bits=(8,), gdc=True)
print(json.dumps({"runs": runs, "wall_s": time.perf_counter() - t0, "rss_before_mb": base,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "timing_s": r.to_dict()["timing_s"], "mean_8bit": r.mean()[0].tolist()}))
"""


def memory_vs_runs(model_ref: str, chip: str, runs: list[int]) -> list[dict[str, Any]]:
    """``evaluate_chip`` at each run count in a fresh process (peak RSS is per process)."""
    out = []
    for n in runs:
        proc = subprocess.run([sys.executable, "-c", _MEMORY_CHILD, model_ref, chip, str(n)],
                              capture_output=True, text=True, check=True)
        out.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return out


def _fmt_s(seconds: float) -> str:
    return f"{seconds * 1e6:9.1f} µs" if seconds < 1e-2 else f"{seconds * 1e3:9.1f} ms"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default", help="default (digits MLP), a zoo name (its shipped baseline) or a file")
    ap.add_argument("--chip", default="virtual", help="chip URI (virtual: consecutive seeds)")
    ap.add_argument("--runs", type=int, default=25)
    ap.add_argument("--repeats", type=int, default=None, help="timing samples (medians are reported); "
                    "default 15, 2 for a large model")
    ap.add_argument("--kernel-sets", type=int, default=5, help="large models: (chip, time) sets per CiM timing")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's); "
                    "the kernel comparison also runs at 1 thread")
    ap.add_argument("--no-aihwkit", action="store_true")
    ap.add_argument("--memory-runs", default=None, help="e.g. 5,25: peak RSS and phase times of evaluate_chip "
                    "at these run counts (fresh process each), then exit")
    args = ap.parse_args()
    if args.memory_runs:
        rows = memory_vs_runs(args.model, args.chip, [int(v) for v in args.memory_runs.split(",")])
        print(f"evaluate_chip({args.model!r}, {args.chip!r}, 5 times, 8-bit, GDC): one process per run count")
        for r in rows:
            t = {k: r["timing_s"].get(k, float("nan")) for k in ("ranges_s", "program_s", "read_s", "inference_s", "digital_s")}
            print(f"runs {r['runs']:3d}: peak RSS {r['peak_rss_mb']:7.0f} MB (after imports and model load "
                  f"{r['rss_before_mb']:.0f} MB); wall {r['wall_s']:.1f} s = ranges {t['ranges_s']:.2f} + programming "
                  f"{t['program_s']:.2f} + reads {t['read_s']:.2f} + CiM inference {t['inference_s']:.2f} + digital "
                  f"{t['digital_s']:.2f} + other")
        peaks = [r["peak_rss_mb"] for r in rows]
        print(f"peak RSS max/min over run counts: {max(peaks) / min(peaks):.3f}   (target < 1.10)")
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    times = DEFAULT_TIMES_S
    model = resolve_model(args.model)
    large = model.n_macs() > LARGE_MACS
    repeats = args.repeats or (2 if large else 15)
    n_test = len(load_dataset(model.dataset).y_test)
    print(f"model {model.name}: {model.n_array_weights()} weights on the array ({2 * model.n_array_weights()} devices), "
          f"{model.n_macs() / 1e6:.2f} M MACs and {model.n_mvms()} MVMs per inference; {n_test} test samples; "
          f"chip {args.chip}; {len(times)} times x {args.runs} chips x {BITS}-bit; torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s)")

    t0 = time.perf_counter()
    chips = read_chips(args.chip, model, times, args.runs)
    program_read_s = time.perf_counter() - t0
    rss_read = peak_rss_mb()
    first_s = None
    if not large:
        t1 = time.perf_counter()
        evaluate_readouts(model, chips, times_s=times, bits=(BITS,), gdc=True)
        first_s = time.perf_counter() - t1  # includes torch's one-time start-up in this process
    t1 = time.perf_counter()
    result = evaluate_readouts(model, chips, times_s=times, bits=(BITS,), gdc=True)
    evaluate_s = time.perf_counter() - t1
    rss_eval = peak_rss_mb()
    # The kernel comparison at one thread (per-core cost, robust on a shared machine) and at
    # torch's default thread count (on a busy 2-core machine, multi-threaded GEMMs suffer from
    # oversubscription far more than plain torch's small ops do).
    default_threads = torch.get_num_threads()
    settings = [default_threads] if large and not args.threads else sorted({1, default_threads})
    kernels = {}
    for n in settings:
        torch.set_num_threads(n)
        kernels[n] = bench_kernels(model, chips, repeats, args.kernel_sets if large else None)
    torch.set_num_threads(default_threads)
    k = kernels[default_threads]
    rss_kernels = peak_rss_mb()
    n_sets = args.runs * len(times)

    print("\n-- wall time")
    print(f"program + read {args.runs} chips (write-verify, 5 readouts each, in memory): {program_read_s:8.3f} s "
          f"({program_read_s / args.runs * 1e3:.1f} ms per chip)")
    first = "" if first_s is None else f"; first call in the process {first_s:.3f} s"
    print(f"evaluate_readouts (ranges, digital baseline, CiM inference):        {evaluate_s:8.3f} s "
          f"(inference {result.timing.inference_s:.3f} s{first})")
    print(f"total:                                                             {program_read_s + evaluate_s:8.3f} s")
    plain_default = k["plain_torch_pass_s"]
    print(f"CiM inference in evaluate_readouts per (chip, time) set: {_fmt_s(result.timing.inference_s / n_sets)} "
          f"= {result.timing.inference_s / n_sets / plain_default:.2f} x plain torch ({default_threads} thread(s))")
    for n, kn in kernels.items():
        print(f"\n-- CiM inference vs plain torch, {n} thread(s) (medians, same inputs: the {n_test}-sample test split)")
        print(f"plain torch, one pass:                        {_fmt_s(kn['plain_torch_pass_s'])}")
        print(f"CiM, {kn['sets']} (chip, time) sets in one call:      {_fmt_s(kn['cim_all_sets_s'])}")
        print(f"CiM per simulated chip and time (one pass):   {_fmt_s(kn['cim_per_set_s'])}")
        print(f"overhead per simulated chip vs plain torch:   {kn['ratio_per_set']:9.2f} x   (target <= 2 x)")
    print("\n-- peak resident memory of this process (MB)")
    print(f"after programming and reading the chips: {rss_read:8.0f}")
    print(f"after evaluate_readouts:                 {rss_eval:8.0f}")
    print(f"after the kernel comparison:             {rss_kernels:8.0f}")

    mean, std = result.mean()[0], result.std()[0]
    print(f"\n-- accuracy (harness, GDC on), float baseline {result.digital_accuracy:.2%}")
    for j, t in enumerate(times):
        print(f"  {format_duration(t):>4}: {mean[j]:.2%} ± {std[j]:.2%}")

    if not args.no_aihwkit:
        ai = run_aihwkit(model, times, args.runs, seed=0)
        if ai is None:
            print("\naihwkit is not importable in this interpreter: comparison skipped")
        else:
            am, asd = ai["accuracy"].mean(1), ai["accuracy"].std(1, ddof=1)
            ours = program_read_s + result.timing.inference_s
            print(f"\n-- aihwkit PCMLikeNoiseModel + GlobalDriftCompensation, {args.runs} runs")
            for j, t in enumerate(times):
                print(f"  {format_duration(t):>4}: aihwkit {am[j]:.2%} ± {asd[j]:.2%}   harness {mean[j]:.2%} ± {std[j]:.2%}")
            print(f"aihwkit wall {ai['wall_s']:.3f} s; harness program+read+inference {ours:.3f} s "
                  f"(inference alone {result.timing.inference_s:.3f} s)")
            per_set = ai["wall_s"] / (args.runs * len(times))
            print(f"aihwkit per (chip, time) {per_set * 1e6:.0f} µs = {per_set / k['plain_torch_pass_s']:.1f} x plain "
                  f"torch; speed ratio aihwkit / harness CiM inference per (chip, time): "
                  f"{per_set / k['cim_per_set_s']:.1f} x")


if __name__ == "__main__":
    main()
