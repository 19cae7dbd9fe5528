"""RemoteChip: the Chip backend that drives a chip through the wire protocol over any Link.

One class serves every transport (the serial and VISA backends only supply a
:class:`~drivers.link.Link`), so timeouts, retries, reconnects and chunking behave the same
everywhere. Safety limits are checked by :class:`~harness.chip.protocol.ChipBackend` before any
method here runs: nothing out of range is ever encoded, let alone sent.

This module is the command layer: the SCPI-style commands of protocol 1 (identity, geometry,
clock, RESET, SET, READ) and their tagged transactions. Below it, by composition:

* :class:`~drivers.session.LinkSession` sends a command and returns its reply, with retries
  (same tag), reconnects, redundant copies on noisy links and error translation;
* :class:`~drivers.bulk.BulkTransfer` stages uploads and fetches results in windows of
  frames sized by :class:`~drivers.link_quality.ChunkSizer` from the link's byte error rate.

Reliability (see ``docs/protocol.md`` §7), with default settings on any link from clean
to one that damages a few percent of its bytes:

* Side effects and random draws (RESET, SET, READ, clock advance) are transactions: the
  retry reuses the transaction's tag and the chip answers it from its reply cache, so a
  pulse is never applied twice and a read never draws noise twice.
* A command's data goes inline while it fits the current chunk, else it is staged first
  (a 38 KB RESET on a noisy link goes up in small ``BUF:WRIT`` frames); a READ's codes come
  back inline up to the chunk, else are fetched. On a clean link a whole 1,048,576-cell
  read is one round trip.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from drivers import protocol as p
from drivers.bulk import BulkTransfer
from drivers.link import Link
from drivers.link_quality import ChunkSizer
from drivers.link_settings import LinkSettings, LinkStats, Sleeper
from drivers.link_watch import LinkWatch
from drivers.session import LinkSession
from harness.chip.protocol import CellArray, ChipBackend, FloatArray, Geometry, check_cells
from harness.errors import ConfigError, IdentityError, ProtocolError

#: Longest a single ``TIME:WAIT`` may block on a wall-clock chip (the driver repeats it).
MAX_WAIT_SLICE_S = 1.0


class RemoteChip(ChipBackend):
    """A chip on the other end of a :class:`~drivers.link.Link`, speaking protocol 1.

    Opening connects, identifies (``*IDN?`` manufacturer must be ``PCM-HARNESS``), checks
    the protocol version, reads geometry and limits from the chip and obtains a session.

    Raises (from the constructor and every method):
        IdentityError: the device is not a PCM test chip (a valid reply naming another
            maker, or the same non-protocol text twice), or a different one answers after
            a reconnect. A damaged reply is never taken for another device.
        ChipBusyError: another client owns the chip.
        ChipTimeoutError: no reply at all within the timeout, ``retries + 1`` times in a row.
        ProtocolError: replies that are not protocol frames, or that the protocol forbids,
            or a link so noisy that the noisy-attempt budget ran out.
        ChipIOError: the link cannot be (re)opened.
        SafetyLimitError: the chip itself refused a pulse (never expected: the host checks first).
    """

    def __init__(
        self, link: Link, uri: str, settings: LinkSettings | None = None, sleep: Callable[[float], None] | None = None
    ) -> None:
        self._link = link
        self._session = LinkSession(link, settings or LinkSettings(), sleep or Sleeper())
        self._bulk = BulkTransfer(self._session)
        try:
            geometry = self._connect()
        except BaseException:
            link.close()
            raise
        super().__init__(geometry, uri)

    @property
    def stats(self) -> LinkStats:
        """What the link cost so far (cumulative)."""
        return self._session.stats

    @property
    def link_watch(self) -> LinkWatch:
        """Throughput lines and the stall bound of this link (set ``link_watch.notice`` to
        redirect its lines; default stderr)."""
        return self._session.watch

    @property
    def sizer(self) -> ChunkSizer:
        """The link's error-rate estimate and the chunk size it gives."""
        return self._session.sizer

    @property
    def _chunk(self) -> int:
        return self._session.sizer.chunk

    # --- Chip protocol ---------------------------------------------------------------------
    @property
    def identity(self) -> str:
        return self._session.identity

    @property
    def settings(self) -> LinkSettings:
        return self._session.settings

    def now(self) -> float:
        self._ensure_open()
        return p.parse_float(self._query(p.TIME)[0], "chip time")

    def wait_until(self, t_s: float) -> None:
        self._ensure_open()
        t = float(t_s)
        if not math.isfinite(t):
            raise ConfigError(f"cannot wait until t = {t_s} s; give a finite chip time")
        slice_s = min(MAX_WAIT_SLICE_S, self._session.settings.timeout_s / 2)
        while True:
            reply = self._transaction(p.TIME_WAIT, lambda: [p.fmt_float(t), p.fmt_float(slice_s)], None)
            if p.parse_float(self._ok_args(reply, p.TIME_WAIT, 1)[0], "chip time") >= t:
                return

    def _reset(self, cells: CellArray) -> None:
        fmt, addr = p.encode_cells(cells)
        n = str(cells.size)
        self._ok_args(self._transaction(p.CELL_RESET, lambda: [n, fmt], addr), p.CELL_RESET, 0)

    def _set_pulse(self, cells: CellArray, amplitude: FloatArray) -> None:
        fmt, addr = p.encode_cells(cells)
        mode, amp = p.encode_amplitudes(amplitude)
        n = str(cells.size)
        self._ok_args(self._transaction(p.CELL_SET, lambda: [n, fmt, mode], addr + amp), p.CELL_SET, 0)

    def read_codes(self, cells: npt.ArrayLike) -> npt.NDArray[np.unsignedinteger]:
        """The ADC codes of a read, as the chip sent them (``read`` converts these to µS);
        makes this backend a :class:`~harness.chip.protocol.CodeReadingChip`."""
        self._ensure_open()
        c = check_cells(cells, self.geometry)
        if not c.size:
            return np.empty(0, dtype=p.CODE_FORMATS[p.code_format(self.geometry.adc_bits)])
        return self._read_codes(c)

    def _read(self, cells: CellArray) -> FloatArray:
        return self.geometry.codes_to_uS(self._read_codes(cells))

    def _read_codes(self, cells: CellArray) -> npt.NDArray[np.unsignedinteger]:
        fmt, addr = p.encode_cells(cells)
        n = cells.size
        want = p.code_format(self.geometry.adc_bits)
        dtype = p.CODE_FORMATS[want]
        tag_box: list[int] = []
        inline_box = [0]

        def head() -> list[str]:
            inline_box[0] = self._chunk
            return [str(n), fmt, str(inline_box[0])]

        reply = self._transaction(
            p.CELL_READ, head, addr, tag_box, expect=lambda: min(n * dtype.itemsize, inline_box[0])
        )
        args = self._ok_args(reply, p.CELL_READ, None)
        if len(args) not in (4, 5):
            raise ProtocolError(f"chip answered {p.CELL_READ} with {len(args)} values, expected 4 or 5")
        count = p.parse_int(args[0], "read count")
        cfmt = args[1]
        nbytes = p.parse_int(args[2], "read size")
        crc = p.parse_hex32(args[3], "read CRC")
        if count != n or cfmt != want or nbytes != n * dtype.itemsize:
            raise ProtocolError(
                f"chip answered a read of {n} cells with {count} codes of format {cfmt!r} in {nbytes} bytes; "
                f"expected {n} codes of format {want}"
            )
        data: bytes
        if len(args) == 5:  # inline: the frame's CRC already covered these bytes
            inline = args[4]
            if not isinstance(inline, p.Block) or len(inline) != nbytes:
                raise ProtocolError(f"read data must be a binary block of {nbytes} bytes")
            data = inline
        else:  # fetched in chunks: check the reassembled whole end to end
            data = self._bulk.fetch(tag_box[0], nbytes)
            if len(data) != nbytes or p.crc32(data) != crc:
                raise ProtocolError(f"read data of {len(data)} bytes fail the chip's CRC; refetching cannot help")
        codes = np.frombuffer(data, dtype=dtype)
        full_range = self.geometry.adc_bits >= 8 * dtype.itemsize  # every code of the dtype is valid
        if not full_range and codes.size and int(codes.max()) >= 2**self.geometry.adc_bits:
            raise ProtocolError(f"chip sent ADC code {int(codes.max())} beyond its {self.geometry.adc_bits}-bit range")
        return codes

    def _close(self) -> None:
        self._session.close()

    # --- connection ------------------------------------------------------------------------
    def _connect(self) -> Geometry:
        reply = self._session.exchange(lambda: p.build_body(p.VERSION))  # opens + identifies
        (version,) = self._ok_args(reply, p.VERSION, 1)
        if p.parse_int(version, "protocol version") != p.PROTOCOL_VERSION:
            raise IdentityError(
                f"chip at {self._link.description} speaks protocol {version!s}, this driver "
                f"{p.PROTOCOL_VERSION}; update the harness or the chip firmware"
            )
        geometry = self._read_geometry()
        if geometry.n_cells > p.MAX_ADDRESS + 1:
            raise ProtocolError(f"chip has {geometry.n_cells} cells; protocol 1 addresses at most 2**32")
        session = p.parse_hex32(self._query(p.SESSION)[0], "session id")
        if session == p.NO_SESSION:
            raise ProtocolError("chip issued session 0, which the protocol reserves")
        self._session.begin(session)
        return geometry

    def _read_geometry(self) -> Geometry:
        rows, cols = self._query(p.GEOMETRY, n=2)
        g_min, g_max = self._query(p.CONDUCTANCE_RANGE, n=2)
        bits, a_min, a_max = self._query(p.ADC, n=3)
        (max_amp,) = self._query(p.AMPLITUDE_LIMIT, n=1)
        try:
            return Geometry(
                rows=p.parse_int(rows, "rows", 1),
                cols=p.parse_int(cols, "cols", 1),
                g_min_uS=p.parse_float(g_min, "g_min"),
                g_max_uS=p.parse_float(g_max, "g_max"),
                adc_bits=p.parse_int(bits, "ADC bits", 1, 16),
                adc_min_uS=p.parse_float(a_min, "ADC min"),
                adc_max_uS=p.parse_float(a_max, "ADC max"),
                max_set_amplitude=p.parse_float(max_amp, "max SET amplitude"),
            )
        except ConfigError as exc:
            raise ProtocolError(f"chip at {self._link.description} reports an impossible geometry: {exc}") from exc

    # --- command helpers -------------------------------------------------------------------
    def _query(self, header: str, args: list[str] | None = None, n: int | None = None) -> list[p.Arg]:
        self._session.watch.begin()
        reply = self._session.exchange(lambda: p.build_body(header, args or []), what=header)
        self._session.watch.done()
        return self._ok_args(reply, header, n)

    def _ok_args(self, reply: p.Reply, what: str, n: int | None) -> list[p.Arg]:
        return self._session.ok_args(reply, what, n)

    def _transaction(
        self,
        header: str,
        head_args: Callable[[], list[str]],
        payload: bytes | None,
        tag_box: list[int] | None = None,
        expect: Callable[[], int] | None = None,
    ) -> p.Reply:
        """Run a side-effecting command once: one tag for every retry, data inline or staged
        (uploaded once; again only when the chip says the staged bytes do not match)."""
        self._session.watch.begin()
        tag = self._session.next_tag()
        if tag_box is not None:
            tag_box.append(tag)
        staged = [False]

        def build() -> list[p.Piece]:
            args: list[str | list[p.Piece]] = list(head_args())
            if payload is not None:
                if not staged[0] and len(payload) <= self._chunk:
                    args.append(p.block(payload))
                else:
                    if not staged[0]:
                        self._bulk.upload(tag, payload)
                        staged[0] = True
                    args.append(f"{p.STAGED},{len(payload)},{p.crc32(payload):08X}")
            return p.build_body(header, args)

        for _ in range(self._session.settings.retries + 1):
            reply = self._session.exchange(build, tag, what=header, expect=expect)
            if not (reply.status == p.ERR and reply.error[0] == p.ErrorCode.STAGING_MISMATCH and staged[0]):
                break
            # the chip lost the staged bytes (another client took over, its staging was
            # reused): nothing executed; upload again under the same tag
            self._session.stats.failures += 1
            staged[0] = False
        self._session.stats.transactions += 1
        # progress for the stall bound; a READ's fetch that follows is bounded from here
        self._session.watch.done()
        return reply
