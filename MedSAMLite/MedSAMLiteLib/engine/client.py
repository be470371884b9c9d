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
`multiprocessing.shared_memory` (space reserved up front; a file in the cache when /dev/shm is too
small), one copy per volume state. Masks come back as bit-packed crops the size of the result. If the
engine dies, its tasks fail with one line and the next `shared()` starts a new one.

The engine runs in its own session (process group on Windows), writes to a log file in the cache
folder (never to Slicer's handles), says its own PID first (Slicer's `PythonSlicer` is a launcher that
runs `python-real` as its child), and is stopped by that PID and its group.
"""
from __future__ import annotations

import atexit
import errno
import itertools
import json
import mmap
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import OrderedDict
from multiprocessing import shared_memory
from multiprocessing.connection import Listener
from pathlib import Path

import numpy as np

from .. import pid_alive
from . import protocol

LIB_PARENT = str(Path(__file__).resolve().parents[2])  # the folder holding MedSAMLiteLib
START_TIMEOUT_S = 60.0
KEPT_UPLOADS = 2  # volume states kept in shared memory (the current one and the one before)
CALL_TIMEOUT_S = 10.0  # the longest a blocking `call` waits (its request goes ahead of queued work)
LOG_MAX_BYTES = 1 << 20  # the engine log is rotated (one old file kept) beyond this
_BOOT = "import sys; sys.path.insert(0, sys.argv[1]); from MedSAMLiteLib.engine.server import main; main()"


class EngineError(RuntimeError):
    """The engine could not be started or stopped while working: one line for the user."""


def python_executable() -> str:
    """Slicer's own Python (`PythonSlicer`, as SlicerTotalSegmentator finds it), else this Python."""
    return shutil.which("PythonSlicer") or sys.executable


def log_path() -> Path:
    """The engine's log (its stdout and stderr), in the cache folder; `engine.log.1` holds the one before."""
    from ..models.store import home

    return home() / "engine.log"


