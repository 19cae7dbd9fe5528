"""The Dask trust boundary is stated, and a remote ``--scheduler`` is warned about (issue 19, item 8).

``--scheduler tcp://HOST:8786`` exchanges pickles with that host: unpickling runs code, so
pointing a sweep at a host trusts it with code execution. ``harness sweep --help`` and
docs/sweeps.md say so, and a non-loopback address prints one ``warning:`` line.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from clikit import invoke

from harness.sweeps.runner import scheduler_warning

REPO = Path(__file__).resolve().parent.parent
SWEEP = """
[sweep]
name = "trust"
runs = 1
[grid]
models = ["default"]
times = ["25s"]
bits = [8]
"""


@pytest.mark.parametrize(
    "address", ["tcp://127.0.0.1:8786", "tcp://127.5.6.7:1", "tcp://[::1]:8786", "tcp://localhost:8786",
                "127.0.0.1:8786", "inproc://10.0.0.5/1/2", None],
)
def test_loopback_schedulers_are_not_warned_about(address: str | None) -> None:
    assert scheduler_warning(address) is None


@pytest.mark.parametrize(
    "address", ["tcp://10.0.0.5:8786", "tls://192.168.1.2:8786", "tcp://[2001:db8::1]:8786", "tcp://cluster:8786",
                "tcp://0.0.0.0:8786", "10.0.0.5:8786", "tcp://localhost.evil.example:1"],
)
def test_other_schedulers_get_one_warning_line(address: str) -> None:
    line = scheduler_warning(address)
    assert line is not None and "\n" not in line and line.startswith("warning: --scheduler")
    assert "pickles" in line and "run code" in line


def test_help_and_docs_state_the_trust_boundary() -> None:
    r = invoke("sweep", "--help")
    assert r.exit_code == 0
    text = " ".join(r.stdout.split())
    assert "pickles" in text and "code execution" in text
    docs = (REPO / "docs" / "sweeps.md").read_text()
    assert "### Trust boundary" in docs and "pickles" in docs


def test_a_non_loopback_scheduler_prints_the_warning_before_anything_else(tmp_path: Path) -> None:
    with socket.socket() as s:  # a free port nobody listens on: the connection fails fast
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    f = tmp_path / "s.toml"
    f.write_text(SWEEP)
    # 0.0.0.0 is not loopback (it means "any address"), yet connecting to it stays on this machine
    r = invoke("sweep", str(f), "--out", str(tmp_path / "o"), "--scheduler", f"tcp://0.0.0.0:{port}")
    lines = r.stderr.strip().splitlines()
    assert r.exit_code != 0
    assert len(lines) == 2 and lines[0].startswith("warning: --scheduler tcp://0.0.0.0") and "pickles" in lines[0]
    assert lines[1].startswith("error: cannot reach the Dask scheduler")
