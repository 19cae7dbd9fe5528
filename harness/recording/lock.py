"""The writer lock: one process at a time writes a recording (new, ``--overwrite`` or resume).

The lock is an exclusive ``flock`` on ``NAME.lock`` next to the recording, taken before a
writer touches anything and held until it closes. The kernel drops it when the holder
dies (even on SIGKILL), so a crashed session never blocks its own resume, while a live one
always refuses a second writer: ``session run --overwrite`` of a file a session is
writing, and a second ``session resume`` of the same file, fail at once with the holder's
process id. The lock file is removed on release; a leftover one (after a kill) is reused.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Self

from harness.errors import RecordingError

LOCK_SUFFIX = ".lock"


def lock_path(path: str | Path) -> Path:
    """The lock file of recording ``path``."""
    p = Path(path)
    return p.with_name(p.name + LOCK_SUFFIX)


class RecordingLock:
    """An acquired writer lock on a recording (see module docstring); release it once."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, path: str | Path) -> RecordingLock:
        """Take the lock of recording ``path`` without waiting.

        Raises:
            RecordingError: another live process holds it (its pid is named), or the lock
                file cannot be created (the directory is not writable).
        """
        lp = lock_path(path)
        for _ in range(16):  # the holder may remove the file between our open and flock
            try:
                fd = os.open(lp, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise RecordingError(f"cannot lock recording {path}: {exc.strerror}: {lp}") from exc
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_pid(fd)
                os.close(fd)
                who = f"process {holder}" if holder else "another process"
                raise RecordingError(
                    f"{path} is still being written by {who} (it holds {lp.name}); "
                    "stop that session first or wait for it to finish"
                ) from None
            except OSError as exc:
                os.close(fd)
                raise RecordingError(f"cannot lock recording {path}: {exc.strerror}") from exc
            try:
                same = os.fstat(fd).st_ino == os.stat(lp).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            return cls(Path(path), fd)
        raise RecordingError(f"cannot lock recording {path}: {lp} keeps being replaced")

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Remove the lock file and drop the lock (idempotent)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            lock_path(self.path).unlink()
        os.close(fd)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_pid(fd: int) -> int:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return 0
    return int(text) if text.isdigit() else 0
