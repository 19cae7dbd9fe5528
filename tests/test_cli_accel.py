"""``harness accel``: tables, JSON, pictures, model files, and one-line errors for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from torch import nn

from harness.models.format import save_model
from harness.models.torch_convert import model_from_torch
from tests.clikit import assert_one_line_error, invoke


def _model_file(tmp_path: Path, net: nn.Sequential, input_shape: tuple[int, ...], name: str) -> Path:
    model = model_from_torch(net, name=name, input_shape=input_shape, n_classes=10, dataset="digits")
    path = tmp_path / f"{name}.h5"
    save_model(model, path)
    return path


def test_json_summary_for_analognet_kws() -> None:
    result = invoke("accel", "--model", "analognet-kws", "--bits", "8,4", "--json")
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    assert [r["bits"] for r in out["results"]] == [8, 4]
    r8 = out["results"][0]
    assert r8["cim_cycles"] == 991
    # conv1's 49 × 10 × 84 output at 8 bits fits one 64 KiB bank of the 128 KB double buffer.
    assert (r8["largest_activation_bytes"], r8["sram_bank_bytes"]) == (49 * 10 * 84, 65536)
    assert r8["inferences_per_s"] == pytest.approx(7762, rel=1e-3)
    assert r8["mcu_baseline_uJ"] == 48_600.0
    assert r8["mcu_energy_ratio"] == pytest.approx(48_600.0 / r8["uJ_per_inference"])
    assert [x["name"] for x in r8["layers"]] == ["conv1", "conv2", "conv3", "conv4", "conv5", "fc"]
    assert len(out["placement"]["tiles"]) == 6
    assert out["ops_per_mac"] == 2
    assert out["model_time_s"] < 0.5  # generous: the benchmark measures the real figure
    assert "per layer" in result.stderr  # the tables go to stderr in --json mode


def test_tables_and_pictures(tmp_path: Path) -> None:
    png = tmp_path / "fig8.png"
    result = invoke("accel", "--model", "analognet-vww", "--bits", "8", "--png", str(png))
    assert result.exit_code == 0, result.stderr
    assert "whole model" in result.stdout and "no stall" in result.stdout
    assert "196.2 mJ/inference" in result.stdout
    for p in (png, tmp_path / "fig8-placement.png"):
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_model_file(tmp_path: Path) -> None:
    net = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 10))
    path = _model_file(tmp_path, net, (1, 8, 8), "tiny")
    result = invoke("accel", "--model", str(path), "--bits", "6", "--json")
    assert result.exit_code == 0, result.stderr
    (r,) = json.loads(result.stdout)["results"]
    assert r["cim_cycles"] == 36 + 1
    assert r["mcu_baseline_uJ"] is None


def test_split_on_request(tmp_path: Path) -> None:
    path = _model_file(tmp_path, nn.Sequential(nn.Linear(2000, 10)), (2000,), "tall")
    assert_one_line_error(invoke("accel", "--model", str(path)), "needs 2000 rows × 10 columns")
    result = invoke("accel", "--model", str(path), "--split", "--bits", "8", "--json")
    assert result.exit_code == 0, result.stderr
    assert len(json.loads(result.stdout)["placement"]["tiles"]) == 2


def test_depthwise_gemm_split() -> None:
    base = json.loads(invoke("accel", "--model", "micronet-kws-s", "--bits", "8", "--json").stdout)
    split = json.loads(invoke("accel", "--model", "micronet-kws-s", "--bits", "8", "--json",
                              "--max-gemm-cols", "21").stdout)
    assert split["placement"]["effective_utilization"] > 2 * base["placement"]["effective_utilization"]
    assert split["results"][0]["latency_s"] > base["results"][0]["latency_s"]


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("--model", "resnet-50"), "unknown model 'resnet-50'"),
        (("--model", "analognet-kws", "--bits", "5"), "does not support 5-bit activations"),
        (("--model", "analognet-kws", "--bits", "8,x"), "bit-width 'x' is not an integer"),
        (("--model", "analognet-kws", "--hw", "/nonexistent/hw.toml"), "--hw /nonexistent/hw.toml: no such hardware file"),
    ],
)
def test_bad_input_is_one_line(args: tuple[str, ...], fragment: str) -> None:
    assert_one_line_error(invoke("accel", *args), fragment)


def test_bad_hardware_files(tmp_path: Path) -> None:
    from harness.accel.hardware import default_hardware_path

    text = default_hardware_path().read_text()
    cases = {
        "unknown.toml": (text.replace("[datapath]", "[datapath]\nlanes = 3"), "unknown key datapath.lanes"),
        "zero.toml": (text.replace("rows = 1024", "rows = 0"), "array.rows = 0 must be > 0"),
        "neg.toml": (text.replace("dac_pJ_per_row = ", "dac_pJ_per_row = -"), "must be > 0"),
        "small.toml": (text.replace("rows = 1024", "rows = 512"), "needs 756 rows"),
    }
    for name, (body, fragment) in cases.items():
        path = tmp_path / name
        path.write_text(body)
        assert_one_line_error(invoke("accel", "--model", "analognet-kws", "--hw", str(path)), fragment)
