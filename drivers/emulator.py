"""The chip emulator: a Chip served through the wire protocol on a pty or a TCP port.

``Emulator(chip).start_pty()`` creates a pseudo-terminal pair, links a stable path to its
device end (printed for ``serial://<path>``) and serves in a background thread;
``start_tcp("127.0.0.1", 0)`` listens on a loopback port (``visa://TCPIP::127.0.0.1::<port>::SOCKET``).
Non-loopback addresses are refused unless ``allow_remote``. The chip's state lives in the
emulator, not in the connection: a client that reconnects continues where it left off.

Serving rules (both transports): a frame that stops arriving for ``FRAME_GAP_S`` (bytes
were lost) is dropped and answered with a NAK, so the client resends at once instead of
waiting for its timeout; a client that sends nothing for ``idle_timeout_s`` is hung up on.
Over TCP, several clients may connect but one owns the chip at a time: the first to send a
frame. Another client's frames are answered ``ERR 107`` (busy) and its connection closed,
unless its tag continues a session the owner used (the same client, reconnected after its
old connection died): then it takes over. The owner's leaving, hanging up or idling frees
the chip for the next client.

Fault injection (:class:`~drivers.faults.FaultSpec`) corrupts and drops bytes in both
directions, delays replies, and hangs up after every N-th command *after executing it*,
so the client must retry a command whose effect has already happened.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import math
import os
import select
import shutil
import socket
import struct
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from drivers import protocol as p
from drivers.faults import FaultInjector, FaultSpec
from drivers.server import ChipServer
from harness import __version__
from harness.chip.protocol import Chip
from harness.errors import ConfigError

#: Longest the emulator blocks writing a reply to a client that does not read (s); a
#: client that takes longer is hung up on.
SEND_TIMEOUT_S = 5.0
READ_SIZE = 1 << 20
#: A frame whose bytes stop arriving for this long lost bytes: drop it and NAK (s).
FRAME_GAP_S = 0.01
#: A client that sends nothing for this long is hung up on, freeing the chip (s).
IDLE_TIMEOUT_S = 60.0
#: TCP connections held at once (the owner and clients waiting to be told it is busy);
#: beyond it the longest-silent non-owner is closed.
MAX_CONNECTIONS = 16
#: Shown by ``--allow-remote``.
NO_AUTH_WARNING = (
    "WARNING: the emulator's port has no authentication and no encryption: anyone who can "
    "reach {where} can drive this chip and read it; serve on a trusted network only"
)


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
        idle_timeout_s: hang up on a client silent this long (s).
    """

    def __init__(
        self,
        chip: Chip,
        faults: FaultSpec | None = None,
        identity: str | None = None,
        session_base: int | None = None,
        idle_timeout_s: float = IDLE_TIMEOUT_S,
    ) -> None:
        if not (0.0 < idle_timeout_s <= 86400.0 and math.isfinite(idle_timeout_s)):
            raise ConfigError(f"idle timeout {idle_timeout_s} s must be in (0, 86400] s")
        self.chip = chip
        self.server = ChipServer(chip, identity or default_identity(chip), session_base)
        # a wait may not outlast the idle timeout, and over TCP it never blocks the loop
        self.server.max_wait_s = idle_timeout_s
        #: (seconds to hold, reply pieces) of a wait the frame just handled asked for
        self._held: tuple[float, list[p.Piece]] | None = None
        self.faults = FaultInjector(faults or FaultSpec())
        self.idle_timeout_s = idle_timeout_s
        self.connections = 0
        self.hangups = 0
        self.idle_hangups = 0
        self.busy_refusals = 0
        self.gap_naks = 0
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
        listener.listen(MAX_CONNECTIONS)
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
    def _parser(self) -> p.FrameParser:
        return p.FrameParser(p.COMMAND, max_body=self.server.max_command_body)

    def _on_bytes(
        self,
        parser: p.FrameParser,
        data: bytes,
        send: Callable[[bytes], None],
        admit: Callable[[p.Frame], bool] = lambda frame: True,
    ) -> bool:
        """Process received bytes and send the replies in one write (one wake-up of the
        client); False when the link must drop now (hang-up fault, or a frame ``admit``
        refused: another client owns the chip). A ``TIME:WAIT`` on a wall clock stops the
        batch: its reply is left in ``self._held`` with how long to hold it, and the frames
        after it stay in ``parser`` for :meth:`_process` once the reply is out.

        Bytes that are not a readable command get one NAK per batch read, and only when
        nothing in the batch was a command: a client waiting for one reply resends at
        once, and a client streaming many frames is not flooded with NAKs."""
        parser.feed(self.faults.mangle(data))
        return self._process(parser, send, admit)

    def _process(
        self,
        parser: p.FrameParser,
        send: Callable[[bytes], None],
        admit: Callable[[p.Frame], bool] = lambda frame: True,
    ) -> bool:
        """Answer the frames buffered in ``parser`` (see :meth:`_on_bytes`)."""
        out: list[p.Piece] = []
        first_garbled: p.Garbled | None = None
        answered = False
        keep = True
        while True:
            event = parser.next()
            if isinstance(event, int):
                break
            if isinstance(event, p.Garbled):
                first_garbled = first_garbled or event
                continue
            if not admit(event):
                self.busy_refusals += 1
                out += self._busy(event)
                answered, keep = True, False
                break
            self.commands += 1
            reply = self.server.handle(event)
            answered = True
            if self.faults.hang_up_now():
                self.hangups += 1
                if out:
                    send(self._outbound(out))
                return False
            due = self.server.due_s
            if due is not None:
                if out:
                    send(self._outbound(out))
                self._held = (max(0.0, due - self.chip.now()), reply)
                return keep
            if self.faults.spec.delay_s:
                if out:
                    send(self._outbound(out))
                    out = []
                self._stop.wait(self.faults.spec.delay_s)
            out += reply
        if first_garbled is not None and not answered:
            out += self.server.nak(first_garbled)
        if out:
            send(self._outbound(out))
        return keep

    def _busy(self, frame: p.Frame) -> list[p.Piece]:
        return p.encode_frame(
            p.REPLY,
            frame.tag,
            p.err_body(p.ErrorCode.BUSY, "another client owns this chip; one client at a time"),
        )

    def _gap_nak(self, parser: p.FrameParser, send: Callable[[bytes], None]) -> None:
        """Drop an incomplete frame whose bytes stopped coming, and say so."""
        self.gap_naks += 1
        parser.clear()
        garbled = p.Garbled("incomplete frame: bytes were lost", 0)
        send(self._outbound(self.server.nak(garbled)))

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
        parser = self._parser()
        self.connections += 1
        last_rx = time.monotonic()
        heard = False  # a client spoke since the last hang-up (someone may hold the device)
        while not self._stop.is_set():
            now = time.monotonic()
            wake = [last_rx + self.idle_timeout_s] if heard else []
            if parser.buffered:
                wake.append(last_rx + FRAME_GAP_S)
            timeout = max(0.0, min(wake) - now) if wake else None
            ready, _, _ = select.select([self._master, self._wake_r], [], [], timeout)
            if self._wake_r in ready:
                return
            if not ready:
                now = time.monotonic()
                if parser.buffered and now >= last_rx + FRAME_GAP_S:
                    self._gap_nak(parser, self._send_pty)
                if heard and now >= last_rx + self.idle_timeout_s:
                    # an idle client holds the (exclusive) device: hang up, so the next
                    # client can open the path
                    self.idle_hangups += 1
                    self._hang_up_pty()
                    parser = self._parser()
                    heard = False
                continue
            try:
                data = os.read(self._master, READ_SIZE)
            except BlockingIOError:
                continue
            except OSError as exc:
                if exc.errno == errno.EIO:  # no client side open (cannot happen while we hold one)
                    self._stop.wait(0.01)
                    continue
                raise
            last_rx = time.monotonic()
            heard = True
            keep = self._on_bytes(parser, data, self._send_pty)
            while keep and self._held is not None:
                # one device, one client: hold its wait here (bounded by the idle timeout,
                # cut short by close()), then answer the frames that came after it
                hold_s, reply = self._held
                self._held = None
                if self._stop.wait(hold_s):
                    return
                self._send_pty(self._outbound(reply))
                keep = self._process(parser, self._send_pty)
                last_rx = time.monotonic()
            if not keep:
                self._held = None
                self._hang_up_pty()
                parser = self._parser()
                heard = False
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
        if self._listener is None:
            raise RuntimeError("start_tcp() first")
        listener = self._listener
        self.server.defer_waits = True  # held per client below, so no wait blocks the loop
        clients: dict[int, _Client] = {}
        owner: list[_Client | None] = [None]

        def drop(client: _Client, abort: bool = False) -> None:
            clients.pop(client.sock.fileno(), None)
            if owner[0] is client:
                owner[0] = None
            if abort:  # an abrupt drop (RST), as a pulled cable or a crashed peer looks to the client
                with contextlib.suppress(OSError):
                    client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            with contextlib.suppress(OSError):
                client.sock.close()

        try:
            while not self._stop.is_set():
                now = time.monotonic()
                wake = [c.idle_at(self.idle_timeout_s) for c in clients.values()]
                wake += [c.last_rx + FRAME_GAP_S for c in clients.values() if c.parser.buffered and c.held is None]
                wake += [c.held[0] for c in clients.values() if c.held is not None]
                timeout = max(0.0, min(wake) - now) if wake else None
                ready, _, _ = select.select([listener.fileno(), self._wake_r, *clients], [], [], timeout)
                if self._wake_r in ready:
                    return
                now = time.monotonic()
                for client in list(clients.values()):
                    if client.held is not None and now >= client.held[0]:
                        self._release(client, owner, drop)
                        continue
                    if client.sock.fileno() in ready:
                        continue
                    if client.held is None and client.parser.buffered and now >= client.last_rx + FRAME_GAP_S:
                        self._gap_nak(client.parser, client.send)
                    if now >= client.idle_at(self.idle_timeout_s):
                        self.idle_hangups += 1
                        drop(client)
                for fd in ready:
                    reader = clients.get(fd)
                    if reader is None:
                        continue
                    client = reader
                    try:
                        data = client.sock.recv(READ_SIZE)
                    except OSError:
                        data = b""
                    if not data:
                        drop(client)  # a held wait goes with it: nothing is sent to a vanished client
                        continue
                    client.last_rx = time.monotonic()
                    if client.held is not None:  # answered in order, once its wait is over
                        client.parser.feed(self.faults.mangle(data))
                        continue

                    def admit(frame: p.Frame, client: _Client = client) -> bool:
                        return self._admit(client, owner, frame, drop)

                    keep = self._on_bytes(client.parser, data, client.send, admit)
                    self._hold(client)
                    if not keep or client.failed:
                        drop(client, abort=owner[0] is client or client.failed)
                if listener.fileno() in ready:  # after the reads: a new socket may reuse a closed fd
                    self._accept(listener, clients, owner[0], drop)
        finally:
            for client in list(clients.values()):
                drop(client)

    def _hold(self, client: _Client) -> None:
        """Park the wait reply the last batch left in ``self._held`` on ``client``: the loop
        serves everyone else meanwhile and sends it when due."""
        if self._held is not None:
            hold_s, reply = self._held
            self._held = None
            client.held = (time.monotonic() + hold_s, reply)

    def _release(
        self, client: _Client, owner: list[_Client | None], drop: Callable[[_Client, bool], None]
    ) -> None:
        """Send a held wait reply that is due, then answer what the client sent meanwhile."""
        assert client.held is not None
        reply = client.held[1]
        client.held = None
        client.send(self._outbound(reply))

        def admit(frame: p.Frame) -> bool:
            return self._admit(client, owner, frame, drop)

        keep = self._process(client.parser, client.send, admit)
        self._hold(client)
        if not keep or client.failed:
            drop(client, owner[0] is client or client.failed)

    def _accept(
        self,
        listener: socket.socket,
        clients: dict[int, _Client],
        owner: _Client | None,
        drop: Callable[[_Client], None],
    ) -> None:
        try:
            conn, peer = listener.accept()
        except OSError:
            return
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.settimeout(SEND_TIMEOUT_S)
        self.connections += 1
        client = _Client(conn, str(peer[0]), self._parser(), time.monotonic())
        clients[conn.fileno()] = client
        while len(clients) > MAX_CONNECTIONS:
            waiting = [c for c in clients.values() if c is not owner]
            drop(min(waiting, key=lambda c: c.last_rx))

    def _admit(
        self, client: _Client, owner: list[_Client | None], frame: p.Frame, drop: Callable[[_Client], None]
    ) -> bool:
        """Whether ``client`` may use the chip for ``frame`` (it owns it, or takes it over)."""
        session = frame.tag >> 32
        current = owner[0]
        if current is not None and current is not client:
            if session == p.NO_SESSION or session not in current.sessions:
                return False
            drop(current)  # the same client, back on a new connection: the old one is dead
        owner[0] = client
        if session != p.NO_SESSION:
            client.sessions.add(session)
        return True


@dataclass(eq=False)
class _Client:
    """One TCP connection: its frame parser, when it last sent bytes, the sessions it used."""

    sock: socket.socket
    peer: str
    parser: p.FrameParser
    last_rx: float
    sessions: set[int] = field(default_factory=set)
    failed: bool = False
    #: a wait reply held until a monotonic time: (when, reply pieces)
    held: tuple[float, list[p.Piece]] | None = None

    def idle_at(self, idle_timeout_s: float) -> float:
        """When this client counts as idle: silent that long, not counting a held wait."""
        return max(self.last_rx, self.held[0] if self.held is not None else 0.0) + idle_timeout_s

    def send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError:  # gone, or too slow to read its replies: hung up on by the caller
            self.failed = True
