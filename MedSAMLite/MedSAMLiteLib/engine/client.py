"""Slicer's side of the engine: start it, hand it voxels and requests, follow its tasks (stdlib + numpy only).

Inference never runs in Slicer's process: Slicer's main thread keeps the GIL while Qt idles (a worker
thread there crawls), and OpenVINO's oneTBB must not meet Slicer's. So the computing lives in a child
process (`server.py`), started with Slicer's own Python (`PythonSlicer`, else `sys.executable`) on first
use, without fork, and kept for the session. This module imports neither openvino nor the core, so
the Slicer module loads and asks for model states without them.

    engine = shared()                       # the process's engine, started now if needed
    upload = engine.upload(key, array)      # raw voxels into shared memory, copied off the main thread
    task = engine.submit("segment", upload=upload, ...)
    engine.pump()                           # main thread, from a timer: read what the engine sent
    task.state, task.progress.done, task.partial(), task.result, task.cancel()

Messages are the small named tuples of `protocol.py` (pickled over a `multiprocessing.connection`); voxels go through
`multiprocessing.shared_memory`, one copy per volume state. Masks come back as crops the size of the
result. If the engine dies, its tasks fail with one line and the next `shared()` starts a new one.
"""
from __future__ import annotations

import atexit
import itertools
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from multiprocessing import shared_memory
from multiprocessing.connection import Listener
from pathlib import Path

import numpy as np

from . import protocol

LIB_PARENT = str(Path(__file__).resolve().parents[2])  # the folder holding MedSAMLiteLib
START_TIMEOUT_S = 60.0
KEPT_UPLOADS = 2  # volume states kept in shared memory (the current one and the one before)
_BOOT = "import sys; sys.path.insert(0, sys.argv[1]); from MedSAMLiteLib.engine.server import main; main()"


class EngineError(RuntimeError):
    """The engine could not be started or stopped while working: one line for the user."""


def python_executable() -> str:
    """Slicer's own Python (`PythonSlicer`, as SlicerTotalSegmentator finds it), else this Python."""
    return shutil.which("PythonSlicer") or sys.executable


class Progress:
    def __init__(self, total: int = 0) -> None:
        self.total, self.done = int(total), 0


class Task:
    """One request to the engine, seen from the main thread. States: running -> done | failed | cancelled.

    `stage` is what the engine is doing for it ("loading litemedsam", "segmenting"); `interruptible`
    says whether it stops at its next step on Cancel (slices) or only when the engine is stopped
    (model load, conversion, download), which `cancel` then does (a prefetch's load is let finish)."""

    RUNNING, DONE, FAILED, CANCELLED = "running", "done", "failed", "cancelled"

    def __init__(self, engine: "Engine", task_id: int, op: str, total: int = 0) -> None:
        self.engine, self.id, self.op = engine, task_id, op
        self.progress = Progress(total)
        self.state = self.RUNNING
        self.result = None
        self.error: str | None = None
        self.stage, self.interruptible = "starting", True
        self.started, self.finished = time.perf_counter(), None
        self._partials: list = []

    @property
    def running(self) -> bool:
        return self.state == self.RUNNING

    @property
    def seconds(self) -> float:
        return (self.finished or time.perf_counter()) - self.started

    def _end(self, state: str, result=None, error: str | None = None) -> None:
        if self.running:
            self.result, self.error, self.finished = result, error, time.perf_counter()
            self.state = state

    def cancel(self) -> None:
        """Over at once: the engine stops at its next slice, or is stopped if it cannot (model load)."""
        if self.running:
            self._end(self.CANCELLED)
            self.engine.cancel(self)

    def partial(self):
        """The oldest partial result not taken yet, or None (pump first)."""
        return self._partials.pop(0) if self._partials else None

    def wait(self, timeout: float | None = None) -> bool:
        """Pump until the task is over (tests, blocking calls); True if it is."""
        end = None if timeout is None else time.perf_counter() + timeout
        while self.running and (end is None or time.perf_counter() < end):
            self.engine.pump(0.05)
        return not self.running

    def status(self) -> str:
        """"12/40 slices, 3.1 s" for the panel's progress line."""
        p = self.progress
        if p.total and self.stage == "segmenting":
            return f"{p.done}/{p.total} slices, {self.seconds:.1f} s"
        return f"{self.stage}, {self.seconds:.1f} s"

    def outcome(self):
        """The result once over; a failure raises EngineError with its one line."""
        if self.state == self.FAILED:
            raise EngineError(self.error)
        if self.state == self.CANCELLED:
            raise EngineError("cancelled")
        return self.result


