"""CLI test helpers shared by every command's CliRunner tests."""

from __future__ import annotations

from typer.testing import CliRunner, Result

from harness.cli import app

runner = CliRunner()


def invoke(*args: str) -> Result:
    """Run ``harness ARGS`` in-process; stdout and stderr are kept apart."""
    return runner.invoke(app, list(args), catch_exceptions=False)


def assert_one_line_error(result: Result, fragment: str, *, exit_code: int | None = None) -> None:
    """The command failed (with ``exit_code`` if given) and said so in exactly one
    ``error: …`` line on stderr containing ``fragment``, with no traceback anywhere."""
    assert result.exit_code != 0, result.output
    if exit_code is not None:
        assert result.exit_code == exit_code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and fragment in lines[0], lines[0]
    assert "Traceback" not in result.stderr + result.stdout
