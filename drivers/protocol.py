"""The PCM chip wire protocol, implemented once for both ends (spec: ``docs/protocol.md``).

Every message — command (host → chip) or reply (chip → host) — is one *frame*: a fixed
36-byte ASCII envelope, the SCPI-style body, and a 10-byte trailer::

    >TTTTTTTTTTTTTTTT LLLLLLLL HHHHHHHH <body> CCCCCCCC\\n
    │└ tag (16 hex) ┘ └ len ┘ └ hcrc ┘        └ crc ┘

``>`` marks a command, ``<`` a reply; ``tag`` is session (8 hex) + sequence (8 hex);
``len`` the body length in bytes; ``hcrc`` the CRC-32 of the first 26 header bytes (so a
length is trusted before any body byte is awaited); ``crc`` the CRC-32 of the body. A
corrupted byte anywhere is detected, never interpreted. Bodies are ``HEADER[ arg,arg…]``
where an argument is an ASCII token, a ``"quoted string"`` or an IEEE 488.2 definite-length
block ``#<n><len><bytes>``.

Bulk data are little-endian binary blocks: cell addresses as ``uint32`` lists or
``(start, count)`` ``uint32`` run pairs (whichever is shorter), SET amplitudes as
``float64`` (bit-exact), ADC codes as ``uint8`` (ADCs of ≤ 8 bits) or ``uint16``.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Union

import numpy as np
import numpy.typing as npt

from harness.errors import ProtocolError

#: Version of this protocol; ``SYST:VERS?`` answers it. A driver refuses other majors.
PROTOCOL_VERSION = 1
#: ``*IDN?`` manufacturer field of every chip that speaks this protocol.
MANUFACTURER = "PCM-HARNESS"

COMMAND = b">"
REPLY = b"<"
HEADER_LEN = 36
TRAILER_LEN = 10
FRAME_OVERHEAD = HEADER_LEN + TRAILER_LEN
#: Largest body either end accepts (a 1,048,576-cell SET with listed addresses is 12 MiB).
MAX_BODY = 64 * 2**20
#: Session 0 is "no session yet": allowed for queries, refused for transactions.
NO_SESSION = 0
MAX_SEQ = 2**32 - 1

_HEADER_RE = re.compile(rb"([<>])([0-9A-F]{16}) ([0-9A-F]{8}) ([0-9A-F]{8}) ")
_TRAILER_RE = re.compile(rb" ([0-9A-F]{8})\n")
#: The end of a trailer, even with one of its first nine bytes damaged.
_TRAILER_END_RE = re.compile(rb"(?: .{8}|[0-9A-F]{8})\n\Z", re.DOTALL)
_TOKEN_RE = re.compile(rb"[\x21-\x7e]*")  # printable ASCII without space; ',' handled by the splitter

# --- command headers -----------------------------------------------------------------------
IDN = "*IDN?"
VERSION = "SYST:VERS?"
SESSION = "SYST:SESS?"
ERROR_QUEUE = "SYST:ERR?"
GEOMETRY = "GEOM?"
CONDUCTANCE_RANGE = "GEOM:COND?"
ADC = "GEOM:ADC?"
AMPLITUDE_LIMIT = "LIM:AMPL?"
TIME = "TIME?"
TIME_WAIT = "TIME:WAIT"
BUFFER_WRITE = "BUF:WRIT"
CELL_RESET = "CELL:RES"
CELL_SET = "CELL:SET"
CELL_READ = "CELL:READ?"
FETCH = "DATA:FETC?"

#: Commands with a side effect or that consume the chip's randomness: each carries a
#: transaction tag; the chip executes a tag at most once and answers a retried tag from
#: its reply cache. Every other command is a pure query or idempotent and is re-executed.
TRANSACTIONS = frozenset({CELL_RESET, CELL_SET, CELL_READ, TIME_WAIT, ERROR_QUEUE})

#: Staged data (``BUF,<nbytes>,<crc>``) instead of an inline block.
STAGED = "BUF"


class ErrorCode(IntEnum):
    """Codes of ``ERR <code>,"<message>"`` replies (SCPI numbers where SCPI has one)."""

    COMMAND_ERROR = -100
    SYNTAX_ERROR = -102
    PARAMETER_ERROR = -108
    UNDEFINED_HEADER = -113
    EXECUTION_ERROR = -200
    DATA_OUT_OF_RANGE = -222  # safety limit: nothing was applied
    STALE_TRANSACTION = 101  # tag older than the last executed one and no longer cached
    STAGING_MISMATCH = 102  # staged bytes differ from the announced length/CRC: upload again
    UNKNOWN_RESULT = 103  # FETC? of a result that is not (or no longer) stored
    NO_SESSION = 104  # a transaction with session 0
    UNKNOWN_SESSION = 105  # a session this chip never issued (it restarted: state is lost)
    TOO_LARGE = 106  # a request larger than this chip could ever need (bounded by its size)
    BUSY = 107  # another client owns the chip: one owner at a time
    WAIT_TOO_LONG = 108  # TIME:WAIT asked to block longer than the chip lets one client hold it


def crc32(data: bytes | bytearray | memoryview, value: int = 0) -> int:
    """CRC-32 (IEEE 802.3, as zlib) of ``data``, continuing from ``value``."""
    return zlib.crc32(data, value) & 0xFFFFFFFF


def make_tag(session: int, seq: int) -> int:
    """The 64-bit tag of sequence number ``seq`` in ``session``."""
    return (session & 0xFFFFFFFF) << 32 | (seq & 0xFFFFFFFF)


def split_tag(tag: int) -> tuple[int, int]:
    """``(session, seq)`` of a tag."""
    return tag >> 32, tag & 0xFFFFFFFF


# --- framing -------------------------------------------------------------------------------
Piece = Union[bytes, bytearray, memoryview]


def encode_frame(marker: bytes, tag: int, body: Sequence[Piece]) -> list[Piece]:
    """The frame carrying ``body`` (given in pieces, so big blocks are never copied)."""
    length = 0
    crc = 0
    for piece in body:
        length += len(piece)
        crc = crc32(piece, crc)
    if length > MAX_BODY:
        raise ProtocolError(f"message body of {length} bytes exceeds the protocol limit of {MAX_BODY} bytes")
    head = b"%s%016X %08X" % (marker, tag, length)
    return [b"%s %08X " % (head, crc32(head)), *body, b" %08X\n" % crc]


def frame_bytes(marker: bytes, tag: int, body: Sequence[Piece]) -> bytes:
    """:func:`encode_frame` joined into one ``bytes``."""
    return b"".join(bytes(p) for p in encode_frame(marker, tag, body))


@dataclass(frozen=True)
class Frame:
    """A frame that passed both checks."""

    tag: int
    body: bytes

    @property
    def size(self) -> int:
        return FRAME_OVERHEAD + len(self.body)


@dataclass(frozen=True)
class Garbled:
    """Bytes the parser threw away: ``reason``, how many, and the tag when the header passed
    its check (the body did not); ``sample``/``tail``: first and last bytes of dropped junk."""

    reason: str
    nbytes: int
    tag: int | None = None
    sample: bytes = b""
    tail: bytes = b""


class FrameParser:
    """Incremental frame parser for one direction (``marker``), shared by both ends.

    ``feed`` bytes, then call :meth:`next` until it returns an ``int``: the number of bytes
    still needed before anything more can be decided. Everything that is not a valid frame
    comes out as :class:`Garbled` and is dropped: bytes before a marker in one piece, a
    header whose check fails one byte at a time (a resynchronising scan), a whole frame
    whose header was valid but whose body or trailer was not.
    """

    def __init__(self, marker: bytes, max_body: int = MAX_BODY) -> None:
        self._marker = marker
        self._max_body = max_body
        self._buf = bytearray()

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: Piece) -> None:
        self._buf += data

    def pending_tag(self) -> int | None:
        """The tag of the incomplete frame buffered, if its header already passed its check
        (its body is still missing); None otherwise."""
        buf = self._buf
        if len(buf) < HEADER_LEN or buf[0] != self._marker[0]:
            return None
        m = _HEADER_RE.match(buf)
        if m is None or int(m.group(4), 16) != crc32(memoryview(buf)[:26]):
            return None
        return int(m.group(2), 16)

    def clear(self) -> int:
        """Drop everything buffered; returns how many bytes were dropped."""
        n = len(self._buf)
        self._buf.clear()
        return n

    def next(self) -> Frame | Garbled | int:
        buf = self._buf
        if not buf:
            return HEADER_LEN
        if buf[0] != self._marker[0]:
            at = buf.find(self._marker, 1)
            n = at if at > 0 else len(buf)
            sample = bytes(buf[: min(n, 64)])
            tail = bytes(buf[max(0, n - 16) : n])
            del buf[:n]
            return Garbled("bytes outside any frame", n, sample=sample, tail=tail)
        if len(buf) < HEADER_LEN:
            return HEADER_LEN - len(buf)
        m = _HEADER_RE.match(buf)
        if m is None or int(m.group(4), 16) != crc32(memoryview(buf)[:26]):
            del buf[:1]
            return Garbled("frame header fails its check", 1)
        tag = int(m.group(2), 16)
        length = int(m.group(3), 16)
        if length > self._max_body:
            del buf[:1]
            return Garbled(f"frame length {length} exceeds {self._max_body}", 1)
        total = HEADER_LEN + length + TRAILER_LEN
        if len(buf) < total:
            return total - len(buf)
        mv = memoryview(buf)
        body = bytes(mv[HEADER_LEN : HEADER_LEN + length])
        t = _TRAILER_RE.fullmatch(mv[HEADER_LEN + length : total].tobytes())
        ok = t is not None and int(t.group(1), 16) == crc32(body)
        mv.release()
        del buf[:total]
        if not ok:
            return Garbled("frame body fails its checksum", total, tag=tag)
        return Frame(tag, body)


def ends_like_frame(tail: bytes) -> bool:
    """Whether dropped bytes end like a frame's trailer (a damaged frame that is now over)."""
    return _TRAILER_END_RE.search(tail) is not None


