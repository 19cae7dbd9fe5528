"""Models: the file format (:mod:`harness.models.format`) and the zoo of named architectures.

The zoo is a registry of builders, one module per architecture (``analognet_kws``,
``micronet_kws``, ``imec_kws_1d``, ``har_fc``…), each citing its source::

    from harness.models import get_model, list_models, model_info
    net = get_model("analognet-kws")          # a torch.nn.Module
    model_info("analognet-kws").input_shape   # (1, 49, 10)

Importing this package is cheap (no torch); builders import torch when called.
"""

from harness.models.registry import (
    ModelInfo,
    baseline_path,
    get_model,
    list_models,
    model_info,
    register_model,
    resolve_model_path,
)

__all__ = [
    "ModelInfo",
    "baseline_path",
    "get_model",
    "list_models",
    "model_info",
    "register_model",
    "resolve_model_path",
]
