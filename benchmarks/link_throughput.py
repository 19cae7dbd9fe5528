"""Benchmark: bulk read of 1,048,576 cells (512 × 2048) through the chip emulator.

Target (issue 4): a whole-array read moves at ≥ 50 % of the transport's raw byte
throughput. Runs ``harness emulate`` as its own process (over a pty, then over loopback
TCP), reads every cell with the serial / VISA backend, and measures in the same run the raw
throughput of the same transport: another process streams plain 1 MiB blocks, read with
plain ``os.read``/``recv_into`` ("raw os") and through the backend's own library,
pyserial or pyvisa-py ("raw lib"), no protocol.

Link figures per transport (best of ``--repeats``):
* transfer: wire bytes of the reply / time from its first bytes to a verified frame
  (framing, CRC) — what the protocol gets out of the transport;
* host: the whole read minus the wait for the reply (so also the seam's address checks,
  address encoding and the conversion of codes to µS), in cells/s and wire bytes/s;
* end to end: one ``chip.read(all cells)`` including the emulated chip's physics, which
  is chip time, not link time (printed separately).

    python benchmarks/link_throughput.py [--repeats 8]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import select
import socket
import subprocess
import sys
import time
import tty
from pathlib import Path

import numpy as np

from drivers.client import RemoteChip
from harness.chip.protocol import Geometry
from harness.chip.registry import open_chip
from harness.virtual.chip import VirtualPCMChip

ROOT = Path(__file__).resolve().parents[1]
GEOMETRY = Geometry(rows=512, cols=2048)
BLOCK = 1 << 20  # raw transfers move 1 MiB blocks, the size of one 8-bit whole-array read

_PTY_WRITER = """
import os, sys
fd, reps, size = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
block = memoryview(os.urandom(size))
for _ in range(reps):
    mv = block
    while mv:
        mv = mv[os.write(fd, mv):]
"""

_TCP_WRITER = """
import os, socket, sys
reps, size = int(sys.argv[1]), int(sys.argv[2])
server = socket.create_server(("127.0.0.1", 0))
print(server.getsockname()[1], flush=True)
conn, _ = server.accept()
block = os.urandom(size)
for _ in range(reps):
    conn.sendall(block)
conn.close()
"""


def _block_times(recv_into: object, reps: int) -> list[float]:
    """Seconds per 1 MiB block of a continuous stream (the first block is warm-up)."""
    buf = bytearray(BLOCK)
    mv = memoryview(buf)
    times = []
    for _ in range(reps):
        got = 0
        t0 = time.perf_counter()
        while got < BLOCK:
            n = recv_into(mv[got:])  # type: ignore[operator]
            if not n:
                raise RuntimeError("raw writer stopped early")
            got += n
        times.append(time.perf_counter() - t0)
    return times[1:]


def raw_pty(reps: int, library: bool) -> float:
    """Best bytes/s of plain writes into a pty master, read from its slave with os.read
    or (``library``) with pyserial."""
    import serial

    master, slave = os.openpty()
    tty.setraw(slave)
    cmd = [sys.executable, "-c", _PTY_WRITER, str(master), str(reps), str(BLOCK)]
    writer = subprocess.Popen(cmd, pass_fds=[master])
    ser = serial.Serial(os.ttyname(slave), timeout=10) if library else None

    def recv_into(view: memoryview) -> int:
        if ser is not None:
            data = ser.read(len(view))
        else:
            select.select([slave], [], [])
            data = os.read(slave, len(view))
        view[: len(data)] = data
        return len(data)

    try:
        return BLOCK / min(_block_times(recv_into, reps))
    finally:
        writer.wait()
        if ser is not None:
            ser.close()
        os.close(master)
        os.close(slave)


def raw_tcp(reps: int, library: bool) -> float:
    """Best bytes/s of plain sendall()s over loopback TCP, read with recv_into or
    (``library``) with pyvisa-py's read_bytes on a TCPIP SOCKET resource."""
    import pyvisa

    cmd = [sys.executable, "-c", _TCP_WRITER, str(reps), str(BLOCK)]
    writer = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    port = int(writer.stdout.readline())  # type: ignore[union-attr]
    try:
        if not library:
            with socket.create_connection(("127.0.0.1", port)) as conn:
                return BLOCK / min(_block_times(conn.recv_into, reps))
        res = pyvisa.ResourceManager("@py").open_resource(f"TCPIP::127.0.0.1::{port}::SOCKET", timeout=10_000)
        res.read_termination = None
        res.chunk_size = BLOCK  # as VisaLink does: one library call per block

        def recv_into(view: memoryview) -> int:
            data = res.read_bytes(len(view))
            view[: len(data)] = data
            return len(data)

        try:
            return BLOCK / min(_block_times(recv_into, reps))
        finally:
            res.close()
    finally:
        writer.wait()


