"""The VWW image-folder and UCI HAR loaders on tiny trees in their standard layouts, made here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from harness.data import load_dataset
from harness.data.har import INERTIAL_SIGNALS, build_har
from harness.data.vww import VWW_CLASSES, build_vww, hash_split, plan_vww
from harness.errors import DatasetError
from tests.clikit import assert_one_line_error, invoke

Image = pytest.importorskip("PIL.Image", reason="the images extra")


# ---------------------------------------------------------------------------- VWW
def _image(path: Path, value: int, size: tuple[int, int] = (80, 60)) -> None:
    """An RGB image whose centre square is ``value`` gray and whose side bands are black."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.zeros((size[1], size[0], 3), np.uint8)
    side = min(size)
    left = (size[0] - side) // 2
    rgb[:, left : left + side] = value
    Image.fromarray(rgb).save(path)


def test_vww_presplit_folders(tmp_path: Path) -> None:
    for split, n in (("train", 3), ("val", 1), ("test", 2)):
        for label, cls in enumerate(VWW_CLASSES):
            for i in range(n):
                _image(tmp_path / "vww" / split / cls / f"{i}.png", 40 + 150 * label)
    counts = build_vww(tmp_path / "vww", tmp_path / "v.h5")
    assert counts == {"train": 6, "val": 2, "test": 4}
    ds = load_dataset(tmp_path / "v.h5")
    assert ds.input_shape == (1, 50, 50) and ds.class_names == ("non_person", "person")
    # centre-cropped: the black side bands are gone; gray levels survive the 8-bit round trip
    for x, y in ((ds.x_train, ds.y_train), (ds.x_test, ds.y_test)):
        expected = np.where(y == 1, 190 / 255, 40 / 255).astype(np.float32)
        np.testing.assert_allclose(x.reshape(len(y), -1).min(axis=1), expected, atol=1 / 255)
        np.testing.assert_allclose(x.reshape(len(y), -1).max(axis=1), expected, atol=1 / 255)


def test_vww_flat_folder_is_split_by_file_name_hash(tmp_path: Path) -> None:
    for label, cls in enumerate(VWW_CLASSES):
        for i in range(40):
            _image(tmp_path / cls / f"img{i:03d}.jpg", 100, size=(32, 32))
    plan = plan_vww(tmp_path)
    for split, items in plan.items():
        assert all(hash_split(f"{VWW_CLASSES[label]}/{p.name}") == split for p, label in items)
    n = {s: len(v) for s, v in plan.items()}
    assert sum(n.values()) == 80 and 48 <= n["train"] <= 76  # 80 % of 80 ± 4σ of a binomial


def test_vww_missing_class_folder(tmp_path: Path) -> None:
    _image(tmp_path / "person" / "a.png", 10)
    with pytest.raises(DatasetError, match="has no non_person/"):
        plan_vww(tmp_path)
    result = invoke("data", "vww", "--images", str(tmp_path), "--out", str(tmp_path / "v.h5"))
    assert_one_line_error(result, "has no non_person/")


# ---------------------------------------------------------------------------- UCI HAR
ACTIVITIES = ("WALKING", "WALKING_UPSTAIRS", "WALKING_DOWNSTAIRS", "SITTING", "STANDING", "LAYING")


def make_har_tree(root: Path) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """A 'UCI HAR Dataset' tree with a few windows per split, written like the original
    (scientific notation, space separated)."""
    rng = np.random.default_rng(5)
    (root).mkdir(parents=True)
    (root / "activity_labels.txt").write_text("".join(f"{i + 1} {a}\n" for i, a in enumerate(ACTIVITIES)))
    truth = {}
    for split, n, subjects in (("train", 7, (1, 3)), ("test", 4, (2,))):
        folder = root / split
        (folder / "Inertial Signals").mkdir(parents=True)
        x = rng.uniform(-1, 1, (n, 561))
        y = rng.integers(1, 7, n)
        s = rng.choice(subjects, n)
        np.savetxt(folder / f"X_{split}.txt", x, fmt="%.7e")
        np.savetxt(folder / f"y_{split}.txt", y, fmt="%d")
        np.savetxt(folder / f"subject_{split}.txt", s, fmt="%d")
        w = rng.normal(0, 1, (n, 9, 128))
        for k, name in enumerate(INERTIAL_SIGNALS):
            np.savetxt(folder / "Inertial Signals" / f"{name}_{split}.txt", w[:, k], fmt="%.7e")
        truth[split] = (x, y, s, w)
    return truth


@pytest.mark.parametrize("kind", ["features", "windows"])
def test_har_reads_the_standard_layout(tmp_path: Path, kind: str) -> None:
    truth = make_har_tree(tmp_path / "UCI HAR Dataset")
    counts = build_har(tmp_path / "UCI HAR Dataset", tmp_path / "h.h5", kind=kind)
    assert counts == {"train": 7, "test": 4}
    ds = load_dataset(tmp_path / "h.h5")
    assert ds.class_names == ACTIVITIES and ds.splits() == ("train", "test")
    assert ds.input_shape == ((561,) if kind == "features" else (9, 128))
    for split in ("train", "test"):
        x, y, s, w = truth[split]
        np.testing.assert_allclose(getattr(ds, f"x_{split}"), x if kind == "features" else w, rtol=1e-6, atol=1e-7)
        np.testing.assert_array_equal(getattr(ds, f"y_{split}"), y - 1)  # activity 1..6 → label 0..5
        np.testing.assert_array_equal(getattr(ds, f"subject_{split}"), s)


def test_har_cli_and_bad_trees(tmp_path: Path) -> None:
    make_har_tree(tmp_path / "har")
    result = invoke("data", "har", "--uci-har", str(tmp_path / "har"), "--out", str(tmp_path / "h.h5"), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["samples"] == {"train": 7, "test": 4}
    (tmp_path / "har" / "test" / "subject_test.txt").write_text("2\n2\n")
    result = invoke("data", "har", "--uci-har", str(tmp_path / "har"), "--out", str(tmp_path / "h2.h5"))
    assert_one_line_error(result, "subject_test.txt has 2 rows; expected one per window (4)")
    (tmp_path / "har" / "train" / "X_train.txt").unlink()
    with pytest.raises(DatasetError, match="missing .*X_train.txt"):
        build_har(tmp_path / "har", tmp_path / "h3.h5")
    result = invoke("data", "har", "--uci-har", str(tmp_path / "har"), "--out", str(tmp_path / "h4.h5"), "--kind", "raw")
    assert_one_line_error(result, "kind 'raw' is not one of features, windows")
