"""``harness compare``: two recordings of one layout side by side; it must see a real difference."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from harness.chip.registry import open_chip
from harness.sessions.schedule import parse_session
from harness.sessions.runner import run_session
from harness.virtual.personality import ClippedLog, load_personality
from tests.clikit import assert_one_line_error, invoke

SESSION = '[session]\nname = "cmp"\n[schedule]\nkind = "log"\nstart_s = 25.0\nstop_s = 86400.0\npoints = 10\n'
URI = "virtual?rows=64&cols=160&seed=4"


def test_compare_sees_a_drift_scaled_chip(tmp_path: Path) -> None:
    base = load_personality("pcm-90nm")
    fast = base.with_updates(
        name="fast-drift",
        nu_mean=ClippedLog(*(1.5 * v for v in (base.nu_mean.ln_coef, base.nu_mean.offset, base.nu_mean.min, base.nu_mean.max))),
    )
    (tmp_path / "fast.toml").write_text(fast.to_toml())
    for name, uri in (("a.h5", URI), ("b.h5", f"{URI}&personality={tmp_path / 'fast.toml'}")):
        with open_chip(uri) as chip:
            run_session(parse_session(SESSION), chip, tmp_path / name)
    result = invoke("compare", str(tmp_path / "a.h5"), str(tmp_path / "b.h5"), "--json", "--levels", "4")
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    a, b = out["a"]["levels"], out["b"]["levels"]
    big = [i for i, lv in enumerate(a) if lv["devices"] >= 1000]
    assert len(big) >= 2
    # drift exponents 1.5× (the mean of 1000+ per-device slopes; their spread ~0.03 → SE ~2 %)
    ratio = np.array([b[i]["nu_mean"] / a[i]["nu_mean"] for i in big])
    assert np.all(np.abs(ratio - 1.5) < 0.15), ratio
    # read noise and write-verify untouched (same seed, same loop): equal within 10 %
    rn = np.array([b[i]["read_noise_rel"] / a[i]["read_noise_rel"] for i in big])
    assert np.all(np.abs(rn - 1) < 0.1), rn
    assert out["a"]["converged_fraction"] > 0.98 and out["b"]["converged_fraction"] > 0.98
    ks = out["ks"]
    assert ks["distance"][-1] > ks["critical_alpha_0.01"]  # after a day the distributions differ
    human = invoke("compare", str(tmp_path / "a.h5"), str(tmp_path / "b.h5"))
    assert human.exit_code == 0 and "per target level" in human.stdout


def test_compare_other_layouts_is_one_line(tmp_path: Path) -> None:
    for name, uri in (("a.h5", URI), ("h.h5", f"{URI}&personality=hermes-14nm")):  # g_max 20.7: other targets
        with open_chip(uri) as chip:
            run_session(parse_session(SESSION), chip, tmp_path / name)
    assert_one_line_error(invoke("compare", str(tmp_path / "a.h5"), str(tmp_path / "h.h5")), "not recordings of the same layout")
    assert_one_line_error(invoke("compare", str(tmp_path / "a.h5"), str(tmp_path / "nope.h5")), "nope.h5")
