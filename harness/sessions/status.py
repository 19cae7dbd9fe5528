"""The state of a session recording, for ``harness session status``: readouts done and
pending, last time, next due, whether it needs repair, conductance statistics.

Reads the recording only; imports neither the programming nor the physics stack (nor
torch), so the status command starts fast.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from harness.errors import HarnessError, RecordingError
from harness.units import YEAR_S
from harness.recording import Recording, open_recording, partial_paths


def session_status(path: str | Path) -> dict[str, Any]:
    """State of a recording: readouts done/pending, last time, next due, conductance stats.

    Raises:
        RecordingError: missing, foreign or damaged file.
    """
    p = Path(path)
    if not p.exists():
        leftovers = partial_paths(p)
        if leftovers:
            raise RecordingError(
                f"no recording at {p}, only an unfinished header ({leftovers[0].name}): the session was interrupted "
                "before its recording was complete enough to resume; run it again"
            )
    with open_recording(p) as rec:
        return _status(rec)


def _status(rec: Recording) -> dict[str, Any]:
    n = rec.n_readouts
    times = rec.times_s
    sched = rec.scheduled_times_s
    total = rec.n_scheduled
    if rec.writer_running:
        state = "running"
    elif total is None:
        state = "no session"  # a program-only recording: nothing was scheduled
    elif n >= total:
        state = "complete"
    else:
        state = "interrupted"
    prog = rec.programming
    k = rec.readout_repeats
    next_due = float(sched[n // k]) if sched is not None and n // k < sched.size else None
    out: dict[str, Any] = {
        "path": str(rec.path),
        "session": rec.session_name,
        "state": state,
        "chip_uri": rec.provenance.get("chip_uri"),
        "chip_identity": rec.provenance.get("chip_identity"),
        "model": rec.provenance.get("model_name", rec.provenance.get("model")),
        "devices": rec.layout.n_devices,
        "readout_cells": rec.n_cells,
        "readouts_done": n,
        "readouts_scheduled": total,
        "readouts_pending": None if total is None else max(total - n, 0),
        "last_t_s": float(times[-1]) if n else None,
        "next_due_s": next_due,
        # Only a chip on wall-clock time has a wall-clock due time; a simulated clock's
        # schedule has no meaning in wall time (it would print a time in the past).
        "simulated_clock": _simulated_clock(rec.provenance.get("chip_uri")),
        "next_due_unix_s": (
            None if next_due is None or _simulated_clock(rec.provenance.get("chip_uri")) else prog.t_end_unix_s + next_due
        ),
        "programming": {
            "converged_fraction": prog.converged_fraction,
            "error_std_uS": prog.error_std_uS,
            "t_end_unix_s": prog.t_end_unix_s,
        },
        "writer_pid": rec.writer_info[0] if state == "running" else None,
        # left "open for write" by a writer killed after its last commit: 'session resume'
        # rewrites it closed (plain HDF5 tools refuse it until then)
        "needs_repair": rec.open_for_write and state != "running",
        "resumes": len(rec.resumes),
        "chip_accepted_despite_check": sum(1 for r in rec.resumes if r.get("accepted_despite")),
    }
    if rec.has_epochs:
        out["refresh"] = refresh_summary(rec)
    if n:
        first, last = rec.readout(0), rec.readout(n - 1)
        on = programmed_mask(rec)
        out["conductance"] = {
            "first": _stats(first, float(times[0])),
            "last": _stats(last, float(times[-1])),
            "programmed_cells": int(on.sum()),
            "mean_ratio_last_first": (
                float(last[on].mean() / first[on].mean()) if on.any() and first[on].mean() > 0 else None
            ),
        }
    return out


def refresh_summary(rec: Recording) -> dict[str, Any]:
    """A refresh session's epochs: how many, when, per simulated year (over the span of its
    committed readouts), and the monitor accuracy's range (0..1)."""
    spec = rec.session
    acc = rec.monitor_accuracy
    epochs = rec.epochs
    done = acc is not None and acc.size > 0
    span_y = float(rec.times_s[-1]) / YEAR_S if rec.n_readouts else 0.0
    return {
        "refreshes_per_year": (len(epochs) - 1) / span_y if span_y > 0 else None,
        "span_s": float(rec.times_s[-1]) if rec.n_readouts else 0.0,
        "rule": spec.refresh.describe() if spec is not None and spec.refresh is not None else None,
        "epochs": len(epochs),
        "refreshes": len(epochs) - 1,
        "refresh_times_s": [e.t_origin_s for e in epochs[1:]],
        "pulses": [e.pulses for e in epochs],
        "monitor_min": float(np.nanmin(acc)) if done else None,
        "monitor_max": float(np.nanmax(acc)) if done else None,
        "monitor_last": float(acc[-1]) if done else None,
    }


def _simulated_clock(chip_uri: str | None) -> bool:
    """Whether the recorded chip ran on a simulated clock (a virtual chip without clock=wall)."""
    from harness.chip.registry import parse_uri

    try:
        parsed = parse_uri(chip_uri or "")
    except HarnessError:
        return False
    return parsed.scheme == "virtual" and parsed.params.get("clock", "sim") != "wall"


def programmed_mask(rec: Recording) -> npt.NDArray[np.bool_]:
    """Readout positions whose target is above the RESET level."""
    lay = rec.layout
    target = np.full(rec.geometry.n_cells, math.nan)
    target[lay.cells] = lay.target_uS
    t = target[rec.readout_cells]
    return np.nan_to_num(t, nan=0.0) > RESET_LEVEL_US


#: Targets at or below this (µS) are the RESET partners of differential pairs.
RESET_LEVEL_US = 0.5


def _stats(g: npt.NDArray[np.float64], t_s: float) -> dict[str, float]:
    return {"t_s": t_s, "mean_uS": float(g.mean()), "std_uS": float(g.std()), "min_uS": float(g.min()),
            "max_uS": float(g.max())}


__all__ = ["RESET_LEVEL_US", "programmed_mask", "refresh_summary", "session_status"]
