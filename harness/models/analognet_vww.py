"""AnalogNet-VWW: MicroNet-VWW-2 made CiM-friendly (the AnalogNets paper's visual-wake-words model).

Source: AnalogNets (Zhou et al., arXiv:2111.06503) §4.1: MicroNet-VWW-2 (Banbury et al., MLSys 2021; a MobileNetV2
backbone, grayscale input, 2 classes) with every inverted-bottleneck MBConv block turned into a
fused-MBConv block (Tan & Le, EfficientNetV2: the depthwise 3×3 + expanding 1×1 pair becomes
one regular 3×3 conv) and the two narrow early bottleneck layers removed (§4.1 "Small layers
are bottlenecks", Fig. 3 right). The paper trains it at 100 × 100 resolution (§4.1, §6.1);
ARM's ML-zoo MicroNet-VWW-2 takes 50 × 50.

RECONSTRUCTED, not copied: the exact layer list is only in the paper's Fig. 10 (an image) and is
not public as text (derived from AnalogNets Table 2 and MicroNets Table 5). Depths and widths below were chosen by a grid search over
MobileNetV2-shaped fused-MBConv networks (one expansion factor for all blocks, non-decreasing
widths, MobileNetV2's stage strides, stage depths ≤ MobileNetV2's) for the one that, on the
AON-CiM model (``harness accel``), best matches what Table 2 implies per inference:
1 / (1,063 inf/s · 130 ns) ≈ 7,237 CiM cycles and 0.075 TOPS / 1,063 inf/s ≈ 70.6 Mops, and
fits the 1024 × 512 array. Result: 7,297 CiM cycles (+0.8 %), 35.09 M MACs = 70.2 Mops (−0.6 %),
361,808 weights (69 % of the array), largest activation 40,000 B (fits one 64 KiB SRAM bank
at 8 bits). At 50 × 50 no MobileNetV2-shaped net reaches 7,237 cycles within the op budget
(the 25 × 25 maps after the stem hold too few pixels), which is why 100 × 100 is the default.

    input 1 × 100 × 100
    stem   conv3×3/2  1 → 16        + BN + ReLU6                50×50
    b1     conv3×3    16 → 16       + BN + ReLU6 (its 8-ch projection removed: bottleneck 1)
    s2     conv3×3/2  16 → 48       + BN + ReLU6 (its 1×1 projection removed: bottleneck 2) 25×25
    s3     fMB(48 → 24, /2), fMB(24 → 24) × 2                      13×13
    s4     fMB(24 → 32, /2), fMB(32 → 32) × 2                      7×7
    s5     fMB(32 → 48)                                            7×7
    s6     fMB(48 → 48, /2)                                        4×4
    s7     fMB(48 → 64)                                            4×4
    global average pool → flatten → FC 64 → 2

fMB(c_in → c_out, /s) = conv3×3/s c_in → 3·c_in + BN + ReLU6, conv1×1 → c_out + BN (linear
bottleneck, MobileNetV2), wrapped in a residual when s = 1 and c_in = c_out. Convs have no bias
(the batch norm carries it); ReLU6 as in MicroNets' op list (derived from AnalogNets Table 2 and MicroNets Table 5).
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from harness.errors import ModelError
from harness.models.layers import Residual
from harness.models.registry import register_model

SOURCE = (
    "AnalogNets (Zhou et al., arXiv:2111.06503) §4.1: MicroNet-VWW-2 (Banbury et al., MLSys 2021; MobileNetV2 backbone) with "
    "MBConv -> fused-MBConv and two narrow early bottlenecks removed; widths/depths RECONSTRUCTED to match "
    "Table 2's implied 7,237 CiM cycles and 70.6 Mops per inference at 100x100 (docs/models.md)"
)

#: Fused-MBConv expansion factor (one for all blocks; chosen by the search described above).
EXPANSION = 3

#: (c_out, repeats, first stride) per fused-MBConv stage after the stem, b1 and s2.
STAGES: tuple[tuple[int, int, int], ...] = ((24, 3, 2), (32, 3, 2), (48, 1, 1), (48, 1, 2), (64, 1, 1))


def _conv_bn(c_in: int, c_out: int, kernel: int, stride: int, act: bool) -> list[tuple[str, nn.Module]]:
    layers: list[tuple[str, nn.Module]] = [
        ("conv", nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False)),
        ("bn", nn.BatchNorm2d(c_out)),
    ]
    if act:
        layers.append(("relu", nn.ReLU6()))
    return layers


def _fused_mbconv(c_in: int, c_out: int, stride: int) -> nn.Module:
    expand = [(f"expand_{k}", m) for k, m in _conv_bn(c_in, c_in * EXPANSION, 3, stride, act=True)]
    project = [(f"project_{k}", m) for k, m in _conv_bn(c_in * EXPANSION, c_out, 1, 1, act=False)]
    body = nn.Sequential(OrderedDict(expand + project))
    return Residual(body) if stride == 1 and c_in == c_out else body


@register_model(
    "analognet-vww",
    input_shape=(1, 100, 100),
    n_classes=2,
    task="vww",
    source=SOURCE,
    summary="conv3x3/2 16 -> conv3x3 16 -> conv3x3/2 48 -> 10 fused-MBConv (t=3) 24..64 -> avgpool -> FC 2",
)
def analognet_vww(n_classes: int = 2, resolution: int = 100) -> nn.Sequential:
    """AnalogNet-VWW (reconstruction; see the module docstring) for a ``1 × resolution²`` input."""
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 8:
        raise ModelError(f"resolution={resolution!r} must be an int >= 8")
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    layers["stem"] = nn.Sequential(OrderedDict(_conv_bn(1, 16, 3, 2, act=True)))
    layers["b1"] = nn.Sequential(OrderedDict(_conv_bn(16, 16, 3, 1, act=True)))
    layers["s2"] = nn.Sequential(OrderedDict(_conv_bn(16, 48, 3, 2, act=True)))
    c_in = 48
    for stage, (c_out, repeats, stride) in enumerate(STAGES, start=3):
        for block in range(repeats):
            layers[f"s{stage}_{block + 1}"] = _fused_mbconv(c_in, c_out, stride if block == 0 else 1)
            c_in = c_out
    layers["pool"] = nn.AdaptiveAvgPool2d(1)
    layers["flatten"] = nn.Flatten()
    layers["fc"] = nn.Linear(c_in, n_classes)
    return nn.Sequential(layers)
