"""Byte-exact exchanges: the real RemoteChip against scripted replies, consumed completely."""

from __future__ import annotations

import time

import numpy as np
import pytest
from linkkit import SCRIPT_IDN, SCRIPT_SESSION, cmd, expected_protocol, handshake, rep

from drivers import protocol as p
from drivers.link_settings import LinkSettings
from harness.errors import ChipIOError, ChipTimeoutError, IdentityError, ProtocolError, SafetyLimitError

S = SCRIPT_SESSION
MAX = 16 * 2**20  # default max chunk: the max-inline argument of a READ on a clean link


def c(seq: int, body: bytes | str) -> bytes:
    return cmd(seq, body, S)


def r(seq: int, body: bytes | str) -> bytes:
    return rep(seq, body, S)


def blk(data: bytes) -> bytes:
    return b"".join(p.block(data))


def ranges(*pairs: tuple[int, int]) -> bytes:
    return np.array(pairs, dtype="<u4").tobytes()


def u32(*cells: int) -> bytes:
    return np.array(cells, dtype="<u4").tobytes()


def f64(*values: float) -> bytes:
    return np.array(values, dtype="<f8").tobytes()


def read_reply(codes: bytes, inline: bool = True) -> bytes:
    body = b"OK %d,U1,%d,%08X" % (len(codes), len(codes), p.crc32(codes))
    return body + (b"," + blk(codes) if inline else b"")


def test_open_identifies_and_reads_geometry() -> None:
    with expected_protocol(handshake(rows=4, cols=8, max_amp="0.8")) as chip:
        assert chip.identity == SCRIPT_IDN
        g = chip.geometry
        assert (g.rows, g.cols, g.adc_bits, g.max_set_amplitude) == (4, 8, 8, 0.8)
        assert (g.g_min_uS, g.g_max_uS, g.adc_min_uS, g.adc_max_uS) == (0.0, 25.0, 0.0, 32.0)


def test_read_contiguous_cells_as_one_range() -> None:
    codes = bytes([0, 1, 128, 255])
    script = handshake() + [
        (c(1, b"CELL:READ? 4,R,%d," % MAX + blk(ranges((2, 4)))), r(1, read_reply(codes))),
    ]
    with expected_protocol(script) as chip:
        got = chip.read([2, 3, 4, 5])
    np.testing.assert_array_equal(got, chip.geometry.codes_to_uS(np.frombuffer(codes, np.uint8)))


def test_set_pulse_scalar_amplitude_and_reset_lists() -> None:
    script = handshake() + [
        (c(1, b"CELL:SET 2,L,S," + blk(u32(5, 9) + f64(0.5))), r(1, "OK")),
        (c(2, b"CELL:RES 3,L," + blk(u32(7, 1, 30))), r(2, "OK")),
    ]
    with expected_protocol(script) as chip:
        chip.set_pulse([5, 9], 0.5)
        chip.reset(np.array([7, 1, 30]))


def test_corrupted_reply_is_retried_with_the_same_tag() -> None:
    codes = bytes([10, 20])
    good = r(1, read_reply(codes))
    bad = bytearray(good)
    bad[-15] ^= 0x01  # one bit in the data block: the body CRC catches it
    script = handshake() + [
        (c(1, b"CELL:READ? 2,L,%d," % MAX + blk(u32(0, 1))), bytes(bad)),
        # same tag (seq 1): a retry, answered from the chip's cache; one damaged small frame
        # does not shrink the chunk (it nudges the error-rate estimate, see ChunkSizer)
        (c(1, b"CELL:READ? 2,L,%d," % MAX + blk(u32(0, 1))), good),
    ]
    with expected_protocol(script) as chip:
        got = chip.read([0, 1])
        assert chip.stats.failures == 1
    np.testing.assert_array_equal(got, chip.geometry.codes_to_uS([10, 20]))


def test_nak_makes_the_driver_resend_at_once() -> None:
    body = b"CELL:SET 1,L,S," + blk(u32(3) + f64(0.25))
    script = handshake() + [
        (c(1, body), rep(0, 'NAK "frame body fails its checksum"')),
        (c(1, body), r(1, "OK")),
    ]
    with expected_protocol(script) as chip:
        t0 = time.perf_counter()
        chip.set_pulse([3], 0.25)
        assert time.perf_counter() - t0 < 0.05  # no timeout was waited
        assert chip.stats.naks == 1


def test_stale_reply_is_skipped() -> None:
    script = handshake() + [
        (c(1, "TIME?"), r(99, "OK 1.0") + r(1, "OK 2.5")),  # an old reply first, then ours
    ]
    with expected_protocol(script) as chip:
        assert chip.now() == 2.5


def test_large_payload_is_staged_in_chunks() -> None:
    cells = [0, 2, 4, 6, 8, 10, 12, 14, 16, 18]
    amps = [0.1 * (i + 1) / 2 for i in range(10)]
    payload = u32(*cells) + f64(*amps)  # 40 + 80 bytes > the 64-byte chunk bound
    txn = p.fmt_tag(p.make_tag(S, 1)).encode()
    script = handshake() + [  # two equal pieces of at most a chunk, sent in one window
        (c(2, b"BUF:WRIT " + txn + b",0," + blk(payload[:60])), r(2, "OK")),
        (c(3, b"BUF:WRIT " + txn + b",60," + blk(payload[60:])), r(3, "OK")),
        (c(1, b"CELL:SET 10,L,V,BUF,120,%08X" % p.crc32(payload)), r(1, "OK")),
    ]
    with expected_protocol(script, LinkSettings(timeout_s=0.05, retries=2, max_chunk=64, min_chunk=16)) as chip:
        chip.set_pulse(cells, amps)


