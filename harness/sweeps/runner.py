"""Monte Carlo sweeps on Dask: one task per simulated chip, a tidy results table on disk.

:func:`run_sweep` runs every task of a :class:`~harness.sweeps.spec.SweepSpec` on a Dask
``distributed`` client — in this process for one worker, a ``LocalCluster`` of worker
processes for several, or an existing scheduler (``tcp://host:port``, the same code path a
cluster uses). Scheduling, worker processes, failures and their reporting are Dask's
(``client.map`` / ``as_completed``, exceptions carried by futures); nothing here pools,
queues or retries.

Results are a folder of Parquet files, one per finished task (``task-<id>.parquet``,
written atomically as each task finishes), which ``pandas.read_parquet(FOLDER)`` reads as
one tidy table: one row per model × chip × run × time × bits × gdc × read noise. The
folder's ``_sweep.json`` names the sweep it belongs to (content digest); running the same
sweep into it again skips the finished tasks, so an interrupted sweep resumes and every
task is done exactly once. Failed tasks are listed in ``_failed/`` with their coordinates
and retried on the next run. Names starting with ``_`` or ``.`` are ignored by Parquet
readers.

Determinism: a task's chip seed and read-noise seed depend only on the sweep seed and the
task's coordinates (:func:`~harness.sweeps.spec.task_for`), and each task runs torch on one
thread, so tables are bit-identical whatever the number of workers or the executor.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import resource
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from harness.errors import ConfigError, HarnessError
from harness.sweeps.spec import SweepSpec, SweepTask, seeded_chip_uri

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

SWEEP_FORMAT = "pcm-harness-sweep"
SWEEP_FORMAT_VERSION = 1
#: How long to wait for an existing scheduler before giving up (s).
SCHEDULER_TIMEOUT_S = 5.0
MAX_WORKERS = 1024

#: Columns of the results table, in order (``bits`` 0 = ideal converters).
COLUMNS = (
    "sweep", "model", "chip", "run", "task_id", "chip_seed", "noise_seed",
    "t_s", "t_read_s", "bits", "gdc", "read_noise", "accuracy", "digital_accuracy", "n_test", "compensate",
)


@dataclass(frozen=True)
class SweepProgress:
    """Task counts while a sweep runs: ``done`` includes tasks finished by an earlier run."""

    total: int
    done: int
    running: int
    failed: int
    skipped: int


@dataclass(frozen=True)
class TaskFailure:
    task: SweepTask
    error: str


@dataclass(frozen=True)
class SweepResult:
    """What :func:`run_sweep` did. ``skipped``: tasks already done by an earlier run."""

    out_dir: Path
    spec: SweepSpec
    total: int
    ran: int
    skipped: int
    failures: tuple[TaskFailure, ...] = ()
    wall_s: float = 0.0
    executor: str = ""
    task_wall_s: tuple[float, ...] = field(default=(), repr=False)
    #: Largest peak RSS a worker process reported (MiB; the whole process for in-process runs).
    worker_peak_rss_mib: float = 0.0
    #: Seconds to start the executor and warm every worker (models, data loaded once), and
    #: seconds from the first submitted task to the last result.
    startup_s: float = 0.0
    run_s: float = 0.0

    @property
    def complete(self) -> bool:
        return not self.failures and self.ran + self.skipped == self.total

    def to_dict(self) -> dict[str, Any]:
        walls = np.asarray(self.task_wall_s, dtype=float)
        return {
            "sweep": self.spec.name,
            "digest": self.spec.digest(),
            "out": str(self.out_dir),
            "executor": self.executor,
            "tasks": self.total,
            "ran": self.ran,
            "skipped": self.skipped,
            "failed": [{"model": f.task.model, "chip": f.task.chip, "run": f.task.run, "error": f.error} for f in self.failures],
            "complete": self.complete,
            "wall_s": self.wall_s,
            "task_wall_s_mean": float(walls.mean()) if walls.size else None,
            "worker_peak_rss_mib": self.worker_peak_rss_mib,
            "startup_s": self.startup_s,
            "run_s": self.run_s,
            "rows_per_task": self.spec.rows_per_task,
        }


ProgressCallback = Callable[[SweepProgress], None]


# ----------------------------------------------------------------------------- one task


@dataclass(frozen=True)
class TaskOutput:
    """A finished task: its rows (column → list) and its wall time on the worker."""

    task_id: str
    columns: dict[str, list[Any]]
    wall_s: float
    peak_rss_mib: float = 0.0


def run_task(spec: SweepSpec, task: SweepTask) -> TaskOutput:
    """Program one simulated chip with the task's model, read it at the sweep's times and
    evaluate every (bits, gdc, read_noise) combination. Runs on a Dask worker.

    Raises:
        HarnessError: from the model, the chip or the evaluation (Dask carries it back).
    """
    import torch

    from harness.chip.registry import open_chip

    t0 = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # bit-identical whatever the worker's cores; no oversubscription
    try:
        evaluator = _evaluator(task.model, spec.ranges)
        uri = seeded_chip_uri(task.chip, task.chip_seed)
        with contextlib.closing(open_chip(uri)) as chip:
            readouts = evaluator.read_chip(chip, spec.times_s)
        cols: dict[str, list[Any]] = {c: [] for c in COLUMNS}
        # (gdc, method) pairs: the compensate list when given (each method says whether it uses
        # GDC), else the gdc axis (named "gdc" / "none" in the compensate column).
        methods = _compensations(spec, task.model) if spec.compensate else [None] * len(spec.gdc)
        for gdc, method in zip(spec.gdc if not spec.compensate else [m.uses_gdc for m in methods], methods):
            for read_noise in spec.read_noise:
                acc = evaluator.accuracy(
                    readouts, bits=spec.bits, gdc=gdc, read_noise=read_noise, seed=task.noise_seed, compensation=method,
                )  # (bits, T)
                for i, b in enumerate(spec.bits):
                    for j, t in enumerate(spec.times_s):
                        row = {
                            "sweep": spec.name, "model": task.model, "chip": task.chip, "run": task.run,
                            "task_id": task.task_id, "chip_seed": task.chip_seed, "noise_seed": task.noise_seed,
                            "t_s": float(t), "t_read_s": float(readouts.times_s[j]), "bits": 0 if b is None else int(b),
                            "gdc": gdc, "read_noise": read_noise, "accuracy": float(acc[i, j]),
                            "digital_accuracy": evaluator.digital_accuracy, "n_test": evaluator.n_test,
                            "compensate": method.name if method is not None else ("gdc" if gdc else "none"),
                        }
                        for k, v in row.items():
                            cols[k].append(v)
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
        return TaskOutput(task.task_id, cols, time.perf_counter() - t0, peak_mib)
    finally:
        torch.set_num_threads(threads)


_EVALUATORS: dict[tuple[str, str], Any] = {}
_COMPENSATIONS: dict[tuple[str, tuple[str, ...], int], list[Any]] = {}


def _compensations(spec: SweepSpec, model_ref: str) -> list[Any]:
    """The sweep's drift compensation methods for a model, made once per worker (their
    calibration examples are drawn from the training split, seeded by the sweep seed)."""
    from harness.evaluation.compensation import make_compensations

    key = (model_ref, spec.compensate, spec.seed)
    if key not in _COMPENSATIONS:
        _COMPENSATIONS[key] = make_compensations(spec.compensate, _evaluator(model_ref).model, seed=spec.seed)
    return _COMPENSATIONS[key]


def _evaluator(model_ref: str, ranges: str = "auto") -> Any:
    """One prepared evaluator per model, range policy and worker process: the model, its test
    data, its converter ranges and its float accuracy are the same for every chip, so they are
    made once."""
    from harness.evaluation.evaluate import resolve_model
    from harness.evaluation.evaluator import ReadoutEvaluator

    ev = _EVALUATORS.get((model_ref, ranges))
    if ev is None:
        ev = ReadoutEvaluator(resolve_model(model_ref), range_policy=ranges)
        _EVALUATORS[(model_ref, ranges)] = ev
    return ev


# ----------------------------------------------------------------------------- results folder


@contextlib.contextmanager
def _results_folder(out_dir: Path, spec: SweepSpec, *, overwrite: bool) -> Iterator[Path]:
    """Create or reopen ``out_dir`` for ``spec`` and hold its lock while the sweep runs.

    Raises:
        ConfigError: ``out_dir`` is a file, holds another sweep (without ``overwrite``),
            or another sweep process is writing it.
    """
    if check_results_folder(out_dir, spec, overwrite=overwrite):
        with _lock(out_dir):
            shutil.rmtree(out_dir)
    created = not out_dir.exists()
    fresh = created or not any(out_dir.iterdir())
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "_failed").mkdir(exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create results folder {str(out_dir)!r}: {exc.strerror or exc}") from exc
    meta_path = out_dir / "_sweep.json"
    with _lock(out_dir):
        if not meta_path.is_file():
            meta = {
                "format": SWEEP_FORMAT, "format_version": SWEEP_FORMAT_VERSION, "name": spec.name,
                "digest": spec.digest(), "spec": spec.canonical(), "source": spec.source,
            }
            _atomic_write_bytes(meta_path, json.dumps(meta, indent=1).encode())
        try:
            yield out_dir
        except BaseException:
            # A sweep that fails (or is interrupted) before any task finished leaves the folder
            # as it found it: no _sweep.json, _lock or _failed/ that would claim it for a sweep.
            if fresh and not _holds_results(out_dir):
                _remove_scaffold(out_dir, remove_folder=created)
            raise


_SCAFFOLD = ("_sweep.json", "_lock", "_failed")


def _holds_results(out_dir: Path) -> bool:
    """Whether ``out_dir`` holds any finished or failed task (anything but the scaffold)."""
    failed = out_dir / "_failed"
    return any(p.name not in _SCAFFOLD for p in out_dir.iterdir()) or (failed.is_dir() and any(failed.iterdir()))


def _remove_scaffold(out_dir: Path, *, remove_folder: bool) -> None:
    with contextlib.suppress(OSError):
        (out_dir / "_sweep.json").unlink(missing_ok=True)
        (out_dir / "_failed").rmdir()
        (out_dir / "_lock").unlink(missing_ok=True)
        if remove_folder:
            out_dir.rmdir()


def check_results_folder(out_dir: Path, spec: SweepSpec, *, overwrite: bool) -> bool:
    """Whether ``out_dir`` can take ``spec``'s results; True if it must be cleared first
    (``overwrite``). Touches nothing, so the CLI checks it before any work starts.

    Raises:
        ConfigError: a file, a folder that is not a sweep's, another sweep's folder
            without ``overwrite``, or unreadable metadata.
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {str(out_dir)!r} exists and is not a results folder; choose another path")
    if not (out_dir.is_dir() and any(out_dir.iterdir())):
        return False
    meta_path = out_dir / "_sweep.json"
    if not meta_path.is_file():
        raise ConfigError(f"--out {str(out_dir)!r} exists and is not a sweep results folder; choose another path")
    try:
        meta = json.loads(meta_path.read_text())
        digest = meta.get("digest")
    except (OSError, ValueError, AttributeError) as exc:
        raise ConfigError(f"{meta_path}: unreadable sweep metadata ({exc}); choose another --out") from exc
    if digest != spec.digest() and not overwrite:
        raise ConfigError(
            f"--out {str(out_dir)!r} holds results of another sweep ({meta.get('name')!r}, digest "
            f"{digest}); use --overwrite to replace them or choose another --out"
        )
    return overwrite


