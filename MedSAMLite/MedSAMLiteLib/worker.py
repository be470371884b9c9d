"""Long work off the main thread, with progress, partial results, cancel and errors that travel back.

Slicer must never freeze, and only its main thread may touch MRML and Qt. So the panel starts a
`Task` (one worker thread running the computation, which needs no MRML) and polls it from a
`qt.QTimer` on the main thread; the main thread applies partial and final results. Everything here is
plain Python, so the whole protocol is tested without Qt.

The work function gets a `Progress`: calling it reports slices done, publishes an optional partial
result, and raises `Cancelled` once `cancel()` was asked for, which stops the computation at the
next slice. OpenVINO releases the GIL while it infers, so the main thread stays responsive.
"""
from __future__ import annotations

import threading
import time
from typing import Any, Callable


class Cancelled(Exception):
    """Raised inside the work function at its next progress call after `Task.cancel()`."""


class Progress:
    """Handed to the work function: `progress(n=1, partial=None)` per slice done."""

    def __init__(self, total: int, cancel_event: threading.Event) -> None:
        self.total, self.done = int(total), 0
        self._cancel = cancel_event
        self._lock = threading.Lock()
        self._partial: Any = None
        self._partial_version = 0

    def __call__(self, n: int = 1, partial: Any = None) -> None:
        with self._lock:
            self.done += n
            if partial is not None:
                self._partial, self._partial_version = partial, self._partial_version + 1
        if self._cancel.is_set():
            raise Cancelled()

    def take_partial(self, seen: int) -> tuple[Any, int]:
        """(partial result, version) if newer than `seen`, else (None, seen)."""
        with self._lock:
            if self._partial_version > seen:
                return self._partial, self._partial_version
            return None, seen


class Task:
    """One computation on a worker thread. States: running -> done | failed | cancelled."""

    RUNNING, DONE, FAILED, CANCELLED = "running", "done", "failed", "cancelled"

    def __init__(self, work: Callable[[Progress], Any], total: int = 0, name: str = "MedSAMLite") -> None:
        self._cancel = threading.Event()
        self.progress = Progress(total, self._cancel)
        self.state = self.RUNNING
        self.result: Any = None
        self.error: BaseException | None = None
        self.started = time.perf_counter()
        self.finished: float | None = None
        self._partial_seen = 0
        self._thread = threading.Thread(target=self._run, args=(work,), name=name, daemon=True)
        self._thread.start()

    def _run(self, work) -> None:
        try:
            self.result = work(self.progress)
            state = self.DONE
        except Cancelled:
            state = self.CANCELLED
        except BaseException as e:  # noqa: BLE001 - every failure must reach the main thread
            self.error, state = e, self.FAILED
        self.finished = time.perf_counter()
        self.state = state  # set last: a poller that sees the final state also sees result/error

    def cancel(self) -> None:
        """Ask the work to stop at its next progress call (the thread is never killed)."""
        self._cancel.set()

    @property
    def running(self) -> bool:
        return self.state == self.RUNNING

    @property
    def seconds(self) -> float:
        return (self.finished or time.perf_counter()) - self.started

    def partial(self) -> Any:
        """A partial result published since the last call, or None."""
        value, self._partial_seen = self.progress.take_partial(self._partial_seen)
        return value

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the task ends (tests and the headless path; the panel polls instead)."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def status(self) -> str:
        """"12/40 slices, 3.1 s" for the panel's progress line."""
        p = self.progress
        return f"{p.done}/{p.total} slices, {self.seconds:.1f} s" if p.total else f"{self.seconds:.1f} s"