class Upload:
    """One volume state's raw voxels in shared memory, copied by a thread (numpy releases the GIL while
    it copies, so Slicer's main thread is not held for the whole volume)."""

    def __init__(self, key, array: np.ndarray) -> None:
        self.key = key
        self.shape, self.dtype = tuple(array.shape), array.dtype.str
        self.shm = shared_memory.SharedMemory(create=True, size=max(1, array.nbytes))
        self._target = np.ndarray(array.shape, array.dtype, buffer=self.shm.buf)
        self.error: str | None = None
        self.sent = False
        self._thread = threading.Thread(target=self._copy, args=(array,), name="MedSAMLite upload", daemon=True)
        self._thread.start()

    def _copy(self, array) -> None:
        try:
            np.copyto(self._target, array)
        except BaseException as e:  # noqa: BLE001 - reported with the task that needs it
            self.error = f"could not copy the volume into shared memory ({e})"
        finally:
            self._target = None

    def ready(self) -> bool:
        self._thread.join(0.002)  # a short wait lets the copy thread take the GIL to finish
        return not self._thread.is_alive()

    def message(self) -> protocol.Volume:
        return protocol.Volume(self.key, self.shm.name, self.shape, self.dtype)

    def release(self) -> None:
        self._thread.join()
        self.shm.close()
        try:
            self.shm.unlink()
        except FileNotFoundError:
            pass


