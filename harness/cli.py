"""The ``harness`` command line: a thin layer over the library.

Each command lives in its own module under ``harness.commands`` and is registered here.
"""

from __future__ import annotations

import typer

from harness import __version__
from harness.commands import data as data_cmd
from harness.commands import emulate, program
from harness.commands import evaluate as evaluate_cmd
from harness.commands import replay as replay_cmd
from harness.commands import session as session_cmd

app = typer.Typer(
    name="harness",
    help="PCM chip test harness: program, drift, read back and evaluate analog PCM chips.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"harness {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version."),
) -> None:
    """PCM chip test harness."""


app.command("program")(program.program_command)
app.add_typer(session_cmd.app, name="session")
app.command("replay")(replay_cmd.replay_command)
app.command("emulate")(emulate.emulate_command)
app.command("evaluate")(evaluate_cmd.evaluate_command)
app.add_typer(data_cmd.app, name="data")
