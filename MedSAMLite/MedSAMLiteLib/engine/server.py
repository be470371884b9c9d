"""The engine: MedSAMLite's computing process, a child of Slicer (client.py starts and talks to it).

Everything heavy runs here, never in Slicer's process: OpenVINO and the converted models, conversion,
downloads, hashing, presets, reorientation to canonical slices, embeddings (with their cache) and
prefetch. Slicer puts a volume's raw voxels into shared memory once per volume state; the engine reads
the slices it needs through a canonical view of them and applies the preset slice by slice, so no
whole-volume copy is made on either side. Masks go back as bit-packed crops around the result.

Two threads: a reader takes messages off the connection (a Cancel is seen at once, even while a slice
is being encoded) and queues requests; the main thread serves them one at a time. A Cancel stops a
segmentation or prefetch at its next slice; during a model load, conversion or download, which cannot
stop half-way, the engine exits (Slicer starts a new one when needed), unless the job was a prefetch
(its model load serves the Segment that follows).

Messages both ways are the named tuples of `protocol.py`; the first one is the engine's PID. Quick
requests (protocol.AHEAD) are served before queued work.

The engine ends cleanly (downloads stopped, its temporary files removed) when the connection closes or
fails in any way, and when Slicer's process is gone, watched by a thread independently of the messages
(and on Linux by PR_SET_PDEATHSIG when Slicer is its direct parent). At start it removes what crashed
engines left in the cache. Its stdout and stderr go to the log file Slicer names, rotated at a size
cap; writing there never raises.
"""
from __future__ import annotations

import itertools
import json
import os
import queue
import signal
import sys
import threading
import time
import traceback
from collections import OrderedDict
from multiprocessing import shared_memory
from multiprocessing.connection import Client

import numpy as np

from .. import one_line, pid_alive
from . import protocol


class CancelRequested(Exception):
    """Raised at the next step of a job whose Cancel arrived."""


def _map_file(path: str):
    """The file Slicer put a volume into when shared memory was too small, mapped read-only."""
    import mmap

    with open(path, "rb") as f:
        return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)


def _attach(name: str) -> shared_memory.SharedMemory:
    """Open Slicer's shared memory without adopting it: Slicer owns it and frees it."""
    try:
        return shared_memory.SharedMemory(name=name, track=False)  # Python >= 3.13
    except TypeError:
        shm = shared_memory.SharedMemory(name=name)
        if os.name == "posix":  # else this process's resource tracker would unlink it at exit
            from multiprocessing import resource_tracker

            resource_tracker.unregister(shm._name, "shared_memory")  # noqa: SLF001
        return shm


def crop(mask: np.ndarray) -> tuple[protocol.PackedMask, tuple[int, int, int]]:
    """(the smallest box of `mask` (D, H, W) holding all its voxels, bit-packed; its origin (z, y, x));
    an empty mask gives an empty crop at the origin."""
    spans = [np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis))) for axis in range(3)]
    if any(s.size == 0 for s in spans):
        return protocol.PackedMask(np.zeros((0, 0, 0), dtype=bool)), (0, 0, 0)
    lo, hi = [int(s[0]) for s in spans], [int(s[-1]) + 1 for s in spans]
    return protocol.PackedMask(mask[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]].astype(bool, copy=False)), tuple(lo)


class Slices:
    """The segmenter's image, (D, H, W) or (D, H, W, 3) uint8, made slice by slice on demand from the raw
    volume (a canonical view of shared memory) with the preset: window (width, level), "mr" (the
    volume's foreground percentiles, found once) or "none" (8-bit data as stored). RGBA loses alpha."""

    KEEP = 4  # slices kept made (a 3D step reads its slice more than once)

    def __init__(self, raw: np.ndarray, geometry, preset: str, window: tuple[float, float] | None) -> None:
        from ..core import presets

        view = geometry.canonical_view(raw)
        if view.ndim == 4:
            view = view[..., :3]
        self.view, self.shape, self.dtype = view, view.shape, np.dtype(np.uint8)
        if window is not None or preset in presets.CT_WINDOWS:
            width, level = window if window is not None else presets.CT_WINDOWS[preset]
            self._make = lambda s: presets.window(s, width, level)
        elif preset == "mr":
            bounds = presets.percentile_range(raw)
            self._make = lambda s: presets.clip_range(s, bounds)
        elif raw.dtype == np.uint8:
            self._make = np.asarray
        else:
            raise ValueError(f"preset 'none' needs 8-bit data; the volume is {raw.dtype}")
        self._made: OrderedDict = OrderedDict()

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, z) -> np.ndarray:
        z = int(z)
        if z not in self._made:
            self._made[z] = np.ascontiguousarray(self._make(self.view[z]), dtype=np.uint8)
            while len(self._made) > self.KEEP:
                self._made.popitem(last=False)
        self._made.move_to_end(z)
        return self._made[z]


