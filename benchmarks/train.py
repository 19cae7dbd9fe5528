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
import copy
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


def _explicit_padding(net: nn.Module) -> nn.Module:
    """A copy of ``net`` with every ``padding="same"`` Conv2d as ``ZeroPad2d`` + unpadded conv
    (the same function, torch's split: the extra row/column of an even kernel at the end).
    aihwkit-lightning's analog conv im2col-unfolds its input and takes integer padding only
    (``padding="same"`` fails: "im2col(): argument 'padding' (position 4) must be tuple of ints,
    but found element of type str at pos 0")."""
    out = copy.deepcopy(net)
    for parent in list(out.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Conv2d) and child.padding == "same":
                (kh, kw), (dh, dw) = child.kernel_size, child.dilation
                ph, pw = dh * (kh - 1), dw * (kw - 1)
                child.padding = (0, 0)
                pad = nn.ZeroPad2d((pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
                setattr(parent, name, nn.Sequential(pad, child))
    return out


def _aihwkit_lightning_step(
    net: nn.Module, x: torch.Tensor, y: torch.Tensor, bits: int, out_bound: float
) -> Callable[[], None] | str:
    """aihwkit-lightning's closest configuration to our stage 2 on a copy of ``net``, as a step
    function; or why it is unavailable (a one-line reason).

    Mapped as: weight clip ``±2.5·σ_W`` per layer (``LAYER_GAUSSIAN``, our α), additive
    weight noise ``η·max|W|`` (η = 0.03) per forward in training, a learned input range
    (initialised from the first batch) with a ``bits + 1``-bit DAC (``inp_res = 2^(b+1) − 2``:
    ``±(2^b − 1)`` levels as ours), a ``bits``-bit ADC over ``± out_bound · r_in · max|W|``
    (the Eq. 5 form; ``out_bound`` is our initial shared gain ``|g|``, fixed: lightning does not
    learn it), one tile per layer (no input-size split). Not offered: Fan et al.
    quantization noise (every element is quantized, our ``p = 1``) and the learned ADC gain."""
    try:
        from aihwkit_lightning.nn.conversion import convert_to_analog  # type: ignore[import-not-found]
        from aihwkit_lightning.optim import AnalogOptimizer  # type: ignore[import-not-found]
        from aihwkit_lightning.simulator.configs import (  # type: ignore[import-not-found]
            TorchInferenceRPUConfig,
            WeightClipType,
            WeightNoiseInjectionType,
        )
    except ImportError as exc:
        return f"not importable here ({exc}; install it in a throwaway venv to compare)"
    cfg = TorchInferenceRPUConfig()
    cfg.clip.type = WeightClipType.LAYER_GAUSSIAN
    cfg.clip.sigma = 2.5
    cfg.modifier.noise_type = WeightNoiseInjectionType.ADD_NORMAL
    cfg.modifier.std_dev = 0.03
    cfg.pre_post.input_range.enable = True
    cfg.pre_post.input_range.learn_input_range = True
    cfg.pre_post.input_range.init_from_data = 1
    cfg.forward.inp_res = 2 ** (bits + 1) - 2
    cfg.forward.out_res = 2**bits - 2
    cfg.forward.out_bound = out_bound
    analog = convert_to_analog(_explicit_padding(net), cfg)
    analog.train()
    opt = AnalogOptimizer(torch.optim.Adam, analog.analog_layers, analog.parameters(), lr=1e-4)

    def step() -> None:
        opt.zero_grad()
        nn.functional.cross_entropy(analog(x), y).backward()
        opt.step()

    try:
        step()  # fails here if the configuration does not run on this machine
    except Exception as exc:  # noqa: BLE001 - report any failure of the third-party package as a line
        return f"does not run here: {type(exc).__name__}: {exc}"
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
    lightning = _aihwkit_lightning_step(net, x, y, args.bits, float(hw.gain.detach().abs()))
    if not isinstance(lightning, str):
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
    if isinstance(lightning, str):
        print(f"aihwkit-lightning: {lightning}")
    else:
        print(f"stage 2 / aihwkit-lightning = {med['stage 2 (analognets)'] / med['aihwkit-lightning']:.2f}")


if __name__ == "__main__":
    main()
