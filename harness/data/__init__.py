"""Datasets: the harness's dataset HDF5 format, shipped datasets and loaders of local copies
of public datasets.

``harness.data.dataset`` owns the file format (one place); the loaders and the audio front end
live in their own modules and are imported on use, so that importing this package never pulls
optional extras (librosa, Pillow).
"""

from __future__ import annotations

from harness.data.dataset import (
    BUNDLED_DATASETS,
    DATASET_FORMAT,
    DATASET_FORMAT_VERSION,
    Dataset,
    check_dataset_fits,
    fixtures_dir,
    load_dataset,
    resolve_dataset_path,
    save_dataset,
)

__all__ = [
    "BUNDLED_DATASETS",
    "DATASET_FORMAT",
    "DATASET_FORMAT_VERSION",
    "Dataset",
    "check_dataset_fits",
    "fixtures_dir",
    "load_dataset",
    "resolve_dataset_path",
    "save_dataset",
]
