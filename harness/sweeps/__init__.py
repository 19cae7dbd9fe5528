"""Sweeps: a Monte Carlo grid (models × chips × runs × times × bits) run on Dask.

- :mod:`harness.sweeps.spec` — the sweep TOML parsed once into a ``SweepSpec`` and its tasks,
  each with its own deterministic chip seed.
- :mod:`harness.sweeps.runner` — ``run_sweep`` (resumable, one Parquet part per task),
  ``run_task``, ``load_results``.

May import: evaluation and everything below it.
"""

from harness._exports import lazy_exports

_EXPORTS: dict[str, str] = {
    **dict.fromkeys(["SweepSpec", "SweepTask", "load_sweep", "parse_sweep", "task_for"], "spec"),
    **dict.fromkeys(["SweepResult", "load_results", "run_sweep", "run_task"], "runner"),
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
