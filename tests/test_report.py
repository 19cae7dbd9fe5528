"""``harness report``: a self-contained HTML page of a recording, an evaluation and a sweep."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from harness.report import build_report
from tests.clikit import assert_one_line_error, invoke
from tests.tools import skip_unless_tool

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "fixtures" / "recordings" / "demo.h5"
SWEEP = """
[sweep]
name = "tiny"
runs = 2
[grid]
models = ["default"]
times = ["25s", "1d"]
bits = [8, 4]
"""


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> list[Path]:
    """The shipped demo recording, a 2-chip sweep folder, an evaluation and an accelerator estimate."""
    pytest.importorskip("distributed")
    from harness.sweeps.runner import run_sweep
    from harness.sweeps.spec import parse_sweep

    d = tmp_path_factory.mktemp("report")
    run_sweep(parse_sweep(SWEEP, source="tiny.toml"), d / "sweep", workers=1)
    r = invoke("evaluate", "--chip", "virtual?rows=64&cols=160", "--runs", "2", "--times", "25s,1d", "--bits", "8,4", "--json")
    assert r.exit_code == 0, r.stderr
    (d / "eval.json").write_text(r.stdout)
    r = invoke("accel", "--model", "analognet-kws", "--json")
    assert r.exit_code == 0, r.stderr
    (d / "accel.json").write_text(r.stdout)
    return [DEMO, d / "sweep", d / "eval.json", d / "accel.json"]


@pytest.fixture(scope="module")
def page(inputs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("html") / "report.html"
    r = invoke("report", *map(str, inputs), "--html", str(out))
    assert r.exit_code == 0, r.stderr
    return out


def test_report_is_one_self_contained_file(page: Path) -> None:
    text = page.read_text()
    # no fetches: every image is embedded, no scripts, stylesheets or links to load
    assert not re.search(r"""(src|href)=["'](?!data:|#)""", text)
    assert "<script" not in text and "<link" not in text and "@import" not in text
    images = re.findall(r'<img src="data:image/png;base64,', text)
    # recording: convergence map, verify error, histograms, drift; sweep: 1 curve; evaluation: 1 curve;
    # accelerator: Figure 8 scatter and placement map
    assert len(images) == 8
    for heading in ("Recording demo.h5", "Sweep tiny", "Evaluation eval.json", "Accelerator estimate accel.json",
                    "Provenance", "Ablation at 1d", "Per layer at 8-bit"):
        assert heading in text
    assert "virtual?rows=64&amp;cols=160&amp;seed=42" in text  # the recording's chip URI, escaped
    assert "harness report" in text  # the command line that made it


def test_tables_show_the_sweep_numbers(inputs) -> None:
    from harness.sweeps.runner import load_results

    df = load_results(inputs[1])
    sel = df[(df.bits == 4) & (df.t_s == 86400.0)]["accuracy"]
    text = build_report([inputs[1]])
    from harness.evaluation.uncertainty import accuracy_interval_from_runs

    n = int(df["n_test"].iloc[0])
    lo, hi = accuracy_interval_from_runs(sel.to_numpy(), n)
    assert f"{sel.mean() * 100:.2f} [{float(lo) * 100:.1f}, {float(hi) * 100:.1f}]" in text


def test_program_only_recording_is_reported(tmp_path: Path) -> None:
    out = tmp_path / "p.h5"
    r = invoke("program", "--chip", "virtual?rows=64&cols=160", "--out", str(out))
    assert r.exit_code == 0, r.stderr
    text = build_report([out])
    assert "no readouts yet" in text and text.count("<img") == 2


@pytest.mark.parametrize(
    "case, fragment",
    [
        ("missing", "does not exist"),
        ("not-html", "unsupported format '.png'"),
        ("exists", "already exists"),
        ("garbage", "neither a recording"),
        ("other-json", "not from harness evaluate"),
        ("bad-eval", "not an evaluation result"),
        ("plain-folder", "not a sweep results folder"),
        ("no-dir", "does not exist"),
    ],
)
def test_bad_input_is_one_line(tmp_path: Path, case: str, fragment: str) -> None:
    src, out = str(DEMO), tmp_path / "r.html"
    if case == "missing":
        src = str(tmp_path / "nope.h5")
    elif case == "not-html":
        out = tmp_path / "r.png"
    elif case == "exists":
        out.write_text("keep me")
    elif case == "garbage":
        (tmp_path / "g.bin").write_bytes(b"\x00\x01garbage")
        src = str(tmp_path / "g.bin")
    elif case == "other-json":
        (tmp_path / "o.json").write_text(json.dumps({"hello": 1}))
        src = str(tmp_path / "o.json")
    elif case == "bad-eval":
        (tmp_path / "e.json").write_text(json.dumps({"accuracy": {}, "bits": ["8"]}))
        src = str(tmp_path / "e.json")
    elif case == "plain-folder":
        (tmp_path / "folder").mkdir()
        src = str(tmp_path / "folder")
    elif case == "no-dir":
        out = tmp_path / "nodir" / "r.html"
    r = invoke("report", src, "--html", str(out))
    assert_one_line_error(r, fragment)
    if case == "exists":
        assert out.read_text() == "keep me"


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.browser
def test_report_renders_in_headless_chromium(page: Path, tmp_path: Path) -> None:
    """Opened from disk in a real browser: no console errors, every image decoded, and a
    screenshot written (look at it: tests/…/report.png under the pytest tmp dir)."""
    chromium = _chromium()
    skip_unless_tool(chromium, "Chromium is not installed (Debian: apt-get install chromium)")
    assert chromium is not None
    sync_api = pytest.importorskip("playwright.sync_api")
    errors: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=chromium,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--disable-quic"],
        )
        try:
            tab = browser.new_page(viewport={"width": 1280, "height": 900})
            tab.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            tab.on("pageerror", lambda e: errors.append(str(e)))
            requests: list[str] = []
            tab.on("request", lambda r: requests.append(r.url))
            tab.goto(page.as_uri())
            images = tab.evaluate("Array.from(document.images).map(i => [i.complete, i.naturalWidth])")
            tab.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        finally:
            browser.close()
    assert errors == []
    assert len(images) == 8 and all(done and width > 0 for done, width in images)
    assert all(u.startswith(("file:", "data:")) for u in requests)  # nothing from the network
    assert (tmp_path / "report.png").stat().st_size > 50_000
