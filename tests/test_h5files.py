"""Atomic HDF5 writes: a reader never sees a half-written file; failures leave nothing behind."""

from __future__ import annotations

from pathlib import Path

import h5py
import pytest

from harness.errors import ModelError
from harness.h5files import atomic_h5_file, one_line


def test_file_appears_only_when_complete(tmp_path: Path) -> None:
    target = tmp_path / "m.h5"
    with atomic_h5_file(target, what="model") as f:
        f.attrs["x"] = 1
        assert not target.exists()
    with h5py.File(target, "r") as f:
        assert f.attrs["x"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["m.h5"]


def test_error_inside_keeps_existing_file_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "m.h5"
    target.write_bytes(b"old content")
    with pytest.raises(RuntimeError):
        with atomic_h5_file(target, what="model") as f:
            f.attrs["x"] = 1
            raise RuntimeError("boom")
    assert target.read_bytes() == b"old content"
    assert [p.name for p in tmp_path.iterdir()] == ["m.h5"]


def test_unwritable_place_is_a_one_line_model_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"cannot write dataset file .*missing.*h5"):
        with atomic_h5_file(tmp_path / "missing" / "d.h5", what="dataset"):
            pass


def test_one_line_collapses_whitespace() -> None:
    assert one_line(ValueError("a\n  b\tc")) == "a b c"
    assert one_line(ValueError()) == "ValueError"
