"""VISA-attached chips: ``visa://TCPIP::127.0.0.1::5025::SOCKET?timeout=2&retries=8`` (pyvisa).

The VISA library defaults to ``@py`` (pyvisa-py, pure Python); ``library=`` picks another,
e.g. ``library=fixtures/pyvisa_sim/pcm_chip.yaml@sim`` for pyvisa-sim smoke tests.
:class:`VisaLink` moves bytes; :class:`~drivers.client.RemoteChip` does the protocol.
"""

from __future__ import annotations

import contextlib
import socket
import time

import pyvisa
from pyvisa import constants, rname

from drivers.client import RemoteChip
from drivers.protocol import Piece
from drivers.serial_backend import LINK_PARAMS, settings_from
from harness.errors import ChipIOError, ChipTimeoutError, ConfigError
from harness.chip.registry import ChipURI, take_params

DEFAULT_LIBRARY = "@py"
OPEN_TIMEOUT_MS = 5000
#: Largest read handed to the VISA library at once.
READ_CHUNK = 1 << 20
#: Largest frame by default. pyvisa-py's socket write waits for the socket without a
#: timeout; frames that fit in the kernel's socket buffers never wait, even if a hung
#: instrument stops reading (its silence then ends in a read timeout).
DEFAULT_CHUNK = 1 << 20
#: VISA timeout of a read that takes whatever bytes are there (s).
PARTIAL_POLL_S = 0.002


def visa_package(library: str) -> str:
    """The PyPI package that provides a VISA ``library`` string (``@sim`` → pyvisa-sim)."""
    if library.endswith("@sim"):
        return "pyvisa-sim"
    if library.endswith("@py") or not library:
        return "pyvisa-py"
    return f"the VISA library {library!r} (e.g. NI-VISA)"


