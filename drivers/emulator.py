"""The chip emulator: a Chip served through the wire protocol on a pty or a TCP port.

``Emulator(chip).start_pty()`` creates a pseudo-terminal pair, links a stable path to its
device end (printed for ``serial://<path>``) and serves in a background thread;
``start_tcp("127.0.0.1", 0)`` listens on a loopback port (``visa://TCPIP::127.0.0.1::<port>::SOCKET``).
Non-loopback addresses are refused unless ``allow_remote``. The chip's state lives in the
emulator, not in the connection: a client that reconnects continues where it left off.

Fault injection (:class:`~drivers.faults.FaultSpec`) corrupts and drops bytes in both
directions, delays replies, and hangs up after every N-th command *after executing it*,
so the client must retry a command whose effect has already happened.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import select
import shutil
import socket
import struct
import tempfile
import threading
import time
from collections.abc import Callable

from drivers import protocol as p
from drivers.faults import FaultInjector, FaultSpec
from drivers.server import ChipServer
from harness import __version__
from harness.chip import Chip
from harness.errors import ConfigError

#: Longest the emulator blocks writing a reply to a client that does not read (s).
SEND_TIMEOUT_S = 5.0
READ_SIZE = 1 << 20


def default_identity(chip: Chip) -> str:
    """``*IDN?`` of an emulated chip: manufacturer, model, serial (seed and size), firmware."""
    g = chip.geometry
    seed = getattr(chip, "seed", 0)
    return f"{p.MANUFACTURER},VPCM-EMULATOR,SEED{seed}-{g.rows}X{g.cols},PROTO{p.PROTOCOL_VERSION}-HARNESS{__version__}"


def check_bind_host(host: str, allow_remote: bool) -> str:
    """The address to bind for ``host``; ConfigError unless loopback or ``allow_remote``."""
    try:
        infos = socket.getaddrinfo(host or "0.0.0.0", None, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ConfigError(f"cannot resolve emulator address {host!r}: {exc.strerror}") from exc
    addr = str(infos[0][4][0])
    if not allow_remote and not all(ipaddress.ip_address(i[4][0]).is_loopback for i in infos):
        raise ConfigError(
            f"refusing to serve the emulator on {host or '0.0.0.0'} ({addr}): other machines could reach it; "
            "use 127.0.0.1, or pass --allow-remote if that is what you want"
        )
    return addr


def parse_host_port(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` too); ConfigError when malformed."""
    host, sep, port_s = text.rpartition(":")
    if not sep or not port_s.isdigit() or not host:
        raise ConfigError(f"--tcp wants HOST:PORT such as 127.0.0.1:5025, got {text!r}")
    port = int(port_s)
    if not 0 <= port <= 65535:
        raise ConfigError(f"TCP port {port} is outside 0..65535")
    return host.strip("[]"), port


