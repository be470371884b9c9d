"""Run one task per case in this process or on a Dask cluster, with a progress bar (batch and predict).

`--workers 1` runs the cases here, one after another, without importing Dask. More workers start a
`dask.distributed` LocalCluster of worker processes (one case at a time each, the cores shared out
as OpenVINO threads); `--scheduler tcp://HOST:PORT` uses a cluster someone started. Dask does the
scheduling and, when a worker dies, runs its case again elsewhere (its `allowed-failures`); tasks
write their outputs atomically, so a lost worker never leaves a partial file. Every task returns a
small dict with at least `case` and `status` ("done" or "failed"); it never raises for a bad case.

Each worker process loads the model once (`worker_backend`), not once per case.
"""
from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

_BACKENDS: dict[tuple, object] = {}
_BACKENDS_LOCK = threading.Lock()


@dataclass(frozen=True)
class ModelSettings:
    """What a worker needs to build its backend (picklable; `threads` None = all cores of that machine)."""

    backend: str = "litemedsam"
    precision: str = "f32"
    threads: int | None = None
    zoom: bool = False


def worker_backend(settings: ModelSettings):
    """-> (backend, seconds spent loading it now: 0.0 when this process had it already)."""
    from ..models.store import load_backend

    key = (settings.backend, settings.precision, settings.threads)
    with _BACKENDS_LOCK:
        if key in _BACKENDS:
            return _BACKENDS[key], 0.0
        t0 = time.perf_counter()
        backend = _BACKENDS[key] = load_backend(settings.backend, settings.precision, settings.threads)
        return backend, time.perf_counter() - t0


def _log(message: str) -> None:
    print(f"medsamlite: {message}", file=sys.stderr)


def worker_name() -> str:
    """The Dask worker's address, or "local" when run in this process (which then never imports Dask)."""
    distributed = sys.modules.get("distributed")
    try:
        return distributed.get_worker().address if distributed is not None else "local"
    except ValueError:  # Dask loaded, but this is not one of its workers
        return "local"


def one_line(error: BaseException) -> str:
    """An exception as one summary line: its first line, with its type when the text alone is vague."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return text if isinstance(error, ValueError) and text else f"{type(error).__name__}: {text}".rstrip(": ")


def default_workers(cores: int | None = None) -> int:
    """Workers for a local cluster: one per 4 cores (each with 4 OpenVINO threads), at least 1;
    1 (no cluster) without Dask."""
    try:
        import distributed  # noqa: F401
    except ImportError:
        return 1
    return max(1, (cores or os.cpu_count() or 1) // 4)


def threads_per_worker(workers: int, cores: int | None = None) -> int:
    return max(1, (cores or os.cpu_count() or 1) // max(1, workers))


def need_dask() -> None:
    """One line instead of an ImportError when the optional extra is missing."""
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise SystemExit("medsamlite: --workers > 1 and --scheduler need Dask: pip install 'medsamlite[cluster]'") from None


def executor_args(p: argparse.ArgumentParser) -> None:
    """--workers, --scheduler, --resume/--no-resume, --force, --quiet (batch and predict)."""
    p.add_argument("--workers", type=int, metavar="N", help="worker processes of a local Dask cluster; 1 = in this process "
                   "without Dask (default: one per 4 cores when Dask is installed, else 1)")
    p.add_argument("--scheduler", metavar="tcp://HOST:PORT", help="use this running Dask cluster (shared filesystem)")
    p.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True, help="skip finished cases (default on)")
    p.add_argument("--force", action="store_true", help="redo every case (same as --no-resume)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def workers_and_threads(args: argparse.Namespace) -> tuple[int, int | None]:
    """(local workers, OpenVINO threads per worker) from --workers/--threads/--scheduler."""
    if args.workers is not None and args.workers < 1:
        raise SystemExit("medsamlite: --workers must be at least 1")
    if args.scheduler:
        need_dask()
        return 0, args.threads
    workers = args.workers if args.workers is not None else default_workers()
    if workers > 1:
        need_dask()
        return workers, args.threads or threads_per_worker(workers)
    return 1, args.threads


def prepare_model(model: ModelSettings) -> None:
    """Convert the model here once, before workers start (they would each convert it); one line if it cannot be."""
    from ..models.conversion import CheckpointError, ConversionError
    from ..models.store import ModelError, ensure_converted

    try:
        ensure_converted(model.backend, log=_log)
    except (ModelError, ConversionError, CheckpointError, ValueError) as e:
        raise SystemExit(f"medsamlite: {e}") from None


def run_tasks(task: Callable[[object], dict], items: list, names: list[str], workers: int = 1,
              scheduler: str | None = None, quiet: bool = False, label: str = "cases") -> Iterator[dict]:
    """Results of `task(item)` as cases finish (any order); closing the iterator (Ctrl+C, an error)
    cancels what is left and stops the local cluster."""
    if not items:
        return
    bar = _progress(len(items), quiet, label)
    failed = 0
    try:
        results = _in_process(task, items) if workers <= 1 and not scheduler else _on_dask(task, items, names, workers, scheduler)
        for result in results:
            failed += result.get("status") == "failed"
            if bar is not None:
                bar.set_postfix(failed=failed, refresh=False)
                bar.update(1)
            yield result
    finally:
        if bar is not None:
            bar.close()


def _progress(total: int, quiet: bool, label: str):
    if quiet:
        return None
    try:
        from tqdm import tqdm
    except ImportError:  # the bar is a comfort, not a requirement
        return None

    return tqdm(total=total, unit="case", desc=label, file=sys.stderr, dynamic_ncols=True)


def dask_setup(worker) -> None:
    """Dask preload, run in each local worker process: Ctrl+C belongs to the command, which stops the
    cluster; without this every worker prints a KeyboardInterrupt traceback of its own."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _in_process(task: Callable, items: Iterable) -> Iterator[dict]:
    for item in items:
        yield task(item)


def _on_dask(task: Callable, items: list, names: list[str], workers: int, scheduler: str | None) -> Iterator[dict]:
    import logging

    from distributed import Client, LocalCluster, as_completed
    from distributed.scheduler import KilledWorker

    cluster = None
    if scheduler:
        try:
            client = Client(scheduler, timeout="20s")
        except (OSError, TimeoutError) as e:
            raise SystemExit(f"medsamlite: no Dask scheduler at {scheduler} ({one_line(e)})") from None
    else:
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                               silence_logs=logging.ERROR, preload=[__name__])  # -> dask_setup in each worker
        client = Client(cluster)
    futures = []
    try:
        run = f"{time.time_ns():x}"  # task keys unique per run: a rerun never meets an old result
        futures = [client.submit(task, item, key=f"medsamlite-{name}-{run}", pure=False) for item, name in zip(items, names)]
        by_key = {f.key: name for f, name in zip(futures, names)}
        for future in as_completed(futures):
            try:
                yield future.result()
            except KilledWorker as e:
                yield {"case": by_key[future.key], "status": "failed", "error": f"worker lost on every try ({one_line(e)})"}
            except Exception as e:  # noqa: BLE001 - the task catches case errors; this is Dask or pickling
                yield {"case": by_key[future.key], "status": "failed", "error": one_line(e)}
    finally:
        if futures:
            client.cancel(futures)
        client.close()
        if cluster is not None:
            cluster.close()
