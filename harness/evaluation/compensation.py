"""Drift compensation methods: small strategy objects behind one interface, chosen by name.

Each method turns what the chip reads back (the conductances at time ``t`` and the reference
read right after programming) plus, where it needs them, **unlabeled calibration examples from
the training split** into an :class:`~harness.evaluation.cim.OutputCorrection`: digital
corrections the CiM simulator applies inside its forward pass. The split follows aihwkit's
``BaseDriftCompensation`` (aihwkit): :meth:`Compensation.init_baseline` once per model and
layout (what is known right after programming), :meth:`Compensation.correction` per set of
(chip, time) readouts.

| name | what | source |
|---|---|---|
| ``none`` | nothing: the drifted outputs against fixed converter ranges and digital biases | — |
| ``gdc`` | one factor per layer, ``α = Σ|W_ref·1| / Σ|W(t)·1|`` (the all-ones input) | Joshi 2020 |
| ``adabs`` | GDC, then every batch norm's mean/variance re-estimated from calibration examples run through the drifted chip (train-mode forward at the evaluation's converter bits) | Joshi 2020 (AdaBS) |
| ``column`` | per output column an affine map ``a·y + b`` fitted (least squares) from the chip's MVM responses to calibration inputs against the programmed targets' responses to the same inputs | Le Gallo 2023 |

The calibration inputs of ``column`` are each analog layer's inputs when the calibration
examples run through the float model (the "known inputs" a chip test would apply per layer);
the calibration MVMs are ideal (no converter quantization, no read noise: a calibration may
average repeated reads, as GDC's does). Calibration examples come only from the training split
(:func:`calibration_examples`); the test split is never read here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt
import torch

from harness.errors import EvaluationError
from harness.evaluation import cim
from harness.evaluation.cim import CimSimulator, OutputCorrection
from harness.models.format import Model
from harness.models.spec import ANALOG_LAYER_TYPES, iter_plan

#: Calibration examples drawn from the training split by default (AdaBS and column).
DEFAULT_CALIBRATION_EXAMPLES = 256
MAX_CALIBRATION_EXAMPLES = 100_000
#: Rows (sample × output position) per layer the column fit uses at most: a conv layer's
#: calibration MVMs run on ``ceil(COLUMN_FIT_ROWS / positions)`` of the examples, so the fit
#: costs a fraction of one evaluation (``benchmarks/compensation.py``); a linear layer uses all.
COLUMN_FIT_ROWS = 16_384
#: A column whose calibration response varies less than this (relative to the layer's
#: response spread) is dead: it keeps gain 1 and gets only the mean offset.
COLUMN_MIN_VARIANCE = 1e-12


@runtime_checkable
class Compensation(Protocol):
    """One drift compensation method.

    ``name``: how it is chosen (``--compensate NAME``). ``uses_gdc``: whether it includes GDC
    (reported as the result's ``gdc``). ``needs_calibration``: whether it uses calibration examples.
    """

    name: str
    uses_gdc: bool
    needs_calibration: bool

    def check_model(self, model: Model) -> None:
        """Raise :class:`EvaluationError` (one line) if the method cannot apply to ``model``."""

    def init_baseline(self, sim: CimSimulator) -> None:
        """Prepare what is the same for every chip and time of ``sim``'s layout (once)."""

    def correction(
        self, sim: CimSimulator, g_uS: torch.Tensor, g_ref_uS: torch.Tensor, bits: int | None
    ) -> OutputCorrection | None:
        """The correction of each of ``B`` sets: ``g_uS`` ``(B, n)`` read at time ``t``,
        ``g_ref_uS`` ``(B | 1, n)`` right after programming; ``bits``: the evaluation's precision."""


class _Base:
    name = ""
    uses_gdc = False
    needs_calibration = False

    def __init__(self, x_cal: npt.NDArray[np.float32] | None = None) -> None:
        self.x_cal = None if x_cal is None else torch.from_numpy(np.array(x_cal, dtype=np.float32))
        self._sim: CimSimulator | None = None

    def check_model(self, model: Model) -> None:
        return None

    def init_baseline(self, sim: CimSimulator) -> None:
        self._sim = sim

    def _ready(self, sim: CimSimulator) -> None:
        if self._sim is not sim:
            self.init_baseline(sim)


class NoCompensation(_Base):
    """``none``: the readouts as they are."""

    name = "none"

    def correction(
        self, sim: CimSimulator, g_uS: torch.Tensor, g_ref_uS: torch.Tensor, bits: int | None
    ) -> OutputCorrection | None:
        return None


class GlobalDriftCompensation(_Base):
    """``gdc``: one factor per layer and set (Joshi 2020), the simulator's
    :meth:`~harness.evaluation.cim.CimSimulator.drift_compensation`. Bit-identical to the
    evaluation's ``gdc=True``."""

    name = "gdc"
    uses_gdc = True

    def correction(
        self, sim: CimSimulator, g_uS: torch.Tensor, g_ref_uS: torch.Tensor, bits: int | None
    ) -> OutputCorrection | None:
        alpha = sim.drift_compensation(g_uS, g_ref_uS)
        return OutputCorrection(gain=tuple(alpha[:, k : k + 1] for k in range(alpha.shape[1])))


class AdaptiveBatchNorm(GlobalDriftCompensation):
    """``adabs``: GDC, then batch-norm statistics re-estimated on the drifted chip (Joshi 2020).

    The calibration examples run through the chip's CiM forward (with GDC, at the evaluation's
    converter bits) in train mode: every batch norm normalizes by the mean and (biased)
    variance of its input over the examples and positions, per set, and those statistics
    replace the running ones. GDC stays on because a layer that no batch norm follows (the
    classifier) is otherwise uncompensated; where a batch norm follows, it absorbs GDC's factor.
    """

    name = "adabs"
    needs_calibration = True

    def check_model(self, model: Model) -> None:
        steps = list(iter_plan(model.plan))
        if any(s.spec["type"] == "batchnorm" for s in steps):
            return
        analog = [s.path for s in steps if s.spec["type"] in ANALOG_LAYER_TYPES]
        raise EvaluationError(
            f"model {model.name!r} has no batch norm: adabs re-estimates batch-norm statistics and would need a "
            f"batch norm after analog layer(s) {', '.join(analog[:-1]) or analog[0]}; use gdc or column"
        )

    def correction(
        self, sim: CimSimulator, g_uS: torch.Tensor, g_ref_uS: torch.Tensor, bits: int | None
    ) -> OutputCorrection | None:
        if self.x_cal is None:
            raise EvaluationError("adabs needs calibration examples")
        base = super().correction(sim, g_uS, g_ref_uS, bits)
        assert base is not None and base.gain is not None
        gammas, betas, eps = sim.batchnorm_parameters()
        # Sets in chunks so one chunk's activations of all calibration examples stay bounded.
        chunk = max(1, cim.MAX_ACTIVATION_ELEMENTS // max(1, self.x_cal.shape[0] * sim.sample_elements))
        scales: list[list[torch.Tensor]] = [[] for _ in gammas]
        shifts: list[list[torch.Tensor]] = [[] for _ in gammas]
        for s in range(0, g_uS.shape[0], chunk):
            sl = slice(s, s + chunk)
            stats = sim.batchnorm_statistics(self.x_cal, g_uS[sl], bits=bits, correction=base.take(sl))
            for i, (mean, var) in enumerate(stats):
                a = gammas[i] / torch.sqrt(var + eps[i])
                scales[i].append(a)
                shifts[i].append(betas[i] - mean * a)
        bn = tuple((torch.cat(a), torch.cat(b)) for a, b in zip(scales, shifts))
        return OutputCorrection(gain=base.gain, batchnorm=bn)


class ColumnCalibration(_Base):
    """``column``: a gain and an offset per output column (Le Gallo 2023), least-squares fits of
    the programmed targets' responses ``y_T = X·W_Tᵀ`` by the chip's ``y = X·W(t)ᵀ`` over each
    layer's calibration inputs ``X``: ``a = cov(y, y_T)/var(y)``, ``b = mean(y_T) − a·mean(y)``.
    A per-column gain or offset error of the chip is recovered exactly (noise-free)."""

    name = "column"
    needs_calibration = True

    def init_baseline(self, sim: CimSimulator) -> None:
        if self.x_cal is None:
            raise EvaluationError("column needs calibration examples")
        self._sim = sim
        inputs = layer_inputs(sim.model, self.x_cal)
        target = sim.weights(torch.from_numpy(np.asarray(sim.layout.target_uS, dtype=np.float32)))
        self._inputs: list[torch.Tensor] = []
        self._target: list[tuple[torch.Tensor, torch.Tensor]] = []  # centred y_T (M, out), its mean (out,)
        for k, x in enumerate(inputs):
            positions = max(1, sim.layer_mvm(k, x[:1], target[k]).numel() // target[k].shape[1])
            n = max(1, min(x.shape[0], math.ceil(COLUMN_FIT_ROWS / positions)))
            self._inputs.append(x[:n])
            y_t = _rows(sim.layer_mvm(k, x[:n], target[k]))[0].to(torch.float64)
            mean = y_t.mean(dim=0)
            self._target.append((y_t - mean, mean))

    def correction(
        self, sim: CimSimulator, g_uS: torch.Tensor, g_ref_uS: torch.Tensor, bits: int | None
    ) -> OutputCorrection | None:
        self._ready(sim)
        weights = sim.weights(g_uS)
        gains, offsets = [], []
        for k, w in enumerate(weights):
            y_t, mean_t = self._target[k]
            per_set = y_t.numel() * 2  # the MVM output and its float64 copy
            chunk = max(1, cim.MAX_ACTIVATION_ELEMENTS // max(1, per_set))
            a_parts, b_parts = [], []
            for s in range(0, w.shape[0], chunk):
                y = _rows(sim.layer_mvm(k, self._inputs[k], w[s : s + chunk])).to(torch.float64)
                a, b = fit_column_affine(y, y_t, mean_t)
                a_parts.append(a)
                b_parts.append(b)
            gains.append(torch.cat(a_parts).to(torch.float32))
            offsets.append(torch.cat(b_parts).to(torch.float32))
        return OutputCorrection(gain=tuple(gains), offset=tuple(offsets))


def fit_column_affine(
    y: torch.Tensor, y_target_centred: torch.Tensor, target_mean: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per set and column, the least-squares ``(a, b)`` with ``a·y + b ≈ y_target``.

    Args:
        y: ``(B, M, out)`` the chip's responses to ``M`` calibration rows.
        y_target_centred: ``(M, out)`` the targets' responses minus their mean ``target_mean`` ``(out,)``.

    Returns:
        ``a``, ``b`` each ``(B, out)``; a column whose response does not vary keeps ``a = 1``.
    """
    mean = y.mean(dim=1, keepdim=True)
    yc = y - mean
    var = (yc * yc).mean(dim=1)
    cov = (yc * y_target_centred.unsqueeze(0)).mean(dim=1)
    spread = var.amax(dim=1, keepdim=True).clamp_min(torch.finfo(torch.float64).tiny)
    dead = var <= COLUMN_MIN_VARIANCE * spread
    a = torch.where(dead, torch.ones_like(var), cov / torch.where(dead, torch.ones_like(var), var))
    b = target_mean.unsqueeze(0) - a * mean.squeeze(1)
    return a, b


def _rows(y: torch.Tensor) -> torch.Tensor:
    """``(B, N, out, *spatial)`` → ``(B, N·positions, out)``."""
    b, n, out = y.shape[:3]
    return y.reshape(b, n, out, -1).transpose(2, 3).reshape(b, -1, out)


def layer_inputs(model: Model, x: torch.Tensor) -> list[torch.Tensor]:
    """Each analog layer's input (forward order) when ``x`` runs through the float model."""
    net = model.to_torch()
    names = [a.name for a in model.analog_layers()]
    seen: dict[str, torch.Tensor] = {}

    def hook(name: str):  # type: ignore[no-untyped-def]
        def record(module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            seen[name] = args[0].detach().clone()

        return record

    handles = [net.get_submodule(n).register_forward_pre_hook(hook(n)) for n in names]
    try:
        with torch.no_grad():
            net(x)
    finally:
        for h in handles:
            h.remove()
    return [seen[n] for n in names]


#: The methods by name, in the order tables show them.
METHODS: dict[str, type[_Base]] = {
    "none": NoCompensation,
    "gdc": GlobalDriftCompensation,
    "adabs": AdaptiveBatchNorm,
    "column": ColumnCalibration,
}


def parse_methods(text: str | Sequence[str]) -> tuple[str, ...]:
    """``"none,gdc,adabs"`` (or a list) → validated, de-duplicated names in the given order.

    Raises:
        EvaluationError: an unknown or empty name list.
    """
    items = [t.strip() for t in (text.split(",") if isinstance(text, str) else text)]
    out: list[str] = []
    for item in items:
        if not item:
            continue
        if item not in METHODS:
            raise EvaluationError(f"unknown drift compensation {item!r}; choose from {', '.join(METHODS)}")
        if item not in out:
            out.append(item)
    if not out:
        raise EvaluationError(f"no drift compensation given; choose from {', '.join(METHODS)}")
    return tuple(out)


def calibration_examples(model: Model, n: int, *, seed: int = 0) -> npt.NDArray[np.float32]:
    """``n`` examples drawn without replacement from ``model.dataset``'s **training** split
    (seeded; labels unused). Never the test split.

    Raises:
        EvaluationError: ``n`` out of range or larger than the training split.
    """
    from harness.data import load_dataset

    if isinstance(n, bool) or not 1 <= int(n) <= MAX_CALIBRATION_EXAMPLES:
        raise EvaluationError(f"calibration examples {n!r} must be in 1..{MAX_CALIBRATION_EXAMPLES}")
    x_train = load_dataset(model.dataset).x_train
    if n > x_train.shape[0]:
        raise EvaluationError(f"{n} calibration examples asked for, but the training split of {model.dataset!r} "
                              f"has {x_train.shape[0]}")
    idx = np.sort(np.random.default_rng(seed).choice(x_train.shape[0], size=int(n), replace=False))
    return np.asarray(x_train[idx], dtype=np.float32)


def make_compensations(
    names: str | Sequence[str], model: Model, *, calibration_examples_n: int = DEFAULT_CALIBRATION_EXAMPLES,
    seed: int = 0,
) -> list[Compensation]:
    """The methods ``names`` for ``model``, checked against it (before any chip is touched),
    sharing one draw of calibration examples from the training split.

    Raises:
        EvaluationError: unknown names, a method that does not apply to the model (``adabs``
            without batch norm), bad ``calibration_examples_n``.
    """
    chosen = parse_methods(names)
    methods = [METHODS[n]() for n in chosen]
    for m in methods:
        m.check_model(model)
    if any(m.needs_calibration for m in methods):
        x_cal = calibration_examples(model, calibration_examples_n, seed=seed)
        methods = [METHODS[n](x_cal) if METHODS[n].needs_calibration else m for n, m in zip(chosen, methods)]
    return list(methods)


__all__ = [
    "DEFAULT_CALIBRATION_EXAMPLES",
    "METHODS",
    "AdaptiveBatchNorm",
    "ColumnCalibration",
    "Compensation",
    "GlobalDriftCompensation",
    "NoCompensation",
    "calibration_examples",
    "fit_column_affine",
    "layer_inputs",
    "make_compensations",
    "parse_methods",
]