# --- bodies --------------------------------------------------------------------------------
class Block(bytes):
    """A definite-length block argument (``#<n><len><bytes>``)."""


Arg = Union[str, Block]


def block(data: Piece) -> list[Piece]:
    """An IEEE 488.2 definite-length block: ``#<digits of len><len><data>`` as pieces."""
    n = len(data)
    digits = str(n).encode()
    if len(digits) > 9:
        raise ProtocolError(f"block of {n} bytes is too long for a definite-length header")
    return [b"#%d%s" % (len(digits), digits), data]


def quote(text: str) -> str:
    """A SCPI string argument (``"`` doubled)."""
    return '"' + text.replace('"', '""').replace("\n", " ") + '"'


def fmt_float(x: float) -> str:
    """Shortest decimal that round-trips the float exactly."""
    return repr(float(x))


def build_body(header: str, args: Sequence[str | list[Piece]] = ()) -> list[Piece]:
    """Body pieces ``HEADER arg,arg,…``; a list argument is a block from :func:`block`."""
    parts: list[Piece] = [header.encode("ascii")]
    for i, arg in enumerate(args):
        parts.append(b" " if i == 0 else b",")
        if isinstance(arg, str):
            parts.append(arg.encode("ascii"))
        else:
            parts.extend(arg)
    return parts


