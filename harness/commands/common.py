"""What every CLI command shares: one-line errors, JSON-only stdout, progress on stderr,
output-path checks, and consoles that do not hard-wrap piped output.

Conventions (see docs/architecture.md, "Conventions for new commands"):

* Import only light modules at the top of a command module (typer, pathlib, this module,
  ``harness.errors``, ``harness.units``); import torch, matplotlib, h5py, numpy and the
  library modules that pull them *inside* the command function. ``harness --help`` and
  ``harness session status`` must stay under 0.5 s (``benchmarks/startup.py``).
* Check every argument and every output path (:func:`check_output`) before touching a chip.
* Durations are shown with :func:`harness.units.format_duration`, nowhere else.
* Progress goes through :func:`progress_bar`: always on stderr, a rich bar on a terminal,
  otherwise plain lines (integer counts of a named unit, elapsed time, ETA), at most one a second.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import typer
from rich.console import Console, ConsoleDimensions

from harness.commands import interrupts
from harness.errors import ConfigError, HarnessError
from harness.units import format_duration

#: Width used when output is not a terminal: wide enough that nothing is hard-wrapped.
PIPE_WIDTH = 4096

#: Where outputs go when no path is given. It is created on demand (also for an explicit
#: ``--out runs/x.h5``); any other missing directory is an error. Git-ignored.
DEFAULT_RUNS_DIR = Path("runs")

#: Suffixes of the outputs the harness writes.
RECORDING_SUFFIXES: tuple[str, ...] = (".h5", ".hdf5")
PLOT_SUFFIXES: tuple[str, ...] = (".png", ".svg", ".pdf")


class HarnessConsole(Console):
    """A rich Console that uses the terminal width on a terminal and never hard-wraps
    when its stream is a pipe or a file (logs, ``> out.txt``, CliRunner)."""

    @property
    def size(self) -> ConsoleDimensions:  # type: ignore[override]
        dims = Console.size.fget(self)  # type: ignore[attr-defined]
        if self._width is None and not self.is_terminal:
            return ConsoleDimensions(PIPE_WIDTH, dims.height)
        return dims  # type: ignore[no-any-return]

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        Console.size.fset(self, new_size)  # type: ignore[attr-defined]


#: Human output (tables, messages, progress) goes to stderr when --json is given,
#: so stdout carries only the JSON object.
err_console = HarnessConsole(stderr=True)


def console_for(json_mode: bool) -> Console:
    """Console for human-readable output: stderr in --json mode, stdout otherwise."""
    return err_console if json_mode else HarnessConsole()


def fail(message: str, code: int = 1) -> None:
    """Print one line ``error: message`` to stderr and exit non-zero."""
    sys.stderr.write(f"error: {' '.join(message.split())}\n")
    raise typer.Exit(code)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn HarnessError (and OS errors on user-given paths) into one line and exit 1.

    Ctrl-C (:mod:`harness.commands.interrupts`): a ``KeyboardInterrupt`` in the block is
    ``error: interrupted`` and exit 130; the block is the command's work, so when it ends
    normally a later SIGINT no longer raises, and one that arrived but was swallowed on the
    way (or arrives after) gives exit 130 with a line saying the output is complete."""
    interrupts.arm()
    try:
        yield
    except HarnessError as exc:
        fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    except OSError as exc:
        fail(f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc))
    except KeyboardInterrupt:
        interrupts.disarm()
        fail("interrupted", code=interrupts.EXIT_INTERRUPTED)
    interrupts.disarm()
    interrupts.complete_but_interrupted()


def _json_default(obj: Any) -> Any:
    # numpy is not imported here (start-up time): anything with .item()/.tolist() will do.
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def emit_json(obj: Any) -> None:
    """Write ``obj`` as one JSON object on stdout (the only thing stdout carries with --json)."""
    sys.stdout.write(json.dumps(obj, default=_json_default, sort_keys=False) + "\n")
    sys.stdout.flush()


def check_programmable_uri(uri: str, *, option: str = "--chip") -> None:
    """Refuse, before any output, a chip URI that cannot be programmed (``replay:`` answers
    reads from a recording and refuses every pulse)."""
    if uri.split(":", 1)[0].strip().lower() == "replay":
        raise ConfigError(
            f"{option} {uri}: a replay chip is read-only and cannot be programmed; "
            "give a virtual or real chip (a recording is evaluated with 'evaluate --recording')"
        )