class Engine:
    """The engine process and its connection; all methods run on the main thread."""

    def __init__(self, python: str | None = None) -> None:
        import secrets

        self._listener = Listener(authkey=(authkey := secrets.token_bytes(32)))
        flags = subprocess.CREATE_NO_WINDOW if sys.platform == "win32" else 0
        self.process = subprocess.Popen([python or python_executable(), "-c", _BOOT, LIB_PARENT], stdin=subprocess.PIPE,
                                        creationflags=flags)
        self.process.stdin.write((json.dumps({"address": self._listener.address, "authkey": authkey.hex()}) + "\n").encode())
        self.process.stdin.close()
        self._conn = None
        self._accepted = threading.Event()
        threading.Thread(target=self._accept, name="MedSAMLite engine accept", daemon=True).start()
        self.started = time.perf_counter()
        self.dead: str | None = None
        self.tasks: dict[int, Task] = {}
        self._waiting: list[tuple[Task, tuple, Upload | None]] = []
        self._uploads: OrderedDict = OrderedDict()
        self._ids = itertools.count(1)

    def _accept(self) -> None:
        try:
            self._conn = self._listener.accept()
        except Exception:  # noqa: BLE001 - the process died before connecting: pump reports it
            pass
        finally:
            self._accepted.set()

    @property
    def alive(self) -> bool:
        return self.dead is None

    # -- requests ------------------------------------------------------------------------------------------
    def upload(self, key, array: np.ndarray) -> Upload:
        """The shared-memory copy of this volume state (made once; older states beyond KEPT_UPLOADS freed)."""
        if key in self._uploads:
            self._uploads.move_to_end(key)
            return self._uploads[key]
        upload = self._uploads[key] = Upload(key, array)
        waited_for = {id(w[2]) for w in self._waiting}
        for old in [u for u in self._uploads.values() if id(u) not in waited_for][:-KEPT_UPLOADS]:
            del self._uploads[old.key]
            if old.sent and self.alive:
                self._send(protocol.Drop(old.key))  # after the requests that use it: the engine serves in order
            old.release()
        return upload

    def submit(self, op: str, upload: Upload | None = None, total: int = 0, **args) -> Task:
        """Start `op` in the engine (after `upload` is in shared memory); follow it with `pump`."""
        task = Task(self, next(self._ids), op, total)
        message = protocol.request(op, task.id, args, {k: os.environ.get(k) for k in protocol.ENV_PASSED})
        if not self.alive:
            task._end(Task.FAILED, error=self.dead)
            return task
        self.tasks[task.id] = task
        self._waiting.append((task, message, upload))
        self.pump()
        return task

    def call(self, op: str, timeout: float | None = None, **args):
        """Blocking request (quick ones: stats, cache); its result, or EngineError with one line."""
        task = self.submit(op, **args)
        if not task.wait(timeout):
            task.cancel()
            raise EngineError(f"the engine did not answer {op!r} in time")
        return task.outcome()

    def cancel(self, task: Task) -> None:
        self._waiting = [w for w in self._waiting if w[0] is not task]
        if not self.alive or self._conn is None:
            return
        self.pump()  # the task's latest stage
        # Loading, converting, downloading cannot stop half-way: the engine exits (and is made to), except
        # for a prefetch, whose model load serves the Segment that cancelled it.
        stop = not task.interruptible and task.op != "prefetch"
        self._send(protocol.Cancel(task.id, stop))
        if stop:
            self.stop(f"the MedSAMLite engine was stopped while {task.stage} (cancelled)", grace=1.0)

    # -- the main thread's side of the connection -----------------------------------------------------------
    def _send(self, message) -> None:
        try:
            self._conn.send(message)
        except (OSError, EOFError, ValueError):
            self._died()

    def pump(self, wait: float = 0.0) -> None:
        """Send what waited for its upload, then take every message the engine has sent (up to `wait` s
        for the first one)."""
        if not self.alive:
            return
        if self._conn is None:
            if not self._accepted.wait(max(wait, 0.002)):
                if self.process.poll() is not None or time.perf_counter() - self.started > START_TIMEOUT_S:
                    self._died()
                return
            if self._conn is None:
                self._died()
                return
        for entry in list(self._waiting):
            task, message, upload = entry
            if upload is not None:
                if not upload.ready():
                    continue
                if upload.error:
                    self._waiting.remove(entry)
                    self._uploads.pop(upload.key, upload).release()
                    task._end(Task.FAILED, error=upload.error)
                    continue
                if not upload.sent:
                    self._send(upload.message())
                    upload.sent = True
            self._waiting.remove(entry)
            self._send(message)
        try:
            ready = self._conn.poll(wait)
            while ready:
                self._dispatch(self._conn.recv())
                ready = self._conn.poll(0)
        except (OSError, EOFError):
            self._died()

    def _dispatch(self, message) -> None:
        task = self.tasks.get(message.task)
        if task is None:
            return
        if isinstance(message, protocol.Progress):
            task.progress.done += message.n
        elif isinstance(message, protocol.Stage):
            task.stage, task.interruptible = message.text, message.interruptible
        elif isinstance(message, protocol.Partial):
            if task.running:
                task._partials.append(message.mask)
        else:
            self.tasks.pop(message.task, None)
            if isinstance(message, protocol.Done):
                task._end(Task.DONE, result=message.result)
            elif isinstance(message, protocol.Failed):
                task._end(Task.FAILED, error=message.error)
            else:
                task._end(Task.CANCELLED)

    def _died(self) -> None:
        code = self.process.poll()
        self.stop("the MedSAMLite engine stopped unexpectedly" + (f" (exit code {code})" if code is not None else "")
                  + "; Segment again to restart it", grace=1.0)

    def stop(self, reason: str = "the MedSAMLite engine was stopped", grace: float = 0.0) -> None:
        """End the engine (after `grace` s for it to exit by itself, waited for off the main thread) and
        free the shared memory; its unfinished tasks fail with `reason`. The next `shared()` starts anew."""
        if self.dead is not None:
            return
        self.dead = reason
        for task in list(self.tasks.values()) + [w[0] for w in self._waiting]:
            task._end(Task.FAILED, error=reason)
        self.tasks.clear()
        self._waiting.clear()
        if self._conn is not None:
            try:
                self._conn.close()
            except OSError:
                pass
        self._listener.close()
        for upload in self._uploads.values():
            upload.release()
        self._uploads.clear()
        process = self.process

        def reap():
            try:
                process.wait(grace)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

        if grace > 0:
            threading.Thread(target=reap, name="MedSAMLite engine reaper", daemon=True).start()
        else:
            reap()


_shared: Engine | None = None


def shared() -> Engine:
    """This process's engine, started on first use and again after it died or was stopped."""
    global _shared
    if _shared is not None and _shared.alive and _shared.process.poll() is not None:
        _shared._died()
    if _shared is None or not _shared.alive:
        _shared = Engine()
    return _shared


def running() -> Engine | None:
    """This process's engine if it is up (nothing is started)."""
    return _shared if _shared is not None and _shared.alive else None


@atexit.register
def shutdown() -> None:
    """Stop the engine (Slicer closing; the engine also exits when its connection closes)."""
    global _shared
    if _shared is not None:
        _shared.stop()
        _shared = None
