"""The serial and VISA backends on real transports: a pty and a loopback TCP socket.

Bad links must end in one clear error within a bounded time: silence, garbage, a foreign
instrument, unreachable ports, malformed URIs. Reconnects keep the chip's state.
"""

from __future__ import annotations

import os
import select
import socket
import threading
import time
import tty
from collections.abc import Iterator

import numpy as np
import pytest
from linkkit import SMALL, ServeFn

from drivers.emulator import Emulator, check_bind_host
from drivers.faults import FaultSpec
from harness.errors import ChipIOError, ChipTimeoutError, ConfigError, IdentityError, ProtocolError
from harness.chip.registry import open_chip
from harness.virtual.chip import VirtualPCMChip

FAST = "timeout=0.2&retries=1"


@pytest.mark.parametrize("kind", ["pty", "tcp"])
def test_open_identify_and_geometry(serve: ServeFn, kind: str) -> None:
    emulator = serve(kind, seed=4)
    chip = open_chip(emulator.uri)
    try:
        assert chip.identity.startswith("PCM-HARNESS,VPCM-EMULATOR,SEED4-64X128")
        assert chip.geometry == SMALL
        assert chip.uri == emulator.uri
    finally:
        chip.close()
    chip.close()  # idempotent


@pytest.mark.parametrize("kind", ["pty", "tcp"])
def test_state_survives_client_disconnect(serve: ServeFn, kind: str) -> None:
    emulator = serve(kind, seed=2)
    reference = VirtualPCMChip(SMALL, seed=2)
    cells = np.arange(100, 300)
    for target in (open_chip(emulator.uri), reference):
        target.reset(cells)
        target.set_pulse(cells, 0.4)
    second = open_chip(emulator.uri)  # a new client (new session) continues the same chip
    np.testing.assert_array_equal(second.read(cells), reference.read(cells))
    second.close()


@pytest.mark.parametrize("kind", ["pty", "tcp"])
def test_hang_up_after_execution_is_retried_from_cache(serve: ServeFn, kind: str) -> None:
    # every 5th command is executed and then the link drops before the reply leaves
    emulator = serve(kind, seed=9, faults=FaultSpec(disconnect_every=5))
    reference = VirtualPCMChip(SMALL, seed=9)
    chip = open_chip(emulator.uri + "?timeout=1&retries=4")
    rng = np.random.default_rng(0)
    for step in range(12):
        cells = np.sort(rng.choice(SMALL.n_cells, 50, replace=False))
        amps = rng.uniform(0.05, 0.8, 50)
        for target in (chip, reference):
            target.set_pulse(cells, amps)
        np.testing.assert_array_equal(chip.read(cells), reference.read(cells), err_msg=f"step {step}")
    assert emulator.hangups >= 4 and chip.stats.reconnects >= emulator.hangups
    assert emulator.server.executed == chip.stats.transactions  # nothing executed twice
    chip.close()


def test_swapped_chip_after_reconnect_is_refused(serve: ServeFn) -> None:
    emulator = serve("tcp", faults=FaultSpec(disconnect_every=10))
    chip = open_chip(emulator.uri + "?timeout=0.5&retries=3")
    emulator.server.identity = "PCM-HARNESS,OTHER-CHIP,SN2,P1"
    with pytest.raises(IdentityError, match="no longer"):
        for _ in range(10):
            chip.now()
    chip.close()


def test_delayed_replies_within_the_timeout_work(serve: ServeFn) -> None:
    emulator = serve("pty", faults=FaultSpec(delay_s=0.02))
    chip = open_chip(emulator.uri + "?timeout=0.5")
    assert chip.now() >= 0.0
    assert chip.stats.failures == 0
    chip.close()


@pytest.mark.parametrize("kind", ["pty", "tcp"])
def test_dropped_bytes_cost_timeouts_not_correctness(serve: ServeFn, kind: str) -> None:
    emulator = serve(kind, seed=3, faults=FaultSpec(drop_rate=0.002, seed=1))
    reference = VirtualPCMChip(SMALL, seed=3)
    chip = open_chip(emulator.uri + "?timeout=0.15&retries=30")
    cells = np.arange(0, 8192, 97)
    for target in (chip, reference):
        target.set_pulse(cells, 0.3)
    for _ in range(3):
        np.testing.assert_array_equal(chip.read(cells), reference.read(cells))
    assert emulator.server.executed == chip.stats.transactions
    chip.close()


# --- bad links -------------------------------------------------------------------------------
@pytest.fixture
def silent_pty() -> Iterator[str]:
    """A pty nobody answers on."""
    master, slave = os.openpty()
    tty.setraw(slave)
    yield os.ttyname(slave)
    os.close(master)
    os.close(slave)


