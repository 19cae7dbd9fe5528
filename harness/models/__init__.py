"""Models: the model file format and the zoo of named architectures.

- :mod:`harness.models.spec` — the layer types an architecture may hold and the check that
  turns it into a plan of layers with their sample shapes.
- :mod:`harness.models.model` — :class:`~harness.models.model.Model`: architecture, float32
  weights and DAC/ADC ranges, immutable and validated; the analog layers it puts on the array.
- :mod:`harness.models.format` — model files (HDF5, format versions 1 and 2): ``save_model`` /
  ``load_model``, the shipped digits models.
- :mod:`harness.models.torch_convert` — ``from_torch`` / ``model_from_torch`` (the way back is
  ``Model.to_torch``, built by :mod:`harness.models.torch_build`).

The zoo is a registry of builders, one module per architecture (``analognet_kws``,
``micronet_kws``, ``imec_kws_1d``, ``har_fc``…), each citing its source::

    from harness.models import get_model, list_models, model_info
    net = get_model("analognet-kws")          # a torch.nn.Module
    model_info("analognet-kws").input_shape   # (1, 49, 10)

Importing this package is cheap (no torch): the names below load their module on first use, and
builders import torch when called.
"""

from harness._exports import lazy_exports

_EXPORTS: dict[str, str] = {
    **dict.fromkeys(
        ["ModelInfo", "baseline_path", "get_model", "list_models", "model_info", "register_model", "resolve_model_path"],
        "registry",
    ),
    **dict.fromkeys(["AnalogLayer", "LayerRanges", "Model"], "model"),
    **dict.fromkeys(["DEFAULT_MODEL_FILE", "NOISE_AWARE_MODEL_FILE", "load_model", "save_model"], "format"),
    **dict.fromkeys(["from_torch", "model_from_torch"], "torch_convert"),
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
