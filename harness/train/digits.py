"""Train the digits MLP (64 → hidden → 10), plain or noise-aware.

Two stages as in AnalogNets §4.2, in simple form: a plain float model
(:func:`train_digits` with no noise), then a noise-aware fine-tune that starts from it
(``init=plain``, ``clip_sigma`` and ``weight_noise_eta`` set, lower learning rate). The
clipping and weight noise are the shared hardware-aware layers of :mod:`harness.train.layers`
(the MLP's Linear layers wrapped by :func:`~harness.train.layers.convert`, no converters).
Both stages store calibrated DAC/ADC ranges (:func:`harness.evaluation.ranges.calibrate_ranges`)
and their provenance in the model's metadata. Training is deterministic: same arguments →
bit-identical weights.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

import harness
from harness.evaluation.ranges import calibrate_ranges
from harness.data import Dataset, load_dataset
from harness.errors import ConfigError
from harness.models.model import Model
from harness.models.torch_convert import model_from_torch
from harness.train.common import deterministic_torch, float_accuracy
from harness.train.layers import HardwareConfig, convert

DEFAULT_HIDDEN = 64
DEFAULT_LR = 1e-3
DEFAULT_BATCH_SIZE = 32
DIGITS_DATASET = "digits"
#: Percentile of |signal| the digits models' stored ranges cover (the shipped fixtures use it).
DEFAULT_RANGE_PERCENTILE = 99.9

#: ``progress(epoch, epochs, mean_train_loss)`` after every epoch.
ProgressCallback = Callable[[int, int, float], None]


def build_mlp(n_inputs: int, hidden: int, n_classes: int) -> nn.Sequential:
    """The float MLP ``fc1 (n_inputs→hidden) → relu1 → fc2 (hidden→n_classes)``, torch default init."""
    return nn.Sequential(
        OrderedDict(
            fc1=nn.Linear(n_inputs, hidden),
            relu1=nn.ReLU(),
            fc2=nn.Linear(hidden, n_classes),
        )
    )


def train_digits(
    *,
    hidden: int = DEFAULT_HIDDEN,
    epochs: int,
    seed: int,
    weight_noise_eta: float = 0.0,
    clip_sigma: float | None = None,
    lr: float = DEFAULT_LR,
    batch_size: int = DEFAULT_BATCH_SIZE,
    init: Model | None = None,
    name: str | None = None,
    dataset: Dataset | None = None,
    range_percentile: float = DEFAULT_RANGE_PERCENTILE,
    progress: ProgressCallback | None = None,
) -> Model:
    """Train an MLP ``64 → hidden → 10`` (ReLU) on the digits train split with Adam.

    Args:
        hidden: hidden width.
        epochs: passes over the training set (>= 1).
        seed: seeds the initialisation, the shuffling and the training noise.
        weight_noise_eta: relative weight noise per forward pass, ``N(0, (eta·max|W|)²)``
            on each analog layer's (clipped) weight (0: plain training).
        clip_sigma: clip analog weights to ``±clip_sigma·σ_W`` (None: no clipping). With
            ``init`` the ranges are fixed from ``init``'s weights (stage 2), else they
            follow the weights every 10 steps (stage 1). Clipping and noise are passed
            straight through to the latent weights (:class:`~harness.train.layers.HardwareAwareLayer`).
        lr: Adam learning rate (use a lower one for a stage-2 fine-tune).
        batch_size: minibatch size.
        init: start from this model's weights (must be the same MLP) instead of a fresh init.
        name: the model's name (default ``digits_mlp`` / ``digits_mlp_noise_aware``).
        dataset: the data (default: the bundled ``digits``).
        range_percentile: percentile of |signal| the calibrated DAC/ADC ranges cover.
        progress: called after every epoch with ``(epoch, epochs, mean loss)``.

    Returns:
        the trained :class:`Model` with its clipped weights, calibrated ranges (from the
        training set) and metadata (seed, epochs, eta, clip, float accuracies…).

    Raises:
        ConfigError: non-positive sizes, epochs or learning rate; a bad ``clip_sigma`` or
            ``eta``; an ``init`` model of another architecture.
    """
    for key, value in (("hidden", hidden), ("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{key}={value!r} must be an int >= 1")
    if not (np.isfinite(lr) and lr > 0.0):
        raise ConfigError(f"lr={lr} must be a finite number > 0")
    data = dataset if dataset is not None else load_dataset(DIGITS_DATASET)
    if len(data.input_shape) != 1:
        raise ConfigError(f"the digits MLP needs flat inputs; dataset {data.name!r} has shape {data.input_shape}")
    noise_aware = weight_noise_eta > 0.0 or clip_sigma is not None
    model_name = name or ("digits_mlp_noise_aware" if noise_aware else "digits_mlp")

    with deterministic_torch(seed):
        net = build_mlp(data.input_shape[0], hidden, data.n_classes)
        if init is not None:
            reference = model_from_torch(
                net, name="ref", input_shape=data.input_shape, n_classes=data.n_classes, dataset=data.name
            )
            if init.architecture != reference.architecture or init.input_shape != data.input_shape:
                raise ConfigError(
                    f"init model {init.name!r} is not a {data.input_shape[0]}→{hidden}→{data.n_classes} MLP"
                )
            net = init.to_torch()
        generator = torch.Generator().manual_seed(seed)
        # The ``noise`` recipe's hardware (no DAC/ADC); stage 2 fixes the clip from ``init``.
        hardware = HardwareConfig(clip_sigma=clip_sigma, fixed_clip=init is not None, eta=weight_noise_eta)
        analog = convert(net, hardware, generator=generator)
        analog.train()
        optimizer = torch.optim.Adam(analog.weight_parameters(), lr=lr)
        x = torch.from_numpy(np.array(data.x_train))
        y = torch.from_numpy(np.array(data.y_train))
        n = x.shape[0]
        for epoch in range(1, epochs + 1):
            order = torch.randperm(n, generator=generator)
            total = 0.0
            for start in range(0, n, batch_size):
                batch = order[start : start + batch_size]
                loss = nn.functional.cross_entropy(analog(x[batch]), y[batch])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                analog.step_done()
                total += float(loss.detach()) * batch.shape[0]
            if progress is not None:
                progress(epoch, epochs, total / n)
        clip_ranges = (
            {f"{name}.weight": float(layer.clip) for name, layer in analog.layers()} if clip_sigma is not None else {}
        )
        net = analog.to_plain()
        net.eval()

    metadata: dict[str, Any] = {
        "trainer": "harness.train.digits.train_digits",
        "stage": "noise-aware" if noise_aware else "plain",
        "seed": seed,
        "epochs": epochs,
        "hidden": hidden,
        "lr": lr,
        "batch_size": batch_size,
        "optimizer": "adam",
        "weight_noise_eta": weight_noise_eta,
        "clip_sigma": clip_sigma,
        "clip_ranges": clip_ranges,
        "init_from": None if init is None else init.name,
        "range_percentile": range_percentile,
        "torch_version": torch.__version__,
        "harness_version": harness.__version__,
    }
    model = model_from_torch(
        net, name=model_name, input_shape=data.input_shape, n_classes=data.n_classes, dataset=data.name
    )
    metadata["float_train_accuracy"] = float_accuracy(model, data.x_train, data.y_train)
    metadata["float_test_accuracy"] = float_accuracy(model, data.x_test, data.y_test)
    return model_from_torch(
        net,
        name=model_name,
        input_shape=data.input_shape,
        n_classes=data.n_classes,
        dataset=data.name,
        ranges=calibrate_ranges(model, data.x_train, percentile=range_percentile),
        metadata=metadata,
    )