def test_silence_is_a_timeout_within_bounds(silent_pty: str) -> None:
    t0 = time.perf_counter()
    with pytest.raises(ChipTimeoutError, match=r"no reply to \*IDN\? .* within 0.2 s"):
        open_chip(f"serial://{silent_pty}?{FAST}")
    assert time.perf_counter() - t0 < 1.5


def test_garbage_is_a_protocol_error_within_bounds() -> None:
    master, slave = os.openpty()
    tty.setraw(slave)
    stop = threading.Event()

    os.set_blocking(master, False)

    def spew() -> None:  # a device at the wrong baud rate: bytes, never a frame
        rng = np.random.default_rng(0)
        while not stop.is_set():
            select.select([], [master], [], 0.05)  # room in the pty, or look at stop again
            try:
                os.write(master, rng.integers(0, 256, 256, dtype=np.uint8).tobytes())
            except BlockingIOError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=spew, daemon=True)
    thread.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(ProtocolError, match="not protocol frames"):
            open_chip(f"serial://{os.ttyname(slave)}?{FAST}")
        assert time.perf_counter() - t0 < 1.5
    finally:
        stop.set()
        thread.join()
        os.close(master)
        os.close(slave)


@pytest.fixture
def foreign_instrument() -> Iterator[int]:
    """A TCP instrument that answers every message with its own *IDN? line."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def run() -> None:
        listener.settimeout(0.05)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(0.05)
                while not stop.is_set():
                    try:
                        data = conn.recv(4096)
                    except TimeoutError:
                        continue
                    except OSError:
                        break
                    if not data:
                        break
                    conn.sendall(b"ACME INSTRUMENTS,DMM-1000,SN42,1.0\n")

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join()
    listener.close()


def test_foreign_instrument_is_an_identity_error(foreign_instrument: int) -> None:
    uri = f"visa://TCPIP::127.0.0.1::{foreign_instrument}::SOCKET?timeout=0.2&retries=3"
    t0 = time.perf_counter()
    with pytest.raises(IdentityError, match="ACME INSTRUMENTS,DMM-1000"):
        open_chip(uri)
    assert time.perf_counter() - t0 < 2.0


def test_flushing_a_hung_up_pty_is_a_chip_io_error() -> None:
    """pyserial's tcflush on a pty whose other end is gone raises ``termios.error``, which is
    not an OSError; the link must turn it into ChipIOError so the client reconnects (CI saw
    the raw termios error escape a noisy-link programming run)."""
    from drivers.serial_backend import SerialLink

    master, slave = os.openpty()
    link = SerialLink(os.ttyname(slave))
    link.open()
    os.close(master)
    try:
        with pytest.raises(ChipIOError, match="failed"):
            link.discard_input()
    finally:
        link.close()
        os.close(slave)


def test_unreachable_port_is_a_chip_io_error() -> None:
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.perf_counter()
    with pytest.raises(ChipIOError, match=f"cannot reach VISA resource TCPIP::127.0.0.1::{port}::SOCKET"):
        open_chip(f"visa://TCPIP::127.0.0.1::{port}::SOCKET")
    assert time.perf_counter() - t0 < 2.0


def test_missing_serial_device_is_a_chip_io_error(tmp_path) -> None:
    with pytest.raises(ChipIOError, match="cannot open serial port"):
        open_chip(f"serial://{tmp_path}/ttyNOPE")


@pytest.mark.parametrize(
    "uri, fragment",
    [
        ("serial://", "needs a device path"),
        ("serial:///dev/ttyUSB0?speed=9600", "unknown parameter 'speed'"),
        ("serial:///dev/ttyUSB0?baud=fast", "bad value 'fast'"),
        ("serial:///dev/ttyUSB0?baud=0", "baud rate 0"),
        ("serial:///dev/ttyUSB0?timeout=-1", "timeout -1"),
        ("serial:///dev/ttyUSB0?retries=-2", "retries -2"),
        ("visa://", "needs a resource name"),
        ("visa://NOT-A-RESOURCE", "malformed or unsupported VISA resource"),
        ("visa://TCPIP::127.0.0.1::5025::SOCKET?library=@nope", "VISA library '@nope'"),
    ],
)
def test_malformed_uris_are_config_errors(uri: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        open_chip(uri)


def test_emulator_refuses_non_loopback_without_permission() -> None:
    with pytest.raises(ConfigError, match="--allow-remote"):
        check_bind_host("0.0.0.0", allow_remote=False)
    assert check_bind_host("localhost", allow_remote=False) in ("127.0.0.1", "::1")
    emulator = Emulator(VirtualPCMChip(SMALL))
    with pytest.raises(ConfigError, match="other machines could reach it"):
        emulator.start_tcp("0.0.0.0", 0)
    emulator.close()
