"""Programming: weights → target conductances on the array, then closed-loop write-verify.

- :mod:`harness.programming.mapping` — ``map_weights`` / ``map_model``: differential pairs or
  single (unipolar) devices, per-layer scale, block placement; the ``Layout`` every later stage
  reads.
- :mod:`harness.programming.write_verify` — ``program_cells`` (the vectorised write-read-verify
  loop), ``program_layout`` / ``program_model``, ``ProgrammingResult``.

May import: the chip seam, models, data and the shared basics.
"""

from harness._exports import lazy_exports

_EXPORTS: dict[str, str] = {
    **dict.fromkeys(
        ["LayerPlacement", "Layout", "map_model", "map_weights", "place_layers", "shelf_pack"], "mapping"
    ),
    **dict.fromkeys(
        [
            "LevelStats",
            "ProgrammingParams",
            "ProgrammingProgress",
            "ProgrammingResult",
            "program_cells",
            "program_layout",
            "program_model",
        ],
        "write_verify",
    ),
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