class Engine:
    """Serves requests from Slicer on one connection; keeps models, embeddings and volumes between them."""

    def __init__(self, conn) -> None:
        from ..core.embedding_cache import EmbeddingCache

        self.conn = conn
        self.inbox: queue.PriorityQueue = queue.PriorityQueue()  # (0: AHEAD, 1: in order; arrival, message)
        self._arrival = itertools.count()
        self.cancelled: set[int] = set()
        self.current: int | None = None
        self.interruptible = True
        self.volumes: dict = {}  # key -> (shared memory, array)
        self.images: OrderedDict = OrderedDict()  # image key -> Slices
        self.backends: dict = {}
        self.cache = EmbeddingCache()
        self.objects: OrderedDict = OrderedDict()  # task id -> (settings, ObjectMasks) of 3D results, for corrections
        self._send_lock = threading.Lock()

    # -- connection ------------------------------------------------------------------------------------------
    def send(self, message: tuple) -> None:
        with self._send_lock:
            self.conn.send(message)

    def read(self) -> None:
        """Reader thread: cancels act at once; everything else is queued for the main thread. Any
        failure to read (Slicer gone, a garbled message) ends the engine."""
        while True:
            try:
                message = self.conn.recv()
            except (EOFError, OSError):
                end("the connection to Slicer closed")
            except BaseException as e:  # noqa: BLE001 - a garbled message: the stream cannot be trusted
                end(f"unreadable message from Slicer ({type(e).__name__}: {one_line(e)})", 1)
            if isinstance(message, protocol.Cancel):
                self.cancelled.add(message.task)
                if message.task == self.current and not self.interruptible and message.stop:
                    end("cancelled while it could not stop")  # a model load or conversion: Slicer starts a new engine
            elif isinstance(message, protocol.Request) and message.op in protocol.AHEAD:
                self.inbox.put((0, next(self._arrival), message))
            else:
                self.inbox.put((1, next(self._arrival), message))

    def serve(self) -> None:
        threading.Thread(target=self.read, name="MedSAMLite engine reader", daemon=True).start()
        while True:
            _, _, message = self.inbox.get()
            if isinstance(message, protocol.Volume):
                try:
                    shm = _map_file(message.shm) if message.file else _attach(message.shm)
                except OSError:  # freed by Slicer meanwhile: a request that needs it fails with one line
                    continue
                buffer = shm if message.file else shm.buf
                self.volumes[message.key] = (shm, np.ndarray(message.shape, np.dtype(message.dtype), buffer=buffer))
            elif isinstance(message, protocol.Drop):
                self.drop(message.key)
            else:
                self.job(message)

    def drop(self, key) -> None:
        self.images = OrderedDict((k, v) for k, v in self.images.items() if k[0] != key)
        shm, _ = self.volumes.pop(key, (None, None))
        if shm is not None:
            shm.close()

    def job(self, request: protocol.Request) -> None:
        job_id = request.task
        if job_id in self.cancelled:
            self.cancelled.discard(job_id)
            self.send(protocol.Cancelled(job_id))
            return
        for key, value in request.env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self.current, self.interruptible = job_id, True
        try:
            result = getattr(self, f"do_{request.op}")(job_id, **request.args)
        except CancelRequested:
            self.send(protocol.Cancelled(job_id))
        except Exception as e:  # noqa: BLE001 - every failure reaches Slicer as one line
            traceback.print_exc()  # into the log (sys.stderr is a _Log: it never raises)
            self.send(protocol.Failed(job_id, one_line(e)))
        else:
            self.send(protocol.Done(job_id, result))
        finally:
            self.current, self.interruptible = None, True
            self.cancelled.discard(job_id)

    def stage(self, job_id: int, text: str, interruptible: bool) -> None:
        self.interruptible = interruptible
        if interruptible and job_id in self.cancelled:
            raise CancelRequested()
        self.send(protocol.Stage(job_id, text, interruptible))

    def progress(self, job_id: int):
        def report(n: int = 1) -> None:
            if job_id in self.cancelled:
                raise CancelRequested()
            if n:
                self.send(protocol.Progress(job_id, n))

        return report

    # -- models and images ------------------------------------------------------------------------------------
    def backend(self, job_id: int, name: str, precision: str = "f32", download: bool = True):
        from ..models.store import load_backend

        key = (name, precision)
        if key not in self.backends:
            self.stage(job_id, f"loading {name}", interruptible=False)
            self.backends[key] = load_backend(name, precision, download=download)
        return self.backends[key]

    def segmenter(self, job_id: int, name: str, zoom: bool = False, download: bool = True):
        from ..core.segmenter import Segmenter
        from ..core.zoom import ZoomRule

        return Segmenter(self.backend(job_id, name, download=download), self.cache, zoom=ZoomRule() if zoom else None)

    def image(self, volume, size, ijk_to_ras, preset, window, image_key, axes=None) -> Slices:
        """The Slices of a volume state under a preset, along the view's axis when `axes` names a slice
        layout other than the canonical one (made once; the few most recent kept)."""
        from ..core.geometry import Geometry

        if image_key not in self.images:
            if volume not in self.volumes:
                raise RuntimeError("the volume is not in shared memory")
            geometry = Geometry.from_ijk_to_ras(size, np.asarray(ijk_to_ras))
            if axes is not None:
                geometry = geometry.resliced(axes)
            self.images[image_key] = Slices(self.volumes[volume][1], geometry, preset, window)
            while len(self.images) > 4:
                self.images.popitem(last=False)
        self.images.move_to_end(image_key)
        return self.images[image_key]

    # -- requests ---------------------------------------------------------------------------------------------
    def do_segment(self, job_id, backend, zoom, image, box, is2d, emptySliceLimit, vanishing=False):
        """One ROI -> (crop, origin) of the mask in canonical (D, H, W) indices, and a status line;
        in 3D the middle slice is sent first as a partial result. `vanishing`: a speck counts as empty for
        the stop rule (a box on a view, no ROI to bound it; core/propagate.EmptyRun)."""
        from ..core import objects
        from ..core.objects import KeySlices
        from ..core.roi import SliceBox

        segmenter = self.segmenter(job_id, backend, zoom)
        self.stage(job_id, "segmenting", interruptible=True)
        segmenter.set_image(self.image(**image), key=image["image_key"])
        box = SliceBox(*box)
        progress = self.progress(job_id)
        t0 = time.perf_counter()
        if is2d:
            mask = segmenter.segment_2d(box.z0, box.xy)
            progress(1)
            return {"mask": _shift(crop(mask[None]), box.z0),
                    "status": f"{backend} 2D: {time.perf_counter() - t0:.2f} s"}
        middle = segmenter.middle_slice(box.xyz)
        self.send(protocol.Partial(job_id, _shift(crop(segmenter.segment_2d(middle, box.xy)[None]), middle)))
        visited = []

        def counted(n=1):
            visited.append(n)
            progress(n)

        obj = KeySlices.from_roi(box.xyz, len(segmenter.image), segmenter.profile.propagation)
        result = objects.segment(segmenter, obj, progress=counted, stop_after_empty=emptySliceLimit,
                                 vanishing=bool(vanishing))  # the published masks
        self.remember(job_id, (image["image_key"], backend, bool(zoom), emptySliceLimit, bool(vanishing)), result, segmenter)
        lo, hi = obj.extent  # propagation stays within the box's slices (those in the volume): the mask is there
        return {"mask": _shift(crop(result.volume(lo, hi)), lo), "status": f"{backend} 3D: {sum(visited)} slices in {time.perf_counter() - t0:.1f} s",
                "object": job_id, "keys": obj.keys}

    KEPT_OBJECTS = 8  # 3D results kept for corrections (each holds its slices' masks as bits of their boxes)

    def remember(self, job_id, settings, result, segmenter) -> None:
        """Keep a 3D result for corrections, and the embeddings of its slices in the cache while it is kept."""
        keys = {segmenter.key(z, bounds) for z, (bounds, _) in result.prompts.items()}
        self.objects[job_id] = (settings, result, keys)
        while len(self.objects) > self.KEPT_OBJECTS:
            self.objects.popitem(last=False)
        self.cache.keep(set().union(*(kept[2] for kept in self.objects.values())))

    def do_correct(self, job_id, backend, zoom, image, box, keys, emptySliceLimit, previous=None, vanishing=False):
        """An object's key slices ((slice, xyxy box or None: not on this slice), the first the ROI's) -> its
        mask as a crop, the slices (z0, z1) whose mask differs from result `previous` (a task id of this
        object's last result; unknown: every slice of the object), the new result's id and key slices.
        Slices whose prompt is the same as in any kept result of the same settings are not decoded again."""
        from ..core import objects
        from ..core.objects import KeySlices
        from ..core.roi import SliceBox

        segmenter = self.segmenter(job_id, backend, zoom)
        self.stage(job_id, "correcting", interruptible=True)
        segmenter.set_image(self.image(**image), key=image["image_key"])
        box = SliceBox(*box)
        settings = (image["image_key"], backend, bool(zoom), emptySliceLimit, bool(vanishing))
        roi = KeySlices.from_roi(box.xyz, len(segmenter.image), segmenter.profile.propagation)
        obj = KeySlices(tuple(sorted((int(z), None if b is None else tuple(float(v) for v in b)) for z, b in keys)), roi.z_lo,
                        roi.z_hi, roi.origin)
        if not any(b is not None for _, b in obj.keys) or len({z for z, _ in obj.keys}) != len(obj.keys):
            raise ValueError("key slices need one box and one entry per slice")
        before = self.objects.get(previous)
        before = before[1] if before is not None and before[0] == settings else None
        stats = segmenter.backend.stats
        t0, misses, decoding = time.perf_counter(), self.cache.misses, stats.decoder_seconds
        result = objects.segment(segmenter, obj, previous=before, progress=self.progress(job_id), stop_after_empty=emptySliceLimit,
                                 vanishing=bool(vanishing), carry=not vanishing)  # a box on a view: its end is the stop rule's
        decoding = stats.decoder_seconds - decoding
        encoded = self.cache.misses - misses  # 0 unless embeddings were evicted, or zoom moved a crop window
        self.remember(job_id, settings, result, segmenter)
        lo, hi = obj.extent
        changed = result.changed(before) if before is not None else list(range(lo, hi + 1))
        slices = (changed[0], changed[-1]) if changed else None
        return {"mask": _shift(crop(result.volume(lo, hi)), lo), "slices": slices, "object": job_id, "keys": obj.keys,
                "status": f"{backend} correction: {result.decoded} slices decoded in {time.perf_counter() - t0:.2f} s "
                          f"(decoder {decoding:.2f} s), {encoded} encoded"}

    def do_prefetch(self, job_id, backend, image, slices):
        """Encode `slices` in order (the ROI's, middle first) so that a Segment finds them cached;
        never downloads or converts (the Logic asks only when the model is ready)."""
        segmenter = self.segmenter(job_id, backend, download=False)
        self.stage(job_id, "prefetching", interruptible=True)
        segmenter.set_image(self.image(**image), key=image["image_key"])
        progress = self.progress(job_id)
        for z in slices:
            progress(0)
            segmenter.embedding(z)
            progress(1)
        return len(slices)

    def do_download(self, job_id, name):
        from ..models.store import fetch_weights

        self.stage(job_id, f"downloading the {name} weights", interruptible=False)
        return str(fetch_weights(name))

    def do_import(self, job_id, name, path):
        from ..models.store import import_checkpoint

        self.stage(job_id, "importing the checkpoint", interruptible=False)
        self.backends = {k: v for k, v in self.backends.items() if k[0] != name}
        return str(import_checkpoint(name, path))

    def do_clear_cache(self, job_id, weights=False):
        from ..models.store import clear_cache

        self.backends.clear()  # compiled models map their files (Windows cannot delete them while open)
        clear_cache(weights)

    def do_embeddings(self, job_id, clear=False, max_bytes=None):
        """The embedding cache: cleared and/or resized; returns its state (benchmarks, tests)."""
        if clear:
            self.cache.clear()
        if max_bytes is not None:
            self.cache.resize(max_bytes)
        return {"bytes": self.cache.nbytes, "count": len(self.cache), "max_bytes": self.cache.max_bytes}

    def do_stats(self, job_id, backend):
        """Call counts and seconds of a loaded backend (None if not loaded), and this process's peak RSS."""
        from dataclasses import asdict

        loaded = self.backends.get((backend, "f32"))
        return {"backend": asdict(loaded.stats) if loaded is not None else None, "peak_rss_mib": _peak_rss_mib(),
                "pid": os.getpid()}


