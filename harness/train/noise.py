"""Relative Gaussian weight noise on the analog layers, the robustness probe of AnalogNets §4.2.

Noise of coefficient ``eta`` on a layer is ``N(0, (eta · max|W_layer|)²)`` per weight, drawn
independently for every weight; biases are digital and stay exact.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from harness.errors import EvaluationError
from harness.models.model import Model
from harness.train.common import float_accuracy


def perturb_weights(model: Model, eta: float, rng: np.random.Generator) -> Model:
    """A copy of ``model`` with relative Gaussian noise ``eta`` added to every analog weight.

    Raises:
        EvaluationError: ``eta`` negative or not finite.
    """
    if not np.isfinite(eta) or eta < 0.0:
        raise EvaluationError(f"noise coefficient eta={eta} must be finite and >= 0")
    weights = model.weights()
    noisy: dict[str, np.ndarray] = {}
    for layer in model.analog_layers():
        key = f"{layer.name}.weight"
        w = weights[key]
        sigma = eta * float(np.max(np.abs(w)))
        noisy[key] = (w.astype(np.float64) + rng.normal(0.0, sigma, size=w.shape)).astype(np.float32)
    return model.with_weights(noisy, keep_levels=False)  # noisy weights are off any level set


def noisy_accuracies(
    model: Model,
    x: npt.ArrayLike,
    y: npt.ArrayLike,
    *,
    eta: float,
    n_draws: int,
    seed: int,
) -> npt.NDArray[np.float64]:
    """Float accuracy of ``model`` on ``(x, y)`` under ``n_draws`` independent noise draws.

    Draws come from ``numpy.random.default_rng(seed)`` in layer order, so two models with
    the same layer shapes see the same standard-normal draws (a paired comparison).

    Returns:
        ``float64 (n_draws,)`` accuracies in ``[0, 1]``.

    Raises:
        EvaluationError: ``n_draws < 1`` or a bad ``eta``.
    """
    if n_draws < 1:
        raise EvaluationError(f"n_draws={n_draws} must be >= 1")
    rng = np.random.default_rng(seed)
    return np.array([float_accuracy(perturb_weights(model, eta, rng), x, y) for _ in range(n_draws)])