class Emulator:
    """Serves ``chip`` on one transport at a time, in a background thread.

    Args:
        chip: the chip to serve (its state persists across client connections).
        faults: fault injection (none by default).
        identity: ``*IDN?`` answer (default: :func:`default_identity`).
        session_base: first session id minus one (random by default).
    """

    def __init__(
        self,
        chip: Chip,
        faults: FaultSpec | None = None,
        identity: str | None = None,
        session_base: int | None = None,
    ) -> None:
        self.chip = chip
        self.server = ChipServer(chip, identity or default_identity(chip), session_base)
        self.faults = FaultInjector(faults or FaultSpec())
        self.connections = 0
        self.hangups = 0
        self.commands = 0
        self._stop = threading.Event()
        self._wake_r, self._wake_w = os.pipe()
        self._thread: threading.Thread | None = None
        self._uri = ""
        self._error: BaseException | None = None
        # pty state
        self._master = -1
        self._slave = -1
        self._link_path = ""
        self._tmpdir = ""
        # tcp state
        self._listener: socket.socket | None = None

    @property
    def uri(self) -> str:
        """The chip URI a client opens (``serial://…`` or ``visa://…``)."""
        return self._uri

    @property
    def error(self) -> BaseException | None:
        """The exception that stopped the serving thread, if any."""
        return self._error

    # --- lifecycle -------------------------------------------------------------------------
    def start_pty(self, link_path: str | None = None) -> str:
        """Create the pty, link ``link_path`` (default: a fresh temp dir) to it, start serving.

        Returns the stable device path to open (a symlink, re-pointed after a hang-up)."""
        if link_path is None:
            self._tmpdir = tempfile.mkdtemp(prefix="pcm-emu-")
            link_path = os.path.join(self._tmpdir, "tty")
        elif os.path.lexists(link_path) and not os.path.islink(link_path):
            raise ConfigError(f"pty link path {link_path} exists and is not a symlink; choose another path")
        self._link_path = os.path.abspath(link_path)
        self._open_pty()
        self._uri = f"serial://{self._link_path}"
        self._start(self._serve_pty)
        return self._link_path

    def start_tcp(self, host: str = "127.0.0.1", port: int = 0, allow_remote: bool = False) -> tuple[str, int]:
        """Listen on ``host:port`` (0 = a free port) and start serving; returns the bound address."""
        addr = check_bind_host(host, allow_remote)
        family = socket.AF_INET6 if ":" in addr else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind((addr, port))
        except OSError as exc:
            listener.close()
            raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}; choose another port") from exc
        listener.listen(4)
        self._listener = listener
        bound_host, bound_port = listener.getsockname()[:2]
        shown = f"[{bound_host}]" if family == socket.AF_INET6 else bound_host
        self._uri = f"visa://TCPIP::{shown}::{bound_port}::SOCKET"
        self._start(self._serve_tcp)
        return bound_host, bound_port

    def _start(self, target: Callable[[], None]) -> None:
        def run() -> None:
            try:
                target()
            except BaseException as exc:  # surfaced through .error / wait()
                self._error = exc

        self._thread = threading.Thread(target=run, name="pcm-emulator", daemon=True)
        self._thread.start()

    def wait(self, timeout_s: float | None = None) -> None:
        """Block until the serving thread ends (close() from elsewhere, or an error)."""
        if self._thread is not None:
            self._thread.join(timeout_s)
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        """Stop serving and release the transport (idempotent)."""
        self._stop.set()
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(10.0)
        for fd in (self._master, self._slave):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._master = self._slave = -1
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self._link_path and os.path.islink(self._link_path):
            with contextlib.suppress(OSError):
                os.unlink(self._link_path)
        if self._tmpdir:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = ""
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._wake_r = self._wake_w = -1

    def __enter__(self) -> Emulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- protocol over any stream ----------------------------------------------------------
    def _on_bytes(self, parser: p.FrameParser, data: bytes, send: Callable[[bytes], None]) -> bool:
        """Process received bytes; False when the link must drop now (hang-up fault)."""
        parser.feed(self.faults.mangle(data))
        nak_sent = False
        while True:
            event = parser.next()
            if isinstance(event, int):
                return True
            if isinstance(event, p.Garbled):
                if not nak_sent:  # one NAK per damaged stretch: the client retries at once
                    send(self._outbound(self.server.nak(event)))
                    nak_sent = True
                continue
            nak_sent = False
            self.commands += 1
            reply = self.server.handle(event)
            if self.faults.hang_up_now():
                self.hangups += 1
                return False
            if self.faults.spec.delay_s:
                self._stop.wait(self.faults.spec.delay_s)
            send(self._outbound(reply))

    def _outbound(self, pieces: list[p.Piece]) -> bytes:
        return self.faults.mangle(b"".join(pieces))

    # --- pty -------------------------------------------------------------------------------
    def _open_pty(self) -> None:
        import tty  # POSIX only: pty mode needs it, TCP mode does not

        master, slave = os.openpty()
        tty.setraw(slave)  # binary-clean from the start: no echo, no CR/LF translation
        os.set_blocking(master, False)
        tmp = f"{self._link_path}.{os.getpid()}.new"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        os.symlink(os.ttyname(slave), tmp)
        os.replace(tmp, self._link_path)
        # keep our own slave fd open, so the pty outlives client open/close cycles
        self._master, self._slave = master, slave

    def _hang_up_pty(self) -> None:
        """Replace the pty: the client's open device hangs up (EIO); the link path moves on."""
        old = (self._master, self._slave)
        self._open_pty()
        for fd in old:
            with contextlib.suppress(OSError):
                os.close(fd)

    def _serve_pty(self) -> None:
        parser = p.FrameParser(p.COMMAND)
        self.connections += 1
        while not self._stop.is_set():
            ready, _, _ = select.select([self._master, self._wake_r], [], [])
            if self._wake_r in ready:
                return
            try:
                data = os.read(self._master, READ_SIZE)
            except BlockingIOError:
                continue
            except OSError as exc:
                if exc.errno == errno.EIO:  # no client side open (cannot happen while we hold one)
                    time.sleep(0.01)
                    continue
                raise
            if not self._on_bytes(parser, data, self._send_pty):
                self._hang_up_pty()
                parser = p.FrameParser(p.COMMAND)
                self.connections += 1

    def _send_pty(self, data: bytes) -> None:
        mv = memoryview(data)
        deadline = time.monotonic() + SEND_TIMEOUT_S
        while mv:
            try:
                mv = mv[os.write(self._master, mv) :]
                continue
            except BlockingIOError:
                pass
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._stop.is_set():
                return  # nobody reads: drop the rest, the client will time out and retry
            select.select([self._wake_r], [self._master], [], remaining)

    # --- tcp -------------------------------------------------------------------------------
    def _serve_tcp(self) -> None:
        assert self._listener is not None
        listener = self._listener
        while not self._stop.is_set():
            ready, _, _ = select.select([listener.fileno(), self._wake_r], [], [])
            if self._wake_r in ready:
                return
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            self.connections += 1
            with conn:
                self._serve_connection(conn)

    def _serve_connection(self, conn: socket.socket) -> None:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.settimeout(SEND_TIMEOUT_S)
        parser = p.FrameParser(p.COMMAND)

        def send(data: bytes) -> None:
            with contextlib.suppress(OSError):
                conn.sendall(data)

        while not self._stop.is_set():
            ready, _, _ = select.select([conn.fileno(), self._wake_r], [], [])
            if self._wake_r in ready:
                return
            try:
                data = conn.recv(READ_SIZE)
            except OSError:
                return
            if not data:
                return
            if not self._on_bytes(parser, data, send):
                # an abrupt drop (RST), as a pulled cable or a crashed peer looks to the client
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                return