def parse_body(body: bytes) -> tuple[str, list[Arg]]:
    """Split a body into its header and arguments; raises ProtocolError if malformed."""
    mv = memoryview(body)
    sp = body.find(b" ")
    head = body if sp < 0 else body[:sp]
    if not head or _TOKEN_RE.fullmatch(head) is None:
        raise ProtocolError(f"malformed message header {head[:40]!r}")
    args: list[Arg] = []
    if sp < 0:
        return head.decode("ascii"), args
    i, end = sp + 1, len(body)
    while True:
        if i >= end:
            raise ProtocolError("message ends where an argument was expected")
        c = body[i]
        if c == 0x23:  # '#': definite-length block
            if i + 2 > end or not 0x31 <= body[i + 1] <= 0x39:
                raise ProtocolError("malformed block header")
            nd = body[i + 1] - 0x30
            digits = body[i + 2 : i + 2 + nd]
            if len(digits) != nd or not digits.isdigit():
                raise ProtocolError("malformed block length")
            start = i + 2 + nd
            stop = start + int(digits)
            if stop > end:
                raise ProtocolError(f"block of {int(digits)} bytes runs past the end of the message")
            args.append(Block(mv[start:stop]))
            i = stop
        elif c == 0x22:  # '"': string, '""' escapes a quote
            j = i + 1
            while True:
                j = body.find(b'"', j)
                if j < 0:
                    raise ProtocolError("unterminated string argument")
                if body[j + 1 : j + 2] == b'"':
                    j += 2
                    continue
                break
            args.append(body[i + 1 : j].decode("utf-8", "replace").replace('""', '"'))
            i = j + 1
        else:
            j = body.find(b",", i)
            j = end if j < 0 else j
            tok = body[i:j]
            if not tok or _TOKEN_RE.fullmatch(tok) is None:
                raise ProtocolError(f"malformed argument {tok[:40]!r}")
            args.append(tok.decode("ascii"))
            i = j
        if i == end:
            return head.decode("ascii"), args
        if body[i] != 0x2C:
            raise ProtocolError("arguments must be separated by ','")
        i += 1


