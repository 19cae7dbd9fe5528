"""Tests that need an external program (espeak-ng, Chromium): skipped on a laptop without it,
required in CI (``.ci/run``)."""

from __future__ import annotations


def skip_unless_tool(found: object, reason: str) -> None:
    """Skip a test whose external program (espeak-ng, Chromium) is missing, except in CI:
    there ``.ci/run`` installs them and sets ``PCM_HARNESS_REQUIRE_TOOLS=1``, and a missing
    program is a failure, so that a green run means the test ran."""
    import os

    import pytest

    if found:
        return
    if os.environ.get("PCM_HARNESS_REQUIRE_TOOLS"):
        pytest.fail(f"{reason} (PCM_HARNESS_REQUIRE_TOOLS is set: CI installs it)")
    pytest.skip(reason)
