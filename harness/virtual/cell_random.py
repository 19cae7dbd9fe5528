"""Counter-based per-device random numbers: a device's draws are a function of (seed, cell).

A sequential generator draws device ``k``'s fabrication randomness only after devices
``0 … k−1``, so a chip of a million devices costs a million draws even when a model uses ten
thousand of them. Here each draw is SplitMix64 (Steele, Lea & Flood, "Fast splittable
pseudorandom number generators", OOPSLA 2014; the generator that seeds numpy's and Java's)
evaluated at position ``cell`` of the Weyl sequence that starts at the stream's key: one
multiply-add and one finalizer per value, so any subset of cells is drawn in time
proportional to its size, in any order, with the same result. Normals come in pairs from
two uniforms (Box–Muller, both branches). All operations are vectorized numpy ``uint64``
arithmetic (wrapping, as intended).
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


def weyl(cells: npt.NDArray[np.int64]) -> npt.NDArray[np.uint64]:
    """``cell · 0x9E37…`` (mod 2^64): the cells' Weyl offsets, shared by every stream."""
    with np.errstate(over="ignore"):
        return cells.astype(np.uint64) * _WEYL


def uniforms(key: np.uint64, offsets: npt.NDArray[np.uint64]) -> npt.NDArray[np.float64]:
    """One uniform in the open interval (0, 1) per cell (53-bit resolution); ``offsets`` is
    :func:`weyl` of the cells."""
    with np.errstate(over="ignore"):
        z = _mix(offsets + key)
    u = (z >> np.uint64(11)).astype(np.float64)
    u += 0.5
    u *= _U53
    return u


def normal_pairs(
    key_a: np.uint64, key_b: np.uint64, offsets: npt.NDArray[np.uint64]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Two independent standard normals per cell from two uniform streams (Box–Muller)."""
    radius = np.log(uniforms(key_a, offsets))
    radius *= -2.0
    np.sqrt(radius, out=radius)
    angle = uniforms(key_b, offsets)
    angle *= _TWO_PI
    return radius * np.cos(angle), radius * np.sin(angle)


class CellRandom:
    """The named per-device streams of one chip seed: ``uniform(name, cells)`` and
    ``normal_pair(name, cells)``. Names are fixed strings; each owns two 64-bit keys."""

    def __init__(self, seed: int, names: tuple[str, ...]) -> None:
        self._keys = {name: (stream_key(seed, 2 * i), stream_key(seed, 2 * i + 1)) for i, name in enumerate(names)}

    def uniform(self, name: str, offsets: npt.NDArray[np.uint64]) -> npt.NDArray[np.float64]:
        """Uniforms of stream ``name`` for cells with Weyl ``offsets`` (:func:`weyl`)."""
        return uniforms(self._keys[name][0], offsets)

    def normal_pair(
        self, name: str, offsets: npt.NDArray[np.uint64]
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """Two standard normals per cell of stream ``name`` (cells given by Weyl ``offsets``)."""
        a, b = self._keys[name]
        return normal_pairs(a, b, offsets)
