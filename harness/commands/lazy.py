"""Lazy command registration and one-line usage errors for the ``harness`` CLI.

:class:`LazyGroup` lists commands from a table of ``name -> (target, one-line help)``
without importing them; a command's module is imported only when that command runs (or
its own ``--help`` is asked for). ``harness --help`` therefore imports no command module,
and ``harness session status`` imports only ``harness.commands.session``.

Usage errors (``--seed abc``, ``--bogus``, a missing argument) are printed as one line,
``error: <what> (see 'harness program --help')``, exit code 2, instead of typer's box.

This module only imports typer; it is imported by ``harness.cli`` at start-up.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, NamedTuple

import typer
import typer.core

from harness.commands import interrupts

# typer >= 0.24 vendors click as typer._click; older typer uses click itself.
_click: Any = getattr(typer.core, "_click", None) or importlib.import_module("click")
_exceptions: Any = importlib.import_module(f"{_click.__name__}.exceptions")


class LazyCommand(NamedTuple):
    """``target`` is ``"module:attribute"``: a command function or a ``typer.Typer`` group;
    ``help`` is the one line ``harness --help`` shows (a test keeps it equal to the first
    line of the target's docstring/help)."""

    target: str
    help: str


def load_target(target: str) -> Any:
    """Import ``"module:attribute"`` and return the attribute."""
    module_name, _, attr = target.partition(":")
    return getattr(importlib.import_module(module_name), attr)


def _to_click(name: str, obj: Any) -> Any:
    if isinstance(obj, typer.Typer):
        return typer.main.get_group(obj)
    single = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    single.command(name)(obj)
    return typer.main.get_command(single)


class _Placeholder(typer.core.TyperCommand):
    """What ``harness --help`` lists for a command not imported yet."""


class LazyGroup(typer.core.TyperGroup):
    """A TyperGroup whose :attr:`lazy_commands` are imported on first use; eagerly
    registered commands (``app.command(...)``) keep working beside them."""

    lazy_commands: ClassVar[Mapping[str, LazyCommand]] = {}

    def list_commands(self, ctx: Any) -> list[str]:
        names = list(super().list_commands(ctx))
        return names + [n for n in self.lazy_commands if n not in names]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        cmd = super().get_command(ctx, cmd_name)
        if cmd is not None or cmd_name not in self.lazy_commands:
            return cmd
        return _Placeholder(name=cmd_name, help=self.lazy_commands[cmd_name].help, callback=None)

    def load_command(self, cmd_name: str) -> Any:
        """The real click command behind a lazy entry (imports its module), cached."""
        cmd = _to_click(cmd_name, load_target(self.lazy_commands[cmd_name].target))
        self.add_command(cmd, cmd_name)
        return cmd

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        name, cmd, rest = super().resolve_command(ctx, args)
        if isinstance(cmd, _Placeholder) and name is not None:
            cmd = self.load_command(name)
        return name, cmd, rest

    def main(  # type: ignore[override]
        self, args: Sequence[str] | None = None, prog_name: str | None = None, standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        """Run the CLI; usage errors become one ``error:`` line on stderr and exit code 2."""
        standalone = standalone_mode
        with interrupts.guard():
            rv = self._main(args, prog_name, standalone, **extra)
            if standalone and rv in (0, None):  # a failure already said what happened
                interrupts.complete_but_interrupted()
        if not standalone:
            return rv
        sys.exit(rv if isinstance(rv, int) else 0)

    def _main(self, args: Sequence[str] | None, prog_name: str | None, standalone: bool, **extra: Any) -> Any:
        try:
            rv = super().main(args=args, prog_name=prog_name, standalone_mode=False, **extra)
        except _exceptions.NoArgsIsHelpError as exc:
            text = exc.format_message()  # rich help is already printed; plain help is returned
            if text.strip():
                sys.stdout.write(text + "\n")
            rv = 0
        except _exceptions.UsageError as exc:
            if not standalone:
                raise
            sys.stderr.write(f"error: {usage_error_line(exc)}\n")
            sys.exit(exc.exit_code)
        except _exceptions.ClickException as exc:
            if not standalone:
                raise
            sys.stderr.write(f"error: {' '.join(exc.format_message().split())}\n")
            sys.exit(exc.exit_code)
        except typer.Abort as exc:
            if not standalone:
                raise
            if isinstance(exc.__context__, KeyboardInterrupt):  # Ctrl-C before the command's work
                sys.stderr.write("error: interrupted\n")
                sys.exit(interrupts.EXIT_INTERRUPTED)
            sys.stderr.write("error: aborted\n")
            sys.exit(1)
        return rv


def usage_error_line(exc: Any) -> str:
    """One line for a click UsageError: the message and where to read the usage."""
    message = " ".join(exc.format_message().split())
    ctx = getattr(exc, "ctx", None)
    if ctx is not None:
        message += f" (see '{ctx.command_path} --help')"
    return message


def _flags_show_no_type() -> None:
    """typer 0.29's rich help prints flags as ``--json <bool>`` as if they took a value;
    show nothing in the type column for flags (``--json``, ``--overwrite``, ``--help``)."""
    option_cls: Any = getattr(typer.core, "TyperOption", None)
    original = getattr(option_cls, "display_type_rich", None)
    if original is None or getattr(original, "_harness_flag_fix", False):
        return

    def display_type_rich(self: Any, ctx: Any) -> Any:
        if getattr(self, "is_flag", False) and self.metavar is None:
            return None
        return original(self, ctx)

    display_type_rich._harness_flag_fix = True  # type: ignore[attr-defined]
    option_cls.display_type_rich = display_type_rich


_flags_show_no_type()
