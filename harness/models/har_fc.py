"""A fully connected human-activity-recognition classifier after García-Redondo et al.

Source: F. García-Redondo, S. Das, G. Rosendale, "Training DNN IoT Applications for Deployment
on Analog NVM Crossbars" (arXiv:1910.13850, IJCNN 2020): a fully connected HAR network on the UCI
HAR features, 92.91 % with 2-bit positive-only weights, 95 % in float. The layer widths are not
in the abstract we have; assumed here: the 561 UCI HAR features → FC 256 → ReLU → FC 128 → ReLU
→ FC 6 (the 6 UCI HAR activities), which fits one 1024 × 512 array (largest block 561 × 256).
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from harness.models.registry import register_model

SOURCE = "Garcia-Redondo et al., arXiv:1910.13850, IJCNN 2020, HAR FC network; widths assumed"


@register_model(
    "har-fc",
    input_shape=(561,),
    n_classes=6,
    task="har",
    source=SOURCE,
    summary="FC 561 -> 256 -> 128 -> 6 (ReLU); widths assumed",
)
def har_fc(n_classes: int = 6, n_features: int = 561, hidden: tuple[int, ...] = (256, 128)) -> nn.Sequential:
    """The HAR MLP: ``n_features`` → ``hidden``… → ``n_classes`` with ReLU between layers."""
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    width = n_features
    for index, out in enumerate(hidden, start=1):
        layers[f"fc{index}"] = nn.Linear(width, out)
        layers[f"relu{index}"] = nn.ReLU()
        width = out
    layers[f"fc{len(hidden) + 1}"] = nn.Linear(width, n_classes)
    return nn.Sequential(layers)
