"""``harness emulate``: serve a virtual chip through the wire protocol on a pty or a TCP port.

Prints the chip URI to connect to (``serial://<pty path>`` or
``visa://TCPIP::127.0.0.1::<port>::SOCKET``) as the one line on stdout, then serves until
Ctrl-C, SIGTERM or ``--duration``. The emulator is imported only when this command runs:
``harness`` reaches driver modules through the registry and this command alone.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Optional

import typer

from harness.commands.common import user_errors
from harness.errors import ConfigError


def emulate_command(
    pty: bool = typer.Option(False, "--pty", help="Serve on a new pseudo-terminal (prints serial://<path>)."),
    tcp: Optional[str] = typer.Option(
        None, "--tcp", metavar="HOST:PORT", help="Serve on a TCP port, e.g. 127.0.0.1:5025 (port 0: any free port)."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the emulated virtual chip."),
    rows: int = typer.Option(512, "--rows", help="Array rows (source lines)."),
    cols: int = typer.Option(2048, "--cols", help="Array columns (bit lines)."),
    clock: str = typer.Option("sim", "--clock", help="Chip clock: sim (simulated) or wall (real time)."),
    allow_remote: bool = typer.Option(False, "--allow-remote", help="Allow --tcp on a non-loopback address (the port has no authentication)."),
    link: Optional[Path] = typer.Option(None, "--link", help="Path of the pty symlink (default: in a temp dir)."),
    corrupt_rate: float = typer.Option(0.0, "--corrupt-rate", help="Fault: fraction of bytes corrupted (both ways)."),
    drop_rate: float = typer.Option(0.0, "--drop-rate", help="Fault: fraction of bytes dropped (both ways)."),
    delay_s: float = typer.Option(0.0, "--delay-s", help="Fault: delay before every reply (s)."),
    disconnect_every: int = typer.Option(0, "--disconnect-every", help="Fault: hang up after every N-th command."),
    fault_seed: int = typer.Option(0, "--fault-seed", help="Seed of the fault generator."),
    duration: float = typer.Option(0.0, "--duration", help="Stop after this many seconds (0: run until Ctrl-C)."),
    idle_timeout_s: float = typer.Option(
        60.0, "--idle-timeout", help="Hang up on a client silent this long (s), freeing the chip for the next; also the longest TIME:WAIT a client may ask for (longer is refused, error 108)."
    ),
) -> None:
    """Serve a virtual chip over a pty or loopback TCP, speaking the serial/VISA wire protocol."""
    with user_errors():
        if pty == (tcp is not None):
            raise ConfigError("give exactly one of --pty or --tcp HOST:PORT")
        if duration < 0:
            raise ConfigError(f"--duration {duration} s must be >= 0 (0: until Ctrl-C)")
        if link is not None and not link.parent.is_dir():
            raise ConfigError(f"--link {link}: directory {link.parent} does not exist")
        from drivers.emulator import NO_AUTH_WARNING, Emulator, parse_host_port
        from drivers.faults import FaultSpec
        from harness.chip.protocol import Geometry
        from harness.virtual.chip import VirtualPCMChip

        faults = FaultSpec(corrupt_rate, drop_rate, delay_s, disconnect_every, fault_seed)
        chip = VirtualPCMChip(Geometry(rows=rows, cols=cols), seed=seed, clock=clock,
                              uri=f"virtual?seed={seed}&rows={rows}&cols={cols}&clock={clock}")
        emulator = Emulator(chip, faults, idle_timeout_s=idle_timeout_s)
        previous = signal.getsignal(signal.SIGTERM)

        def on_term(signum: int, frame: FrameType | None) -> None:
            raise KeyboardInterrupt

        try:
            if pty:
                where = emulator.start_pty(str(link) if link else None)
            else:
                host, port = parse_host_port(tcp or "")
                bound_host, bound_port = emulator.start_tcp(host, port, allow_remote)
                where = f"{bound_host}:{bound_port}"
            sys.stdout.write(emulator.uri + "\n")
            sys.stdout.flush()
            sys.stderr.write(
                f"emulating a {rows}x{cols} PCM chip (seed {seed}, {clock} clock) on {where}; "
                f"connect with --chip {emulator.uri}; Ctrl-C stops\n"
            )
            if tcp is not None and allow_remote:
                sys.stderr.write(NO_AUTH_WARNING.format(where=where) + "\n")
            if faults.mangles or faults.delay_s or faults.disconnect_every:
                sys.stderr.write(f"fault injection: {faults}\n")
            sys.stderr.flush()
            signal.signal(signal.SIGTERM, on_term)
            try:
                emulator.wait(duration or None)
            except KeyboardInterrupt:
                sys.stderr.write("emulator stopped\n")
        finally:
            signal.signal(signal.SIGTERM, previous)
            emulator.close()
