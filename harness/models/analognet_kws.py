"""AnalogNet-KWS: MicroNet-KWS-S made CiM-friendly (the AnalogNets paper's keyword-spotting model).

Source: AnalogNets (Zhou et al., arXiv:2111.06503, §4.1 "Depthwise Convolutions Are Not Suitable for CiM"): every
depthwise-separable block of MicroNet-KWS-S (Banbury et al., MLSys 2021, arXiv 2010.11267,
Table 5) is replaced by a regular 3×3 convolution, and the last, parameter-heavy 196-channel
layer is removed so the model fits the 1024 × 512 AON-CiM array. Reconstructed here:

    input 1 × 49 × 10 MFCC (one channel, 49 frames × 10 coefficients)
    conv1 10×4, 84 ch, stride 1, 'same'  + BN + ReLU    490 px × 40 rows × 84 cols
    conv2 3×3, 112 ch, stride 2, pad 1   + BN + ReLU    125 px × 756 rows × 112 cols
    conv3 3×3, 84 ch                     + BN + ReLU    125 px × 1008 rows × 84 cols
    conv4 3×3, 84 ch                     + BN + ReLU    125 px × 756 rows × 84 cols
    conv5 3×3, 84 ch                     + BN + ReLU    125 px × 756 rows × 84 cols
    average pool 25×5 → flatten → FC 84 → 12            1 × 84 rows × 12 cols

991 matrix-vector products and 38.7 M MACs per inference (derived from AnalogNets Table 2 and MicroNets Table 5; the paper's Table 2
gives 7,762 inf/s at 130 ns per CiM cycle = 991 cycles). Assumptions (not stated in the paper):
ReLU (the paper's digital datapath lists "ReLU"), batch norm after every conv (digital, as in
MicroNets), convs without bias (the batch norm carries it), TF-style 'same' padding for conv1
(torch's ``padding="same"``: 4 above / 5 below, 1 left / 2 right).
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from harness.models.layers import SameConv2d
from harness.models.registry import register_model

SOURCE = (
    "AnalogNets (Zhou et al., arXiv:2111.06503) §4.1: MicroNet-KWS-S (Banbury et al., MLSys 2021, Table 5) with DWS blocks "
    "-> regular 3x3 convs and the 196-channel layer removed"
)


@register_model(
    "analognet-kws",
    input_shape=(1, 49, 10),
    n_classes=12,
    task="kws",
    source=SOURCE,
    summary="conv10x4 84 -> conv3x3 112/2 -> 3x conv3x3 84 -> avgpool -> FC 12 (ReLU, BN)",
)
def analognet_kws(n_classes: int = 12) -> nn.Sequential:
    """AnalogNet-KWS for a 1 × 49 × 10 MFCC input (channel × frames × coefficients) (see the module docstring)."""
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    specs: list[tuple[str, int, int, int | tuple[int, int], int, int | str]] = [
        # (name, in, out, kernel, stride, padding)
        ("conv1", 1, 84, (10, 4), 1, "same"),
        ("conv2", 84, 112, 3, 2, 1),
        ("conv3", 112, 84, 3, 1, 1),
        ("conv4", 84, 84, 3, 1, 1),
        ("conv5", 84, 84, 3, 1, 1),
    ]
    for index, (name, c_in, c_out, kernel, stride, padding) in enumerate(specs, start=1):
        conv = SameConv2d if padding == "same" else nn.Conv2d  # no torch warning for the even 'same' kernel
        layers[name] = conv(c_in, c_out, kernel, stride=stride, padding=padding, bias=False)
        layers[f"bn{index}"] = nn.BatchNorm2d(c_out)
        layers[f"relu{index}"] = nn.ReLU()
    layers["pool"] = nn.AvgPool2d((25, 5))
    layers["flatten"] = nn.Flatten()
    layers["fc"] = nn.Linear(84, n_classes)
    return nn.Sequential(layers)
