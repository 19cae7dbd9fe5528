"""The harness's one error tree.

Every error a user can cause or a device can raise is a :class:`HarnessError`. Errors
from lower layers (pyserial, pyvisa, h5py, OS) are translated at the boundary with
``raise ... from exc`` so the cause stays chained. Messages name the offending value,
the limit with units, and what to do next; the CLI prints ``str(error)`` as one line.
"""

from __future__ import annotations


class HarnessError(Exception):
    """Base of every error the harness raises on purpose."""


class ConfigError(HarnessError):
    """A URI, option, parameter or definition file is malformed or unknown."""


class SafetyLimitError(HarnessError, ValueError):
    """A pulse or address outside the chip's safety limits; nothing was sent."""


class AddressError(SafetyLimitError):
    """Cell addresses off the array (negative, or beyond rows × cols)."""


class ChipIOError(HarnessError):
    """Communication with a chip failed (transport error, closed link)."""


class ChipTimeoutError(ChipIOError):
    """The chip did not answer within the timeout."""


class ProtocolError(ChipIOError):
    """The chip answered with something the wire protocol does not allow."""


class ChipBusyError(ChipIOError):
    """The chip is in use by another client (one owner at a time); nothing was sent to it."""


class IdentityError(ChipIOError):
    """The device on the other end is not a PCM test chip this harness can drive."""


class ChipClosedError(ChipIOError):
    """An operation on a chip that has been closed."""


class ModelError(HarnessError):
    """A model file is missing, corrupt, or not a model this harness understands."""


class DatasetError(ModelError):
    """A dataset file or a local copy of a public dataset is missing, corrupt, or does not fit
    the model it is used with (a ``ModelError``, so callers that catch model-file problems
    catch these too)."""


class MissingExtraError(HarnessError):
    """An optional dependency (an extra such as ``pcm-harness[audio]``) is not installed."""


class MappingError(HarnessError):
    """Weights cannot be placed on the array (too large, bad values)."""


class ProgrammingError(HarnessError):
    """Closed-loop programming could not run (bad parameters, bad targets)."""


class RecordingError(HarnessError):
    """A recording file is missing, truncated, foreign, or inconsistent."""


class ScheduleError(ConfigError):
    """A readout schedule is malformed (negative, unordered or duplicate times)."""


class ReplayError(HarnessError):
    """A replayed chip was asked for something the recording cannot answer."""


class EvaluationError(HarnessError):
    """An evaluation request is inconsistent with the model or the data."""


class CalibrationError(HarnessError):
    """A recording cannot be calibrated (too few readouts, no programming outcome, one level)."""


class TrainingError(HarnessError):
    """A training run cannot start or resume (corrupt or foreign checkpoint, shape mismatch)."""


class AccelError(HarnessError):
    """An accelerator cost-model request is inconsistent (unsupported bit-width, bad workload)."""


class TilingError(AccelError):
    """A model's layers cannot be placed on the accelerator's array (too tall, too wide, too many)."""
