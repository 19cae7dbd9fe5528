"""VirtualPCMChip: a calibrated PCM array behind the Chip protocol.

Per-device state lives in flat arrays indexed by cell address; every operation is one
vectorized numpy expression over the batch of cells (no Python loop per device). The
physics is in :mod:`harness.virtual.physics`; the model is described in
``docs/virtual-chip.md``.

State per device: ``g_prog`` (conductance right after its last pulse, µS), ``t_pulse``
(chip time of that pulse, s), ``nu`` (drift exponent, drawn at the pulse), ``z_relax``
(standard-normal draw of its post-programming relaxation). Device-to-device constants
(saturation conductance, SET rate, weak devices) and each device's as-fabricated state are
a function of (seed, cell) (:mod:`harness.virtual.cell_random`), made the first time the
cell is touched: a chip costs what its used cells cost, whatever its size. Pulses and reads
draw from one sequential seeded generator, batch by batch.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from typing import Any

import numpy as np
import numpy.typing as npt

from harness import __version__
from harness.chip.protocol import CellArray, ChipBackend, FloatArray, Geometry, check_cells
from harness.chip.clock import SimulatedClock, WallClock
from harness.errors import ConfigError
from harness.chip.registry import ChipURI, take_params
from harness.virtual import physics as ph
from harness.virtual.cell_random import CellRandom, weyl
from harness.virtual.personality import Personality, load_personality
from harness.virtual.pulse_times import PulseTimes

#: A read samples at the end of its READ_OP_TIME_S, so a verify read comes at least that
#: long after the pulse it checks.
PULSE_OP_TIME_S = ph.PULSE_OP_TIME_S
READ_OP_TIME_S = ph.READ_OP_TIME_S
#: Devices are made long before the harness meets them: initial state is RESET, this long ago.
FABRICATION_AGE_S = 1e6

#: Per-device fabrication draws (harness.virtual.cell_random): two normal pairs (saturation
#: conductance and SET rate; RESET level and drift exponent), one normal (relaxation) and the
#: weak-device uniforms (whether weak; the weak saturation level, drawn for weak cells only).
FABRICATION_STREAMS = ("sat_rate", "reset_nu", "relax", "weak", "weak_g_sat")

#: Keys of :meth:`VirtualPCMChip.snapshot` that change with every read (small) ...
RUNTIME_STATE_KEYS = ("rng_state", "clock_s")
#: ... and those that change only when cells are pulsed (one array per device).
DEVICE_STATE_KEYS = ("g_prog_uS", "t_pulse_s", "nu", "z_relax")


class VirtualPCMChip(ChipBackend):
    """A seeded virtual PCM chip; the same seed and the same calls give the same results.

    Args:
        geometry: array size, ADC and safety limits (default: the 90 nm test chip, 512×2048,
            with the personality's conductance range and ADC).
        seed: seeds the one ``numpy.random.Generator`` used for everything.
        clock: ``"sim"`` (default; time moves only through operations and ``wait_until``)
            or ``"wall"`` (real time).
        uri: recorded for provenance.
        personality: the physical constants (a :class:`Personality`, a shipped name or a
            TOML path; default ``pcm-90nm``).
    """

    def __init__(
        self,
        geometry: Geometry | None = None,
        seed: int = 0,
        clock: str = "sim",
        uri: str = "virtual",
        personality: Personality | str | None = None,
    ) -> None:
        pers = load_personality(personality)
        geometry = geometry or personality_geometry(pers)
        super().__init__(geometry, uri)
        self.personality = pers
        if clock not in ("sim", "wall"):
            raise ConfigError(f"unknown clock {clock!r}; use 'sim' (simulated) or 'wall' (real time)")
        if seed < 0:
            raise ConfigError(f"seed {seed} must be >= 0")
        check_virtual_memory(geometry)
        self.seed = int(seed)
        self.clock_kind = clock
        self._clock: SimulatedClock | WallClock = SimulatedClock() if clock == "sim" else WallClock()
        _, runtime_seq = np.random.SeedSequence(self.seed).spawn(2)
        self._rng = np.random.default_rng(runtime_seq)
        # Device state is made on first touch: a device's fabrication randomness is a function
        # of (seed, cell) (cell_random), so a chip costs what the cells it is asked about cost.
        # np.empty/np.zeros of a million cells only reserve memory; nothing is computed yet.
        self._cell_random = CellRandom(self.seed, FABRICATION_STREAMS)
        n = geometry.n_cells
        self._made = np.zeros(n, dtype=bool)
        self._all_made = False  # every device made: _make has nothing to look up
        self._params = ph.DeviceParams(g_sat_uS=np.empty(n), set_rate=np.empty(n))
        self._g_prog = np.empty(n)
        self._pulse_times = PulseTimes(n, -FABRICATION_AGE_S)
        self._nu = np.empty(n)
        self._z_relax = np.empty(n)
        self._relax_amp = np.empty(n)
        self._q_s = np.empty(n)
        # max(G_prog + relaxation amplitude, 0): the conductance at t0 and after, before drift
        # (relaxation is complete from t0 on), so a read past t0 applies drift to it directly.
        self._g_relaxed = np.empty(n)
        # Cells pulsed since their relaxation terms (relax_amp, g_relaxed) were last computed:
        # those are needed only once a read comes past the relaxation onset (ms after a pulse),
        # so a write-verify loop, whose verify reads come µs after the pulses, never computes
        # them; the first later read does, once for every such cell.
        self._stale = np.zeros(n, dtype=bool)
        self._any_stale = False

    # --- Chip protocol ---------------------------------------------------------------------
    @property
    def identity(self) -> str:
        g = self.geometry
        return f"VirtualPCMChip,harness {__version__},seed={self.seed},{g.rows}x{g.cols},personality={self.personality.label()}"

    def now(self) -> float:
        return self._clock.now()

    def wait_until(self, t_s: float) -> None:
        self._ensure_open()
        self._clock.wait_until(t_s)

    def _reset(self, cells: CellArray) -> None:
        self._make(cells)
        self._program(cells, ph.reset_response(cells.size, self._rng, self.personality))

    def _set_pulse(self, cells: CellArray, amplitude: FloatArray) -> None:
        self._make(cells)
        g_now = self._conductance(cells, self._clock.now())
        p = self._params
        g_new = ph.set_pulse_response(g_now, amplitude, p.g_sat_uS[cells], p.set_rate[cells], self._rng, self.personality)
        self._program(cells, g_new)

    def _read(self, cells: CellArray) -> FloatArray:
        return self.geometry.codes_to_uS(self._read_codes(cells))

    # --- extras of the virtual chip (not part of the protocol) ------------------------------
    def read_codes(self, cells: npt.ArrayLike) -> npt.NDArray[np.uint16]:
        """ADC codes of a read (what a wire protocol transfers); ``read`` converts these."""
        self._ensure_open()
        return self._read_codes(check_cells(cells, self.geometry))

    def conductance_uS(self, cells: npt.ArrayLike, t_s: float | None = None) -> FloatArray:
        """Noise-free conductance at chip time ``t_s`` (default now), without the ADC — for
        physics tests and plots; consumes no randomness and does not move the clock."""
        c = self._make(check_cells(cells, self.geometry))
        return self._conductance(c, self._clock.now() if t_s is None else float(t_s))

    def as_programmed_uS(self, cells: npt.ArrayLike) -> FloatArray:
        """Conductance right after each cell's last pulse (before relaxation and drift)."""
        return self._g_prog[self._make(check_cells(cells, self.geometry))].copy()

    def last_pulse_s(self, cells: npt.ArrayLike) -> FloatArray:
        """Chip time of each cell's last pulse: the origin of its drift clock."""
        return self._pulse_times.of(self._make(check_cells(cells, self.geometry)))

    def saturation_uS(self, cells: npt.ArrayLike) -> FloatArray:
        """Each cell's saturation conductance (a device constant; weak devices saturate low)."""
        return self._params.g_sat_uS[self._make(check_cells(cells, self.geometry))].copy()

    def drift_exponents(self, cells: npt.ArrayLike) -> FloatArray:
        """ν of each cell (drawn at its last pulse)."""
        return self._nu[self._make(check_cells(cells, self.geometry))].copy()

    def snapshot(self, *, include_devices: bool = True) -> dict[str, np.ndarray]:
        """Everything needed to continue the physics, as numpy arrays (HDF5-ready).

        Device-to-device constants are not included: they follow from the seed. With
        ``include_devices=False`` only the small runtime state (RNG, clock) is returned —
        enough when no cell was pulsed since the last full snapshot.
        """
        state = {
            "rng_state": np.frombuffer(json.dumps(self._rng.bit_generator.state).encode(), dtype=np.uint8).copy(),
            "clock_s": np.float64(self._clock.now()),
        }
        if include_devices:
            self._make(np.arange(self.geometry.n_cells))
            state.update(g_prog_uS=self._g_prog.copy(), t_pulse_s=self._pulse_times.of(slice(None)), nu=self._nu.copy(), z_relax=self._z_relax.copy())
        return state

    def restore(self, state: dict[str, np.ndarray]) -> None:
        """Continue from a :meth:`snapshot` of a chip with the same geometry and seed.

        Device arrays are optional (a runtime-only snapshot restores RNG and clock)."""
        n = self.geometry.n_cells
        missing = [k for k in RUNTIME_STATE_KEYS if k not in state]
        if missing:
            raise ConfigError(f"chip snapshot lacks {missing[0]!r}; it was not made by VirtualPCMChip.snapshot")
        for key in DEVICE_STATE_KEYS:
            if key in state and np.shape(state[key]) != (n,):
                raise ConfigError(f"chip snapshot {key!r} has shape {np.shape(state[key])}, expected ({n},)")
        try:
            rng_state = json.loads(bytes(np.asarray(state["rng_state"], dtype=np.uint8)).decode())
            self._rng.bit_generator.state = rng_state
        except (ValueError, TypeError, KeyError) as exc:
            raise ConfigError("chip snapshot has a corrupt RNG state") from exc
        self._clock.set(float(state["clock_s"]))
        if "g_prog_uS" in state:
            self._g_prog = np.array(state["g_prog_uS"], dtype=np.float64)
            self._pulse_times.set_all(state["t_pulse_s"])
            self._nu = np.array(state["nu"], dtype=np.float64)
            self._z_relax = np.array(state["z_relax"], dtype=np.float64)
            everything = np.arange(n)
            self._make_params(slice(0, n), weyl(everything))
            self._made[:] = True
            self._all_made = True
            self._update_derived(everything)

    # --- physics ---------------------------------------------------------------------------
    def _make(self, cells: CellArray) -> CellArray:
        """Make the devices among ``cells`` not made yet: their constants and their state as
        fabricated (RESET, ``FABRICATION_AGE_S`` ago), all from their (seed, cell) draws.
        Returns ``cells``. Costs O(len(cells)) once made (one boolean gather), nothing once
        every device of the chip is made."""
        if self._all_made:
            return cells
        new = cells[~self._made[cells]]
        if new.size:  # duplicates are harmless: a cell's draws are the same every time
            offsets = weyl(new)
            idx = _as_index(new)  # a whole-array first touch writes slices, not scatters
            z_reset, z_nu = self._make_params(idx, offsets)
            pers = self.personality
            self._g_prog[idx] = g = ph.reset_conductance(z_reset, pers)
            self._pulse_times.set(idx, -FABRICATION_AGE_S)
            self._nu[idx] = ph.drift_exponents(self._x(g), z_nu, pers)
            self._z_relax[idx] = self._cell_random.normal_pair("relax", offsets)[0]
            self._update_derived(idx)
            self._made[idx] = True
            self._all_made = bool(self._made.all())
        return cells

    def _make_params(self, idx: CellArray | slice, offsets: npt.NDArray[np.uint64]) -> tuple[FloatArray, FloatArray]:
        """Device-to-device constants of the cells ``idx`` (Weyl ``offsets``: a function of
        seed and cell only); returns their (RESET, drift-exponent) normals of the as-made state."""
        r = self._cell_random
        z_sat, z_rate = r.normal_pair("sat_rate", offsets)
        u_weak = r.uniform("weak", offsets)
        weak = u_weak < self.personality.weak_fraction
        u_weak_g = np.zeros(offsets.size)
        u_weak_g[weak] = r.uniform("weak_g_sat", offsets[weak])
        made = ph.device_params(z_sat, u_weak, u_weak_g, z_rate, self.personality)
        self._params.g_sat_uS[idx] = made.g_sat_uS
        self._params.set_rate[idx] = made.set_rate
        return r.normal_pair("reset_nu", offsets)

    def _program(self, cells: CellArray, g_new_uS: FloatArray) -> None:
        """Record a pulse: new as-programmed state, pulse time, fresh ν and relaxation draw."""
        self._clock.advance(PULSE_OP_TIME_S)
        self._g_prog[cells] = g_new_uS
        self._pulse_times.set(cells, self._clock.now())
        x = self._x(g_new_uS)
        self._nu[cells] = ph.draw_drift_exponents(x, self._rng, self.personality)
        self._z_relax[cells] = self._rng.standard_normal(cells.size)
        self._q_s[cells] = ph.read_noise_q(x, self.personality)
        self._stale[cells] = True
        self._any_stale = True

    def _update_derived(self, cells: CellArray | slice) -> None:
        """Cache what depends only on the as-programmed state (changes only at a pulse):
        the read-noise coefficient Q_s(x), the relaxation amplitude z·σ_relax(x) and the
        relaxed (t ≥ t0) conductance max(G_prog + z·σ_relax, 0)."""
        x = self._x(self._g_prog[cells])
        q_s = ph.read_noise_q(x, self.personality)
        self._q_s[cells] = q_s
        self._update_relaxation(cells, x, q_s)

    def _update_relaxation(self, cells: CellArray | slice, x: FloatArray, q_s: FloatArray) -> None:
        amp = ph.relaxation_std(x, self.personality, q_s=q_s)
        amp *= self._z_relax[cells]
        self._relax_amp[cells] = amp
        # G_prog + amp · progress with progress exactly 1.0 (its clip) past t0: the same bits.
        amp += self._g_prog[cells]
        self._g_relaxed[cells] = np.maximum(amp, 0.0, out=amp)
        self._stale[cells] = False

    def _refresh_relaxation(self) -> None:
        """Compute the relaxation terms of every cell pulsed since they were last computed."""
        if self._any_stale:
            cells = np.flatnonzero(self._stale)
            self._update_relaxation(cells, self._x(self._g_prog[cells]), self._q_s[cells])
            self._any_stale = False

    def _x(self, g_uS: FloatArray) -> FloatArray:
        """Normalized state x = G / g_max of this chip's personality."""
        return ph.normalized(g_uS, self.personality.g_max_uS)

    def _conductance(self, cells: CellArray, t_s: float) -> FloatArray:
        """G(t) = max(G_prog + relaxation(t), 0) · drift(t), noise-free."""
        return self._conductance_and_age(cells, t_s)[0]

    def _conductance_and_age(
        self, cells: CellArray, t_s: float, tau: FloatArray | None = None
    ) -> tuple[FloatArray, FloatArray]:
        """(G(t), time since each cell's last pulse). Relaxation and drift are exactly zero
        before their onsets (T_RELAX_ONSET_S, T0_S), so they are computed only where they
        act: verify reads µs after a pulse skip both."""
        idx = _as_index(cells)
        if tau is None:  # else the caller's t_s − t_pulse of these cells
            tau = self._pulse_times.ages(idx, t_s)
        g = np.array(self._g_prog[idx], dtype=np.float64)
        pers = self.personality
        if not tau.size or float(tau.max()) <= pers.relax_onset_s:
            return g, tau  # every cell pulsed µs ago (verify reads): nothing acts yet
        if self._any_stale:
            self._refresh_relaxation()
        if float(tau.min()) > pers.t0_s:  # relaxation complete: progress is exactly 1
            return self._g_relaxed[idx] * ph.drift_factor(tau, self._nu[idx], pers), tau
        relaxing = tau > pers.relax_onset_s
        if relaxing.all():
            g = np.maximum(g + self._relax_amp[idx] * ph.relaxation_progress(tau, pers), 0.0)
            drifting = tau > pers.t0_s
            if drifting.all():
                g *= ph.drift_factor(tau, self._nu[idx], pers)
                return g, tau
            sub = np.flatnonzero(drifting)
        else:
            sub = np.flatnonzero(relaxing)
            if sub.size == 0:
                return g, tau
            g[sub] = np.maximum(g[sub] + self._relax_amp[cells[sub]] * ph.relaxation_progress(tau[sub], pers), 0.0)
            sub = sub[tau[sub] > pers.t0_s]
        if sub.size:
            g[sub] *= ph.drift_factor(tau[sub], self._nu[cells[sub]], pers)
        return g, tau

    def _read_codes(self, cells: CellArray) -> npt.NDArray[np.uint16]:
        """One read: G(t) + σ_read(t)·z for every cell, to ADC codes.

        Evaluated in blocks of :data:`READ_BLOCK` cells, each pass over a block staying in
        the CPU cache (one pass over a million float64 values costs about as much as the
        arithmetic of a whole block); the draws of consecutive blocks are the one sequential
        stream of a single draw, so the result does not depend on the block size. What
        depends only on a cell's age (ln(τ/t0), the 1/f time factor) is evaluated once per
        distinct pulse time (:mod:`harness.virtual.pulse_times`) and gathered per cell.

        A read of :data:`PIPELINE_MIN_CELLS` or more draws its Gaussian numbers on a second
        thread, block by block in the same order (the same stream), while this thread
        computes G(t) and σ of each block; each block then waits for its draws. The numbers
        are those of the one-thread read, bit for bit (tested); the drawing, the floor of a
        read, then runs beside the other passes instead of after them."""
        n = cells.size
        # nothing below draws from self._rng but the loop's z (device making is counter-based)
        codes = np.empty(n, dtype=np.uint16)
        draws = _Draws(self._rng, n) if n >= PIPELINE_MIN_CELLS else None
        try:
            self._read_blocks(cells, draws, codes)
        finally:
            if draws is not None:
                draws.join()  # the generator is this thread's again before anything else draws
        return codes

    def _read_blocks(self, cells: CellArray, draws: _Draws | None, codes: npt.NDArray[np.uint16]) -> None:
        """The passes of :meth:`_read_codes`, block by block, into ``codes``."""
        self._make(cells)
        self._clock.advance(READ_OP_TIME_S)
        t_s = self._clock.now()
        pers = self.personality
        ages = t_s - self._pulse_times.table
        # Every pulse time older than t0 (every readout of a session): relaxation is complete
        # (its progress is exactly 1), so G(t) = G_relaxed · (τ/t0)^−ν for every cell.
        past_t0 = float(ages.min()) > pers.t0_s
        if past_t0:
            self._refresh_relaxation()
        with np.errstate(invalid="ignore", divide="ignore"):  # a time no cell read holds may be < 0
            time_factor = ph.read_noise_time_factor(ages, pers)
            neg_log_age = -ph.drift_log_age(ages, pers)
        n = cells.size
        idx = _as_index(cells)
        m = min(n, READ_BLOCK)
        scratch = (np.empty(m), np.empty(m), np.empty(m))
        for lo in range(0, n, READ_BLOCK):
            hi = min(n, lo + READ_BLOCK)
            block = slice(idx.start + lo, idx.start + hi) if isinstance(idx, slice) else idx[lo:hi]
            g, s, f = (a[: hi - lo] for a in scratch)
            slots = self._pulse_times.index[block]
            if past_t0:
                np.take(neg_log_age, slots, out=g, mode="clip")
                self._drifted(block, g)
            else:
                np.take(ages, slots, out=f, mode="clip")
                g[:] = self._conductance_and_age(cells[lo:hi], t_s, f)[0]
            # σ_read(t) = G·Q_s·sqrt(ln((τ + t_read)/(2 t_read))), the factor per pulse time.
            np.multiply(g, self._q_s[block], out=s)
            s *= np.take(time_factor, slots, out=f, mode="clip")
            if draws is None:
                s *= self._rng.standard_normal(out=f)  # z, drawn into the spent factor's array
            else:
                s *= draws.block(lo, hi)  # z, drawn on the other thread
            s += g  # the read: G + σ·z
            self.geometry.to_codes(s, out=s, codes=codes[lo:hi])

    def _drifted(self, idx: CellArray | slice, g: FloatArray) -> None:
        """G(t) = G_relaxed · exp(−ln(τ/t0)·ν) in place, ``g`` holding −ln(τ/t0) of cells all past
        t0: the same expression (and bits) as physics.drift_factor."""
        g *= self._nu[idx]
        np.exp(g, out=g)
        g *= self._g_relaxed[idx]


#: Cells per block of a read (float64 scratch arrays of 3 × 256 KiB: the CPU's L2 cache).
READ_BLOCK = 1 << 15
#: Reads of at least this many cells draw on a second thread (below, a thread's start-up is
#: not worth it).
PIPELINE_MIN_CELLS = 4 * READ_BLOCK


class _Draws:
    """The Gaussian draws of one read, made on their own thread block by block (blocks of
    :data:`READ_BLOCK`, in order: the generator's one sequential stream) into one buffer;
    :meth:`block` waits for a block. A plain thread per read, not a pool: nothing to go stale
    in a forked child."""

    def __init__(self, rng: np.random.Generator, n: int) -> None:
        self._z = np.empty(n)
        self._done = [threading.Event() for _ in range(0, n, READ_BLOCK)]
        self._error: BaseException | None = None
        self._stop = False
        self._thread = threading.Thread(target=self._run, args=(rng,), name="pcm-read-draws", daemon=True)
        self._thread.start()

    def _run(self, rng: np.random.Generator) -> None:
        try:
            for k, lo in enumerate(range(0, self._z.size, READ_BLOCK)):
                if self._stop:
                    return
                rng.standard_normal(out=self._z[lo : lo + READ_BLOCK])
                self._done[k].set()
        except BaseException as exc:  # handed to the reading thread
            self._error = exc
            for e in self._done:
                e.set()

    def block(self, lo: int, hi: int) -> FloatArray:
        """The draws of cells ``lo:hi`` (a whole block), once made."""
        self._done[lo // READ_BLOCK].wait()
        if self._error is not None:
            raise self._error
        return self._z[lo:hi]

    def join(self) -> None:
        """Wait for the thread (asking it to stop early if the read failed part-way)."""
        if not self._done[-1].is_set():
            self._stop = True
        self._thread.join()


def _as_index(cells: CellArray) -> slice | CellArray:
    """A slice for an ascending contiguous run of cells (state arrays are then read as views,
    not gathered — whole-array readouts), else the address array itself."""
    n = cells.size
    if n > 1 and int(cells[-1]) - int(cells[0]) == n - 1 and bool(np.all(np.diff(cells) == 1)):
        return slice(int(cells[0]), int(cells[0]) + n)
    return cells


def _int(text: str) -> int:
    return int(text, 10)


#: Bytes of memory a virtual chip needs per device once every device is touched: eleven
#: per-device arrays (9 float64 + 2 bool = 74 B, reserved at construction, made on first
#: touch) plus the temporaries of an operation over all cells at once (a read works in
#: blocks of READ_BLOCK cells; a pulse still makes whole-batch temporaries). Measured (reading
#: every cell of a 2048x4096 chip in one call): 98 B/device resident after, 138 B/device
#: peak; 192 keeps a margin. See docs/architecture.md (CLI conventions).
BYTES_PER_DEVICE = 192


def check_virtual_memory(geometry: Geometry) -> None:
    """Refuse a geometry whose state would not fit in the memory available now.

    Raises:
        ConfigError: naming the array size, the memory it needs and the limit.
    """
    import psutil  # type: ignore[import-untyped]

    from harness.units import format_bytes

    need = geometry.n_cells * BYTES_PER_DEVICE
    available = psutil.virtual_memory().available
    if need > available:
        raise ConfigError(
            f"a {geometry.rows}x{geometry.cols} virtual chip needs about {format_bytes(need)} of memory; "
            f"this machine has {format_bytes(available)} available (limit)"
        )


def personality_geometry(pers: Personality, rows: int | None = None, cols: int | None = None) -> Geometry:
    """The default Geometry with the personality's conductance range and ADC."""
    d = Geometry()
    return Geometry(
        rows=d.rows if rows is None else rows,
        cols=d.cols if cols is None else cols,
        g_max_uS=pers.g_max_uS,
        adc_bits=pers.adc_bits,
        adc_min_uS=pers.adc_min_uS,
        adc_max_uS=pers.adc_max_uS,
    )


def _virtual_params(uri: ChipURI) -> tuple[Geometry, dict[str, Any], Personality]:
    if uri.path:
        raise ConfigError(f"the virtual chip URI takes no path, got {uri.path!r}; use 'virtual?seed=7'")
    p = take_params(
        uri,
        {
            "seed": (_int, 0),
            "rows": (_int, None),
            "cols": (_int, None),
            "clock": (str, "sim"),
            "adc_bits": (_int, None),
            "adc_max_uS": (float, None),
            "personality": (str, None),
        },
    )
    if p["clock"] not in ("sim", "wall"):
        raise ConfigError(f"unknown clock {p['clock']!r}; use 'sim' (simulated) or 'wall' (real time)")
    if p["seed"] < 0:
        raise ConfigError(f"seed {p['seed']} must be >= 0")
    pers = load_personality(p["personality"])
    base = personality_geometry(pers, p["rows"], p["cols"])
    geometry = dataclasses.replace(
        base,
        adc_bits=base.adc_bits if p["adc_bits"] is None else p["adc_bits"],
        adc_max_uS=base.adc_max_uS if p["adc_max_uS"] is None else p["adc_max_uS"],
    )
    return geometry, p, pers


def check_virtual_uri(uri: ChipURI) -> None:
    """Everything :func:`open_virtual` checks (parameters, personality, geometry vs. the
    memory available), without allocating the chip."""
    geometry, _, _ = _virtual_params(uri)
    check_virtual_memory(geometry)


def open_virtual(uri: ChipURI) -> VirtualPCMChip:
    """``virtual?seed=7&rows=512&cols=2048&clock=sim&adc_bits=8&adc_max_uS=32&personality=pcm-90nm``.

    ``personality`` is a shipped name (``pcm-90nm``, ``hermes-14nm``) or a TOML file path
    (e.g. one written by ``harness calibrate``); ``adc_bits``/``adc_max_uS`` override its ADC.
    """
    geometry, p, pers = _virtual_params(uri)
    return VirtualPCMChip(geometry, seed=p["seed"], clock=p["clock"], uri=uri.raw, personality=pers)
