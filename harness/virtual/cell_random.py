"""Counter-based per-device random numbers: a device's draws are a function of (seed, cell).

A sequential generator draws device ``k``'s fabrication randomness only after devices
``0 … k−1``, so a chip of a million devices costs a million draws even when a model uses ten
thousand of them. Here each draw is a hash of ``(key, stream, cell)`` instead — SplitMix64's
finalizer (Steele, Lea & Flood, "Fast splittable pseudorandom number generators", OOPSLA
2014; the same mixer seeds numpy's and Java's generators), applied twice to a Weyl sequence
over the cell address — so any subset of cells is drawn in time proportional to its size,
in any order, with the same result. Normals come from pairs of uniforms by the Box–Muller
transform. All operations are vectorized numpy ``uint64`` arithmetic (wrapping, as intended).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

_WEYL = np.uint64(0x9E3779B97F4A7C15)  # 2^64 / golden ratio, SplitMix64's increment
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_TWO_PI = 2.0 * np.pi
_U53 = 2.0**-53


def stream_key(seed: int, stream: int) -> np.uint64:
    """A 64-bit key for one named stream of one chip seed (numpy's SeedSequence mixing)."""
    state = np.random.SeedSequence([int(seed), int(stream)]).generate_state(1, dtype=np.uint64)
    return np.uint64(state[0])


def _mix(z: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def uniforms(key: np.uint64, cells: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
    """One uniform in the open interval (0, 1) per cell (53-bit resolution)."""
    with np.errstate(over="ignore"):
        z = _mix(_mix(cells.astype(np.uint64) * _WEYL + key))
    return ((z >> np.uint64(11)).astype(np.float64) + 0.5) * _U53


def normals(key_a: np.uint64, key_b: np.uint64, cells: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
    """One standard normal per cell, from two uniform streams (Box–Muller, cosine branch)."""
    u1 = uniforms(key_a, cells)
    u2 = uniforms(key_b, cells)
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(_TWO_PI * u2)


class CellRandom:
    """The named per-device streams of one chip seed: ``uniform(name, cells)``,
    ``normal(name, cells)``. Names are fixed strings; each owns two 64-bit keys."""

    def __init__(self, seed: int, names: tuple[str, ...]) -> None:
        self._keys = {name: (stream_key(seed, 2 * i), stream_key(seed, 2 * i + 1)) for i, name in enumerate(names)}

    def uniform(self, name: str, cells: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
        return uniforms(self._keys[name][0], cells)

    def normal(self, name: str, cells: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
        a, b = self._keys[name]
        return normals(a, b, cells)