# ----------------------------------------------------------------------------- output paths


def default_output_path(stem: str, suffix: str = ".h5") -> Path:
    """``runs/<stem>-<YYYYmmdd-HHMMSS><suffix>``; the one rule for default output files."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return DEFAULT_RUNS_DIR / f"{stem}-{stamp}{suffix}"


def check_output(path: Path | str, *, option: str, suffixes: Sequence[str], overwrite: bool = False) -> Path:
    """Check, before any work, that ``path`` can be written as ``option``'s output and return
    it unchanged (the path written is the path reported: no suffix is ever added).

    Rules: the suffix is one of ``suffixes`` (case-insensitive; the error names them); the
    path is not a directory; it does not exist unless ``overwrite``; its directory exists
    (``runs/`` is created on demand, see :data:`DEFAULT_RUNS_DIR`) and a file can really be
    created there (probed, so read-only mounts and root-only places are caught too).

    Raises:
        ConfigError: naming the option, the path and what to do instead.
    """
    out = Path(path)
    supported = ", ".join(suffixes)
    if out.exists() and out.is_dir():
        raise ConfigError(f"{option} {out} is a directory; give a file name ending in {supported}")
    if not out.suffix:
        raise ConfigError(f"{option} {out} has no file extension; supported: {supported}")
    if out.suffix.lower() not in {s.lower() for s in suffixes}:
        raise ConfigError(f"{option} {out}: unsupported format {out.suffix!r}; supported: {supported}")
    if out.exists() and not overwrite:
        raise ConfigError(f"{option} {out} already exists; choose another name or pass --overwrite")
    parent = out.parent
    if not parent.exists() and _is_default_dir(parent):
        parent.mkdir(parents=True, exist_ok=True)
    if not parent.exists():
        raise ConfigError(f"{option} {out}: directory {parent} does not exist")
    if not parent.is_dir():
        raise ConfigError(f"{option} {out}: {parent} is not a directory")
    try:
        fd, probe = tempfile.mkstemp(prefix=".harness-probe-", dir=parent)
    except OSError as exc:
        raise ConfigError(f"{option} {out}: cannot write in directory {parent} ({exc.strerror or exc})") from None
    os.close(fd)
    os.unlink(probe)
    if out.exists() and not os.access(out, os.W_OK):
        raise ConfigError(f"{option} {out} exists and is not writable")
    return out


def _is_default_dir(parent: Path) -> bool:
    try:
        return parent.resolve() == DEFAULT_RUNS_DIR.resolve()
    except OSError:
        return False


# ----------------------------------------------------------------------------- progress


PROGRESS_INTERVAL_ENV = "PCM_HARNESS_PROGRESS_INTERVAL_S"


def _interval_override(default_s: float) -> float:
    """``PCM_HARNESS_PROGRESS_INTERVAL_S`` when set (a number ≥ 0), else ``default_s``."""
    import os

    raw = os.environ.get(PROGRESS_INTERVAL_ENV)
    if raw is None:
        return default_s
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{PROGRESS_INTERVAL_ENV}={raw!r} is not a number of seconds") from None
    if not value >= 0:
        raise ConfigError(f"{PROGRESS_INTERVAL_ENV}={raw!r} must be >= 0 seconds")
    return value


@contextlib.contextmanager
def progress_bar(
    description: str, total: float | None, enabled: bool = True, *, min_interval_s: float = 1.0, unit: str = ""
) -> Iterator[Callable[..., None]]:
    """Progress on stderr; yields ``update(completed, description=None, total=None, unit=None,
    announce=False)`` (``announce``: print the line even with nothing done yet, for a long
    first step that starts after every check).

    On a terminal: a rich bar. Otherwise (logs, pipes, --json runs under a scheduler): plain
    lines, ``description: 3/25 chips (12%), elapsed 4.1s, ETA 30s`` — integer counts of the
    named ``unit`` — at most one per ``min_interval_s`` (0: every step) except that the first
    and the last step are always printed; nothing while no step is done (so a command that
    fails at the start still prints only its one ``error:`` line). The ETA is the rate from the
    first step to the latest, so start-up before the first step (a cluster, a model load)
    does not inflate it; the first line, with no rate yet, has none. ``enabled=False`` is for
    library-internal callers only; commands keep progress on (it never touches stdout, so
    --json output stays one object). The environment variable ``PCM_HARNESS_PROGRESS_INTERVAL_S``
    overrides ``min_interval_s`` for plain lines (``0``: a line per step, e.g. for a log that
    must show every readout).
    """
    if not enabled:
        yield lambda *a, **k: None
        return
    if not err_console.is_terminal:
        min_interval_s = _interval_override(min_interval_s)
        with _plain_progress(description, total, min_interval_s, unit) as update:
            yield update
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    with Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[unit]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=False,
    ) as progress:
        task = progress.add_task(description, total=total, unit=unit)

        def update(
            completed: float, description: str | None = None, total: float | None = None, unit: str | None = None,
            announce: bool = False,
        ) -> None:
            kwargs: dict[str, Any] = {"completed": completed}
            if unit is not None:
                kwargs["unit"] = unit
            if description is not None:
                kwargs["description"] = description
            if total is not None:
                kwargs["total"] = total
            progress.update(task, **kwargs)

        yield update


@contextlib.contextmanager
def _plain_progress(
    description: str, total: float | None, min_interval_s: float, unit: str = ""
) -> Iterator[Callable[..., None]]:
    state: dict[str, Any] = {
        "desc": description, "total": total, "t0": time.monotonic(), "last": None, "line": "", "first": None,
        "unit": unit, "desc_before": description,
    }

    def update(
        completed: float, description: str | None = None, total: float | None = None, unit: str | None = None,
        announce: bool = False,
    ) -> None:
        now = time.monotonic()
        if unit is not None:
            state["unit"] = unit
        if description is not None:
            state["desc"] = description
        if total is not None and total != state["total"]:
            if state["total"] is not None:
                # a new phase: elapsed time and ETA start again, and its first step is shown;
                # a phase met before (phases that alternate, e.g. read a chip / infer on it)
                # keeps its own clock, so its elapsed time and ETA stay true
                phases = state.setdefault("phases", {})
                phases[(state["desc_before"], state["total"])] = (state["t0"], state["first"])
                state["t0"], state["first"] = phases.get((state["desc"], total), (now, None))
                state["last"] = None
            state["total"] = total
        state["desc_before"] = state["desc"]
        tot = state["total"]
        if completed <= 0:
            if announce:  # a long step starts (after every check): say so, once
                line = _plain_line(state["desc"], 0, tot, now - state["t0"], unit=state["unit"])
                if line != state["line"]:
                    state["line"] = line
                    sys.stderr.write(line + "\n")
                    sys.stderr.flush()
            return  # nothing done yet: say nothing (an error at the start stays the only line)
        if state["first"] is None:
            state["first"] = (now, completed)
        last_step = tot is not None and completed >= tot
        if state["last"] is not None and not last_step and now - state["last"] < min_interval_s:
            return
        t_first, done_first = state["first"]
        rate = (completed - done_first) / (now - t_first) if completed > done_first and now > t_first else None
        line = _plain_line(state["desc"], completed, tot, now - state["t0"], unit=state["unit"], rate_per_s=rate)
        if line == state["line"]:
            return
        state["last"], state["line"] = now, line
        sys.stderr.write(line + "\n")
        sys.stderr.flush()

    yield update


def _elapsed(t_s: float) -> str:
    return "0s" if t_s < 0.05 else format_duration(t_s, digits=2)  # not "2.4e-05s"


def _count(x: float) -> str:
    return f"{x:.0f}" if float(x).is_integer() else f"{x:.3g}"


def _plain_line(
    desc: str, done: float, total: float | None, elapsed_s: float, *, unit: str = "", rate_per_s: float | None = None
) -> str:
    units = f" {unit}" if unit else ""
    if total is not None and total > 0 and done <= 0:
        return f"{desc}: 0/{_count(total)}{units}, started"
    if total is None or total <= 0:
        count = f": {_count(done)}{units}" if done else ""
        return f"{desc}{count}, elapsed {_elapsed(elapsed_s)}"
    frac = min(max(done / total, 0.0), 1.0)
    text = f"{desc}: {_count(done)}/{_count(total)}{units} ({100 * frac:.0f}%), elapsed {_elapsed(elapsed_s)}"
    if done >= total:
        return f"{text}, ETA 0s"
    if rate_per_s:
        return f"{text}, ETA {format_duration((total - done) / rate_per_s, digits=2)}"
    return text
