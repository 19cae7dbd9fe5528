"""Training: hardware-aware training of the models the harness ships and evaluates.

Needs only torch and numpy at run time (scikit-learn is used once, by
``fixtures/build_models.py``, to build the bundled digits dataset).
"""

from harness.train.common import deterministic_torch, float_accuracy, predict
from harness.train.digits import DEFAULT_RANGE_PERCENTILE, build_mlp, train_digits
from harness.train.noise import noisy_accuracies, perturb_weights

__all__ = [
    "DEFAULT_RANGE_PERCENTILE",
    "build_mlp",
    "deterministic_torch",
    "float_accuracy",
    "noisy_accuracies",
    "perturb_weights",
    "predict",
    "train_digits",
]
