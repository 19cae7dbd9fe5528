"""Small shared helpers for the HDF5 files the harness writes (models, datasets)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import h5py

from harness.errors import ModelError


def one_line(exc: BaseException) -> str:
    """An exception's message on one line (whitespace collapsed), or its type name."""
    return " ".join(str(exc).split()) or type(exc).__name__


@contextlib.contextmanager
def atomic_h5_file(path: str | os.PathLike[str], *, what: str) -> Iterator[h5py.File]:
    """Open ``path`` for writing so that a reader never sees a half-written file.

    The file is written next to ``path`` under a temporary name and moved into place with
    ``os.replace`` only when the block completes; on any error the temporary file is
    removed and an existing ``path`` is left untouched.

    Raises:
        ModelError: the file cannot be written ("cannot write {what} file {path}: …").
    """
    final = Path(path)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    try:
        with h5py.File(tmp, "w", track_order=True) as f:
            yield f
        os.replace(tmp, final)
    except OSError as exc:
        raise ModelError(f"cannot write {what} file {final}: {one_line(exc)}") from exc
    finally:
        tmp.unlink(missing_ok=True)
