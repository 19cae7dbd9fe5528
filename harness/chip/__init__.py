"""The chip seam: the ``Chip`` protocol every backend speaks, how a chip is opened, and clocks.

- :mod:`harness.chip.protocol` — ``Chip``, ``ChipBackend`` (safety limits checked once, for every
  backend), ``Geometry`` (the ADC code ↔ µS conversion), cell-address checks.
- :mod:`harness.chip.registry` — chip URIs (``virtual?seed=7``, ``serial:///dev/ttyUSB0``,
  ``visa://…``, ``replay:x.h5``) → backends, imported only when asked.
- :mod:`harness.chip.clock` — the simulated and the wall clock a chip owns.

May import: the shared basics (``harness.errors``, ``harness.units``) only.
"""

from harness._exports import lazy_exports

_EXPORTS: dict[str, str] = {
    **dict.fromkeys(
        [
            "CellArray",
            "Chip",
            "ChipBackend",
            "Clock",
            "CodeReadingChip",
            "FloatArray",
            "Geometry",
            "cells_from_rc",
            "check_amplitude",
            "check_cells",
        ],
        "protocol",
    ),
    **dict.fromkeys(
        ["ChipURI", "check_uri", "open_chip", "parse_uri", "take_params", "with_seed", "chip_seed"], "registry"
    ),
    **dict.fromkeys(["SimulatedClock", "WallClock"], "clock"),
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