def start_emulator(transport: str) -> tuple[subprocess.Popen[str], str]:
    where = ["--pty"] if transport == "pty" else ["--tcp", "127.0.0.1:0"]
    cmd = [sys.executable, "-c", "from harness.cli import app; app()", "emulate", *where,
           "--rows", str(GEOMETRY.rows), "--cols", str(GEOMETRY.cols), "--seed", "0"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    ready, _, _ = select.select([proc.stdout], [], [], 120)
    if not ready:
        proc.kill()
        raise RuntimeError("harness emulate did not start within 120 s")
    return proc, proc.stdout.readline().strip()  # type: ignore[union-attr]


def bulk_reads(uri: str, repeats: int) -> dict[str, float]:
    """Whole-array reads through the driver: best end-to-end, host-side and transfer times."""
    chip = open_chip(uri + ("&" if "?" in uri else "?") + "timeout=30")
    assert isinstance(chip, RemoteChip)
    cells = np.arange(GEOMETRY.n_cells)
    try:
        chip.read(cells)  # warm-up
        totals, hosts, transfers, wire = [], [], [], []
        for _ in range(repeats):
            s0 = dataclasses.replace(chip.stats)
            t0 = time.perf_counter()
            g = chip.read(cells)
            total = time.perf_counter() - t0
            totals.append(total)
            hosts.append(total - (chip.stats.wait_s - s0.wait_s))
            transfers.append(chip.stats.transfer_s - s0.transfer_s)
            wire.append(chip.stats.bytes_in - s0.bytes_in)
        assert g.shape == (GEOMETRY.n_cells,) and chip.stats.failures == 0
    finally:
        chip.close()
    return {"total_s": min(totals), "host_s": min(hosts), "transfer_s": min(transfers), "wire_bytes": max(wire)}


def chip_read_seconds(repeats: int) -> float:
    """The emulated chip's own work for one whole-array read (in-process, best of N)."""
    chip = VirtualPCMChip(GEOMETRY, seed=0)
    cells = np.arange(GEOMETRY.n_cells)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        chip.read_codes(cells)
        times.append(time.perf_counter() - t0)
    return min(times)


def _share(x: float, raw_os: float, raw_lib: float) -> str:
    return f"{x / raw_os:5.0%} of raw os, {x / raw_lib:5.0%} of raw lib"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=8)
    args = parser.parse_args()
    n = GEOMETRY.n_cells
    print(f"bulk read of {n:,} cells ({GEOMETRY.rows}x{GEOMETRY.cols}, 8-bit ADC codes) through the emulator")
    chip_ms = chip_read_seconds(3) * 1e3
    print(f"emulated chip physics per whole-array read (in-process): {chip_ms:.0f} ms — chip time, not link time")
    rows = []
    for transport, raw_fn in (("pty", raw_pty), ("tcp", raw_tcp)):
        proc, uri = start_emulator(transport)
        try:
            r = bulk_reads(uri, args.repeats)
        finally:
            proc.terminate()
            proc.wait(10)
        raw_os = raw_fn(args.repeats + 1, library=False)
        raw_lib = raw_fn(args.repeats + 1, library=True)
        transfer = r["wire_bytes"] / r["transfer_s"]
        host = r["wire_bytes"] / r["host_s"]
        rows.append((transport, raw_os, raw_lib, transfer, host, n / r["host_s"], n / r["total_s"]))
        print(f"\n{transport} ({uri.split('?')[0]}), reply {r['wire_bytes']:,.0f} wire bytes")
        print(f"  raw os            {raw_os:10.3e} B/s")
        print(f"  raw lib           {raw_lib:10.3e} B/s   ({'pyserial' if transport == 'pty' else 'pyvisa-py'})")
        print(f"  link transfer     {transfer:10.3e} B/s   {_share(transfer, raw_os, raw_lib)}")
        print(f"  link incl. host   {host:10.3e} B/s   {_share(host, raw_os, raw_lib)}"
              f"   = {n / r['host_s']:.3e} cells/s")
        print(f"  end to end        {n / r['total_s']:10.3e} cells/s (incl. the chip's physics)")
    print("\ntransport  raw os B/s  raw lib B/s  transfer B/s  host B/s  host cells/s  e2e cells/s")
    for t, ro, rl, tr, ho, hc, ec in rows:
        print(f"{t:<9} {ro:11.3e} {rl:12.3e} {tr:13.3e} {ho:9.3e} {hc:13.3e} {ec:12.3e}")


if __name__ == "__main__":
    main()
