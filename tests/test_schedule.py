"""Session definitions and schedules: parsing, validation, timetables."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.errors import ConfigError, ScheduleError
from harness.sessions.schedule import (
    MAX_READOUTS,
    check_times,
    linear_schedule,
    list_schedule,
    load_session,
    log_schedule,
    parse_session,
)

REPO = Path(__file__).resolve().parent.parent
SESSIONS = REPO / "sessions"

GOOD = """
[session]
name = "t"

[program]
model = "default"

[readout]
cells = "layout"

[schedule]
kind = "log"
start_s = 25.0
stop_s = 72000.0
points = 30
"""


def test_shipped_drift_20h_is_30_log_spaced_readouts_from_25_s_to_20_h() -> None:
    spec = load_session(SESSIONS / "drift-20h.toml")
    t = spec.schedule.as_array()
    assert spec.name == "drift-20h"
    assert t.size == 30
    assert t[0] == 25.0 and t[-1] == 72000.0
    ratios = t[1:] / t[:-1]
    np.testing.assert_allclose(ratios, (72000 / 25) ** (1 / 29), rtol=1e-12)
    assert spec.readout.cells == "layout"
    assert spec.program.model == "default"


def test_shipped_demo_session_parses_with_its_programming_params() -> None:
    spec = load_session(SESSIONS / "demo-short.toml")
    assert spec.schedule.n_readouts == 10
    assert spec.program.programming_params().max_iterations == 30
    assert spec.source_text == (SESSIONS / "demo-short.toml").read_text()


def test_spec_is_frozen() -> None:
    spec = parse_session(GOOD)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.name = "x"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.schedule.times_s = (1.0,)  # type: ignore[misc]


def test_linear_by_points_and_by_step_agree() -> None:
    a = linear_schedule(0.0, 100.0, points=11)
    b = linear_schedule(0.0, 100.0, step_s=10.0)
    np.testing.assert_allclose(a.times_s, b.times_s)
    assert a.times_s[0] == 0.0 and b.times_s[-1] == pytest.approx(100.0)


def test_list_schedule_keeps_times_and_allows_zero() -> None:
    s = list_schedule([0, 25, 3600.5])
    assert s.times_s == (0.0, 25.0, 3600.5)


@pytest.mark.parametrize(
    ("times", "words"),
    [
        ([25, -1, 30], "must be >= 0"),
        ([-5], "must be >= 0"),
        ([25, 100, 50], "not in increasing order"),
        ([25, 100, 100, 200], "appears twice"),
        ([25, float("nan")], "finite"),
        ([25, float("inf")], "finite"),
        ([], "no readout times"),
    ],
)
def test_bad_times_are_schedule_errors(times: list[float], words: str) -> None:
    with pytest.raises(ScheduleError, match=words):
        list_schedule(times)


@pytest.mark.parametrize(
    "call",
    [
        lambda: log_schedule(0.0, 100.0, 10),
        lambda: log_schedule(-1.0, 100.0, 10),
        lambda: log_schedule(100.0, 25.0, 10),
        lambda: log_schedule(25.0, 100.0, 1),
        lambda: log_schedule(25.0, 100.0, MAX_READOUTS + 1),
        lambda: linear_schedule(10.0, 5.0, points=3),
        lambda: linear_schedule(0.0, 5.0, step_s=0.0),
        lambda: linear_schedule(0.0, 5.0),
        lambda: linear_schedule(0.0, 5.0, points=3, step_s=1.0),
        lambda: linear_schedule(-3.0, 5.0, points=3),
    ],
)
def test_bad_schedule_parameters(call) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ScheduleError):
        call()


@given(st.lists(st.floats(min_value=-1e9, max_value=1e9, allow_nan=False), min_size=1, max_size=40))
def test_check_times_accepts_exactly_nonnegative_strictly_increasing(times: list[float]) -> None:
    ok = all(t >= 0 for t in times) and all(b > a for a, b in zip(times, times[1:]))
    if ok:
        check_times(times)
    else:
        with pytest.raises(ScheduleError):
            check_times(times)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("extra = 1\n" + GOOD, "unknown key 'extra' in the top level"),
        (GOOD.replace('name = "t"', 'name = "t"\ncolour = "red"'), "unknown key 'colour' in [session]"),
        (GOOD.replace("points = 30", "points = 30\nstep_s = 4"), "unknown key 'step_s' in [schedule]"),
        (GOOD.replace('cells = "layout"', 'cells = "layout"\nevery = 2'), "unknown key 'every' in [readout]"),
        (GOOD.replace('model = "default"', 'model = "default"\nseed = 7'), "unknown key 'seed' in [program]"),
        (GOOD.replace('model = "default"', 'model = "default"\n[program.params]\nwobble = 1'),
         "unknown key 'wobble' in [program.params]"),
        (GOOD.replace("points = 30", 'points = "30"'), "must be an integer"),
        (GOOD.replace("start_s = 25.0", 'start_s = "soon"'), "must be a number"),
        (GOOD.replace('kind = "log"', 'kind = "cubic"'), "is not one of"),
        (GOOD.replace('cells = "layout"', 'cells = "some"'), "is not one of"),
        (GOOD.replace('name = "t"', ""), "missing key 'name'"),
        ("[session]\nname = 'x'\n", "missing table [schedule]"),
        ("[session\nname = 'x'", "not valid TOML"),
        (GOOD.replace('model = "default"', 'model = "default"\n[program.params]\ngain = 7.5'),
         "bad programming parameters"),
    ],
)
def test_bad_session_files_name_the_problem_and_the_file(text: str, words: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_session(text, source="my-session.toml")
    assert words in str(err.value)
    assert "my-session.toml" in str(err.value)


@pytest.mark.parametrize(
    ("schedule", "words"),
    [
        ('kind = "list"\ntimes_s = [25, 10]', "not in increasing order"),
        ('kind = "list"\ntimes_s = [-25, 10]', "must be >= 0"),
        ('kind = "list"\ntimes_s = [25, 25]', "appears twice"),
        ('kind = "list"\ntimes_s = ["a"]', "list of numbers"),
        ('kind = "log"\nstart_s = 100.0\nstop_s = 10.0\npoints = 5', "0 < start_s < stop_s"),
    ],
)
def test_bad_schedules_in_files_are_schedule_errors_naming_the_file(schedule: str, words: str) -> None:
    text = GOOD.split("[schedule]")[0] + "[schedule]\n" + schedule + "\n"
    with pytest.raises(ConfigError) as err:
        parse_session(text, source="s.toml")
    assert words in str(err.value) and "s.toml" in str(err.value)


def test_relative_model_path_resolves_against_the_session_file(tmp_path: Path) -> None:
    f = tmp_path / "sub" / "s.toml"
    f.parent.mkdir()
    f.write_text(GOOD.replace('model = "default"', 'model = "../models/m.h5"'))
    spec = load_session(f)
    assert Path(spec.program.model) == tmp_path / "sub" / ".." / "models" / "m.h5"


def test_missing_and_unreadable_session_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_session(tmp_path / "nope.toml")
    bad = tmp_path / "bin.toml"
    bad.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError):
        load_session(bad)
