"""Training checkpoints in HDF5 (no pickle): nested state of tensors, numbers and strings.

A checkpoint holds the hardware-aware network's ``state_dict``, the optimizer's
``state_dict``, every RNG state, the epoch's shuffle order and the position in the run, plus
an *identity* (model architecture, data, recipe, hyper-parameters) that ``--resume`` must
match. Nested Python state is stored as one JSON skeleton in which every tensor is replaced
by ``{"__tensor__": k}``, the tensor itself being dataset ``tensors/k``; dict keys keep their
type (``int`` keys of the optimizer state survive). Written atomically
(:func:`harness.h5files.atomic_h5_file`): a crash mid-write leaves the previous checkpoint.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from harness.errors import ModelError, TrainingError
from harness.h5files import atomic_h5_file, one_line

CHECKPOINT_FORMAT = "pcm-harness-train-checkpoint"
CHECKPOINT_FORMAT_VERSION = 1


def _flatten(obj: Any, tensors: list[torch.Tensor]) -> Any:
    if isinstance(obj, torch.Tensor):
        tensors.append(obj.detach().cpu())
        return {"__tensor__": len(tensors) - 1}
    if isinstance(obj, dict):
        return {"__dict__": [[_flatten(k, tensors), _flatten(v, tensors)] for k, v in obj.items()]}
    if isinstance(obj, list | tuple):
        return {"__list__": [_flatten(v, tensors) for v in obj], "tuple": isinstance(obj, tuple)}
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    if isinstance(obj, np.generic):
        return obj.item()
    raise TrainingError(f"cannot checkpoint a value of type {type(obj).__name__}")


def _unflatten(obj: Any, tensors: dict[int, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[int(obj["__tensor__"])]
        if "__dict__" in obj:
            return {_unflatten(k, tensors): _unflatten(v, tensors) for k, v in obj["__dict__"]}
        if "__list__" in obj:
            items = [_unflatten(v, tensors) for v in obj["__list__"]]
            return tuple(items) if obj.get("tuple") else items
        raise TrainingError("malformed checkpoint skeleton")
    return obj


def save_checkpoint(path: str | os.PathLike[str], *, identity: dict[str, Any], state: dict[str, Any]) -> None:
    """Write ``state`` (nested dicts/lists of tensors and JSON scalars) under ``identity``.

    Raises:
        TrainingError: an unsupported value or an unwritable path.
    """
    tensors: list[torch.Tensor] = []
    skeleton = _flatten(state, tensors)
    try:
        with atomic_h5_file(path, what="checkpoint") as f:
            f.attrs["format"] = CHECKPOINT_FORMAT
            f.attrs["format_version"] = CHECKPOINT_FORMAT_VERSION
            f.attrs["identity"] = json.dumps(identity, sort_keys=True)
            f.attrs["skeleton"] = json.dumps(skeleton)
            group = f.create_group("tensors")
            for k, t in enumerate(tensors):
                group.create_dataset(str(k), data=t.numpy())
    except ModelError as exc:
        raise TrainingError(str(exc)) from exc


def load_checkpoint(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(identity, state)`` of a checkpoint written by :func:`save_checkpoint`.

    Raises:
        TrainingError: missing, unreadable, corrupt or foreign file.
    """
    p = Path(path)
    if not p.is_file():
        raise TrainingError(f"no checkpoint to resume from at {p}")
    try:
        with h5py.File(p, "r") as f:
            if f.attrs.get("format") != CHECKPOINT_FORMAT:
                raise TrainingError(f"{p} is not a training checkpoint (format={f.attrs.get('format')!r})")
            version = int(f.attrs["format_version"])
            if version != CHECKPOINT_FORMAT_VERSION:
                raise TrainingError(f"checkpoint {p} has format_version {version}; expected {CHECKPOINT_FORMAT_VERSION}")
            identity = json.loads(f.attrs["identity"])
            skeleton = json.loads(f.attrs["skeleton"])
            tensors = {int(k): torch.from_numpy(np.array(ds[()])) for k, ds in f["tensors"].items()}
        state = _unflatten(skeleton, tensors)
    except TrainingError:
        raise
    except (OSError, KeyError, ValueError, TypeError, json.JSONDecodeError) as exc:
        raise TrainingError(f"checkpoint {p} is corrupt or unreadable: {one_line(exc)}") from exc
    if not isinstance(state, dict) or not isinstance(identity, dict):
        raise TrainingError(f"checkpoint {p} is corrupt: unexpected content")
    return identity, state
