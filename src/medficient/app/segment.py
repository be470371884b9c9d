"""Model work for the app: engines, the embeddings of shown slices, box -> mask, propagation jobs.

Everything goes through medficient.inference (preprocess, map_boxes, logits_to_masks,
segment_3d), so a box gives the same mask here as in `predict`/`segment`.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from ..inference.preprocess import logits_to_masks, map_boxes, preprocess

# view axis -> transpose that puts that axis first (slices of the result are that view's planes)
AXIS_ORDER = {0: (0, 1, 2), 1: (1, 0, 2), 2: (2, 0, 1)}


class SerialEngine:
    """An engine whose encode/decode calls run one at a time.

    Tabs and propagation threads share one engine per model, and the exported engines hold a
    single infer request per graph, which must not be used by two threads at once."""

    def __init__(self, engine) -> None:
        self.engine = engine
        self.profile = engine.profile
        self.lock = threading.Lock()

    def encode(self, image: np.ndarray):
        with self.lock:
            return self.engine.encode(image)

    def decode(self, embedding, boxes: np.ndarray) -> np.ndarray:
        with self.lock:
            return self.engine.decode(embedding, boxes)

    def __getattr__(self, name: str):
        return getattr(self.engine, name)


class EnginePool:
    """One engine per model name, loaded on first use through `open_engine` (so `serve` runs on
    the same runtimes as `predict`). `checkpoints` adds models beyond the embedded lite_medsam;
    `backend` None means the default one (OpenVINO when installed, else torch)."""

    def __init__(
        self,
        checkpoints: dict[str, str | None] | None = None,
        backend: str | None = None,
        precision: str = "f32",
        threads: int | None = None,
        device: str = "cpu",
        trust_pickle: bool = False,
    ):
        from ..runtime import default_backend

        self.checkpoints = checkpoints if checkpoints is not None else {"lite_medsam": None}
        self.backend = backend or default_backend()
        self.precision, self.threads, self.device, self.trust_pickle = precision, threads, device, trust_pickle
        self.engines: dict[str, SerialEngine] = {}
        self.lock = threading.Lock()

    @property
    def names(self) -> list[str]:
        return list(self.checkpoints)

    def get(self, name: str) -> SerialEngine:
        if name not in self.checkpoints:
            raise ValueError(f"model {name!r} is not served (available: {', '.join(self.checkpoints)})")
        with self.lock:
            if name not in self.engines:
                from ..inference.engine import open_engine

                engine = open_engine(self.backend, name, self.checkpoints[name], self.precision, self.threads, self.device, self.trust_pickle)
                self.engines[name] = SerialEngine(engine)
            return self.engines[name]


class EmbeddingCache:
    """The embeddings of the last few slices shown, keyed (model, scan version, axis, index)."""

    def __init__(self, capacity: int = 6) -> None:
        self.capacity = capacity
        self.store: OrderedDict[tuple, tuple] = OrderedDict()

    def get(self, key: tuple):
        if key in self.store:
            self.store.move_to_end(key)
            return self.store[key]
        return None

    def put(self, key: tuple, value: tuple) -> None:
        self.store[key] = value
        self.store.move_to_end(key)
        while len(self.store) > self.capacity:
            self.store.popitem(last=False)


def slice_embedding(session, engine, model: str, axis: int, index: int, stale=None) -> tuple[object, object, bool]:
    """(embedding, geometry, was_cached) of one shown slice; computed at most once per slice.

    `stale()` true once this tab's turn comes means the request is outdated (the page has shown
    another slice since): it then returns (None, None, False) without encoding, so scrolling
    never leaves a queue of encodings in front of the next box."""
    scan = session.require_scan()
    scan.check_plane(axis, index)
    with session.embed_lock:  # a box arriving while the slice is being encoded waits for it
        if stale is not None and stale():
            return None, None, False
        with session.lock:
            if session.embeddings is None:
                session.embeddings = EmbeddingCache()
            cache, version = session.embeddings, session.scan_version
        key = (model, version, axis, index)
        hit = cache.get(key)
        if hit is not None:
            return hit[0], hit[1], True
        x, geom = preprocess(scan.plane(axis, index), engine.profile)
        embedding = engine.encode(x)
        cache.put(key, (embedding, geom))
        return embedding, geom, False


def box_mask(engine, embedding, geom, box) -> np.ndarray:
    """One xyxy box against a slice embedding -> boolean mask of the slice."""
    prompt = map_boxes(np.asarray(box, dtype=np.float64)[None], geom)
    return logits_to_masks(engine.decode(embedding, prompt), geom, engine.profile)[0]


def plane_to_volume(mask: np.ndarray, shape: tuple[int, int, int], axis: int, index: int) -> np.ndarray:
    full = np.zeros(shape, dtype=bool)
    idx = [slice(None)] * 3
    idx[axis] = index
    full[tuple(idx)] = mask
    return full


def check_box(box, plane_shape: tuple[int, int]) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = (float(v) for v in box)
    h, w = plane_shape
    if not all(np.isfinite([x0, y0, x1, y1])):
        raise ValueError("box coordinates must be finite numbers")
    if x0 > x1 or y0 > y1:
        raise ValueError(f"box {x0:g},{y0:g},{x1:g},{y1:g}: min is larger than max")
    if x0 < 0 or y0 < 0 or x1 > w or y1 > h:
        raise ValueError(f"box {x0:g},{y0:g},{x1:g},{y1:g} lies outside the {w}x{h} slice")
    return x0, y0, x1, y1


class Cancelled(Exception):
    pass


@dataclass
class PropagationJob:
    """The 3D algorithm for one object's box over slices lo..hi, in a background thread.

    It belongs to the session, not to a request: a browser that goes away mid-run changes
    nothing, and the result lands in the session when done (unless cancelled)."""

    object_id: int
    lo: int
    hi: int
    total: int = 0
    done: int = 0
    state: str = "running"  # running | done | cancelled | failed
    message: str = ""
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None
    _cancel: threading.Event = field(default_factory=threading.Event)

    @property
    def running(self) -> bool:
        return self.state == "running"

    def cancel(self) -> None:
        self._cancel.set()

    def status(self) -> dict:
        end = self.finished or time.monotonic()
        return {
            "object": self.object_id,
            "range": [self.lo, self.hi],
            "state": self.state,
            "done": self.done,
            "total": self.total,
            "message": self.message,
            "seconds": round(end - self.started, 2),
        }

    def progress(self, n: int) -> None:
        if self._cancel.is_set():
            raise Cancelled
        self.done += n


def propagate_volume(engine, volume: np.ndarray, axis: int, box, lo: int, hi: int, progress=None) -> np.ndarray:
    """The model's 3D middle-slice algorithm along view `axis` -> boolean (D, H, W) mask."""
    from ..inference.propagate import segment_3d

    order = AXIS_ORDER[axis]
    moved = np.ascontiguousarray(volume.transpose(order))
    x0, y0, x1, y1 = box
    segs = segment_3d(engine, moved, np.array([[x0, y0, lo, x1, y1, hi]], dtype=np.float64), progress=progress)
    return (segs == 1).transpose(np.argsort(order))