def _shift(cropped, z: int):
    """A crop of a slab of masks starting at slice z, placed in the whole volume."""
    mask, (dz, y, x) = cropped
    return mask, (z + dz, y, x)


def _peak_rss_mib() -> float | None:
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    try:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024
    except ImportError:
        return None


class _Log:
    """The engine's stdout and stderr: the log file, also under file descriptors 1 and 2 (OpenVINO's and
    the interpreter's own messages), moved to `<log>.1` past `max_bytes`. Writing never raises: a
    windowless engine on Windows, or a full disk, must not turn a message into a failure."""

    def __init__(self, path: str | None, max_bytes: int = 1 << 20, fds: tuple = (1, 2)) -> None:
        self.path, self.max_bytes, self.fds, self.file = path, max_bytes, fds, None
        self._lock = threading.Lock()
        self._open()

    def _open(self) -> None:
        try:
            self.file = open(self.path or os.devnull, "a", encoding="utf-8", errors="replace")
            for fd in self.fds:
                os.dup2(self.file.fileno(), fd)
        except (OSError, TypeError, ValueError):
            self.file = None

    def write(self, text: str) -> int:
        with self._lock:
            try:
                self.file.write(text)
                self.file.flush()
                if self.path and self.file.tell() > self.max_bytes:
                    self.file.close()
                    os.replace(self.path, self.path + ".1")
                    self._open()
            except Exception:  # noqa: BLE001 - nowhere left to report it
                pass
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


