"""PCM chip test harness: program, drift, read back and evaluate analog PCM compute-in-memory chips.

The package is laid out in the order data flows (docs/architecture.md): ``chip`` (the seam and
how a chip is opened) → ``virtual`` (the simulated backend) → ``data``, ``models`` →
``programming`` (mapping, write-verify) → ``recording`` → ``sessions`` (schedules, runner,
resume check, replay) → ``evaluation`` (CiM simulator, accuracy vs drift) and ``calibration``
(recording → personality) → ``train``, ``accel`` → ``sweeps`` → ``report`` → ``commands``.

The names most scripts need are re-exported here, imported on first use::

    import harness
    chip = harness.open_chip("virtual?seed=7")
    model = harness.load_model("analognet-kws")
"""

from harness import _compat
from harness._exports import lazy_exports

_compat.install()


def _package_version() -> str:
    """The installed distribution's version; looked up on first use of ``harness.__version__``
    (importlib.metadata costs ~40 ms, a tenth of ``harness session status``'s start-up)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pcm-harness")
    except PackageNotFoundError:  # running from a source tree that was not installed
        return "0.0.0+unknown"

_EXPORTS: dict[str, str] = {
    # the chip seam
    "Chip": "harness.chip.protocol",
    "Geometry": "harness.chip.protocol",
    "open_chip": "harness.chip.registry",
    # data and models
    "load_dataset": "harness.data.dataset",
    "get_model": "harness.models.registry",
    "list_models": "harness.models.registry",
    "load_model": "harness.models.format",
    "save_model": "harness.models.format",
    # programming
    "map_model": "harness.programming.mapping",
    "map_weights": "harness.programming.mapping",
    "program_layout": "harness.programming.write_verify",
    "program_model": "harness.programming.write_verify",
    # sessions and recordings
    "load_session": "harness.sessions.schedule",
    "run_session": "harness.sessions.runner",
    "resume_session": "harness.sessions.resume",
    "open_recording": "harness.recording",
    # evaluation, calibration, sweeps
    "evaluate_chip": "harness.evaluation.evaluate",
    "evaluate_recording": "harness.evaluation.evaluate",
    "calibrate_recording": "harness.calibration.calibrate",
    "run_sweep": "harness.sweeps.runner",
}

__all__ = ["__version__", *sorted(_EXPORTS)]

_export_getattr, __dir__ = lazy_exports(__name__, _EXPORTS)


def __getattr__(name: str) -> object:
    """Public names on first use; an old flat module path (``harness.evaluate``) as its new module."""
    if name == "__version__":
        value = _package_version()
        globals()["__version__"] = value
        return value
    if name in _EXPORTS:
        return _export_getattr(name)
    if f"harness.{name}" in _compat.MOVED:
        import importlib

        return importlib.import_module(f"harness.{name}")
    raise AttributeError(f"module 'harness' has no attribute {name!r}")
