"""Refresh sessions at run time: the monitor after each read, the rule, the re-programming.

A session with a ``[refresh]`` table (:mod:`harness.sessions.refresh_spec`) computes, after
every read, the accuracy of a small labelled monitor set from the conductances just read
(an :class:`AccuracyMonitor`, built by the evaluation layer and injected: this layer sits
below it), and after the last read of a scheduled time checks its rule:

* ``below_pp``: the monitor has lost more than ``below_pp`` percentage points against its
  value at the first read of the current programming epoch (``reference = "epoch"``, the
  default) or of the session (``"session"``: the freshly programmed chip's accuracy, kept
  across refreshes), counted in whole examples, so the decision is exact;
* ``every``: the current epoch is at least ``every`` old at this read.

When it fires (and reads remain), the layout's cells are re-programmed with write-verify on
the chip's clock, as at the start (the virtual chip restarts the drift of every pulsed
device), and the refresh is stored as a new programming epoch
(:mod:`harness.recording.epochs`) that the next readout commits. Everything the rule needs
is in the recording (epochs, monitor accuracies), so a resumed session takes the same
decisions and, on the virtual chip, re-programs with the same draws.

Re-programming on a predicted accuracy loss is standard practice for drifting analog weights;
the drift it answers is characterised by Joshi et al., "Accurate deep neural network inference
using computational phase-change memory", Nat. Commun. 11, 2473 (2020). The rule, the
training-split monitor and its defaults are this harness's choices.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from harness.errors import ConfigError
from harness.sessions.refresh_spec import RULE_CODES, RefreshSpec

if TYPE_CHECKING:
    from harness.chip.protocol import Chip
    from harness.models.format import Model
    from harness.programming.mapping import Layout
    from harness.programming.write_verify import ProgrammingParams, ProgrammingResult
    from harness.recording import Recording, RecordingWriter


@runtime_checkable
class AccuracyMonitor(Protocol):
    """Counts the monitor examples a set of conductances classifies right.

    ``examples``: the size of the monitor set. ``correct(g_uS, g_ref_uS)``: ``g_uS`` the
    layout's devices in layout order (µS), ``g_ref_uS`` their conductances right after the
    current epoch's programming (the GDC reference); returns a count in ``0..examples``.
    """

    examples: int

    def correct(self, g_uS: npt.NDArray[np.float64], g_ref_uS: npt.NDArray[np.float64]) -> int: ...


#: Builds the monitor of a model programmed with a layout (``harness.evaluation.monitor.build_monitor``).
MonitorFactory = Callable[["Model", "Layout", RefreshSpec], AccuracyMonitor]


@dataclass
class EpochState:
    """The current programming epoch: its index, when its programming ended (s since the end
    of the first programming), its GDC reference and the monitor count at its first read."""

    epoch: int
    t_origin_s: float
    g_ref_uS: npt.NDArray[np.float64]
    digest: int = 0
    reference: int | None = None


def drop_pp(spec: RefreshSpec, reference: int, correct: int) -> float:
    """The monitor's loss in percentage points against its reference read (the epoch's or the session's first)."""
    return (reference - correct) * 100.0 / spec.monitor_examples


def should_refresh(spec: RefreshSpec, state: EpochState, t_s: float, correct: int) -> bool:
    """The rule, after a read at ``t_s`` (s since the first programming) that found ``correct``.

    ``below_pp`` compares whole examples: it fires when ``(reference - correct) · 100 >
    below_pp · examples``, never through a rounding of the accuracy."""
    if spec.below_pp is not None:
        ref = correct if state.reference is None else state.reference
        return (ref - correct) * 100.0 > spec.below_pp * spec.monitor_examples
    return t_s - state.t_origin_s >= float(spec.every_s or 0.0)


