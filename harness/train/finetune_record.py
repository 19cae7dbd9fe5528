"""The recording of a fine-tuning run: the chip the model was tuned on, read over time.

One HDF5 recording in the harness's format (:func:`harness.recording.create_recording`):

- its programming group is every layer's write-verify outcome in layout order; each device's
  ``final_uS`` is the read-back the fine-tuning used (the last verify read after its last
  pulse). The layers were programmed one after the other, the fine-tuning in between, so the
  programming spans ``t_start_s`` (first layer) to ``t_end_s`` (last layer);
- its readouts (optional, ``times_s``) read every device of the final layout at those times
  after the **last** layer was programmed, on the chip's clock (the virtual chip's simulated
  clock jumps; a real chip is waited for; a time already past is read at once and recorded
  as the time it was read).

Its provenance names the fine-tuned model file (``model``), so ``harness evaluate --recording
R.h5`` evaluates the fine-tuned model on the reads of the chip it was tuned on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from harness.chip.protocol import Chip
from harness.chip.registry import chip_seed
from harness.provenance import collect_provenance
from harness.recording import create_recording
from harness.models.model import Model
from harness.train.finetune import FinetuneResult


def naming_recording(model: Model, path: str | Path) -> Model:
    """``model`` (a fine-tuned one) with its ``finetune`` metadata naming the recording ``path``."""
    meta = dict(model.metadata)
    meta["finetune"] = {**meta["finetune"], "recording": str(path)}
    return Model(name=model.name, architecture=model.architecture, weights=model.weights(),
                 input_shape=model.input_shape, n_classes=model.n_classes, dataset=model.dataset,
                 ranges=model.ranges, metadata=meta, unipolar_layers=model.unipolar_layers)


def record_finetune(
    path: str | Path,
    chip: Chip,
    result: FinetuneResult,
    *,
    chip_uri: str,
    model_path: str | Path,
    times_s: Sequence[float] = (),
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> list[float]:
    """Write the recording of ``result`` (module docstring) and read ``chip`` at ``times_s``
    (seconds after the last layer was programmed); returns the recorded readout times.

    Raises:
        RecordingError: ``path`` exists (without ``overwrite``) or cannot be written.
        HarnessError: from the chip.
    """
    provenance = collect_provenance(
        chip_uri=chip_uri, chip_identity=chip.identity, seed=chip_seed(chip_uri), model=str(model_path),
        model_name=result.model.name, command="finetune",
        finetune={k: v for k, v in result.model.metadata["finetune"].items() if k != "stages"},
    )
    t_end = result.programming.t_end_s
    recorded: list[float] = []
    with create_recording(path, provenance=provenance, layout=result.layout, programming=result.programming,
                          overwrite=overwrite) as writer:
        for i, t in enumerate(sorted(float(t) for t in times_s)):
            chip.wait_until(t_end + t)
            t_read = max(t, chip.now() - t_end)
            writer.append_readout(t_read, chip.read(result.layout.cells))
            recorded.append(t_read)
            if progress:
                progress(i + 1, len(times_s))
    return recorded


__all__ = ["naming_recording", "record_finetune"]