def parse_int(arg: Arg, what: str, lo: int = 0, hi: int = 2**63 - 1) -> int:
    """A decimal integer argument in ``lo..hi``; ProtocolError otherwise."""
    if isinstance(arg, Block) or not re.fullmatch(r"-?[0-9]+", arg):
        raise ProtocolError(f"{what} must be a decimal integer, got {str(arg)[:40]!r}")
    value = int(arg)
    if not lo <= value <= hi:
        raise ProtocolError(f"{what} {value} is outside {lo}..{hi}")
    return value


def parse_float(arg: Arg, what: str, finite: bool = True) -> float:
    """A decimal float argument; ProtocolError if malformed (or not finite)."""
    if isinstance(arg, Block):
        raise ProtocolError(f"{what} must be a number, got a block")
    try:
        value = float(arg)
    except ValueError:
        raise ProtocolError(f"{what} must be a number, got {arg[:40]!r}") from None
    if finite and not np.isfinite(value):
        raise ProtocolError(f"{what} must be finite, got {arg!r}")
    return value


def parse_hex32(arg: Arg, what: str) -> int:
    if isinstance(arg, Block) or not re.fullmatch(r"[0-9A-F]{8}", arg):
        raise ProtocolError(f"{what} must be 8 upper-case hex digits, got {str(arg)[:40]!r}")
    return int(arg, 16)


def parse_tag(arg: Arg) -> int:
    if isinstance(arg, Block) or not re.fullmatch(r"[0-9A-F]{16}", arg):
        raise ProtocolError(f"tag must be 16 upper-case hex digits, got {str(arg)[:40]!r}")
    return int(arg, 16)


def fmt_tag(tag: int) -> str:
    return f"{tag:016X}"


# --- replies -------------------------------------------------------------------------------
OK, ERR, NAK = "OK", "ERR", "NAK"


@dataclass(frozen=True)
class Reply:
    """A parsed reply body: ``status`` is ``OK``, ``ERR`` or ``NAK``."""

    status: str
    args: list[Arg]

    @property
    def error(self) -> tuple[int, str]:
        """``(code, message)`` of an ERR reply (``(0, message)`` for NAK)."""
        if self.status == ERR and len(self.args) == 2 and isinstance(self.args[1], str):
            return parse_int(self.args[0], "error code", -(2**31), 2**31), self.args[1]
        return 0, " ".join(str(a) for a in self.args if isinstance(a, str))


def parse_reply(body: bytes) -> Reply:
    head, args = parse_body(body)
    if head not in (OK, ERR, NAK):
        raise ProtocolError(f"reply status must be OK, ERR or NAK, got {head[:20]!r}")
    return Reply(head, args)


def ok_body(args: Sequence[str | list[Piece]] = ()) -> list[Piece]:
    return build_body(OK, args)


def err_body(code: int, message: str) -> list[Piece]:
    return build_body(ERR, [str(int(code)), quote(message)])


def nak_body(reason: str) -> list[Piece]:
    return build_body(NAK, [quote(reason)])


# --- bulk encodings ------------------------------------------------------------------------
ADDR_LIST, ADDR_RANGES = "L", "R"
AMP_SCALAR, AMP_VECTOR = "S", "V"
CODE_FORMATS: dict[str, np.dtype[Any]] = {"U1": np.dtype("<u1"), "U2": np.dtype("<u2")}
MAX_ADDRESS = 2**32 - 1


