"""Shared training helpers: a deterministic torch context and float accuracy."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import numpy.typing as npt
import torch

from harness.errors import EvaluationError
from harness.models.model import Model

#: Batch size for inference-only passes (accuracy, calibration); no effect on results.
EVAL_BATCH = 4096


@contextmanager
def deterministic_torch(seed: int) -> Iterator[None]:
    """Run the body with seeded, deterministic, single-threaded torch; restore everything after.

    Inside: ``torch.manual_seed(seed)`` (on a forked RNG state, so the caller's global torch
    RNG is untouched), ``torch.use_deterministic_algorithms(True)`` and one intra-op thread
    (float reductions then sum in a fixed order: same seed → bit-identical weights).
    """
    previous_det = torch.are_deterministic_algorithms_enabled()
    previous_threads = torch.get_num_threads()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        torch.use_deterministic_algorithms(True)
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(previous_det)
            torch.set_num_threads(previous_threads)


def predict(model: Model, x: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """Float (digital) predictions of ``model`` for a batch ``x`` of shape ``(n, *input_shape)``.

    Raises:
        EvaluationError: ``x`` does not have the model's input shape.
    """
    xs = np.array(x, dtype=np.float32)  # writable copy: torch.from_numpy needs one
    if xs.shape[1:] != model.input_shape:
        raise EvaluationError(
            f"inputs of shape {xs.shape} do not fit model {model.name!r} with input shape {model.input_shape}"
        )
    net = model.to_torch()
    out = []
    with torch.no_grad():
        for start in range(0, xs.shape[0], EVAL_BATCH):
            out.append(net(torch.from_numpy(xs[start : start + EVAL_BATCH])).argmax(dim=1).numpy())
    return np.concatenate(out).astype(np.int64) if out else np.zeros(0, dtype=np.int64)


def float_accuracy(model: Model, x: npt.ArrayLike, y: npt.ArrayLike) -> float:
    """Fraction of ``x`` that ``model`` (float weights, no converters) classifies as ``y``.

    Raises:
        EvaluationError: empty data, mismatched lengths or input shape.
    """
    ys = np.asarray(y)
    if ys.ndim != 1 or ys.shape[0] == 0 or ys.shape[0] != np.shape(x)[0]:
        raise EvaluationError(f"need as many labels as inputs (> 0); got {np.shape(x)} inputs, {ys.shape} labels")
    return float(np.mean(predict(model, x) == ys))