class RefreshLoop:
    """The refresh part of a running session: monitor columns for each readout, and the
    re-programming when the rule fires. Made by :func:`start_loop` or :func:`resume_loop`."""

    def __init__(
        self, spec: RefreshSpec, chip: Chip, writer: RecordingWriter, layout: Layout, params: ProgrammingParams,
        monitor: AccuracyMonitor, state: EpochState, t_origin: float, restorable: bool,
    ) -> None:
        if monitor.examples != spec.monitor_examples:
            raise ConfigError(f"the monitor has {monitor.examples} examples; the session asks for {spec.monitor_examples}")
        self.spec, self.chip, self.writer, self.layout, self.params = spec, chip, writer, layout, params
        self.monitor, self.state, self.t_origin, self.restorable = monitor, state, t_origin, restorable
        self.refreshes = 0
        pos = np.searchsorted(writer.cells, layout.cells, sorter=np.argsort(writer.cells))
        self._pos = np.argsort(writer.cells)[np.minimum(pos, writer.cells.size - 1)]
        if not np.array_equal(writer.cells[self._pos], layout.cells):
            raise ConfigError("a refresh session must read every device of the model's layout ([readout] cells)")
        self._last = 0
        #: time of the last committed readout (a resumed loop checks its rule first)
        self.t_last_s = 0.0

    def columns(self, data: np.ndarray, codes: bool) -> dict[str, Any]:
        """The epoch columns of the readout whose values (µS, or ADC ``codes``) are ``data``."""
        from harness.recording.epochs import DIGEST_COLUMN, EPOCH_COLUMN, MONITOR_COLUMN

        raw = data[self._pos]
        g = self.writer.geometry.codes_to_uS(raw) if codes else np.asarray(raw, dtype=np.float64)
        self._last = int(self.monitor.correct(g, self.state.g_ref_uS))
        if self.state.reference is None:
            self.state.reference = self._last
        return {EPOCH_COLUMN: self.state.epoch, MONITOR_COLUMN: self._last / self.spec.monitor_examples,
                DIGEST_COLUMN: self.state.digest}

    def after_read(self, index: int, t_s: float, on_programming: Callable[[Any], None] | None = None) -> bool:
        """Check the rule after readout ``index`` (at ``t_s``); on firing, re-program and
        store the new epoch. Returns whether it fired."""
        from harness.programming.write_verify import program_layout

        if not should_refresh(self.spec, self.state, t_s, self._last):
            return False
        result: ProgrammingResult = program_layout(self.chip, self.layout, self.params, on_programming)
        epoch = self.state.epoch + 1
        full = self.chip.snapshot() if self.restorable else None  # type: ignore[attr-defined]
        digest = self.writer.record_refresh(
            epoch, result, after_readout=index, rule=RULE_CODES[self.spec.rule], chip_state=full,
        )
        kept = self.state.reference if self.spec.reference == "session" else None
        self.state = EpochState(epoch, result.t_end_s - self.t_origin, np.asarray(result.final_uS, dtype=np.float64),
                                digest, kept)
        self.refreshes += 1
        return True


def start_loop(
    spec: RefreshSpec, chip: Chip, writer: RecordingWriter, layout: Layout, params: ProgrammingParams,
    monitor: AccuracyMonitor, first: ProgrammingResult, restorable: bool,
) -> RefreshLoop:
    """The loop of a new session, in epoch 0 (programmed by ``first``)."""
    state = EpochState(0, 0.0, np.asarray(first.final_uS, dtype=np.float64))
    return RefreshLoop(spec, chip, writer, layout, params, monitor, state, first.t_end_s, restorable)


@dataclass(frozen=True)
class ResumePoint:
    """Where a refresh session stands after its committed readouts (read by
    :func:`resume_point` while planning a resume, before the file is reopened for writing)."""

    state: EpochState
    last_correct: int
    t_last_s: float


def resume_point(rec: Recording, spec: RefreshSpec) -> ResumePoint:
    """The epoch of ``rec``'s last committed readout, with that epoch's reference count read
    back from the recording: a resumed loop takes the same decisions as if never interrupted."""
    n = rec.n_readouts
    epoch = int(rec.readout_epochs[-1]) if n else 0
    ep = rec.epochs[epoch]
    digest, reference, last = 0, None, 0
    acc = rec.monitor_accuracy
    if n and acc is not None:
        from harness.recording.epochs import DIGEST_COLUMN

        digest = int(rec.extra(DIGEST_COLUMN)[-1])
        first = 0 if spec.reference == "session" else int(np.flatnonzero(rec.readout_epochs == epoch)[0])
        reference = int(round(float(acc[first]) * spec.monitor_examples))
        last = int(round(float(acc[-1]) * spec.monitor_examples))
    state = EpochState(epoch, ep.t_origin_s, rec.epoch_final_uS(epoch), digest, reference)
    return ResumePoint(state, last, float(rec.times_s[-1]) if n else 0.0)


def resume_loop(
    point: ResumePoint, spec: RefreshSpec, chip: Chip, writer: RecordingWriter, layout: Layout,
    params: ProgrammingParams, monitor: AccuracyMonitor, t_origin: float, restorable: bool,
) -> RefreshLoop:
    """The loop of a resumed session at ``point``. If the last committed readout fired a
    refresh that was not committed, :func:`harness.sessions.runner.record_readouts` takes it again."""
    state = EpochState(**{k: getattr(point.state, k) for k in point.state.__dataclass_fields__})
    loop = RefreshLoop(spec, chip, writer, layout, params, monitor, state, t_origin, restorable)
    loop._last = point.last_correct
    loop.t_last_s = point.t_last_s
    return loop


__all__ = [
    "AccuracyMonitor", "EpochState", "MonitorFactory", "RefreshLoop", "ResumePoint", "drop_pp", "resume_loop",
    "resume_point", "should_refresh", "start_loop",
]