def encode_cells(cells: npt.NDArray[np.int64]) -> tuple[str, bytes]:
    """``(format, bytes)`` of flat addresses: run pairs if shorter than the list."""
    n = int(cells.size)
    if n == 0:
        return ADDR_LIST, b""
    breaks = np.diff(cells) != 1
    starts = np.concatenate(([0], np.flatnonzero(breaks) + 1)) if breaks.any() else np.zeros(1, np.int64)
    if starts.size * 8 < n * 4:
        ranges = np.empty((starts.size, 2), dtype="<u4")
        ranges[:, 0] = cells[starts]
        ranges[:, 1] = np.diff(np.append(starts, n))
        return ADDR_RANGES, ranges.tobytes()
    return ADDR_LIST, cells.astype("<u4").tobytes()


def decode_cells(fmt: str, data: bytes | memoryview, n: int, n_cells: int) -> npt.NDArray[np.int64]:
    """Addresses from :func:`encode_cells` bytes; ProtocolError if they do not describe
    exactly ``n`` addresses below ``n_cells``."""
    if fmt == ADDR_LIST:
        if len(data) != 4 * n:
            raise ProtocolError(f"address list of {len(data)} bytes does not hold {n} uint32 addresses")
        out = np.frombuffer(data, dtype="<u4").astype(np.int64)
    elif fmt == ADDR_RANGES:
        if len(data) % 8:
            raise ProtocolError(f"address ranges of {len(data)} bytes are not (start, count) uint32 pairs")
        pairs = np.frombuffer(data, dtype="<u4").reshape(-1, 2).astype(np.int64)
        starts, counts = pairs[:, 0], pairs[:, 1]
        if int(counts.sum()) != n:
            raise ProtocolError(f"address ranges cover {int(counts.sum())} cells, the command says {n}")
        if pairs.size and int((starts + counts).max()) > n_cells:
            raise ProtocolError(f"address range ends past the last cell {n_cells - 1}")
        offsets = np.cumsum(counts) - counts
        out = np.arange(n, dtype=np.int64) + np.repeat(starts - offsets, counts)
    else:
        raise ProtocolError(f"unknown address format {fmt[:8]!r}; expected L or R")
    if out.size and int(out.max()) >= n_cells:
        raise ProtocolError(f"cell address {int(out.max())} is off the array (0..{n_cells - 1})")
    return out


def encode_amplitudes(amplitude: npt.NDArray[np.float64]) -> tuple[str, bytes]:
    """``(mode, bytes)``: one float64 if all amplitudes are bit-identical, else one per cell."""
    a = np.ascontiguousarray(amplitude, dtype="<f8")
    if a.size and np.all(a.view(np.uint64) == a.view(np.uint64)[0]):
        return AMP_SCALAR, a[:1].tobytes()
    return AMP_VECTOR, a.tobytes()


def decode_amplitudes(mode: str, data: bytes | memoryview, n: int) -> npt.NDArray[np.float64]:
    if mode == AMP_SCALAR:
        if len(data) != 8:
            raise ProtocolError(f"scalar amplitude must be 8 bytes (float64), got {len(data)}")
        return np.full(n, np.frombuffer(data, dtype="<f8")[0])
    if mode == AMP_VECTOR:
        if len(data) != 8 * n:
            raise ProtocolError(f"amplitude vector of {len(data)} bytes does not hold {n} float64 values")
        return np.frombuffer(data, dtype="<f8").astype(np.float64)
    raise ProtocolError(f"unknown amplitude mode {mode[:8]!r}; expected S or V")


def amplitude_bytes(mode: str, n: int) -> int:
    return 8 if mode == AMP_SCALAR else 8 * n


def max_payload(n_cells: int) -> int:
    """Largest data a transaction on an array of ``n_cells`` can carry: a SET of every cell
    with listed addresses and one amplitude each (uint32 + float64 per cell)."""
    return 12 * n_cells


def max_command_body(n_cells: int) -> int:
    """Largest command body a chip of ``n_cells`` cells needs to accept: the largest
    payload inline, plus its header and arguments."""
    return min(MAX_BODY, max_payload(n_cells) + 256)


def code_format(adc_bits: int) -> str:
    """Wire format of ADC codes: ``U1`` for ADCs of ≤ 8 bits, ``U2`` up to 16 bits."""
    return "U1" if adc_bits <= 8 else "U2"
