"""imec's 1-D dilated keyword-spotting CNN (Debacker, imec talk, "Line conductor technologies
for energy-efficient intelligence", KWS model table, "CNN: 1D dilated, 45 filters").

The slide's layer list:

    input: 39 features from MFCC
    FC (N = 100) + BN   → quantize to 7 levels
    7 × 1-D conv, 45 filters × 3, dilations 2, 2, 4, 4, 8, 8, 16, each + BN + ReLU
    global average pool → softmax (12 classes)

94.2 % with 3-level weights / 7-level activations (quantized CNN); 135 array rows (45 × 3) and
315 columns (7 × 45) on the slide. Reconstructed here for an input of ``frames`` MFCC frames of
``n_mfcc`` coefficients, shaped ``(1, frames, n_mfcc)`` like the 2-D KWS models so one dataset
feeds all of them:

- the per-frame FC is a ``Conv2d(1, 100, kernel=(1, n_mfcc))`` (the same matrix applied to every
  frame: ``n_mfcc`` rows × 100 columns on the array), then ``Flatten(start_dim=2)`` gives the
  ``(100, frames)`` sequence and ``BatchNorm1d(100)`` the slide's BN; the 7-level quantizer is a
  training matter and is not a layer here;
- each dilated conv pads by its dilation ('same' length), without bias (BN carries it);
- the softmax layer is a ``Linear(45, n_classes)`` after the global average pool (the slide's
  softmax must map 45 channels to 12 classes); softmax itself is left to the loss.

Assumptions: the number of frames (the slide gives none; 49 is the MicroNets front end's) and
'same' padding. The default ``n_mfcc=39`` follows the slide; the harness's shipped KWS data has
10 MFCCs (``n_mfcc=10``).
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from harness.models.registry import register_model

SOURCE = "imec KWS CNN (Debacker, imec talk: 1D dilated CNN, 45 filters, 94.2 % quantized)"
DILATIONS = (2, 2, 4, 4, 8, 8, 16)


@register_model(
    "imec-kws-1d",
    input_shape=(1, 49, 39),
    n_classes=12,
    task="kws",
    source=SOURCE,
    summary="per-frame FC 100 + BN -> 7x dilated conv1d 45 k3 (2,2,4,4,8,8,16) -> global avg pool -> FC 12",
)
def imec_kws_1d(n_classes: int = 12, n_mfcc: int = 39, frames: int = 49) -> nn.Sequential:
    """The imec 1-D dilated KWS CNN for a ``(1, frames, n_mfcc)`` input (see the module docstring).

    ``frames`` does not change the weights (the network is fully convolutional in time); it
    is accepted so callers can state the input ``(1, frames, n_mfcc)`` they will feed.
    """
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    del frames  # the weights do not depend on it
    layers["fc"] = nn.Conv2d(1, 100, (1, n_mfcc), bias=False)
    layers["to_sequence"] = nn.Flatten(start_dim=2)
    layers["fc_bn"] = nn.BatchNorm1d(100)
    c_in = 100
    for index, dilation in enumerate(DILATIONS, start=1):
        layers[f"conv{index}"] = nn.Conv1d(c_in, 45, 3, padding=dilation, dilation=dilation, bias=False)
        layers[f"bn{index}"] = nn.BatchNorm1d(45)
        layers[f"relu{index}"] = nn.ReLU()
        c_in = 45
    layers["pool"] = nn.AdaptiveAvgPool1d(1)
    layers["flatten"] = nn.Flatten()
    layers["classifier"] = nn.Linear(45, n_classes)
    return nn.Sequential(layers)
