"""Batched compute-in-memory (CiM) inference from read-back conductances (torch).

The simulator runs a :class:`~harness.models.model.Model` the way the analog array computes it,
for many sets of conductances at once (simulated chips × readout times, one batch
dimension ``B``), given the :class:`~harness.programming.mapping.Layout` they were programmed with:

1. **Weights** ``W = (G+ − G−) / s`` per layer (``s = layout.layers[i].scale_uS``, µS per
   unit weight; Nandakumar 2019; Joshi 2020), from conductances ``g_uS`` of shape ``(B, n_devices)`` in
   layout order.
2. **DAC** on each analog layer's input: a symmetric ENOB quantizer over ``±r_DAC`` with
   ``bits + 1`` bits (AnalogNets §4.2 Eq. 3: the DAC has one bit more than the ADC, so
   non-negative post-ReLU inputs keep ``bits`` bits of magnitude): step ``r_DAC/(2^bits − 1)``,
   values clipped to the range.
3. **MVM** ``y = x_q · Wᵀ`` (biases stay digital), optionally with **per-read 1/f noise**:
   each MVM sees a fresh draw of every device's read noise (Nandakumar 2019; Joshi 2020,
   ``σ_read(G, x_prog, t)``), which for independent Gaussian device noise is exactly an
   output noise ``N(0, Σ_j x_j² (σ+_j² + σ−_j²) / s²)`` — one extra matmul, no per-device loop.
4. **ADC** on each output: a symmetric ``bits``-bit quantizer over ``±r_ADC,i`` with
   ``r_ADC,i = ρ · r_DAC,i · W_max,i``. ``ρ`` (the ADC full scale in units of one full-scale
   input on one full-scale weight) is the same for every layer: that is the one fixed
   analog ADC gain of AnalogNets §3.2.3 / Eq. 5 (``G = 1/ρ``).
5. **Global drift compensation** (Joshi 2020), applied digitally after
   the ADC: per layer and conductance set ``α = Σ|y_cal(t0)| / Σ|y_cal(t)|`` where
   ``y_cal = W · 1`` is the array's response to the all-ones calibration input, ``t0`` the
   reference readout right after programming and ``t`` the readout in use. The calibration
   MVM is computed without converter quantization or read noise (a calibration may average).
6. Bias, ReLU, flatten: digital, in float32.

``bits=None`` means ideal converters (no quantization). Converter ranges (trained, calibrated
per bit width, or the percentile heuristic) come from :mod:`harness.evaluation.ranges`. All arithmetic is float32; every random draw comes from an
explicit ``torch.Generator``.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F

from harness.errors import EvaluationError
# The converter ranges live in ranges.py; these names stay importable from here.
from harness.evaluation.ranges import (
    HEURISTIC_RANGE_PERCENTILE,
    ConverterRanges,
    calibrate_ranges,
    converter_ranges,
    percentile_range,
)
from harness.programming.mapping import Layout
from harness.models.model import Model
from harness.models.spec import ANALOG_LAYER_TYPES, ConvGeometry, PlanStep, conv_geometry, iter_plan
from harness.virtual import physics as ph

#: Supported activation precisions (ADC bits; the DAC gets one more).
MIN_BITS, MAX_BITS = 2, 16
#: Floor on the calibration response Σ|y_cal(t)| (in weight units) so a dead layer gives a
#: large but finite α instead of inf/NaN.
GDC_MIN_RESPONSE = 1e-12
#: Upper bound on float32 elements of one activation tensor; larger batches are evaluated
#: in chunks of conductance sets (memory stays bounded, results are identical).
MAX_ACTIVATION_ELEMENTS = 1 << 25


def check_bits(bits: int | None) -> int | None:
    """Validate one activation precision (ADC bits; None = ideal converters)."""
    if bits is None:
        return None
    if isinstance(bits, bool) or not isinstance(bits, int | np.integer) or not MIN_BITS <= bits <= MAX_BITS:
        raise EvaluationError(
            f"bit-width {bits!r} is not supported: activation precision must be an integer in "
            f"{MIN_BITS}..{MAX_BITS} (e.g. 8, 6, 4)"
        )
    return int(bits)


@dataclass(frozen=True)
class _AnalogOp:
    index: int  # into layout.layers
    name: str
    kind: str  # "linear" | "conv1d" | "conv2d"
    conv: ConvGeometry | None
    bias: torch.Tensor | None


@dataclass(frozen=True)
class _DigitalOp:
    """A digital layer: ``relu``, ``relu6``, ``flatten`` (``dim``: first flattened dim of the
    ``(B, N, *sample)`` tensor), ``unflatten`` (``dim`` split into ``sizes``), ``batchnorm`` (``scale``, ``shift`` per channel, eval mode),
    ``avgpool1d`` / ``avgpool2d`` (``pool``: kernel, stride, padding), ``global_avgpool``."""

    kind: str
    dim: int = 2
    scale: torch.Tensor | None = None
    shift: torch.Tensor | None = None
    pool: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]] | None = None
    sizes: tuple[int, ...] | None = None
    # batch norm only: its place among the model's batch norms and (γ, β, eps), which
    # :class:`OutputCorrection` / :meth:`CimSimulator.batchnorm_statistics` need.
    bn_index: int = -1
    gamma: torch.Tensor | None = None
    beta: torch.Tensor | None = None
    eps: float = 0.0


@dataclass(frozen=True)
class _ResidualOp:
    body: tuple[_AnalogOp | _DigitalOp | _ResidualOp, ...]


_Op = _AnalogOp | _DigitalOp | _ResidualOp


@dataclass(frozen=True)
class OutputCorrection:
    """Per-set digital corrections applied inside the forward pass (the hook of the drift
    compensations of :mod:`harness.evaluation.compensation`; ``B`` conductance sets).

    Attributes:
        gain: per analog layer, ``(B, 1)`` (one factor per layer, GDC) or ``(B, out)`` (per
            output column) multiplying the ADC output; None: 1.
        offset: per analog layer, ``(B, out)`` added after the gain (model units, before the
            bias) or None; None: no offsets.
        batchnorm: per batch-norm layer (forward order), ``(scale, shift)`` each ``(B, C)``
            replacing the layer's eval-mode affine map; None: the model's own statistics.
    """

    gain: tuple[torch.Tensor, ...] | None = None
    offset: tuple[torch.Tensor | None, ...] | None = None
    batchnorm: tuple[tuple[torch.Tensor, torch.Tensor], ...] | None = None

    def take(self, sl: slice) -> OutputCorrection:
        """The correction of the conductance sets ``sl`` (for chunked evaluation)."""
        return OutputCorrection(
            gain=None if self.gain is None else tuple(g[sl] for g in self.gain),
            offset=None if self.offset is None else tuple(None if o is None else o[sl] for o in self.offset),
            batchnorm=None if self.batchnorm is None else tuple((a[sl], b[sl]) for a, b in self.batchnorm),
        )


class _Pass:
    """What one forward pass carries besides the activations: the per-set correction, and
    (for :meth:`CimSimulator.batchnorm_statistics`) the list the batch norms' per-set input
    statistics are appended to, which also makes every batch norm normalize with them
    (train-mode semantics)."""

    def __init__(self, correction: OutputCorrection | None, capture: list[tuple[torch.Tensor, torch.Tensor]] | None):
        self.correction = correction
        self.capture = capture


class CimSimulator:
    """Batched CiM inference of ``model`` from conductances programmed with ``layout``.

    Args:
        model: the network; its analog layers must be the layout's layers (names, shapes).
        layout: where each device sits and each layer's scale ``s`` (µS per unit weight).
        ranges: DAC ranges and the shared ADC gain (:func:`converter_ranges`).

    Raises:
        EvaluationError: the model's analog layers do not match the layout.
    """

    def __init__(self, model: Model, layout: Layout, ranges: ConverterRanges) -> None:
        analog = model.analog_layers()
        placed = [(p.name, p.out_features, p.fan_in) for p in layout.layers]
        wanted = [(a.name, a.weight.shape[0], a.weight.shape[1]) for a in analog]
        if placed != wanted:
            raise EvaluationError(
                f"model {model.name!r} has analog layers {_fmt_layers(wanted)} but the conductances were "
                f"programmed for {_fmt_layers(placed)}; evaluate with the model that was programmed"
            )
        self.model = model
        self.layout = layout
        self.ranges = ranges
        for p in layout.layers:
            ranges.dac(p.name)  # raises for a missing layer
        bias = {a.name: None if a.bias is None else torch.from_numpy(a.bias.copy()) for a in analog}
        weights = model.weights()
        counter = iter(range(len(analog)))
        #: The model's batch-norm layers in forward order (names).
        self.batchnorm_layers: list[str] = []
        self._ops = self._compile(model.plan, weights, bias, counter)
        # Elements of the largest per-sample tensor (activation or im2col matrix): bounds chunks.
        self._width = max(
            [int(np.prod(model.input_shape))]
            + [_sample_elements(step) for step in iter_plan(model.plan)]
        )
        # Each layer's devices in the flat layout order: [G+ block, G− block], row-major (out, fan_in).
        self._slices = [layout.layer_slice(k) for k in range(len(layout.layers))]

    def _compile(
        self,
        plan: Sequence[PlanStep],
        weights: dict[str, npt.NDArray[np.float32]],
        bias: dict[str, torch.Tensor | None],
        counter: Iterator[int],
    ) -> tuple[_Op, ...]:
        ops: list[_Op] = []
        for step in plan:
            spec = step.spec
            kind = spec["type"]
            if kind in ANALOG_LAYER_TYPES:
                conv = None if kind == "linear" else conv_geometry(spec)
                ops.append(_AnalogOp(next(counter), step.path, kind, conv, bias[step.path]))
            elif kind == "sequential":
                ops.extend(self._compile(step.body, weights, bias, counter))
            elif kind == "residual":
                ops.append(_ResidualOp(self._compile(step.body, weights, bias, counter)))
            elif kind == "batchnorm":
                # Eval-mode batch norm is a per-channel affine map, applied digitally.
                w = {t: weights[f"{step.path}.{t}"].astype(np.float64) for t in ("weight", "bias", "running_mean", "running_var")}
                a = w["weight"] / np.sqrt(w["running_var"] + float(spec["eps"]))
                b = w["bias"] - w["running_mean"] * a
                ops.append(_DigitalOp("batchnorm", scale=torch.from_numpy(a.astype(np.float32)),
                                      shift=torch.from_numpy(b.astype(np.float32)), bn_index=len(self.batchnorm_layers),
                                      gamma=torch.from_numpy(w["weight"].astype(np.float32)),
                                      beta=torch.from_numpy(w["bias"].astype(np.float32)), eps=float(spec["eps"])))
                self.batchnorm_layers.append(step.path)
            elif kind == "flatten":
                ops.append(_DigitalOp("flatten", dim=int(spec.get("start_dim", 1)) + 1))
            elif kind == "unflatten":
                ops.append(_DigitalOp("unflatten", dim=int(spec["dim"]) + 1, sizes=tuple(int(v) for v in spec["sizes"])))
            elif kind in ("avgpool1d", "avgpool2d"):
                dims = 1 if kind == "avgpool1d" else 2
                pool = tuple(
                    tuple(int(v) for v in ((spec[k],) * dims if isinstance(spec[k], int) else spec[k]))
                    for k in ("kernel_size", "stride", "padding")
                )
                ops.append(_DigitalOp(kind, pool=pool))  # type: ignore[arg-type]
            elif kind in ("relu", "relu6", "global_avgpool"):
                ops.append(_DigitalOp(kind))
            else:
                raise EvaluationError(f"unsupported layer type {kind!r} in model {self.model.name!r}")
        return tuple(ops)

    def with_ranges(self, ranges: ConverterRanges) -> CimSimulator:
        """This simulator with other converter ranges (e.g. another bit width's), sharing the
        compiled layers: a shallow copy, no weights or layout work repeated."""
        for p in self.layout.layers:
            ranges.dac(p.name)  # raises for a missing layer
        other = copy.copy(self)
        other.ranges = ranges
        return other

    # -- conductances → weights ---------------------------------------------------------------
    def _pairs(self, g: torch.Tensor, k: int, reference: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(G+, G−) of layer ``k``; a unipolar layer's G− is the constant ``reference``
        (``g_min`` for conductances, 0 for variances: the digital reference is noiseless)."""
        p = self.layout.layers[k]
        block = g[:, self._slices[k]]
        n = p.out_features * p.fan_in
        shape = (g.shape[0], p.out_features, p.fan_in)
        if p.unipolar:
            ref = self.layout.geometry.g_min_uS if reference is None else reference
            return block.reshape(shape), torch.full(shape, float(ref), dtype=block.dtype)
        return block[:, :n].reshape(shape), block[:, n:].reshape(shape)

    def _differences(self, g: torch.Tensor) -> list[torch.Tensor]:
        """``G+ − G−`` (µS) per layer, each ``(B, out, fan_in)``."""
        out = []
        for k in range(len(self.layout.layers)):
            gp, gn = self._pairs(g, k)
            out.append(gp - gn)
        return out

    def weights(self, g_uS: torch.Tensor | npt.ArrayLike) -> list[torch.Tensor]:
        """Effective weights ``(G+ − G−)/s`` per layer, each ``(B, out, fan_in)`` float32."""
        diffs = self._differences(self._as_batch(g_uS))
        return [d.mul_(1.0 / p.scale_uS) for d, p in zip(diffs, self.layout.layers)]

    def drift_compensation(
        self, g_uS: torch.Tensor | npt.ArrayLike, g_ref_uS: torch.Tensor | npt.ArrayLike
    ) -> torch.Tensor:
        """GDC factors ``α`` of shape ``(B, n_layers)`` (Joshi 2020):
        ``α = Σ_i |(W_ref · 1)_i| / Σ_i |(W · 1)_i|`` per set and layer.

        ``g_ref_uS``: the calibration readout right after programming, ``(n_devices,)`` or
        ``(B, n_devices)``.
        """
        g = self._as_batch(g_uS)
        ref = self._as_batch(g_ref_uS)
        if ref.shape[0] not in (1, g.shape[0]):
            raise EvaluationError(f"got {ref.shape[0]} reference readouts for {g.shape[0]} conductance sets")
        cols = []
        for k in range(len(self.layout.layers)):
            # The all-ones response of each output is a row sum; the layer scale s cancels.
            now = self._row_sums(g, k).abs_().sum(dim=1)
            then = self._row_sums(ref, k).abs_().sum(dim=1)
            cols.append(then / now.clamp_min(GDC_MIN_RESPONSE))
        return torch.stack(cols, dim=1)

    def _row_sums(self, g: torch.Tensor, k: int) -> torch.Tensor:
        """``Σ_j (G+ − G−)_ij`` (µS) of layer ``k``, ``(B, out)``: one reduction, no temporaries."""
        p = self.layout.layers[k]
        if p.unipolar:
            block = g[:, self._slices[k]].reshape(g.shape[0], p.out_features, p.fan_in)
            return block.sum(dim=2) - p.fan_in * self.layout.geometry.g_min_uS
        sums = g[:, self._slices[k]].reshape(g.shape[0], 2, p.out_features, p.fan_in).sum(dim=3)
        return sums[:, 0] - sums[:, 1]

    # -- inference ------------------------------------------------------------------------------
    def logits(
        self,
        x: torch.Tensor | npt.ArrayLike,
        g_uS: torch.Tensor | npt.ArrayLike,
        *,
        bits: int | None,
        g_ref_uS: torch.Tensor | npt.ArrayLike | None = None,
        read_noise_t_s: torch.Tensor | npt.ArrayLike | None = None,
        g_prog_uS: torch.Tensor | npt.ArrayLike | None = None,
        generator: torch.Generator | None = None,
        correction: OutputCorrection | None = None,
    ) -> torch.Tensor:
        """Outputs ``(B, N, n_classes)`` for inputs ``x`` ``(N, *input_shape)`` on ``B`` conductance sets.

        Args:
            x: the input batch (model float units).
            g_uS: ``(B, n_devices)`` conductances in layout order (µS).
            bits: activation precision (ADC bits, DAC ``bits + 1``), or None for ideal converters.
            g_ref_uS: the reference readout for GDC (``(n_devices,)`` or ``(B, n_devices)``);
                None disables GDC.
            read_noise_t_s: ``(B,)`` readout times (s since programming) to enable per-read
                1/f noise at those times. None: no per-read noise.
            g_prog_uS: the as-programmed conductances (``(n_devices,)`` or ``(B, n_devices)``)
                whose normalized state sets the read-noise amplitude ``Q_s(x)``; default
                ``g_ref_uS``, else ``g_uS``.
            generator: seeded source of the read-noise draws (required with read noise).
            correction: per-set digital corrections (drift compensation), composed with GDC.

        Raises:
            EvaluationError: shapes that do not match the model or layout, a bad bit-width,
                read noise without a generator.
        """
        bits = check_bits(bits)
        xs = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.array(x, dtype=np.float32))
        xs = xs.to(torch.float32)
        if tuple(xs.shape[1:]) != self.model.input_shape:
            raise EvaluationError(
                f"inputs of shape {tuple(xs.shape)} do not fit model {self.model.name!r} "
                f"with input shape {self.model.input_shape}"
            )
        g = self._as_batch(g_uS)
        alpha = None if g_ref_uS is None else self.drift_compensation(g, g_ref_uS)
        diffs = self._differences(g)
        noise_var = None
        if read_noise_t_s is not None:
            if generator is None:
                raise EvaluationError("per-read noise needs an explicit torch.Generator (seeded)")
            prog = g_prog_uS if g_prog_uS is not None else g_ref_uS
            noise_var = self._read_noise_var(g, prog, read_noise_t_s)
        return self._forward(xs, diffs, bits, alpha, noise_var, generator, _Pass(correction, None))

    def batchnorm_statistics(
        self,
        x: torch.Tensor | npt.ArrayLike,
        g_uS: torch.Tensor | npt.ArrayLike,
        *,
        bits: int | None,
        correction: OutputCorrection | None = None,
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per batch-norm layer (forward order), the per-set mean and (biased) variance
        ``(B, C)`` of its input over the batch ``x`` (and spatial positions), with every batch
        norm normalizing by these statistics as it goes: a train-mode forward of the chip,
        the statistics AdaBS (Joshi 2020) re-estimates. No read noise, no chunking (the
        statistics are of the whole batch); ``correction``'s batch norms are ignored."""
        bits = check_bits(bits)
        xs = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.array(x, dtype=np.float32))
        g = self._as_batch(g_uS)
        capture: list[tuple[torch.Tensor, torch.Tensor]] = []
        base = None if correction is None else OutputCorrection(correction.gain, correction.offset, None)
        self._forward(xs.to(torch.float32), self._differences(g), bits, None, None, None, _Pass(base, capture))
        return capture

    @property
    def sample_elements(self) -> int:
        """Elements of the largest per-sample tensor of a forward pass (bounds memory chunks)."""
        return self._width

    def batchnorm_parameters(self) -> tuple[list[torch.Tensor], list[torch.Tensor], list[float]]:
        """``(γ, β, eps)`` of every batch norm, in forward order (:attr:`batchnorm_layers`)."""
        found: list[_DigitalOp] = []

        def walk(ops: Sequence[_Op]) -> None:
            for op in ops:
                if isinstance(op, _ResidualOp):
                    walk(op.body)
                elif isinstance(op, _DigitalOp) and op.kind == "batchnorm":
                    found.append(op)

        walk(self._ops)
        found.sort(key=lambda op: op.bn_index)
        return ([op.gamma for op in found if op.gamma is not None], [op.beta for op in found if op.beta is not None],
                [op.eps for op in found])

    def layer_mvm(self, k: int, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """The ideal MVM of analog layer ``k`` (no converters, no noise): shared inputs ``x``
        ``(N, *layer input)`` against per-set weights ``w`` ``(B, out, fan_in)`` (model units)
        → ``(B, N, out, *spatial)``; a conv runs at every output position."""
        op = self._analog_op(k, self._ops)
        if op is None:
            raise EvaluationError(f"no analog layer {k}")
        return self._mvm(x.unsqueeze(0), w, None, op, None)

    def _analog_op(self, k: int, ops: Sequence[_Op]) -> _AnalogOp | None:
        for op in ops:
            if isinstance(op, _AnalogOp) and op.index == k:
                return op
            if isinstance(op, _ResidualOp):
                hit = self._analog_op(k, op.body)
                if hit is not None:
                    return hit
        return None

    def accuracy(
        self, x: torch.Tensor | npt.ArrayLike, y: torch.Tensor | npt.ArrayLike, g_uS: torch.Tensor | npt.ArrayLike,
        **options: Any,
    ) -> torch.Tensor:
        """Top-1 accuracy ``(B,)`` on ``(x, y)`` per conductance set: the mean over samples of
        :meth:`correct` (same keyword arguments: ``bits``, ``g_ref_uS``, …)."""
        return self.correct(x, y, g_uS, **options).to(torch.float64).mean(dim=1)

    def correct(
        self,
        x: torch.Tensor | npt.ArrayLike,
        y: torch.Tensor | npt.ArrayLike,
        g_uS: torch.Tensor | npt.ArrayLike,
        *,
        bits: int | None,
        g_ref_uS: torch.Tensor | npt.ArrayLike | None = None,
        read_noise_t_s: torch.Tensor | npt.ArrayLike | None = None,
        g_prog_uS: torch.Tensor | npt.ArrayLike | None = None,
        generator: torch.Generator | None = None,
        correction: OutputCorrection | None = None,
        ref_index: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Per conductance set and sample, whether the top-1 prediction is right: bool ``(B, N)``
        (what the accuracy intervals of :mod:`harness.evaluation.uncertainty` need); arguments
        as :meth:`logits`.

        ``ref_index``: ``(B,)`` row of ``g_ref_uS``/``g_prog_uS`` (then ``(C, n_devices)``) that
        belongs to each set: e.g. one reference per chip for all its readout times, gathered
        chunk by chunk instead of repeated per set.

        Large batches are evaluated in chunks of conductance sets, and of samples when one
        set's activations exceed :data:`MAX_ACTIVATION_ELEMENTS` (bounded memory; the same
        numbers, except that per-read noise is then drawn in another order).
        """
        ys = y.long() if isinstance(y, torch.Tensor) else torch.from_numpy(np.array(y, dtype=np.int64))
        xs = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.array(x, dtype=np.float32))
        if ys.ndim != 1 or ys.shape[0] != xs.shape[0] or ys.shape[0] == 0:
            raise EvaluationError(f"need one label per input (> 0): {tuple(xs.shape)} inputs, {tuple(ys.shape)} labels")
        g = self._as_batch(g_uS)
        ref = None if g_ref_uS is None else self._as_batch(g_ref_uS)
        prog = None if g_prog_uS is None else self._as_batch(g_prog_uS)
        t = None if read_noise_t_s is None else torch.as_tensor(np.asarray(read_noise_t_s, dtype=np.float64))
        # Chunks of conductance sets, and of samples when one set's activations alone exceed
        # the bound (large conv nets): per-sample results do not depend on the chunking.
        per_set = xs.shape[0] * self._width
        chunk = max(1, MAX_ACTIVATION_ELEMENTS // max(1, per_set))
        samples = xs.shape[0] if per_set <= MAX_ACTIVATION_ELEMENTS else max(1, MAX_ACTIVATION_ELEMENTS // self._width)
        out = []
        for s in range(0, g.shape[0], chunk):
            sl = slice(s, s + chunk)
            if ref_index is not None:
                rows = ref_index[sl]
                r = None if ref is None else ref[rows]
                pr = r if prog is ref else (None if prog is None else prog[rows])
            else:
                r = None if ref is None else (ref if ref.shape[0] == 1 else ref[sl])
                pr = None if prog is None else (prog if prog.shape[0] == 1 else prog[sl])
            hits = []
            for k in range(0, xs.shape[0], samples):
                logits = self.logits(
                    xs[k : k + samples], g[sl], bits=bits, g_ref_uS=r, read_noise_t_s=None if t is None else t[sl],
                    g_prog_uS=pr, generator=generator, correction=None if correction is None else correction.take(sl),
                )
                hits.append(top1_correct(logits, ys[k : k + samples]))
            out.append(torch.cat(hits, dim=1))
        return torch.cat(out)

    # -- internals ------------------------------------------------------------------------------
    def _as_batch(self, g_uS: torch.Tensor | npt.ArrayLike) -> torch.Tensor:
        g = g_uS if isinstance(g_uS, torch.Tensor) else torch.from_numpy(np.array(g_uS, dtype=np.float32))
        g = g.to(torch.float32)
        if g.ndim == 1:
            g = g.unsqueeze(0)
        if g.ndim != 2 or g.shape[1] != self.layout.n_devices:
            raise EvaluationError(
                f"conductances of shape {tuple(g.shape)} do not fit a layout of {self.layout.n_devices} devices; "
                "give (sets, devices) in layout order"
            )
        return g

    def _read_noise_var(
        self,
        g: torch.Tensor,
        g_ref_uS: torch.Tensor | npt.ArrayLike | None,
        t_s: torch.Tensor | npt.ArrayLike,
    ) -> list[torch.Tensor]:
        """Per layer, ``(σ+² + σ−²)/s²`` of each weight ``(B, out, fan_in)`` (Nandakumar 2019; Joshi 2020)."""
        t = np.asarray(t_s, dtype=np.float64).reshape(-1)
        if t.shape[0] != g.shape[0]:
            raise EvaluationError(f"got {t.shape[0]} readout times for {g.shape[0]} conductance sets")
        g_np = g.numpy().astype(np.float64)
        ref = g_np if g_ref_uS is None else self._as_batch(g_ref_uS).numpy().astype(np.float64)
        x_prog = ph.normalized(np.broadcast_to(ref, g_np.shape), self.layout.geometry.g_max_uS)
        sigma = ph.read_noise_std(g_np, x_prog, t[:, None])
        s2 = torch.from_numpy((sigma * sigma).astype(np.float32))
        out = []
        for k, p in enumerate(self.layout.layers):
            vp, vn = self._pairs(s2, k, reference=0.0)
            out.append((vp + vn) * (1.0 / p.scale_uS**2))
        return out

    def _forward(
        self,
        x: torch.Tensor,
        diffs: Sequence[torch.Tensor],
        bits: int | None,
        alpha: torch.Tensor | None,
        noise_var: Sequence[torch.Tensor] | None,
        generator: torch.Generator | None,
        pass_: _Pass | None = None,
    ) -> torch.Tensor:
        """The layer loop over ``diffs`` (``G+ − G−`` in µS per layer, ``(B, out, fan_in)``,
        consumed: scaled in place). The layer scale, the DAC step and the ADC step are folded
        into one factor on these small tensors. Between analog layers the activation is kept *lazily* as
        ``value = h · scale + shift`` (``h``: ADC codes, ``scale``: ADC step × GDC α per set,
        ``shift``: the digital bias), followed by a pending ReLU; the next DAC turns that into
        its own codes in one fused pass (``clamp(h·scale/Δ + shift/Δ)``, round), and the
        converter steps are folded into the small weight tensors instead of the large
        activations. Same numbers as the plain step-by-step order, fewer passes over memory."""
        dac_levels = None if bits is None else 2**bits - 1
        adc_levels = None if bits is None else 2 ** (bits - 1) - 1
        act = _Lazy(x.unsqueeze(0), owned=False)  # (1 | B, N, *features): shared by every set
        with torch.no_grad():
            return self._run(self._ops, act, diffs, dac_levels, adc_levels, alpha, noise_var, generator,
                             pass_ or _Pass(None, None)).value()

    def _run(
        self,
        ops: Sequence[_Op],
        act: _Lazy,
        diffs: Sequence[torch.Tensor],
        dac_levels: int | None,
        adc_levels: int | None,
        alpha: torch.Tensor | None,
        noise_var: Sequence[torch.Tensor] | None,
        generator: torch.Generator | None,
        pass_: _Pass,
    ) -> _Lazy:
        corr = pass_.correction
        for op in ops:
            if isinstance(op, _DigitalOp):
                if op.kind == "batchnorm" and pass_.capture is not None:
                    act = _batchnorm_by_batch(op, act, pass_.capture)
                elif op.kind == "batchnorm" and corr is not None and corr.batchnorm is not None:
                    scale, shift = corr.batchnorm[op.bn_index]
                    act = _digital(dataclasses.replace(op, scale=scale, shift=shift), act)
                else:
                    act = _digital(op, act)
                continue
            if isinstance(op, _ResidualOp):
                x_in = act.value()
                body = self._run(op.body, _Lazy(x_in, owned=False), diffs, dac_levels, adc_levels, alpha,
                                 noise_var, generator, pass_)
                y = body.value()
                act = _Lazy(y.add_(x_in) if tuple(y.shape) == _broadcast(y.shape, x_in.shape) else y + x_in,
                            owned=True)
                continue
            place = self.layout.layers[op.index]
            in_step = 1.0
            if dac_levels is not None:
                in_step = self.ranges.dac(op.name) / dac_levels
                h = act.codes(in_step, dac_levels)
            else:
                h = act.value()
            out_step = 1.0
            if adc_levels is not None:
                out_step = self.ranges.adc(op.name, place.weight_max) / adc_levels
            # y / out_step = codes_in · ((G+ − G−) · in_step / (s · out_step))ᵀ
            w_scale = in_step / out_step
            w = diffs[op.index].mul_(w_scale / place.scale_uS)
            var = None if noise_var is None else noise_var[op.index] * (w_scale * w_scale)
            y = self._mvm(h, w, var, op, generator)
            if adc_levels is not None:
                y.round_().clamp_(-float(adc_levels), float(adc_levels))
            scale: torch.Tensor | float = out_step
            if alpha is not None:
                scale = (alpha[:, op.index] * out_step).reshape(-1, 1)
            shift = op.bias
            if corr is not None and corr.gain is not None:
                scale = corr.gain[op.index] * scale
            if corr is not None and corr.offset is not None and corr.offset[op.index] is not None:
                offset = corr.offset[op.index]
                shift = offset if shift is None else offset + shift  # (B, out): per set
            act = _Lazy(y, scale, shift, owned=True)
        return act

    @staticmethod
    def _mvm(
        h: torch.Tensor,
        w: torch.Tensor,
        var: torch.Tensor | None,
        op: _AnalogOp,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        """``W·x`` for every set: ``h`` ``(1|B, N, *in)``, ``w`` ``(B, out, K)`` → ``(B, N, out, ...)``."""
        b, out_f, _ = w.shape
        if op.kind == "linear":
            y = _batched_matmul(h, w)
            if var is not None:
                std = _batched_matmul(h * h, var).sqrt_()
                y.addcmul_(std, torch.randn(y.shape, generator=generator))
            return y
        geo = op.conv
        if geo is None:  # pragma: no cover - linear handled above
            raise EvaluationError(f"layer {op.name!r} has no conv geometry")
        # The array's MVM at every output position of a conv is a convolution with the dense
        # (out, C·prod(k)) matrix as kernel (im2col order = torch's kernel layout), so it runs
        # as one torch convolution for all sets: a shared input against the sets' kernels
        # stacked along the output channels, per-set inputs as a grouped convolution (one
        # group per set). Depthwise layers use their dense block-diagonal matrix, as the array.
        hb, n, c = h.shape[:3]
        spatial = tuple(h.shape[3:])
        out_size = geo.out_size(spatial)
        if op.kind == "conv1d":  # a conv1d is a conv2d over a 1-row image
            kernel, stride, dilation = (1, geo.kernel[0]), (1, geo.stride[0]), (1, geo.dilation[0])
            pads = ((0, 0), geo.padding[0])
            image = (1, spatial[0])
        else:
            kernel, stride, dilation = geo.kernel, geo.stride, geo.dilation  # type: ignore[assignment]
            pads = geo.padding  # type: ignore[assignment]
            image = spatial  # type: ignore[assignment]
        if hb == 1:
            images, groups = h[0].reshape(n, c, *image), 1
        else:  # (B, N, C, ...) -> (N, B·C, ...): free when h is the transposed view made below
            images, groups = h.transpose(0, 1).reshape(n, hb * c, *image), hb
        padding: tuple[int, int] = (pads[0][0], pads[1][0])
        if any(before != after for before, after in pads):  # asymmetric ('same' with an even kernel)
            images = F.pad(images, (pads[1][0], pads[1][1], pads[0][0], pads[0][1]))
            padding = (0, 0)
        kernels = w.reshape(b * out_f, c, *kernel)
        y = F.conv2d(images, kernels, None, stride, padding, dilation, groups)  # (N, B·out, ...)
        if var is not None:
            std = F.conv2d(images * images, var.reshape(b * out_f, c, *kernel), None, stride, padding, dilation, groups)
            y.addcmul_(std.sqrt_(), torch.randn(y.shape, generator=generator))
        return y.reshape(n, b, out_f, *out_size).transpose(0, 1)


class _Lazy:
    """An activation ``clip(h · scale + shift)`` not yet materialized.

    ``h``: ``(1 | B, N, C, ...)`` (possibly a strided view); ``scale``: a float, or a tensor
    ``(1 | B, 1 | C)`` (per set and/or per channel: ADC step × GDC α, times a folded batch
    norm); ``shift``: per channel ``(C,)`` (bias, batch norm) or None; ``low``/``high``: a
    pending ReLU (``0, None``) or ReLU6 (``0, 6``). With ``owned`` the tensor is this
    activation's alone and is updated in place (fresh large allocations cost more than the
    arithmetic on this CPU-bound path).
    """

    def __init__(
        self, h: torch.Tensor, scale: torch.Tensor | float = 1.0, shift: torch.Tensor | None = None, *, owned: bool
    ) -> None:
        self.h = h
        self.scale = scale
        self.shift = shift
        self.low: float | None = None
        self.high: float | None = None
        self.owned = owned

    @property
    def clipped(self) -> bool:
        return self.low is not None or self.high is not None

    def clip(self, low: float, high: float | None) -> None:
        """Apply ``clamp(·, low, high)`` after the pending one (ReLU, ReLU6)."""
        self.low = low if self.low is None else max(self.low, low)
        if high is not None:
            self.high = high if self.high is None else min(self.high, high)

    def affine(self, scale: torch.Tensor, shift: torch.Tensor) -> None:
        """Compose a per-channel ``y = x · scale + shift`` (batch norm); no clip may be pending."""
        old = self.scale if isinstance(self.scale, torch.Tensor) else torch.tensor([[self.scale]])
        self.scale = old * (scale if scale.ndim == 2 else scale.reshape(1, -1))  # (C,) or per set (B, C)
        self.shift = shift if self.shift is None else self.shift * scale + shift

    def _affine(self, factor: float) -> torch.Tensor:
        """``h · scale · factor + shift · factor``, in place when owned (one pass)."""
        h = self.h
        scale = self.scale
        tail = (1,) * (h.ndim - 3)
        if isinstance(scale, torch.Tensor):
            scale = (scale * factor).reshape((scale.shape[0], 1, scale.shape[1]) + tail)
            full = _broadcast(h.shape, scale.shape)
        else:
            scale = scale * factor
            full = tuple(h.shape)
        inplace = self.owned and full == tuple(h.shape)
        if self.shift is None:
            if isinstance(scale, float) and scale == 1.0:
                return h if self.owned else h.clone()
            return h.mul_(scale) if inplace else h * scale
        shift = self.shift * factor
        # per channel (C,) or per set and channel (B, C)
        shift = shift.reshape((-1,) + tail) if shift.ndim == 1 else shift.reshape((shift.shape[0], 1, -1) + tail)
        if isinstance(scale, torch.Tensor):
            return torch.addcmul(shift, h, scale, out=h) if inplace else torch.addcmul(shift, h, scale)
        return torch.add(shift, h, alpha=scale, out=h) if inplace else torch.add(shift, h, alpha=scale)

    def value(self) -> torch.Tensor:
        """The activation in model units (a tensor the caller may change)."""
        out = self._affine(1.0)
        return out.clamp_(self.low, self.high) if self.clipped else out

    def codes(self, step: float, levels: int) -> torch.Tensor:
        """DAC codes ``round(clamp(value / step, ±levels))`` (a pending clip folded into the clamp)."""
        out = self._affine(1.0 / step)
        low = -float(levels) if self.low is None else max(-float(levels), self.low / step)
        high = float(levels) if self.high is None else min(float(levels), self.high / step)
        return out.clamp_(low, high).round_()


def _digital(op: _DigitalOp, act: _Lazy) -> _Lazy:
    """Apply one digital layer to ``(1 | B, N, *sample)`` activations (float32)."""
    if op.kind == "relu":
        act.clip(0.0, None)
        return act
    if op.kind == "relu6":
        act.clip(0.0, 6.0)
        return act
    if op.kind == "batchnorm" and op.scale is not None and op.shift is not None:
        if act.clipped:
            act = _Lazy(act.value(), owned=True)
        act.affine(op.scale, op.shift)
        return act
    value = act.value()
    if op.kind == "flatten":
        return _Lazy(value.flatten(op.dim), owned=True)
    if op.kind == "unflatten" and op.sizes is not None:
        return _Lazy(value.unflatten(op.dim, op.sizes), owned=True)
    lead = value.shape[:3]
    if op.kind == "global_avgpool":
        dims = tuple(range(3, value.ndim))
        return _Lazy(value.mean(dim=dims, keepdim=True), owned=True)
    if op.pool is None:  # pragma: no cover - compiled ops always carry their parameters
        raise EvaluationError(f"digital layer {op.kind!r} has no parameters")
    kernel, stride, padding = op.pool
    images = value.reshape(-1, *value.shape[2:])
    pool = F.avg_pool1d if op.kind == "avgpool1d" else F.avg_pool2d
    pooled = pool(images, kernel, stride, padding)  # type: ignore[operator]
    return _Lazy(pooled.reshape(*lead[:2], *pooled.shape[1:]), owned=True)


def _batchnorm_by_batch(op: _DigitalOp, act: _Lazy, capture: list[tuple[torch.Tensor, torch.Tensor]]) -> _Lazy:
    """Train-mode batch norm: per set, normalize by the batch's own mean and biased
    variance over samples and positions (``(1 | B, N, C, ...)``), and append them to ``capture``."""
    if op.gamma is None or op.beta is None:  # pragma: no cover - compiled batch norms carry them
        raise EvaluationError("batch norm without parameters")
    value = act.value()
    dims = (1,) + tuple(range(3, value.ndim))
    var, mean = torch.var_mean(value, dim=dims, correction=0)
    capture.append((mean, var))
    scale = op.gamma / torch.sqrt(var + op.eps)
    out = _Lazy(value, owned=True)
    out.affine(scale, op.beta - mean * scale)
    return out


def _sample_elements(step: PlanStep) -> int:
    """Elements per sample of a layer's output, or of its im2col matrix for a conv."""
    out = int(np.prod(step.out_shape))
    if step.spec["type"] in ("conv1d", "conv2d"):
        geo = conv_geometry(step.spec)
        fan_in = step.in_shape[0] * int(np.prod(geo.kernel))
        out = max(out, int(np.prod(step.out_shape[1:])) * fan_in)
    return out


