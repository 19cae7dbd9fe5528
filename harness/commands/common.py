"""What every CLI command shares: one-line errors, JSON-only stdout, progress on stderr."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from harness.errors import HarnessError

#: Human output (tables, messages, progress) goes to stderr when --json is given,
#: so stdout carries only the JSON object.
err_console = Console(stderr=True)


def console_for(json_mode: bool) -> Console:
    """Console for human-readable output: stderr in --json mode, stdout otherwise."""
    return err_console if json_mode else Console()


def fail(message: str, code: int = 1) -> None:
    """Print one line ``error: message`` to stderr and exit non-zero."""
    sys.stderr.write(f"error: {message}\n")
    raise typer.Exit(code)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn HarnessError (and OS errors on user-given paths) into one line and exit 1."""
    try:
        yield
    except HarnessError as exc:
        fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    except OSError as exc:
        fail(f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc))
    except KeyboardInterrupt:
        fail("interrupted", code=130)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def emit_json(obj: Any) -> None:
    """Write ``obj`` as one JSON object on stdout (the only thing stdout carries with --json)."""
    sys.stdout.write(json.dumps(obj, default=_json_default, sort_keys=False) + "\n")
    sys.stdout.flush()


@contextlib.contextmanager
def progress_bar(description: str, total: float | None, enabled: bool = True) -> Iterator[Callable[..., None]]:
    """A rich progress bar on stderr; yields ``update(completed, description=None)``."""
    if not enabled:
        yield lambda *a, **k: None
        return
    with Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>5.1f}%"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=False,
    ) as progress:
        task = progress.add_task(description, total=total)

        def update(completed: float, description: str | None = None, total: float | None = None) -> None:
            kwargs: dict[str, Any] = {"completed": completed}
            if description is not None:
                kwargs["description"] = description
            if total is not None:
                kwargs["total"] = total
            progress.update(task, **kwargs)

        yield update