def test_read_result_fetched_in_chunks_when_not_inline() -> None:
    codes = bytes(range(100))
    txn = p.fmt_tag(p.make_tag(S, 1)).encode()
    script = handshake(rows=10, cols=10) + [
        (c(1, b"CELL:READ? 100,R,64," + blk(ranges((0, 100)))), r(1, read_reply(codes, inline=False))),
        (c(2, b"DATA:FETC? " + txn + b",0,50"), r(2, b"OK " + blk(codes[:50]))),  # equal pieces, one window
        (c(3, b"DATA:FETC? " + txn + b",50,50"), r(3, b"OK " + blk(codes[50:]))),
    ]
    with expected_protocol(script, LinkSettings(timeout_s=0.05, retries=2, max_chunk=64, min_chunk=16)) as chip:
        got = chip.read(np.arange(100))
    np.testing.assert_array_equal(got, chip.geometry.codes_to_uS(np.arange(100)))


def test_wait_until_goes_to_the_chip_clock() -> None:
    script = handshake() + [
        (c(1, "TIME:WAIT 5.0,0.025"), r(1, "OK 2.0")),  # a wall-clock chip waits in slices
        (c(2, "TIME:WAIT 5.0,0.025"), r(2, "OK 5.0")),
        (c(3, "TIME?"), r(3, "OK 5.000001")),
    ]
    with expected_protocol(script) as chip:
        chip.wait_until(5.0)
        assert chip.now() == 5.000001


def test_out_of_limit_calls_send_nothing() -> None:
    with expected_protocol(handshake(max_amp="0.8")) as chip:
        for amp in (0.81, 0.0, -0.1, float("nan"), float("inf")):
            with pytest.raises(SafetyLimitError):
                chip.set_pulse([1], amp)
        with pytest.raises(SafetyLimitError):
            chip.set_pulse([1, 2], [0.5, 0.9])
        with pytest.raises(SafetyLimitError):
            chip.read([32])  # off a 4x8 array
        with pytest.raises(SafetyLimitError):
            chip.reset([3, 3])


def test_chip_refusal_becomes_safety_limit_error() -> None:
    script = handshake() + [
        (c(1, b"CELL:SET 1,L,S," + blk(u32(3) + f64(0.5))), r(1, 'ERR -222,"amplitude above the chip limit"')),
    ]
    with expected_protocol(script) as chip, pytest.raises(SafetyLimitError, match="nothing was applied"):
        chip.set_pulse([3], 0.5)


def test_other_identity_is_refused() -> None:
    script = [(cmd(1, "*IDN?"), rep(1, 'OK "KEYSIGHT,34461A,MY123,A.02"'))]
    with pytest.raises(IdentityError, match="not a PCM test chip"), expected_protocol(script):
        pass


def test_other_protocol_version_is_refused() -> None:
    script = handshake()[:1] + [(cmd(2, "SYST:VERS?"), rep(2, "OK 2"))]
    with pytest.raises(IdentityError, match="protocol 2"), expected_protocol(script):
        pass


def test_silence_times_out_after_bounded_retries() -> None:
    script = [(cmd(1, "*IDN?"), None), (cmd(2, "*IDN?"), None)]
    t0 = time.perf_counter()
    with pytest.raises(ChipTimeoutError, match="no reply to \\*IDN\\?"), expected_protocol(
        script, LinkSettings(timeout_s=0.05, retries=1)
    ):
        pass
    assert time.perf_counter() - t0 < 0.5


def test_malformed_reply_is_a_protocol_error() -> None:
    script = handshake() + [(c(1, "TIME?"), r(1, "OK not-a-number"))]
    with expected_protocol(script) as chip, pytest.raises(ProtocolError, match="chip time"):
        chip.now()


def test_staging_mismatch_uploads_again_under_the_same_tag() -> None:
    payload = u32(0, 2, 4, 6, 8, 10) + f64(0.5)  # 32 bytes > 16-byte chunks: staged
    txn = p.fmt_tag(p.make_tag(S, 1)).encode()
    execute = c(1, b"CELL:SET 6,L,S,BUF,32,%08X" % p.crc32(payload))

    def upload(seq: int) -> list[tuple[bytes, bytes]]:
        return [
            (c(seq, b"BUF:WRIT " + txn + b",0," + blk(payload[:16])), r(seq, "OK")),
            (c(seq + 1, b"BUF:WRIT " + txn + b",16," + blk(payload[16:])), r(seq + 1, "OK")),
        ]

    script = handshake() + upload(2) + [(execute, r(1, 'ERR 102,"staged data do not match"'))] + upload(4) + [
        (execute, r(1, "OK"))
    ]
    with expected_protocol(script, LinkSettings(timeout_s=0.05, retries=2, max_chunk=16, min_chunk=16)) as chip:
        chip.set_pulse([0, 2, 4, 6, 8, 10], 0.5)


def test_forgotten_session_is_a_chip_io_error() -> None:
    script = handshake() + [(c(1, b"CELL:RES 1,L," + blk(u32(3))), r(1, 'ERR 105,"session 0000ABCD was not issued"'))]
    with expected_protocol(script) as chip, pytest.raises(ChipIOError, match="open it again"):
        chip.reset([3])
