"""The device side of the wire protocol: executes command frames on a Chip.

Transport-agnostic (frames in, reply frames out); :mod:`drivers.emulator` puts it behind
a pseudo-terminal or a TCP port. It keeps what makes retries safe, per session and across
reconnects: the reply of every recent transaction (a retried tag is answered from this
cache and never touches the chip again), the number of the last executed transaction
(an older tag that is no longer cached is refused, never executed), the staging buffer of
uploads, and READ results for chunked fetches.

Everything is validated before the chip is touched; the chip (a
:class:`~harness.chip.protocol.ChipBackend`) validates safety limits once more itself. Every buffer
and request is bounded by the chip's size, not by what a client claims: a command body by
:func:`~drivers.protocol.max_command_body`, staged data by
:func:`~drivers.protocol.max_payload` (one staging buffer for the whole chip), a cell
count by the number of cells, kept READ results by ``READ_RESULTS_KEPT`` per session.
"""

from __future__ import annotations

import math
import secrets
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from drivers import protocol as p
from harness.chip.protocol import Chip
from harness.errors import ProtocolError, SafetyLimitError

#: Transactions whose replies each session keeps for retries.
CACHE_SIZE = 32
#: Sessions kept at once (least recently used is forgotten).
MAX_SESSIONS = 8
#: READ results per session whose codes stay stored for retries and ``DATA:FETC?``
#: (the host holds the reply to transaction k before it starts k+1, so 2 is plenty).
READ_RESULTS_KEPT = 2
#: Errors kept for ``SYST:ERR?``.
ERROR_QUEUE_LEN = 16


