"""Alias of :mod:`harness.models.format`, where the model file format now lives.

Kept so that ``from harness.model import load_model`` in older code keeps working; new code
imports :mod:`harness.models.format` (or :mod:`harness.models`).
"""

import sys

from harness.models import format as _format

sys.modules[__name__] = _format
