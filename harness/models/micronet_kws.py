"""MicroNet-KWS-S (Banbury et al., "MicroNets", MLSys 2021, arXiv 2010.11267, Table 5).

    input 1 × 49 × 10 MFCC (one channel, 49 frames × 10 coefficients)
    conv1 10×4, 84 ch, stride 1, 'same' + BN + ReLU6
    DWS 3×3 → 112 ch, stride 2  (depthwise 3×3 + BN + ReLU6, pointwise 1×1 + BN + ReLU6)
    DWS 3×3 → 84, DWS 3×3 → 84, DWS 3×3 → 84, DWS 3×3 → 196
    average pool 25×5 → flatten → FC 196 → 12

95.3 % on Speech Commands v2 (12 classes) in the paper; ARM's ML-zoo tflite holds the FC as a
1×1 conv (derived from AnalogNets Table 2 and MicroNets Table 5). On the array each depthwise layer is stored in its dense
block-diagonal form (C·9 rows × C columns, utilization 1/C), as the AnalogNets paper describes
(AnalogNets §4.1, Fig. 3). Assumptions: convs without bias (batch norm carries it); TF-style
'same' padding for conv1 (torch's ``padding="same"``).
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from harness.models.layers import SameConv2d
from harness.models.registry import register_model

SOURCE = "MicroNets (Banbury et al., MLSys 2021, arXiv 2010.11267) Table 5, MicroNet-KWS-S"


def _conv_bn_relu6(layers: OrderedDict[str, nn.Module], name: str, conv: nn.Conv2d) -> None:
    layers[name] = conv
    layers[f"{name}_bn"] = nn.BatchNorm2d(conv.out_channels)
    layers[f"{name}_relu"] = nn.ReLU6()


@register_model(
    "micronet-kws-s",
    input_shape=(1, 49, 10),
    n_classes=12,
    task="kws",
    source=SOURCE,
    summary="conv10x4 84 -> DWS 112/2 -> 3x DWS 84 -> DWS 196 -> avgpool -> FC 12 (ReLU6, BN)",
)
def micronet_kws_s(n_classes: int = 12) -> nn.Sequential:
    """MicroNet-KWS-S for a 1 × 49 × 10 MFCC input (channel × frames × coefficients) (see the module docstring)."""
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    _conv_bn_relu6(layers, "conv1", SameConv2d(1, 84, (10, 4), padding="same", bias=False))
    c_in = 84
    for index, (c_out, stride) in enumerate([(112, 2), (84, 1), (84, 1), (84, 1), (196, 1)], start=2):
        depthwise = nn.Conv2d(c_in, c_in, 3, stride=stride, padding=1, groups=c_in, bias=False)
        _conv_bn_relu6(layers, f"dw{index}", depthwise)
        _conv_bn_relu6(layers, f"pw{index}", nn.Conv2d(c_in, c_out, 1, bias=False))
        c_in = c_out
    layers["pool"] = nn.AvgPool2d((25, 5))
    layers["flatten"] = nn.Flatten()
    layers["fc"] = nn.Linear(c_in, n_classes)
    return nn.Sequential(layers)