class _Refused(Exception):
    """A command rejected before execution (nothing touched, nothing cached)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class _Result:
    """What a transaction produced: reply args, or (READ) stored codes."""

    args: list[str] = field(default_factory=list)
    error: tuple[int, str] | None = None
    data: bytes | None = None
    code_format: str = ""
    n: int = 0


@dataclass
class _Session:
    last_txn: int = 0
    results: OrderedDict[int, _Result] = field(default_factory=OrderedDict)


class ChipServer:
    """Serves one Chip through the protocol. Not thread-safe: one connection at a time.

    Args:
        chip: the chip to drive (a VirtualPCMChip in the emulator; its ``read_codes`` is
            used when present so readouts cross the wire as the chip's own ADC codes).
        identity: the ``*IDN?`` answer; must start with ``PCM-HARNESS,``.
        session_base: first session id issued (random by default, so a restarted server
            never honours a tag meant for its predecessor).
    """

    def __init__(self, chip: Chip, identity: str, session_base: int | None = None) -> None:
        if identity.split(",")[0] != p.MANUFACTURER:
            raise ValueError(f"identity {identity!r} must start with {p.MANUFACTURER},")
        self.chip = chip
        self.identity = identity
        self._next_session = session_base if session_base is not None else secrets.randbits(32)
        self._sessions: OrderedDict[int, _Session] = OrderedDict()
        self._errors: deque[tuple[int, str]] = deque(maxlen=ERROR_QUEUE_LEN)
        self.executed = 0  # transactions executed on the chip (not answered from cache)
        #: longest ``TIME:WAIT`` block a client may ask for (s); longer is refused (108)
        self.max_wait_s = math.inf
        #: when True a wall-clock ``TIME:WAIT`` does not sleep: :attr:`due_s` says when its
        #: reply may go out, and the transport holds it until then (serving others meanwhile)
        self.defer_waits = False
        #: chip time the reply of the frame just handled is due at (None: now)
        self.due_s: float | None = None
        g = chip.geometry
        #: largest staged upload and command body this chip can need (bytes)
        self.max_staging = p.max_payload(g.n_cells)
        self.max_command_body = p.max_command_body(g.n_cells)
        # one staging buffer for the chip (one owner at a time): (session, seq) it belongs to
        self._staging_key: tuple[int, int] = (0, 0)
        self._staging = bytearray()
        self._txn_key: tuple[int, int] = (0, 0)  # the transaction being executed
        self._code_format = p.code_format(g.adc_bits)
        self._queries: dict[str, Callable[[list[p.Arg]], list[str | list[p.Piece]]]] = {
            p.IDN: lambda a: [p.quote(self.identity)],
            p.VERSION: lambda a: [str(p.PROTOCOL_VERSION)],
            p.SESSION: lambda a: [f"{self._new_session():08X}"],
            p.GEOMETRY: lambda a: [str(g.rows), str(g.cols)],
            p.CONDUCTANCE_RANGE: lambda a: [p.fmt_float(g.g_min_uS), p.fmt_float(g.g_max_uS)],
            p.ADC: lambda a: [str(g.adc_bits), p.fmt_float(g.adc_min_uS), p.fmt_float(g.adc_max_uS)],
            p.AMPLITUDE_LIMIT: lambda a: [p.fmt_float(g.max_set_amplitude)],
            p.TIME: lambda a: [p.fmt_float(self.chip.now())],
            p.BUFFER_WRITE: self._buffer_write,
            p.FETCH: self._fetch,
        }
        self._transactions: dict[str, Callable[[_Session, int, list[p.Arg]], _Result]] = {
            p.CELL_RESET: self._cell_reset,
            p.CELL_SET: self._cell_set,
            p.CELL_READ: self._cell_read,
            p.TIME_WAIT: self._time_wait,
            p.ERROR_QUEUE: self._error_queue,
        }

    # --- frames ----------------------------------------------------------------------------
    def handle(self, frame: p.Frame) -> list[p.Piece]:
        """The reply frame (as pieces) to one command frame (see :attr:`due_s`)."""
        self.due_s = None
        return p.encode_frame(p.REPLY, frame.tag, self._handle_body(frame.tag, frame.body))

    def nak(self, garbled: p.Garbled) -> list[p.Piece]:
        """The NAK frame for bytes that were not a readable command."""
        self._push_error(p.ErrorCode.COMMAND_ERROR, f"unreadable command: {garbled.reason}")
        return p.encode_frame(p.REPLY, garbled.tag or 0, p.nak_body(garbled.reason))

    def _handle_body(self, tag: int, body: bytes) -> list[p.Piece]:
        try:
            head, args = p.parse_body(body)
        except ProtocolError as exc:
            return self._error(p.ErrorCode.SYNTAX_ERROR, str(exc))
        if head in self._transactions:
            return self._transaction(tag, head, args)
        query = self._queries.get(head)
        if query is None:
            return self._error(p.ErrorCode.UNDEFINED_HEADER, f"unknown command {head[:40]!r}")
        try:
            return p.ok_body(query(args))
        except _Refused as exc:
            return self._error(exc.code, exc.message)
        except ProtocolError as exc:
            return self._error(p.ErrorCode.PARAMETER_ERROR, str(exc))
        except Exception as exc:  # noqa: BLE001 - a failing query must not take the server down
            return self._error(p.ErrorCode.EXECUTION_ERROR, str(exc) or type(exc).__name__)

    def _transaction(self, tag: int, head: str, args: list[p.Arg]) -> list[p.Piece]:
        session_id, seq = p.split_tag(tag)
        try:
            sess = self._session(session_id)
            cached = sess.results.get(seq)
            self._txn_key = (session_id, seq)
            if cached is None:
                if seq <= sess.last_txn:
                    raise _Refused(
                        p.ErrorCode.STALE_TRANSACTION,
                        f"transaction {seq} is older than the last executed ({sess.last_txn}) and no longer cached",
                    )
                try:
                    cached = self._transactions[head](sess, seq, args)
                except (ProtocolError, _Refused):
                    raise  # refused before the chip was touched: not executed, not cached
                except Exception as exc:  # noqa: BLE001 - the chip refused or failed: executed, cache it
                    refused = isinstance(exc, SafetyLimitError)
                    code = p.ErrorCode.DATA_OUT_OF_RANGE if refused else p.ErrorCode.EXECUTION_ERROR
                    cached = _Result(error=(code, str(exc) or type(exc).__name__))
                self.executed += 1
                sess.last_txn = seq
                sess.results[seq] = cached
                while len(sess.results) > CACHE_SIZE:
                    sess.results.popitem(last=False)
                self._expire_read_data(sess)
            return self._render(head, cached, args)
        except _Refused as exc:
            return self._error(exc.code, exc.message)
        except ProtocolError as exc:
            return self._error(p.ErrorCode.PARAMETER_ERROR, str(exc))

    @staticmethod
    def _expire_read_data(sess: _Session) -> None:
        """Keep the codes of the newest READ_RESULTS_KEPT reads; older ones become stale."""
        kept = 0
        for seq in reversed(sess.results):
            result = sess.results[seq]
            if result.data is not None:
                kept += 1
                if kept > READ_RESULTS_KEPT:
                    del sess.results[seq]  # a retry of it is refused as stale (101), never re-executed
                    break

    def _render(self, head: str, result: _Result, args: list[p.Arg]) -> list[p.Piece]:
        if result.error is not None:
            return p.err_body(*result.error)
        if head == p.CELL_READ and result.data is not None:
            max_inline = p.parse_int(args[2], "max inline bytes") if len(args) > 2 else 0
            out: list[str | list[p.Piece]] = [
                str(result.n), result.code_format, str(len(result.data)), f"{p.crc32(result.data):08X}",
            ]
            if len(result.data) <= max_inline:
                out.append(p.block(result.data))
            return p.ok_body(out)
        return p.ok_body(list(result.args))

    def _error(self, code: int, message: str) -> list[p.Piece]:
        self._push_error(code, message)
        return p.err_body(code, message)

    def _push_error(self, code: int, message: str) -> None:
        self._errors.append((int(code), message))

    # --- sessions --------------------------------------------------------------------------
    def _new_session(self) -> int:
        self._next_session = (self._next_session + 1) & 0xFFFFFFFF or 1
        sid = self._next_session
        self._sessions[sid] = _Session()
        while len(self._sessions) > MAX_SESSIONS:
            self._sessions.popitem(last=False)
        return sid

    def _session(self, session_id: int) -> _Session:
        if session_id == p.NO_SESSION:
            raise _Refused(p.ErrorCode.NO_SESSION, "transactions need a session; ask SYST:SESS? first")
        sess = self._sessions.get(session_id)
        if sess is None:
            raise _Refused(p.ErrorCode.UNKNOWN_SESSION, f"session {session_id:08X} was not issued by this chip")
        self._sessions.move_to_end(session_id)
        return sess

    # --- queries and staging ---------------------------------------------------------------
    def _buffer_write(self, args: list[p.Arg]) -> list[str | list[p.Piece]]:
        if len(args) != 3 or not isinstance(args[2], p.Block):
            raise ProtocolError(f"{p.BUFFER_WRITE} takes <tag>,<offset>,<block>")
        session_id, seq = p.split_tag(p.parse_tag(args[0]))
        offset = p.parse_int(args[1], "offset")
        data = args[2]
        if offset + len(data) > self.max_staging:
            raise _Refused(
                p.ErrorCode.TOO_LARGE,
                f"staged data would end at byte {offset + len(data)}, past the {self.max_staging} bytes the "
                f"largest command on this {self.chip.geometry.n_cells}-cell chip needs",
            )
        self._session(session_id)
        if self._staging_key != (session_id, seq):
            self._staging_key = (session_id, seq)
            self._staging = bytearray()
        end = offset + len(data)
        if len(self._staging) < end:
            self._staging.extend(bytes(end - len(self._staging)))
        self._staging[offset:end] = data
        return []

    def _fetch(self, args: list[p.Arg]) -> list[str | list[p.Piece]]:
        if len(args) != 3:
            raise ProtocolError(f"{p.FETCH} takes <tag>,<offset>,<count>")
        session_id, seq = p.split_tag(p.parse_tag(args[0]))
        offset = p.parse_int(args[1], "offset")
        count = p.parse_int(args[2], "count", 1, p.MAX_BODY - 4096)
        result = self._session(session_id).results.get(seq)
        if result is None or result.data is None:
            raise _Refused(p.ErrorCode.UNKNOWN_RESULT, f"no stored read result for transaction {seq}")
        if offset >= len(result.data):
            raise ProtocolError(f"offset {offset} is past the result's {len(result.data)} bytes")
        return [p.block(memoryview(result.data)[offset : offset + count])]

    # --- transactions ----------------------------------------------------------------------
    def _payload(self, sess: _Session, seq: int, rest: list[p.Arg]) -> bytes | memoryview:
        """The data of a transaction: an inline block, or ``BUF,<nbytes>,<crc>`` staged."""
        if len(rest) == 1 and isinstance(rest[0], p.Block):
            return rest[0]
        if len(rest) == 3 and rest[0] == p.STAGED:
            nbytes = p.parse_int(rest[1], "staged size", 0, self.max_staging)
            crc = p.parse_hex32(rest[2], "staged CRC")
            data = memoryview(self._staging)[:nbytes]
            if self._staging_key != self._txn_key or len(data) != nbytes or p.crc32(data) != crc:
                raise _Refused(
                    p.ErrorCode.STAGING_MISMATCH,
                    f"staged data for transaction {seq} do not match {nbytes} bytes with CRC {crc:08X}; upload again",
                )
            return bytes(data)
        raise ProtocolError("expected the data as a block or as BUF,<nbytes>,<crc>")

    def _cell_count(self, arg: p.Arg) -> int:
        """A command's cell count: at least 1, at most the chip's cells (a request for more
        is refused before anything is decoded or allocated)."""
        n = p.parse_int(arg, "cell count", 1, p.MAX_ADDRESS)
        n_cells = self.chip.geometry.n_cells
        if n > n_cells:
            raise _Refused(p.ErrorCode.TOO_LARGE, f"{n} cells requested; this chip has {n_cells}")
        return n

    def _cells(self, data: bytes | memoryview, n: int, fmt: p.Arg) -> npt.NDArray[np.int64]:
        if not isinstance(fmt, str):
            raise ProtocolError("address format must be L or R")
        return p.decode_cells(fmt, data, n, self.chip.geometry.n_cells)

    def _cell_reset(self, sess: _Session, seq: int, args: list[p.Arg]) -> _Result:
        if len(args) < 3:
            raise ProtocolError(f"{p.CELL_RESET} takes <n>,<format>,<data>")
        n = self._cell_count(args[0])
        cells = self._cells(self._payload(sess, seq, args[2:]), n, args[1])
        self.chip.reset(cells)
        return _Result()

    def _cell_set(self, sess: _Session, seq: int, args: list[p.Arg]) -> _Result:
        if len(args) < 4 or args[2] not in (p.AMP_SCALAR, p.AMP_VECTOR):
            raise ProtocolError(f"{p.CELL_SET} takes <n>,<format>,<S|V>,<data>")
        n = self._cell_count(args[0])
        mode = str(args[2])
        data = memoryview(self._payload(sess, seq, args[3:]))
        split = len(data) - p.amplitude_bytes(mode, n)
        if split < 0:
            raise ProtocolError(f"{p.CELL_SET} data of {len(data)} bytes cannot hold {n} amplitudes")
        cells = self._cells(data[:split], n, args[1])
        amplitude = p.decode_amplitudes(mode, data[split:], n)
        self.chip.set_pulse(cells, amplitude)
        return _Result()

    def _cell_read(self, sess: _Session, seq: int, args: list[p.Arg]) -> _Result:
        if len(args) < 4:
            raise ProtocolError(f"{p.CELL_READ} takes <n>,<format>,<max inline>,<data>")
        n = self._cell_count(args[0])
        p.parse_int(args[2], "max inline bytes")
        cells = self._cells(self._payload(sess, seq, args[3:]), n, args[1])
        read_codes = getattr(self.chip, "read_codes", None)
        codes = read_codes(cells) if read_codes is not None else self.chip.geometry.to_codes(self.chip.read(cells))
        dtype = p.CODE_FORMATS[self._code_format]
        return _Result(data=np.asarray(codes).astype(dtype).tobytes(), code_format=self._code_format, n=n)

    def _time_wait(self, sess: _Session, seq: int, args: list[p.Arg]) -> _Result:
        if len(args) != 2:
            raise ProtocolError(f"{p.TIME_WAIT} takes <t_s>,<max block s>")
        t = p.parse_float(args[0], "target time")
        max_block = p.parse_float(args[1], "max block time")
        if not max_block <= self.max_wait_s:
            # refused before anything happens: one client may not hold the chip (and, in a
            # server without deferral, every other client) longer than it may stay silent
            raise _Refused(
                p.ErrorCode.WAIT_TOO_LONG,
                f"a wait may block at most {self.max_wait_s:g} s here, not {max_block:g} s; repeat shorter waits",
            )
        if getattr(self.chip, "clock_kind", "wall") == "sim":
            self.chip.wait_until(t)  # a simulated clock jumps: nothing blocks
            return _Result(args=[p.fmt_float(self.chip.now())])
        now = self.chip.now()
        until = min(t, now + max(0.0, max_block))
        if self.defer_waits and until > now:
            self.due_s = until  # answered by the transport once the clock is there
            return _Result(args=[p.fmt_float(until)])
        self.chip.wait_until(until)
        return _Result(args=[p.fmt_float(self.chip.now())])

    def _error_queue(self, sess: _Session, seq: int, args: list[p.Arg]) -> _Result:
        code, message = self._errors.popleft() if self._errors else (0, "No error")
        return _Result(args=[str(code), p.quote(message)])
