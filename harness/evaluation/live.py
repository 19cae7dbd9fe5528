"""Readouts from live chips: program the model and read its layout at the requested times.

:func:`read_chip_direct` makes the calls the session runner makes (program the model, then
read the layout's cells at the requested times on the chip's clock) and keeps the readouts in
memory; :func:`read_live_chip` runs :func:`harness.sessions.runner.run_session` into a
recording (temporary, or kept when asked) and reads it back with
:func:`harness.evaluation.readouts.readouts_from_recording`. Both give the same readouts
(``tests/test_sweep.py``), so a recording and the live virtual chip that made it (same URI,
model, programming parameters and times) evaluate identically. ``virtual?seed=S`` with N runs
means N simulated chips of seeds ``S, S+1, …, S+N−1`` (:func:`virtual_chip_uris`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import numpy as np

from harness.chip.protocol import Chip
from harness.errors import EvaluationError
from harness.evaluation.readouts import ChipReadouts, readouts_from_recording
from harness.evaluation.result import EvaluationProgress, ProgressCallback
from harness.evaluation.settings import normalize_times
from harness.models.format import Model
from harness.programming.write_verify import ProgrammingParams
from harness.recording import open_recording
from harness.units import format_duration


def virtual_chip_uris(uri: str, runs: int) -> list[str]:
    """``runs`` URIs of consecutive seeds from a ``virtual`` URI (the URI itself first).

    Raises:
        ConfigError: not a parseable chip URI. EvaluationError: a non-integer seed.
    """
    from harness.chip.registry import parse_uri

    parsed = parse_uri(uri)
    params = dict(parsed.params)
    try:
        seed0 = int(params.get("seed", "0"), 10)
    except ValueError as exc:
        raise EvaluationError(f"seed {params.get('seed')!r} in chip URI {uri!r} is not an integer") from exc
    out = [uri]
    for i in range(1, runs):
        params["seed"] = str(seed0 + i)
        out.append(f"{parsed.scheme}?{urlencode(params)}")
    return out


def _session_spec(model_path: Path, times_s: Sequence[float], params: ProgrammingParams) -> Any:
    """The session a live evaluation runs: program the model, read its layout at ``times_s``."""
    from harness.sessions.schedule import parse_session

    lines = [
        "[session]",
        'name = "evaluate"',
        'description = "harness evaluate: program the model, read its layout at the evaluation times"',
        "[program]",
        f"model = {json.dumps(str(model_path.resolve()))}",
        "[program.params]",
        *(f"{k} = {v!r}" for k, v in dataclasses.asdict(params).items()),
        "[readout]",
        'cells = "layout"',
        'encoding = "float64"',  # exact for any backend's values; nothing is stored long-term
        "[schedule]",
        'kind = "list"',
        "times_s = [" + ", ".join(repr(float(t)) for t in times_s) + "]",
    ]
    return parse_session("\n".join(lines) + "\n", source="<harness evaluate>")


def read_chip_direct(
    chip: Chip,
    model: Model,
    times_s: Sequence[float],
    params: ProgrammingParams | None = None,
    *,
    phase_s: dict[str, float] | None = None,
) -> ChipReadouts:
    """Program ``model`` onto ``chip`` and read its layout at ``times_s`` after programming,
    in memory.

    The same calls, in the same order, as :func:`read_live_chip` through the session runner
    (``programming.program_model``, then per time ``wait_until`` and one ``read`` of the
    layout's cells; GDC reference = the final verify read), without writing and re-reading a
    recording: the readouts are bit-identical to that path (``tests/test_sweep.py``). They
    are kept as float32 (half the memory of the chip's float64 µS; the CiM simulator
    computes in float32, so its results are the same). ``phase_s``: adds the wall seconds of
    ``"program"`` and ``"read"`` to these keys.
    """
    from harness.programming.write_verify import program_model

    times = normalize_times(times_s)
    t0 = time.perf_counter()
    layout, result = program_model(chip, model, params or ProgrammingParams())
    t1 = time.perf_counter()
    g = np.empty((len(times), layout.n_devices), dtype=np.float32)
    t_read = np.empty(len(times))
    for j, t in enumerate(times):
        chip.wait_until(result.t_end_s + t)
        t_read[j] = chip.now() - result.t_end_s
        g[j] = chip.read(layout.cells)
    if phase_s is not None:
        phase_s["program"] = phase_s.get("program", 0.0) + (t1 - t0)
        phase_s["read"] = phase_s.get("read", 0.0) + (time.perf_counter() - t1)
    return ChipReadouts(
        label=chip.uri, layout=layout, g_ref_uS=np.asarray(result.final_uS, dtype=np.float64), times_s=t_read, g_uS=g
    )


def read_live_chip(
    chip: Chip,
    model: Model,
    times_s: Sequence[float],
    *,
    params: ProgrammingParams | None = None,
    workdir: str | Path | None = None,
    progress: ProgressCallback | None = None,
    run_index: int = 0,
    n_runs: int = 1,
    out: str | Path | None = None,
) -> ChipReadouts:
    """Program ``model`` onto ``chip`` and read it at ``times_s`` through the session runner.

    The session is recorded into ``out`` (kept; it must not exist) or else into a temporary
    file in ``workdir`` (deleted afterwards) and read back with
    :func:`readouts_from_recording`, so the readouts are exactly those a ``harness session
    run`` of the same chip, model, parameters and times records.

    Raises:
        HarnessError: from programming, the chip, or the recording.
    """
    from harness.sessions.runner import SessionProgress, run_session

    times = normalize_times(times_s)
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="harness-evaluate-"))
        model_path = model.path
        if model_path is None:
            from harness.models.format import save_model

            model_path = Path(workdir) / f"model-{run_index}.h5"
            save_model(model, model_path)
        spec = _session_spec(Path(model_path), times, params or ProgrammingParams())
        keep = out is not None
        out = Path(out) if out is not None else Path(workdir) / f"chip-{run_index}.h5"

        def on_session(p: SessionProgress) -> None:
            if progress and p.phase == "readout":
                progress(EvaluationProgress("readout", run_index, n_runs, f"{chip.uri} t={format_duration(p.t_s or 0)}"))

        try:
            run_session(spec, chip, out, overwrite=not keep, progress=on_session, save_chip_state=False)
            with open_recording(out) as rec:
                return readouts_from_recording(rec, model, times, match="exact", label=chip.uri)
        finally:
            if not keep:
                out.unlink(missing_ok=True)


def read_chips(
    chip_uri: str,
    model: Model,
    times_s: Sequence[float],
    runs: int,
    *,
    params: ProgrammingParams | None = None,
    progress: ProgressCallback | None = None,
) -> list[ChipReadouts]:
    """Open, program and read ``runs`` chips (virtual: consecutive seeds; else the one chip),
    in memory (:func:`read_chip_direct`).

    Raises:
        EvaluationError: ``runs`` out of range. HarnessError: from the chips.
    """
    from harness.chip.registry import open_chip, parse_uri

    scheme = parse_uri(chip_uri).scheme
    uris = virtual_chip_uris(chip_uri, runs) if scheme == "virtual" else [chip_uri]
    out = []
    for i, uri in enumerate(uris):
        with contextlib.closing(open_chip(uri)) as chip:
            out.append(read_chip_direct(chip, model, times_s, params))
        if progress:
            progress(EvaluationProgress("chip", i + 1, len(uris), uri))
    return out


__all__ = ["read_chip_direct", "read_chips", "read_live_chip", "virtual_chip_uris"]