class VisaLink:
    """A :class:`~drivers.link.Link` over a message-based VISA resource, raw bytes both ways."""

    def __init__(self, resource: str, library: str = DEFAULT_LIBRARY) -> None:
        if not resource:
            raise ConfigError("VISA chip URI needs a resource name: visa://TCPIP::127.0.0.1::5025::SOCKET")
        try:
            rname.parse_resource_name(resource)
        except rname.InvalidResourceName as exc:
            raise ConfigError(
                f"malformed or unsupported VISA resource {resource!r} ({exc}); e.g. visa://TCPIP::127.0.0.1::5025::SOCKET"
            ) from exc
        self.resource = resource
        self.library = library
        self._rm: pyvisa.ResourceManager | None = None
        self._res: pyvisa.resources.MessageBasedResource | None = None
        self._pending = b""

    @property
    def description(self) -> str:
        return self.resource

    def _manager(self) -> pyvisa.ResourceManager:
        if self._rm is None:
            try:
                self._rm = pyvisa.ResourceManager(self.library)
            except (ValueError, OSError, pyvisa.errors.Error) as exc:
                raise ConfigError(
                    f"VISA library {self.library!r} is not available ({exc}); install {visa_package(self.library)} "
                    "or name another with library= in the chip URI"
                ) from exc
        return self._rm

    def open(self) -> None:
        if self._res is not None:
            return
        rm = self._manager()
        try:
            res = rm.open_resource(self.resource, open_timeout=OPEN_TIMEOUT_MS)
        except pyvisa.errors.VisaIOError as exc:
            raise ChipIOError(
                f"cannot open VISA resource {self.resource}: {exc.description}; check that the chip (or "
                "`harness emulate --tcp`) is running there"
            ) from exc
        except (ValueError, pyvisa.errors.Error) as exc:
            raise ConfigError(
                f"malformed or unsupported VISA resource {self.resource!r} ({exc}); "
                "e.g. visa://TCPIP::127.0.0.1::5025::SOCKET"
            ) from exc
        except Exception as exc:  # pyvisa-py raises bare Exception for refused connections
            raise ChipIOError(f"cannot open VISA resource {self.resource}: {exc}") from exc
        if not isinstance(res, pyvisa.resources.MessageBasedResource):
            res.close()
            raise ConfigError(f"VISA resource {self.resource} is not message-based; use a SOCKET or INSTR resource")
        try:
            res.read_termination = None  # type: ignore[assignment]  # None: raw bytes, no termination
            res.write_termination = None  # type: ignore[assignment]
            res.chunk_size = READ_CHUNK
            res.set_visa_attribute(constants.ResourceAttribute.termchar_enabled, constants.VI_FALSE)
            # hand back partial data when the stream pauses, instead of losing it at the timeout
            res.set_visa_attribute(constants.ResourceAttribute.suppress_end_enabled, constants.VI_FALSE)
            if res.interface_type == constants.InterfaceType.tcpip:
                _no_nagle(res)
        except pyvisa.errors.VisaIOError as exc:
            res.close()
            raise ChipIOError(f"cannot configure VISA resource {self.resource}: {exc.description}") from exc
        self._res = res
        self._pending = self._probe()

    def _probe(self) -> bytes:
        """Read with a 1 ms timeout: a refused TCP connection fails here, not at the first command."""
        try:
            return self.read(1, 0.001)
        except ChipIOError as exc:
            self.close()
            raise ChipIOError(
                f"cannot reach VISA resource {self.resource}: {exc.__cause__ or exc}; check that the chip "
                "(or `harness emulate --tcp`) is running there"
            ) from exc

    def close(self) -> None:
        res, self._res = self._res, None
        self._pending = b""
        if res is not None:
            with contextlib.suppress(Exception):  # closing a session whose peer is already gone
                res.close()

    def _resource(self) -> pyvisa.resources.MessageBasedResource:
        if self._res is None:
            raise ChipIOError(f"VISA resource {self.resource} is not open")
        return self._res

    def write(self, pieces: list[Piece], timeout_s: float) -> None:
        res = self._resource()
        try:
            res.timeout = max(1, round(timeout_s * 1000))
            res.write_raw(b"".join(pieces))
        except pyvisa.errors.VisaIOError as exc:
            if exc.error_code == constants.StatusCode.error_timeout:
                raise ChipTimeoutError(f"writing to {self.resource} did not finish within {timeout_s:g} s") from exc
            raise ChipIOError(f"VISA resource {self.resource} failed while writing: {exc.description}") from exc
        except OSError as exc:
            raise ChipIOError(f"VISA resource {self.resource} failed while writing: {exc}") from exc

    def read(self, n: int, timeout_s: float, partial: bool = False) -> bytes:
        res = self._resource()
        out = bytearray(self._pending[:n])
        self._pending = self._pending[n:]
        deadline = time.monotonic() + timeout_s
        while len(out) < n and not (partial and out):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            # pyvisa-py hands back a partial read after a pause of half its timeout: keep
            # that pause short when any bytes will do
            visa_timeout = min(remaining, PARTIAL_POLL_S) if partial else remaining
            try:
                res.timeout = max(1, round(visa_timeout * 1000))
                with res.ignore_warning(constants.StatusCode.success_max_count_read):
                    data, _status = res.visalib.read(res.session, min(n - len(out), READ_CHUNK))
            except pyvisa.errors.VisaIOError as exc:
                if exc.error_code == constants.StatusCode.error_timeout:
                    if partial:
                        continue
                    break
                raise ChipIOError(f"VISA resource {self.resource} failed while reading: {exc.description}") from exc
            except OSError as exc:
                raise ChipIOError(f"VISA resource {self.resource} failed while reading: {exc}") from exc
            if not data:
                break
            out += data
            if len(out) < n and not partial:
                break  # the stream paused: hand back what arrived
        return bytes(out)

    def discard_input(self) -> None:
        res = self._resource()
        self._pending = b""
        # best effort: the frame parser resynchronises anyway
        with contextlib.suppress(pyvisa.errors.Error, NotImplementedError):
            res.flush(constants.BufferOperation.discard_receive_buffer)


def _no_nagle(res: pyvisa.resources.MessageBasedResource) -> None:
    """Turn off Nagle's algorithm: pyvisa-py sends a frame in 4 KiB pieces and, with Nagle,
    each waits for the peer's delayed ACK of the previous one (40 ms stalls)."""
    try:
        res.set_visa_attribute(constants.ResourceAttribute.tcpip_nodelay, constants.VI_TRUE)
        return
    except Exception:  # noqa: BLE001 - pyvisa-py 0.8 registers no setter for this attribute
        pass
    sock = getattr(getattr(res.visalib, "sessions", {}).get(res.session), "interface", None)
    if isinstance(sock, socket.socket):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def check_visa_uri(uri: ChipURI) -> None:
    """What :func:`open_visa` refuses before opening the resource (parameters, resource name)."""
    params = take_params(uri, {"library": (str, DEFAULT_LIBRARY), **LINK_PARAMS, "chunk": (int, DEFAULT_CHUNK)})
    VisaLink(uri.path, params["library"])
    settings_from(params)


def open_visa(uri: ChipURI) -> RemoteChip:
    """Open ``visa://<resource>?library=@py&timeout=&retries=&chunk=`` (defaults: pyvisa-py, 2 s,
    8 retries, 1 MiB chunks)."""
    params = take_params(uri, {"library": (str, DEFAULT_LIBRARY), **LINK_PARAMS, "chunk": (int, DEFAULT_CHUNK)})
    link = VisaLink(uri.path, params["library"])
    return RemoteChip(link, uri.raw, settings_from(params))
