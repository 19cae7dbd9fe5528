"""The monitor of a refresh session: a small labelled set from the TRAINING split, classified
by the in-memory CiM simulator from the conductances just read.

:func:`build_monitor` is the :data:`harness.sessions.refresh.MonitorFactory` the CLI hands to
the session runner (which sits below this layer). It reuses the evaluation's parts as
``harness evaluate`` does: converter ranges from a :class:`~harness.evaluation.ranges.RangeCalibrator`
over the training split, and :class:`~harness.evaluation.cim.CimSimulator` with global drift
compensation against the current epoch's programming outcome. The test split is never
loaded into the monitor: its examples are ``x_train[indices]`` for indices drawn once under
``monitor_seed``.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import torch

from harness.data import check_dataset_fits, load_dataset
from harness.data.dataset import Dataset
from harness.errors import ConfigError, DatasetError
from harness.evaluation.cim import CimSimulator
from harness.evaluation.ranges import RangeCalibrator
from harness.models.format import Model
from harness.programming.mapping import Layout
from harness.sessions.refresh_spec import DEFAULT_MONITOR_BITS, RefreshSpec


def monitor_bits(model: Model, spec: RefreshSpec) -> int:
    """The monitor's ADC/DAC bits: the file's, else the model's trained bits, else 8."""
    if spec.monitor_bits is not None:
        return spec.monitor_bits
    trained = model.metadata.get("bits") if isinstance(model.metadata, dict) else None
    return trained if isinstance(trained, int) and not isinstance(trained, bool) else DEFAULT_MONITOR_BITS


class CimMonitor:
    """Counts the monitor examples a readout classifies right (:class:`~harness.sessions.refresh.AccuracyMonitor`).

    Attributes:
        indices: the examples' rows in the dataset's training split (sorted).
        examples, bits, gdc: the set's size, the converter bits, whether GDC is applied.

    Raises:
        ConfigError: the model names no dataset, or its training split is smaller than the set.
        DatasetError: the dataset cannot be loaded or does not fit the model.
    """

    def __init__(self, model: Model, layout: Layout, spec: RefreshSpec, data: Dataset | None = None) -> None:
        if data is None:
            if not model.dataset:
                raise ConfigError(
                    f"model {model.name!r} names no dataset: a refresh session's monitor needs its labelled training "
                    "examples; use a model trained on a bundled dataset"
                )
            try:
                data = load_dataset(model.dataset)
            except (ConfigError, DatasetError) as exc:
                raise ConfigError(
                    f"model {model.name!r} names dataset {model.dataset!r}, which is not available ({exc}); a refresh "
                    "session's monitor needs its labelled training examples"
                ) from exc
        check_dataset_fits(data, input_shape=model.input_shape, n_classes=model.n_classes, model_name=model.name)
        n_train = int(data.y_train.shape[0])
        if spec.monitor_examples > n_train:
            raise ConfigError(
                f"[refresh] monitor_examples = {spec.monitor_examples} exceeds the {n_train} training examples of "
                f"dataset {data.name!r}"
            )
        rng = np.random.default_rng(spec.monitor_seed)
        self.indices = np.sort(rng.choice(n_train, size=spec.monitor_examples, replace=False))
        self.examples = spec.monitor_examples
        self.bits = monitor_bits(model, spec)
        self.gdc = spec.monitor_gdc
        self.x = torch.from_numpy(np.array(data.x_train[self.indices], dtype=np.float32))
        self.y = torch.from_numpy(np.array(data.y_train[self.indices], dtype=np.int64))
        ranges = RangeCalibrator(model, data.x_train).at(self.bits)
        self.simulator = CimSimulator(model, layout, ranges)

    def correct(self, g_uS: npt.NDArray[np.float64], g_ref_uS: npt.NDArray[np.float64]) -> int:
        """Examples classified right with the layout's devices at ``g_uS`` (layout order, µS)."""
        hits = self.simulator.correct(
            self.x, self.y, np.asarray(g_uS)[None, :], bits=self.bits,
            g_ref_uS=np.asarray(g_ref_uS)[None, :] if self.gdc else None,
        )
        return int(hits.sum())


def build_monitor(model: Model, layout: Layout, spec: RefreshSpec) -> CimMonitor:
    """The :data:`~harness.sessions.refresh.MonitorFactory` of the CLI."""
    return CimMonitor(model, layout, spec)


__all__ = ["CimMonitor", "build_monitor", "monitor_bits"]