def end(why: str, code: int = 0) -> None:
    """Leave the engine cleanly from any thread: downloads stopped, this process's temporary files in the
    cache removed, the reason logged; the shared memory mappings go with the process."""
    try:
        print(f"engine {os.getpid()} exits: {why}", file=sys.stderr)
        from ..models.store import stop_downloads, sweep_scratch

        stop_downloads()
        sweep_scratch(mine=True)
    except BaseException:  # noqa: BLE001 - leaving regardless
        pass
    os._exit(code)


def watch_parent(parent: int) -> None:
    """End the engine when Slicer's process is gone, whatever the reader is doing. On Linux the kernel
    signals it at once (PR_SET_PDEATHSIG) when Slicer is the direct parent (no launcher between; the
    signal comes when the thread that started the engine ends, and Slicer's main thread starts it);
    a thread checks Slicer's PID twice a second everywhere (macOS and Windows included)."""
    signal.signal(signal.SIGTERM, lambda *_: end("SIGTERM (Slicer is gone or stopped the engine)"))
    if sys.platform.startswith("linux") and os.getppid() == parent:
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass

    def watch():
        while pid_alive(parent):
            time.sleep(0.5)
        end(f"Slicer's process {parent} is gone")

    threading.Thread(target=watch, name="MedSAMLite parent watch", daemon=True).start()


def main() -> None:
    """Entry point (client.py starts `python -c ...main()`): log to Slicer's named file, watch Slicer,
    sweep what crashed engines left, connect back, say our PID, then serve."""
    hello = json.loads(sys.stdin.readline())
    sys.stdout = sys.stderr = _Log(hello.get("log"))
    watch_parent(hello["parent"])
    try:
        from ..models.store import sweep_scratch

        for path in sweep_scratch():
            print(f"removed {path} (left by a process that is gone)", file=sys.stderr)
    except OSError as e:
        print(f"could not sweep the cache: {one_line(e)}", file=sys.stderr)
    conn = Client(hello["address"], authkey=bytes.fromhex(hello["authkey"]))
    engine = Engine(conn)
    engine.send(protocol.Hello(os.getpid()))
    engine.serve()
