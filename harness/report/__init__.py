"""``harness report``: one self-contained HTML page for recordings, evaluations and sweeps.

Inputs are recognized by what they are: a recording (HDF5 of the recording format), a sweep
results folder (``harness sweep --out``), or a JSON object written by ``harness evaluate
--json`` or ``harness accel --json``. Each becomes one section with its figures and
tables; provenance (versions, chip URIs, seeds, command lines) closes the page. See
:mod:`harness.report.html` for why the file needs no network.
"""

from __future__ import annotations

import datetime as _dt
import json
import platform
import sys
from collections.abc import Sequence
from pathlib import Path

from harness import __version__
from harness.errors import ConfigError
from harness.report.html import Section, render_document

#: Reports bigger than this are refused rather than written (plots of any input stay well below).
MAX_REPORT_BYTES = 200 * 2**20


def input_section(path: Path) -> Section:
    """The section for one input, by its kind.

    Raises:
        ConfigError: missing or unrecognized input. RecordingError: a damaged recording.
    """
    if not path.exists():
        raise ConfigError(f"report input {str(path)!r} does not exist")
    if path.is_dir():
        if (path / "_sweep.json").is_file():
            from harness.report.results_section import sweep_section

            return sweep_section(path)
        raise ConfigError(f"{str(path)!r} is a folder but not a sweep results folder (no _sweep.json)")
    with open(path, "rb") as f:
        head = f.read(8)
    if head == b"\x89HDF\r\n\x1a\n":
        from harness.report.recording_section import recording_section

        return recording_section(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(
            f"{str(path)!r} is neither a recording (HDF5), a sweep folder nor a JSON result ({type(exc).__name__})"
        ) from exc
    if not isinstance(doc, dict):
        raise ConfigError(f"{str(path)!r}: expected a JSON object from harness evaluate/accel --json")
    if "compensate" in doc and "methods" in doc:  # harness evaluate --compensate --json
        from harness.report.compensation_section import compensation_section

        return compensation_section(path, doc)
    if ("accuracy" in doc and "bits" in doc) or ("models" in doc and "differences" in doc):
        from harness.report.results_section import evaluation_section

        return evaluation_section(path, doc)
    if "results" in doc and "placement" in doc:
        from harness.report.accel_section import accel_section

        return accel_section(path, doc)
    raise ConfigError(f"{str(path)!r}: a JSON object, but not from harness evaluate --json or harness accel --json")


def build_report(inputs: Sequence[Path], *, command: Sequence[str] = ()) -> str:
    """The HTML text of the report of ``inputs`` (in the order given).

    Raises:
        ConfigError / RecordingError: an input that cannot be reported.
    """
    if not inputs:
        raise ConfigError("give at least one input: a recording, a sweep folder or an evaluate/accel JSON")
    sections = [input_section(Path(p)) for p in inputs]
    footer = {
        "harness": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "created (UTC)": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(command) if command else "(library call)",
        "inputs": [str(p) for p in inputs],
    }
    names = ", ".join(Path(p).name for p in inputs)
    return render_document("PCM chip test harness report", names, sections, footer)
