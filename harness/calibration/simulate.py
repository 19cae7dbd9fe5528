"""A recording's session re-run on a virtual chip of a personality, as calibration data.

The whole-pipeline bootstrap of :func:`~harness.calibration.calibrate.calibrate_recording`
simulates the recorded experiment on a virtual chip of the *fitted* personality: the same
targets (a seeded subsample), the same write-verify parameters, reads at the same times with
the same repeats, through the same ADC. Fitting these simulated recordings exactly as the real
one measures what the fit does to a chip whose truth is known: its bias (removed) and its
spread (the reported intervals). Pulses, weak devices and t_read come from the personality
(for a fitted one, from its base): the simulation is as good as those are.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import numpy.typing as npt

from harness.calibration.data import CalibrationData
from harness.virtual.personality import Personality

FloatArray = npt.NDArray[np.float64]

#: Columns of the simulated array (rows follow from the device count).
SIM_COLS = 256


def simulate_data(
    p: Personality, d: CalibrationData, devices: npt.NDArray[np.int64], seed: int,
    programming: dict[str, float | int] | None = None,
) -> CalibrationData:
    """``d``'s experiment for ``devices`` (indices into ``d``'s arrays) re-run on a virtual chip
    of ``p``: write-verify to the same targets (``programming``: the recorded loop
    parameters), then at every time of ``d.t_g`` (s after the end of programming) as many
    reads as ``d.count_g`` says. Returns the simulated data in ``d``'s form (repeats averaged,
    their within-time variance kept when there are repeats)."""
    from harness.programming.write_verify import ProgrammingParams, program_cells
    from harness.virtual.chip import VirtualPCMChip

    n = devices.size
    rows = -(-n // SIM_COLS)
    geo = dataclasses.replace(d.geometry, rows=rows, cols=SIM_COLS)
    chip = VirtualPCMChip(geo, seed=seed, personality=p)
    cells = np.arange(n, dtype=np.int64)
    target = d.target_uS[devices]
    known = {f.name for f in dataclasses.fields(ProgrammingParams)}
    params = ProgrammingParams(**{k: v for k, v in (programming or {}).items() if k in known})
    res = program_cells(chip, cells, target, params)
    t_end = chip.now()
    g_n = d.t_g.size
    mean = np.empty((g_n, n))
    var = np.empty((g_n, n)) if d.var is not None else None
    for g in range(g_n):  # a loop over readout times (tens), each read vectorized over devices
        chip.wait_until(t_end + float(d.t_g[g]))
        k = int(d.count_g[g])
        reads = np.stack([chip.read(cells) for _ in range(k)])
        mean[g] = reads.mean(axis=0)
        if var is not None:
            var[g] = reads.var(axis=0, ddof=1) if k >= 2 else np.nan
    return CalibrationData(
        t_g=d.t_g.copy(), count_g=d.count_g.copy(), mean=mean, var=var, target_uS=target,
        final_uS=np.asarray(res.final_uS, dtype=np.float64), converged=np.asarray(res.converged, dtype=bool),
        iterations=np.asarray(res.iterations, dtype=np.int64), lsb_uS=d.lsb_uS, g_max_uS=d.g_max_uS,
        repeats=d.repeats, geometry=geo,
    )
