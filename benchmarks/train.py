"""Benchmark: time per training step of AnalogNet-KWS, batch 100, plain torch vs stage 2.

Target (issue 9): a stage-2 step of the ``analognets`` recipe (clipping, weight noise, DAC
and ADC quantizers with learned ranges, the shared ADC gain, quantization noise) costs
≤ 1.5× a plain torch step (forward + backward + Adam step) on the same model and batch.
Both are measured in this run, interleaved (so both see the same machine load), median of
repeats, at the same torch thread count (default 1, as ``harness train`` runs: deterministic
kernels on one thread).

If IBM's ``aihwkit_lightning`` is importable in this interpreter (install it only in a
throwaway virtual environment: it is never a dependency of the harness), its
hardware-aware training configuration of the same model is timed too and the ratio printed.

    python benchmarks/train.py [--repeats 15] [--threads 1] [--batch 100] [--bits 8]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import replace

import torch
from torch import nn

from harness.models import get_model, model_info
from harness.train.layers import convert
from harness.train.recipes import make_recipe


def _stepper(net: nn.Module, params: list[list[nn.Parameter]], x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    opt = torch.optim.Adam([{"params": p} for p in params if p], lr=1e-4)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()

    return step


def _time(step: Callable[[], None]) -> float:
    t0 = time.perf_counter()
    step()
    return time.perf_counter() - t0


def _aihwkit_lightning_step(net: nn.Module, x: torch.Tensor, y: torch.Tensor, bits: int) -> Callable[[], None] | None:
    try:
        from aihwkit_lightning.nn.conversion import convert_to_analog  # type: ignore[import-not-found]
        from aihwkit_lightning.optim import AnalogOptimizer  # type: ignore[import-not-found]
        from aihwkit_lightning.simulator.configs import TorchInferenceRPUConfig  # type: ignore[import-not-found]
    except ImportError:
        return None
    cfg = TorchInferenceRPUConfig()
    cfg.forward.inp_res = 2**bits - 2
    cfg.forward.out_res = 2**bits - 2
    cfg.modifier.std_dev = 0.03
    analog = convert_to_analog(net, cfg)
    analog.train()
    opt = AnalogOptimizer(torch.optim.Adam, analog.analog_layers(), analog.parameters(), lr=1e-4)

    def step() -> None:
        opt.zero_grad()
        nn.functional.cross_entropy(analog(x), y).backward()
        opt.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (default 1, as harness train runs; 0: torch's default)"
    )
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--bits", type=int, default=8)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    info = model_info("analognet-kws")
    net = get_model("analognet-kws")
    net.train()
    x = torch.randn(args.batch, *info.input_shape)
    y = torch.randint(0, info.n_classes, (args.batch,))

    plain = _stepper(net, [list(net.parameters())], x, y)
    stage2_cfg = make_recipe("analognets", eta=0.03, bits=args.bits).stages[1].hardware
    hw = convert(net, stage2_cfg, generator=torch.Generator().manual_seed(1))
    hw.init_ranges(x, percentile=99.995)
    hw.train()
    stage2 = _stepper(hw, [hw.weight_parameters(), hw.range_parameters()], x, y)
    hw_p1 = convert(net, replace(stage2_cfg, quant_noise_p=1.0), generator=torch.Generator().manual_seed(1))
    hw_p1.init_ranges(x, percentile=99.995)
    hw_p1.train()
    stage2_p1 = _stepper(hw_p1, [hw_p1.weight_parameters(), hw_p1.range_parameters()], x, y)
    runners: dict[str, Callable[[], None]] = {
        "plain torch": plain,
        "stage 2 (analognets)": stage2,
        "stage 2, no quant. noise": stage2_p1,
    }
    lightning = _aihwkit_lightning_step(net, x, y, args.bits)
    if lightning is not None:
        runners["aihwkit-lightning"] = lightning

    for step in runners.values():  # warm-up
        step()
        step()
    times: dict[str, list[float]] = {k: [] for k in runners}
    for _ in range(args.repeats):
        for key, step in runners.items():
            times[key].append(_time(step))
    med = {k: statistics.median(v) for k, v in times.items()}
    print(
        f"AnalogNet-KWS training step (forward + backward + Adam), batch {args.batch}, "
        f"{torch.get_num_threads()} thread(s), median of {args.repeats}:"
    )
    for key, value in med.items():
        print(f"  {key:24s} {value * 1e3:8.1f} ms/step   ({value / med['plain torch']:.2f}x plain)")
    ratio = med["stage 2 (analognets)"] / med["plain torch"]
    print(f"stage 2 / plain = {ratio:.2f} (target <= 1.5): {'OK' if ratio <= 1.5 else 'MISSED'}")
    if lightning is None:
        print("aihwkit-lightning: not importable here (install it in a throwaway venv to compare)")
    else:
        print(f"stage 2 / aihwkit-lightning = {med['stage 2 (analognets)'] / med['aihwkit-lightning']:.2f}")


if __name__ == "__main__":
    main()
