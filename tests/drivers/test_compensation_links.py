"""``harness evaluate --compensate`` through the chip emulator over a real pseudo-terminal
(``serial://``) and a loopback socket (``visa://TCPIP::…::SOCKET``, pyvisa-py): every method
gives the same numbers as on the local virtual chip the emulator serves."""

from __future__ import annotations

import json

import pytest
from linkkit import ServeFn

from clikit import invoke
from harness.chip.protocol import Geometry

MODEL_GEOMETRY = Geometry(rows=64, cols=256)  # the default model fits
VIRTUAL = f"virtual?rows={MODEL_GEOMETRY.rows}&cols={MODEL_GEOMETRY.cols}&seed=7"


@pytest.mark.parametrize("kind", ["pty", "tcp"])
def test_compensate_over_serial_and_visa_equals_the_virtual_chip(serve: ServeFn, kind: str) -> None:
    uri = serve(kind, MODEL_GEOMETRY, seed=7).uri
    assert uri.startswith({"pty": "serial://", "tcp": "visa://"}[kind])
    args = ("--times", "25s,1mo", "--bits", "4", "--compensate", "none,gdc,column", "--calibration-examples", "64",
            "--json")
    remote = invoke("evaluate", "--chip", uri, *args)
    assert remote.exit_code == 0, remote.stderr
    local = invoke("evaluate", "--chip", VIRTUAL, "--runs", "1", *args)
    assert local.exit_code == 0, local.stderr
    a, b = json.loads(remote.stdout), json.loads(local.stdout)
    assert a["compensate"] == ["none", "gdc", "column"]
    for method in a["compensate"]:
        assert a["methods"][method]["accuracy"]["4"] == b["methods"][method]["accuracy"]["4"], method
    # drift is visible and the methods differ after a month (the comparison is not vacuous)
    month = {m: a["methods"][m]["accuracy"]["4"]["1mo"]["mean"] for m in a["compensate"]}
    assert month["gdc"] > month["none"]