def start_propagation(session, engine, model: str, obj, lo: int, hi: int) -> PropagationJob:
    from ..inference.propagate import count_slice_steps
    from .state import SegObject

    scan = session.require_scan()
    if scan.is_2d:
        raise ValueError("propagation needs a volume; this is a 2D image")
    depth = scan.shape[obj.axis]
    if lo > hi:
        raise ValueError(f"slice range {lo}..{hi}: first is after last")
    if hi < 0 or lo > depth - 1:
        raise ValueError(f"slice range {lo}..{hi} lies outside the volume (0..{depth - 1})")
    with session.lock:
        if session.job and session.job.running:
            raise RuntimeError("a propagation is already running in this tab")
        job = PropagationJob(obj.id, lo, hi)
        job.total = count_slice_steps((depth,), np.array([[*obj.box[:2], lo, *obj.box[2:], hi]]), engine.profile)
        session.job = job
        version = session.scan_version

    def run() -> None:
        try:
            full = propagate_volume(engine, scan.image, obj.axis, obj.box, lo, hi, job.progress)
            new = SegObject.from_full(
                full, id=obj.id, label=obj.label, axis=obj.axis, index=obj.index, box=obj.box, model=model,
                span=(max(lo, 0), min(hi, depth - 1)),
            )
            with session.lock:
                current = session.scan_version == version
                kept = current and session.replace_object(new)
            job.state, job.message = ("done", "") if kept else ("cancelled", "the object or image changed meanwhile")
        except Cancelled:
            job.state, job.message = "cancelled", "cancelled"
        except Exception as e:  # shown in the page; the server carries on
            job.state, job.message = "failed", f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        finally:
            job.finished = time.monotonic()

    threading.Thread(target=run, name=f"propagate-{session.id}-{obj.id}", daemon=True).start()
    return job