def _open_log(path: Path):
    """The log file the engine's stdout and stderr start on (rotated when over LOG_MAX_BYTES); devnull if
    the cache folder cannot be written: never Slicer's own handles (none on Windows, where a missing one
    becomes a dead pipe)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() and path.stat().st_size > LOG_MAX_BYTES:
            os.replace(path, path.with_name(path.name + ".1"))
        return open(path, "ab")
    except OSError:
        return open(os.devnull, "ab")


def _address():
    """Where the engine connects back, leaving nothing behind if Slicer crashes (multiprocessing's default
    leaves a `pymp-*/listener-*` folder): an abstract socket on Linux, a named pipe on Windows, elsewhere a
    socket in our own short folder (macOS limits socket paths to 104 bytes), stale ones removed here."""
    import secrets

    token = secrets.token_hex(6)
    if sys.platform.startswith("linux"):
        return f"\0medsamlite-{os.getpid()}-{token}"
    if sys.platform == "win32":
        return None
    folder = Path(tempfile.gettempdir()) / f"msl-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    for old in folder.glob("*-*"):
        if old.name.split("-")[0].isdigit() and not pid_alive(int(old.name.split("-")[0])):
            old.unlink(missing_ok=True)
    return str(folder / f"{os.getpid()}-{token}")


def _reserve(fd: int, size: int) -> None:
    """Claim the space now: shared memory (tmpfs) and files are otherwise sparse, and a write past what
    is free kills the writer (Slicer) with SIGBUS instead of raising."""
    if hasattr(os, "posix_fallocate"):  # Linux; macOS has none, Windows commits at creation
        os.posix_fallocate(fd, 0, size)


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
    """One volume state's raw voxels in shared memory, put there by a thread (reserving the space touches
    every page, and numpy releases the GIL while it copies, so Slicer's main thread is not held for the
    whole volume). When shared memory has no room (a small /dev/shm: Docker's is 64 MB) they go to a file
    in the cache folder, mapped by both sides; when that is full too, `error` says so in one line."""

    def __init__(self, key, array: np.ndarray) -> None:
        self.key = key
        self.shape, self.dtype = tuple(array.shape), array.dtype.str
        self.shm, self.file, self._map = None, None, None
        self.error: str | None = None
        self.sent = False
        self._thread = threading.Thread(target=self._fill, args=(array,), name="MedSAMLite upload", daemon=True)
        self._thread.start()

    @staticmethod
    def _shared(size: int) -> shared_memory.SharedMemory:
        shm = shared_memory.SharedMemory(create=True, size=size)
        try:
            if os.name == "posix":
                _reserve(shm._fd, size)  # noqa: SLF001 - the block's file descriptor
        except OSError:
            shm.close()
            shm.unlink()
            raise
        return shm

    def _mapped_file(self, size: int) -> mmap.mmap:
        """A file in the cache folder (mode 0600, named after this process so a crash's is swept)."""
        from ..models.store import home, scratch_prefix

        folder = home()
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, self.file = tempfile.mkstemp(dir=folder, prefix=scratch_prefix("volume", "raw"))
            try:
                if hasattr(os, "posix_fallocate"):
                    _reserve(fd, size)
                else:
                    os.ftruncate(fd, size)
                return mmap.mmap(fd, size)
            finally:
                os.close(fd)
        except OSError as e:
            if self.file:
                Path(self.file).unlink(missing_ok=True)
            raise EngineError(f"no room for the volume ({size / 2**20:.0f} MiB): shared memory (/dev/shm) is too small "
                              f"and the cache folder {folder} could not take it ({e.strerror or e}); enlarge /dev/shm "
                              f"(docker run --shm-size=2g) or free disk space there") from None

    def _fill(self, array) -> None:
        size = max(1, array.nbytes)
        try:
            try:
                self.shm = self._shared(size)
                buffer = self.shm.buf
            except OSError as e:
                if e.errno not in (errno.ENOSPC, errno.ENOMEM, errno.EFBIG):
                    raise
                self._map = buffer = self._mapped_file(size)
            np.copyto(np.ndarray(array.shape, array.dtype, buffer=buffer), array)
        except EngineError as e:  # reported with the task that needs it
            self.error = str(e)
        except BaseException as e:  # noqa: BLE001
            self.error = f"could not copy the volume into shared memory ({e})"

    def ready(self) -> bool:
        self._thread.join(0.002)  # a short wait lets the copy thread take the GIL to finish
        return not self._thread.is_alive()

    def message(self) -> protocol.Volume:
        if self.file is not None:
            return protocol.Volume(self.key, self.file, self.shape, self.dtype, file=True)
        return protocol.Volume(self.key, self.shm.name, self.shape, self.dtype)

    def release(self) -> None:
        self._thread.join()
        if self.shm is not None:
            self.shm.close()
            try:
                self.shm.unlink()
            except FileNotFoundError:
                pass
        elif self._map is not None:
            self._map.close()
            try:
                os.unlink(self.file)
            except OSError:  # Windows, while the engine still maps it: swept at the engine's next start
                pass


class Engine:
    """The engine process and its connection; all methods run on the main thread."""

    def __init__(self, python: str | None = None) -> None:
        import secrets

        self._listener = Listener(_address(), authkey=(authkey := secrets.token_bytes(32)))
        if sys.platform == "win32":  # no console window; Ctrl+C in Slicer's console does not reach it
            flags, own_session = subprocess.CREATE_NO_WINDOW | subprocess.CREATE_NEW_PROCESS_GROUP, False
        else:
            flags, own_session = 0, True
        self.log = log_path()
        with _open_log(self.log) as log:
            self.process = subprocess.Popen([python or python_executable(), "-c", _BOOT, LIB_PARENT], stdin=subprocess.PIPE,
                                            stdout=log, stderr=log, creationflags=flags, start_new_session=own_session)
        self.process.stdin.write((json.dumps(self._hello(authkey)) + "\n").encode())
        self.process.stdin.close()
        self.pid: int | None = None  # the engine's own (the process started may be a launcher)
        self._conn = None
        self._accepted = threading.Event()
        threading.Thread(target=self._accept, name="MedSAMLite engine accept", daemon=True).start()
        self.started = time.perf_counter()
        self.dead: str | None = None
        self.tasks: dict[int, Task] = {}
        self._waiting: list[tuple[Task, tuple, Upload | None]] = []
        self._uploads: OrderedDict = OrderedDict()
        self._ids = itertools.count(1)

    def _hello(self, authkey: bytes) -> dict:
        """What the engine reads on stdin: where to connect, the key, whom to watch, where to log."""
        address = self._listener.address  # bytes for a Linux abstract socket
        return {"address": address.decode() if isinstance(address, bytes) else address, "authkey": authkey.hex(),
                "parent": os.getpid(), "log": str(self.log)}

    def _accept(self) -> None:
        try:
            conn = self._listener.accept()
            hello = conn.recv() if conn.poll(START_TIMEOUT_S) else None
            if isinstance(hello, protocol.Hello):
                self.pid, self._conn = hello.pid, conn
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
        if op in protocol.AHEAD:  # served before queued work: a prefetch in the way is cancelled first
            for prefetch in [t for t in self.tasks.values() if t.op == "prefetch"]:
                prefetch.cancel()
        if not self.alive:
            task._end(Task.FAILED, error=self.dead)
            return task
        self.tasks[task.id] = task
        self._waiting.append((task, message, upload))
        self.pump()
        return task

    def call(self, op: str, timeout: float | None = CALL_TIMEOUT_S, **args):
        """Blocking request (quick ones: stats, embeddings; tests and benchmarks); its result, or
        EngineError with one line."""
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
        process, pid = self.process, self.pid

        def gone() -> bool:  # a launcher reaps the engine; without one, poll() does
            return process.poll() is not None and (pid is None or pid == process.pid or not pid_alive(pid))

        def reap():
            deadline = time.monotonic() + grace
            while not gone() and time.monotonic() < deadline:
                time.sleep(0.02)
            if not gone():
                _kill(process, pid)
            process.wait()

        if grace > 0:
            threading.Thread(target=reap, name="MedSAMLite engine reaper", daemon=True).start()
        else:
            reap()


def _kill(process: subprocess.Popen, pid: int | None) -> None:
    """Kill the engine by its own PID and, on POSIX, its whole session's group (the launcher, a running
    download); on Windows os.kill terminates the process."""
    if pid is not None and pid_alive(pid):  # (not a PID that another process has taken since)
        try:
            os.kill(pid, signal.SIGKILL if os.name == "posix" else signal.SIGTERM)
        except OSError:
            pass
    if os.name == "posix":
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except OSError:
            pass
    process.kill()


_shared: Engine | None = None


def shared() -> Engine:
    """This process's engine, started on first use and again after it died or was stopped."""
    global _shared
    if _shared is not None:
        _shared.pump()  # notices an engine that is gone (a dead launcher alone does not matter)
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
