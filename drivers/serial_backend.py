"""Serial-attached chips: ``serial:///dev/ttyUSB0?baud=921600&timeout=2&retries=8`` (pyserial).

:class:`SerialLink` moves bytes; :class:`~drivers.client.RemoteChip` does the protocol.
The emulator's ``--pty`` device is opened the same way: ``serial://<path it prints>``.
"""

from __future__ import annotations

import contextlib
import os
import select
import time

import serial

try:  # POSIX: pyserial's tcflush raises termios.error (not an OSError) on a hung-up pty
    from termios import error as TermiosError
except ImportError:  # pragma: no cover - Windows

    class TermiosError(Exception):  # type: ignore[no-redef]
        """Stand-in where the termios module does not exist."""

from drivers.client import RemoteChip
from drivers.link_settings import LinkSettings
from drivers.protocol import Piece
from harness.errors import ChipIOError, ChipTimeoutError, ConfigError
from harness.chip.registry import ChipURI, take_params

DEFAULT_BAUD = 115_200


class SerialLink:
    """A :class:`~drivers.link.Link` over a serial port (8N1, no flow control)."""

    def __init__(self, port: str, baudrate: int = DEFAULT_BAUD) -> None:
        if not port:
            raise ConfigError("serial chip URI needs a device path: serial:///dev/ttyUSB0 or serial://COM3")
        if baudrate <= 0:
            raise ConfigError(f"baud rate {baudrate} must be a positive number of bits per second")
        self.port = port
        self.baudrate = baudrate
        self._ser: serial.Serial | None = None

    @property
    def description(self) -> str:
        return self.port

    def open(self) -> None:
        if self._ser is not None:
            return
        try:
            self._ser = serial.Serial(self.port, self.baudrate, timeout=0, write_timeout=2.0, exclusive=True)
        except ValueError as exc:
            raise ConfigError(f"cannot configure serial port {self.port} at {self.baudrate} baud: {exc}") from exc
        except (serial.SerialException, OSError) as exc:
            raise ChipIOError(
                f"cannot open serial port {self.port}: {exc}; check the device path and permissions "
                "(or start an emulator with `harness emulate --pty`)"
            ) from exc

    def close(self) -> None:
        ser, self._ser = self._ser, None
        if ser is not None:
            with contextlib.suppress(serial.SerialException, OSError):  # a port that is already gone
                ser.close()

    def _port(self) -> serial.Serial:
        if self._ser is None:
            raise ChipIOError(f"serial port {self.port} is not open")
        return self._ser

    def write(self, pieces: list[Piece], timeout_s: float) -> None:
        ser = self._port()
        try:
            if ser.write_timeout != timeout_s:  # pyserial reconfigures the port on every set
                ser.write_timeout = timeout_s
            ser.write(b"".join(pieces))
        except serial.SerialTimeoutException as exc:
            raise ChipTimeoutError(f"writing to {self.port} did not finish within {timeout_s:g} s") from exc
        except (serial.SerialException, OSError, TermiosError) as exc:  # tcsetattr on a hung-up pty
            raise ChipIOError(f"serial port {self.port} failed while writing: {exc}") from exc

    def read(self, n: int, timeout_s: float, partial: bool = False) -> bytes:
        ser = self._port()
        fd = _posix_fd(ser)
        if fd is None:
            return self._read_portable(ser, n, timeout_s, partial)
        # POSIX: select + read on the descriptor; setting pyserial's timeout per read
        # would reconfigure the port (flock, tcgetattr, tcsetattr) every time
        out = bytearray()
        deadline = time.monotonic() + max(0.0, timeout_s)
        while len(out) < n:
            remaining = max(0.0, deadline - time.monotonic())
            try:
                ready, _, _ = select.select([fd], [], [], remaining)
                if not ready:
                    break
                chunk = os.read(fd, n - len(out))
            except BlockingIOError:
                continue
            except OSError as exc:
                raise ChipIOError(f"serial port {self.port} failed while reading: {exc}") from exc
            if not chunk:
                raise ChipIOError(f"serial port {self.port} hung up (end of file)")
            out += chunk
            if partial:
                break
        return bytes(out)

    def _read_portable(self, ser: serial.Serial, n: int, timeout_s: float, partial: bool) -> bytes:
        try:
            ser.timeout = max(0.0, timeout_s)
            if not partial:
                return bytes(ser.read(n))
            waiting = ser.in_waiting
            data = bytes(ser.read(min(n, waiting) if waiting else 1))
            if data and len(data) < n and ser.in_waiting:
                data += ser.read(min(n - len(data), ser.in_waiting))
            return data
        except (serial.SerialException, OSError) as exc:
            raise ChipIOError(f"serial port {self.port} failed while reading: {exc}") from exc

    def discard_input(self) -> None:
        ser = self._port()
        try:
            ser.reset_input_buffer()
        except (serial.SerialException, OSError, TermiosError) as exc:
            raise ChipIOError(f"serial port {self.port} failed: {exc}") from exc


def _posix_fd(ser: serial.Serial) -> int | None:
    """The port's file descriptor where select() works on it (POSIX), else None."""
    fd = getattr(ser, "fd", None)
    return fd if isinstance(fd, int) and os.name == "posix" else None


def settings_from(params: dict[str, object]) -> LinkSettings:
    """LinkSettings from the ``timeout``/``retries``/``chunk``/``stall``/``giveup``/``fer`` URI parameters."""
    chunk = int(params["chunk"])  # type: ignore[call-overload]
    return LinkSettings(
        timeout_s=float(params["timeout"]),  # type: ignore[arg-type]
        retries=int(params["retries"]),  # type: ignore[call-overload]
        max_chunk=chunk,
        min_chunk=min(LinkSettings.min_chunk, chunk),
        stall_s=float(params["stall"]),  # type: ignore[arg-type]
        giveup_s=float(params["giveup"]),  # type: ignore[arg-type]
        max_fer=float(params["fer"]),  # type: ignore[arg-type]
    )


#: URI parameters every protocol backend takes.
LINK_PARAMS = {
    "timeout": (float, LinkSettings.timeout_s),
    "retries": (int, LinkSettings.retries),
    "chunk": (int, LinkSettings.max_chunk),
    "stall": (float, LinkSettings.stall_s),
    "giveup": (float, LinkSettings.giveup_s),
    "fer": (float, LinkSettings.max_fer),
}


def check_serial_uri(uri: ChipURI) -> None:
    """What :func:`open_serial` refuses before opening the port (parameters, path, baud)."""
    params = take_params(uri, {"baud": (int, DEFAULT_BAUD), **LINK_PARAMS})
    SerialLink(uri.path, params["baud"])
    settings_from(params)


def open_serial(uri: ChipURI) -> RemoteChip:
    """Open ``serial://<device>?baud=&timeout=&retries=&chunk=`` (defaults 115200 baud, 2 s, 8)."""
    params = take_params(uri, {"baud": (int, DEFAULT_BAUD), **LINK_PARAMS})
    link = SerialLink(uri.path, params["baud"])
    return RemoteChip(link, uri.raw, settings_from(params))