@contextlib.contextmanager
def _lock(out_dir: Path) -> Iterator[None]:
    fd = os.open(out_dir / "_lock" if out_dir.is_dir() else str(out_dir) + ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(f"another sweep is writing {str(out_dir)!r}; wait for it or choose another --out") from None
        yield
    finally:
        os.close(fd)


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _part_path(out_dir: Path, task_id: str) -> Path:
    return out_dir / f"task-{task_id}.parquet"


def _write_part(out_dir: Path, output: TaskOutput) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({c: output.columns[c] for c in COLUMNS})
    final = _part_path(out_dir, output.task_id)
    tmp = out_dir / f".{final.name}.tmp-{os.getpid()}"
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    (out_dir / "_failed" / f"{output.task_id}.json").unlink(missing_ok=True)


def _write_failure(out_dir: Path, failure: TaskFailure) -> None:
    t = failure.task
    doc = {"model": t.model, "chip": t.chip, "run": t.run, "task_id": t.task_id, "error": failure.error}
    _atomic_write_bytes(out_dir / "_failed" / f"{t.task_id}.json", json.dumps(doc).encode())


def load_results(out_dir: str | Path) -> pd.DataFrame:
    """The results table of a sweep folder (one call: ``pandas.read_parquet``).

    Raises:
        ConfigError: not a sweep folder, or no finished task yet.
    """
    import pandas as pd

    p = Path(out_dir)
    if not (p / "_sweep.json").is_file():
        raise ConfigError(f"{str(p)!r} is not a sweep results folder (no _sweep.json)")
    if not any(p.glob("task-*.parquet")):
        raise ConfigError(f"{str(p)!r} holds no finished task yet")
    return pd.read_parquet(p)


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """Accuracy per model × chip × time × bits × gdc × read noise (× compensate): ``mean``,
    ``std`` and ``count`` over runs, and ``ci95_lo``/``ci95_hi``, the 95 % interval combining
    chip-to-chip spread and test-set sampling from the per-run accuracies on ``n_test`` examples
    (:func:`harness.evaluation.uncertainty.accuracy_interval_from_runs`; exact Wilson for one run)."""
    from harness.evaluation.uncertainty import accuracy_interval_from_runs

    keys = ["model", "chip", "t_s", "bits", "gdc", "read_noise"] + (["compensate"] if "compensate" in df else [])
    g = df.groupby(keys, sort=True)
    out = g["accuracy"].agg(["mean", "std", "count"]).reset_index()
    out["digital_accuracy"] = g["digital_accuracy"].first().to_numpy()
    bounds = [accuracy_interval_from_runs(group["accuracy"].to_numpy(), int(group["n_test"].iloc[0]))
              for _, group in g]
    out["ci95_lo"] = [float(lo) for lo, _ in bounds]
    out["ci95_hi"] = [float(hi) for _, hi in bounds]
    return out


# ----------------------------------------------------------------------------- executor


#: What a scheduler on another host is trusted with (``harness sweep --help``, docs/sweeps.md).
SCHEDULER_TRUST = (
    "Dask exchanges pickles with the scheduler and its workers, and unpickling runs code: "
    "whoever controls that host, or can reach its port, can run code as you"
)


def scheduler_warning(scheduler: str | None) -> str | None:
    """The one warning line for a ``--scheduler`` not on this machine (None: loopback or none).

    Decided from the address alone (no name lookup): an IP literal must be loopback, a name
    must be ``localhost``; ``inproc://`` is this process."""
    import ipaddress
    from urllib.parse import urlsplit

    if scheduler is None:
        return None
    text = scheduler if "://" in scheduler else f"tcp://{scheduler}"
    parts = urlsplit(text)
    if parts.scheme == "inproc":
        return None
    try:
        host = parts.hostname or ""
    except ValueError:
        host = ""
    try:
        local = ipaddress.ip_address(host).is_loopback
    except ValueError:
        local = host.lower() == "localhost"
    if local:
        return None
    return (
        f"warning: --scheduler {scheduler} is not on this machine: {SCHEDULER_TRUST}; "
        "use only a scheduler on a host and network you trust (docs/sweeps.md, Trust boundary)"
    )


def dask_available(workers: int | None = None, scheduler: str | None = None) -> None:
    """Check the executor arguments and that Dask is importable, before any work starts.

    Raises:
        ConfigError: Dask missing, both or bad executor arguments.
    """
    import importlib.util

    if importlib.util.find_spec("distributed") is None:
        raise ConfigError(
            "sweeps run on Dask, which is not installed; install it with: pip install 'pcm-harness[sweep]'"
        )
    if scheduler is not None and workers is not None:
        raise ConfigError("give either --workers or --scheduler, not both")
    if workers is not None and (isinstance(workers, bool) or not 1 <= workers <= MAX_WORKERS):
        raise ConfigError(f"--workers {workers} must be in 1..{MAX_WORKERS}")


@contextlib.contextmanager
def dask_client(workers: int | None = None, scheduler: str | None = None) -> Iterator[tuple[Any, str]]:
    """A ``distributed.Client`` and a one-line description of where it runs.

    ``scheduler``: address of a running ``dask scheduler``; else ``workers`` (default 1):
    1 = a worker thread in this process, N > 1 = a ``LocalCluster`` of N single-threaded
    worker processes.

    Raises:
        ConfigError: Dask missing, bad worker count, or the scheduler is unreachable within
            :data:`SCHEDULER_TIMEOUT_S`.
    """
    dask_available(workers, scheduler)
    from distributed import Client, LocalCluster

    if scheduler is not None:
        try:
            client = Client(scheduler, timeout=SCHEDULER_TIMEOUT_S)
        except (OSError, TimeoutError, ValueError) as exc:
            raise ConfigError(
                f"cannot reach the Dask scheduler at {scheduler!r} within {SCHEDULER_TIMEOUT_S:g} s "
                f"({type(exc).__name__}); start it with 'dask scheduler' and check the address"
            ) from exc
        with client:
            n = len(client.scheduler_info().get("workers", {}))
            yield client, f"scheduler {scheduler} ({n} workers)"
        return
    n = 1 if workers is None else workers
    kwargs: dict[str, Any] = dict(
        # ":0": any free port for the scheduler's HTTP endpoints (None still binds 8787).
        n_workers=n, threads_per_worker=1, dashboard_address=":0", silence_logs=logging.ERROR,
    )
    if n == 1:
        kwargs["processes"] = False
    silenced: dict[str, int] = {}
    try:
        with LocalCluster(**kwargs) as cluster, Client(cluster) as client:
            try:
                yield client, ("1 worker in this process" if n == 1 else f"LocalCluster of {n} worker processes")
            except BaseException:
                # Ctrl-C or an error: the cluster is torn down with tasks in flight, and tornado /
                # asyncio / distributed may log a callback's traceback on the way (at ERROR, which
                # silence_logs lets through). The caller reports the failure in one line.
                for name in ("tornado", "asyncio", "distributed"):
                    silenced[name] = logging.getLogger(name).level
                    logging.getLogger(name).setLevel(logging.CRITICAL + 1)
                raise
    finally:  # torn down: a library caller's loggers are as they were
        for name, level in silenced.items():
            logging.getLogger(name).setLevel(level)


def pending_tasks(spec: SweepSpec, out_dir: Path) -> tuple[list[SweepTask], int]:
    """Tasks without a finished part in ``out_dir``, and how many are already done."""
    todo, done = [], 0
    for t in spec.tasks():
        if _part_path(out_dir, t.task_id).is_file():
            done += 1
        else:
            todo.append(t)
    return todo, done


def run_sweep(
    spec: SweepSpec,
    out_dir: str | Path,
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
) -> SweepResult:
    """Run (or resume) ``spec`` into ``out_dir`` on Dask. See the module docstring.

    A task that raises is recorded with its coordinates and does not stop the others.

    Raises:
        ConfigError: bad output folder, Dask missing, scheduler unreachable.
    """
    from distributed import as_completed

    wall0 = time.perf_counter()
    out = Path(out_dir)
    total = len(spec.models) * len(spec.chips) * spec.runs
    for model in spec.models:  # fail before starting workers on a model nobody can load
        _check_model(model)
    with _results_folder(out, spec, overwrite=overwrite):
        todo, skipped = pending_tasks(spec, out)
        failures: list[TaskFailure] = []
        walls: list[float] = []
        peak_mib = 0.0
        executor = "nothing to do"
        startup_s = run_s = 0.0
        if todo:
            t_start = time.perf_counter()
            with dask_client(workers, scheduler) as (client, executor):
                # Load every model (and its data, ranges, simulator) once on every worker up
                # front: the first tasks then cost what later ones do, and a model that cannot
                # load fails here, once, instead of in every task.
                client.run(_warm_worker, list(spec.models), spec.ranges)
                t_submit = time.perf_counter()
                startup_s = t_submit - t_start
                n_slots = max(1, sum(w.get("nthreads", 1) for w in client.scheduler_info().get("workers", {}).values()))
                by_key = {}
                futures = []
                for t in todo:
                    fut = client.submit(run_task, spec, t, key=f"sweep-task-{t.task_id}", pure=False)
                    by_key[fut.key] = t
                    futures.append(fut)
                done = 0

                def report() -> None:
                    if progress:
                        left = len(todo) - done - len(failures)
                        progress(SweepProgress(total, skipped + done, min(left, n_slots), len(failures), skipped))

                report()
                for fut in as_completed(futures):
                    task = by_key[fut.key]
                    if fut.status == "error":
                        exc = fut.exception()
                        failure = TaskFailure(task, _one_line(exc))
                        failures.append(failure)
                        _write_failure(out, failure)
                    else:
                        output: TaskOutput = fut.result()
                        _write_part(out, output)
                        walls.append(output.wall_s)
                        peak_mib = max(peak_mib, output.peak_rss_mib)
                        done += 1
                    fut.release()
                    report()
                run_s = time.perf_counter() - t_submit
        return SweepResult(
            out_dir=out, spec=spec, total=total, ran=len(walls), skipped=skipped, failures=tuple(failures),
            wall_s=time.perf_counter() - wall0, executor=executor, task_wall_s=tuple(walls),
            worker_peak_rss_mib=peak_mib, startup_s=startup_s, run_s=run_s,
        )


def _warm_worker(models: list[str], ranges: str = "auto") -> None:
    for ref in models:
        _evaluator(ref, ranges)


def _check_model(ref: str) -> None:
    from harness.evaluation.evaluate import resolve_model

    resolve_model(ref)


def _one_line(exc: BaseException | None) -> str:
    if exc is None:
        return "unknown error"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    kind = "" if isinstance(exc, HarnessError) else f"{type(exc).__name__}: "
    return f"{kind}{text}" or type(exc).__name__