def top1_correct(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``logits.argmax(-1) == y`` (ties go to the first maximum, as ``argmax``), computed
    from one ``amax`` pass, which is several times faster than ``argmax`` over a short
    class dimension. ``logits`` ``(..., N, C)``, ``y`` ``(N,)`` → bool ``(..., N)``."""
    top = logits.amax(dim=-1, keepdim=True)
    idx = y.reshape((1,) * (logits.ndim - 2) + (-1, 1)).expand(logits.shape[:-1] + (1,))
    hit = logits.gather(-1, idx) == top
    earlier = torch.arange(logits.shape[-1]).reshape((1,) * (logits.ndim - 1) + (-1,)) < y.reshape(-1, 1)
    tie_before = ((logits == top) & earlier).any(dim=-1)
    return hit.squeeze(-1) & ~tie_before


def _batched_matmul(h: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``h @ wᵀ`` per set: ``h`` ``(1|B, M, K)``, ``w`` ``(B, out, K)`` → ``(B, M, out)``.

    A shared input (``h.shape[0] == 1``) becomes one GEMM against all sets' weights at once;
    its result is a strided ``(B, M, out)`` view of an ``(M, B·out)`` matrix.
    """
    b, out_f, k = w.shape
    if h.shape[0] == 1 and b > 1:
        m = h.shape[1]
        y = h[0] @ w.reshape(b * out_f, k).T  # (M, B·out)
        return y.reshape(m, b, out_f).transpose(0, 1)
    return torch.bmm(h.expand(b, -1, -1) if h.shape[0] == 1 else h, w.transpose(1, 2))


def _pair(value: Any) -> tuple[int, int]:
    if isinstance(value, int | np.integer):
        return (int(value), int(value))
    return (int(value[0]), int(value[1]))


def _fmt_layers(layers: Sequence[tuple[str, int, int]]) -> str:
    return "[" + ", ".join(f"{n} {o}x{f}" for n, o, f in layers) + "]"


__all__ = [
    "HEURISTIC_RANGE_PERCENTILE",
    "MAX_BITS",
    "MIN_BITS",
    "CimSimulator",
    "ConverterRanges",
    "OutputCorrection",
    "calibrate_ranges",
    "check_bits",
    "converter_ranges",
    "percentile_range",
    "top1_correct",
]


def _broadcast(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    """The broadcast shape of two shapes (numpy's rule, which is torch's). Not
    ``torch.broadcast_shapes``: its first call imports torch's symbolic-shape machinery and
    sympy, 0.4 s of an evaluation's start."""
    return tuple(np.broadcast_shapes(tuple(a), tuple(b)))
