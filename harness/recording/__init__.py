"""The recording format (HDF5): the one package that writes and reads it.

A recording holds provenance, the layout, the programming outcome, optionally a session
definition with its timetable and the chip's state, and readouts appended one at a time.
The layout is documented in ``docs/recording-format.md``; the version is the root
attribute ``format_version``.

Crash safety:

* A new file is written under a temporary name (``NAME.partial-PID``) and renamed to its
  final name only once the header (everything but the readouts) is complete and flushed,
  so a file under the final name always has a whole header. An existing file is never
  replaced unless ``overwrite=True``.
* Readouts are appended in single-writer/multiple-reader mode (SWMR: ``libver='latest'``,
  ``swmr_mode=True``): rows are written and flushed, then the commit record
  (``/commit``: number of readouts, and which chip-state slot holds which readout's
  state) is written and flushed. Readers trust only the committed count, so a crash
  loses at most the readout in flight, and another process can read while the file grows.
* The chip state (for continuing the virtual chip's physics on resume) has a ``base``
  (full snapshot at the end of programming) and two alternating ``slots`` for the state
  after each readout; a slot is written before the commit that names it, and the
  committed slot is never overwritten.
* A crashed writer leaves HDF5's "open for write" flag set; such a file is read in SWMR
  mode, and :func:`recover_recording` copies its committed content into a fresh file
  that atomically replaces it.

Modules: :mod:`~harness.recording.schema` (names, constants, the structure shared by
writer and recovery), :mod:`~harness.recording.validate` (the whole-structure check run on
open), :mod:`~harness.recording.writer` (new files and appending),
:mod:`~harness.recording.reader` (opening, checksums, decoding),
:mod:`~harness.recording.recovery` (reopening a crashed or finished file for appending),
:mod:`~harness.recording.integrity` (format version 4's manifest: computed and checked there
only), :mod:`~harness.recording.storage` (the storage and size bounds of the hostile-file
budget), :mod:`~harness.recording.header` (a new file's header and its publication),
:mod:`~harness.recording.epochs` (a refresh session's programming epochs: ``/refreshes`` and
the epoch columns, checked on open).
Import from this package; the names below are its public interface.
"""

from __future__ import annotations

from harness.recording.lock import RecordingLock, lock_path
from harness.recording.reader import (
    ProgrammingOutcome,
    Recording,
    open_recording,
    reading,
)
from harness.recording.recovery import recover_recording
from harness.recording.schema import (
    BUILTIN_EXTRAS,
    COMPRESS_CHUNK_ELEMENTS,
    COMPRESS_MIN_ELEMENTS,
    ENCODINGS,
    FORMAT_NAME,
    FORMAT_VERSION,
    MAX_CHUNK_BYTES,
    clean_stale_partials,
    partial_paths,
    writer_alive,
)
from harness.recording.writer import RecordingWriter, create_recording

__all__ = [
    "BUILTIN_EXTRAS",
    "COMPRESS_CHUNK_ELEMENTS",
    "COMPRESS_MIN_ELEMENTS",
    "ENCODINGS",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "MAX_CHUNK_BYTES",
    "ProgrammingOutcome",
    "Recording",
    "RecordingLock",
    "RecordingWriter",
    "clean_stale_partials",
    "create_recording",
    "lock_path",
    "open_recording",
    "partial_paths",
    "reading",
    "recover_recording",
    "writer_alive",
]
