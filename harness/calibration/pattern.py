"""A calibration pattern: a one-layer model whose weights spread the targets over the
whole conductance range, so that one session identifies the laws in x (docs/calibration.md).

Magnitudes are log-uniform in [x_min, 1] (equal devices per decade of x, which is how the
published laws are parameterized), signs random, and the largest |W| is exactly 1 so the
layer maps onto [0, g_max]. Each weight programs one device of its differential pair and
RESETs the other, so half the devices calibrate the RESET level.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from harness.errors import ConfigError

#: Smallest |W| (= x = G_T/g_max) of the pattern: 0.5 µS at g_max = 25 µS.
PATTERN_X_MIN = 0.02


def calibration_pattern_weights(out_features: int, fan_in: int, *, x_min: float = PATTERN_X_MIN, seed: int = 0) -> np.ndarray:
    """``(out_features, fan_in)`` weights, |W| log-uniform in [x_min, 1], max |W| = 1."""
    if out_features < 1 or fan_in < 1:
        raise ConfigError(f"pattern shape {out_features}x{fan_in} must be positive")
    if not 0 < x_min < 1:
        raise ConfigError(f"pattern x_min = {x_min} must be in (0, 1)")
    rng = np.random.default_rng(seed)
    n = out_features * fan_in
    mag = np.exp(rng.uniform(np.log(x_min), 0.0, n))
    mag[rng.integers(n)] = 1.0
    sign = np.where(rng.random(n) < 0.5, -1.0, 1.0)
    return (sign * mag).reshape(out_features, fan_in)


def save_calibration_pattern(path: str | Path, rows: int, cols: int, *, x_min: float = PATTERN_X_MIN, seed: int = 0) -> Path:
    """Write a pattern model that fills a ``rows × cols`` array (one layer, fan_in = rows,
    out = cols / 2) as a model file a session TOML can name."""
    from harness.models.format import save_model
    from harness.models.model import Model

    if cols % 2:
        raise ConfigError(f"a pattern needs an even number of columns (differential pairs), got {cols}")
    out_f = cols // 2
    w = calibration_pattern_weights(out_f, rows, x_min=x_min, seed=seed)
    arch = [{"type": "linear", "name": "pattern", "in_features": rows, "out_features": out_f, "bias": False}]
    model = Model(name="calibration-pattern", architecture=arch, weights={"pattern.weight": w},
                  input_shape=(rows,), n_classes=out_f, dataset="none")
    save_model(model, path)
    return Path(path)
