"""Per-tab state: labels, segmented objects, undo history, and the label map they compose to.

Objects are immutable, so an undo snapshot is just the previous tuple of objects and labels
(masks are shared, not copied). Later objects win where they overlap, as in `predict`.
"""
from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass, field, replace

import numpy as np

PALETTE = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#46f0f0", "#f032e6", "#bcf60c", "#fabebe", "#008080")
MAX_UNDO = 50
MAX_LABELS = 255  # keeps PNG label maps 8-bit and the palette readable


class StateError(ValueError):
    """A request that does not fit the current state (unknown object, no scan open...)."""


@dataclass(frozen=True)
class Label:
    value: int  # the number written in the label map
    name: str
    color: str  # "#rrggbb"

    def as_dict(self) -> dict:
        return {"value": self.value, "name": self.name, "color": self.color}


@dataclass(frozen=True)
class SegObject:
    """One box and its mask. The box lies on slice `index` of view `axis` (0 axial, 1 coronal,
    2 sagittal) in that slice's pixel coordinates; `span` is the propagated slice range."""

    id: int
    label: int
    axis: int
    index: int
    box: tuple[float, float, float, float]
    origin: tuple[int, int, int]  # (d, h, w) corner of `mask` in the volume
    mask: np.ndarray = field(repr=False)  # bool crop of the volume
    model: str = ""
    span: tuple[int, int] | None = None

    @classmethod
    def from_full(cls, full: np.ndarray, **kw) -> "SegObject":
        """Store only the bounding crop of a full-volume boolean mask."""
        nz = [np.flatnonzero(full.any(axis=tuple(a for a in range(3) if a != k))) for k in range(3)]
        if any(n.size == 0 for n in nz):
            return cls(origin=(0, 0, 0), mask=np.zeros((0, 0, 0), bool), **kw)
        lo = tuple(int(n[0]) for n in nz)
        crop = tuple(slice(n[0], n[-1] + 1) for n in nz)
        return cls(origin=lo, mask=np.ascontiguousarray(full[crop]), **kw)

    @property
    def voxels(self) -> int:
        return int(self.mask.sum())

    def paint_plane(self, out: np.ndarray, axis: int, index: int, value: int) -> None:
        """Write `value` where this object covers slice `index` of view `axis` (out: that slice)."""
        o, m = self.origin, self.mask
        if m.size == 0 or not o[axis] <= index < o[axis] + m.shape[axis]:
            return
        plane = np.take(m, index - o[axis], axis=axis)
        r, c = (o[k] for k in range(3) if k != axis)
        out[r : r + plane.shape[0], c : c + plane.shape[1]][plane] = value

    def full(self, shape: tuple[int, int, int]) -> np.ndarray:
        """The boolean mask over the whole scan."""
        out = np.zeros(shape, dtype=bool)
        self.paint(out, True)
        return out

    def paint(self, out: np.ndarray, value: int) -> None:
        if self.mask.size:
            d, h, w = self.origin
            a, b, c = self.mask.shape
            out[d : d + a, h : h + b, w : w + c][self.mask] = value

    def summary(self) -> dict:
        return {
            "id": self.id,
            "label": self.label,
            "axis": self.axis,
            "index": self.index,
            "box": [float(v) for v in self.box],
            "span": list(self.span) if self.span else None,
            "voxels": self.voxels,
            "model": self.model,
        }


class Session:
    """Everything one browser tab works on. `lock` guards the fields; inference runs outside it."""

    def __init__(self, sid: str) -> None:
        self.id = sid
        self.lock = threading.RLock()
        self.embed_lock = threading.Lock()  # one embedding computation at a time per tab
        self.embed_requests = 0  # counts /embed calls: only the latest one is still wanted
        self.scan = None  # scan.Scan
        self.scan_version = 0  # bumps on open and preset change: keys embeddings and slice images
        self.labels: dict[int, Label] = {}
        self.objects: tuple[SegObject, ...] = ()
        self.history: list[tuple[dict[int, Label], tuple[SegObject, ...]]] = []
        self.edit_version = 0  # bumps on every change of objects/labels: keys overlays
        self.embeddings = None  # segment.EmbeddingCache, per scan_version
        self.job = None  # segment.PropagationJob
        self._next_id = 1
        self.last_seen = time.monotonic()

    # -- scan ------------------------------------------------------------------------------
    def set_scan(self, scan) -> None:
        with self.lock:
            self.scan = scan
            self.scan_version += 1
            self.labels = {1: Label(1, "label 1", PALETTE[0])}
            self.objects, self.history = (), []
            self.edit_version += 1
            self.embeddings = None

    def require_scan(self):
        if self.scan is None:
            raise StateError("no image is open")
        return self.scan

    # -- edits (all undoable) --------------------------------------------------------------
    def _checkpoint(self) -> None:
        self.history.append((dict(self.labels), self.objects))
        del self.history[:-MAX_UNDO]
        self.edit_version += 1

    def new_object_id(self) -> int:
        with self.lock:
            oid, self._next_id = self._next_id, self._next_id + 1
            return oid

    def get_object(self, oid: int) -> SegObject:
        for obj in self.objects:
            if obj.id == oid:
                return obj
        raise StateError(f"no object {oid}")

    def add_object(self, obj: SegObject) -> None:
        with self.lock:
            if obj.label not in self.labels:
                raise StateError(f"no label {obj.label}")
            self._checkpoint()
            self.objects = self.objects + (obj,)

    def replace_object(self, obj: SegObject) -> bool:
        """Swap in a new version of an object (re-run, propagation). False if it was deleted meanwhile."""
        with self.lock:
            if not any(o.id == obj.id for o in self.objects):
                return False
            self._checkpoint()
            self.objects = tuple(obj if o.id == obj.id else o for o in self.objects)
            return True

    def delete_object(self, oid: int) -> None:
        with self.lock:
            self.get_object(oid)
            self._checkpoint()
            self.objects = tuple(o for o in self.objects if o.id != oid)

    def add_label(self, name: str | None = None, color: str | None = None) -> Label:
        with self.lock:
            if len(self.labels) >= MAX_LABELS:
                raise StateError(f"at most {MAX_LABELS} labels")
            value = next(v for v in range(1, MAX_LABELS + 1) if v not in self.labels)
            label = Label(value, name or f"label {value}", color or PALETTE[(value - 1) % len(PALETTE)])
            self._checkpoint()
            self.labels = {**self.labels, value: label}
            return label

    def edit_label(self, value: int, name: str | None = None, color: str | None = None) -> Label:
        with self.lock:
            if value not in self.labels:
                raise StateError(f"no label {value}")
            old = self.labels[value]
            label = replace(old, name=old.name if name is None else name, color=old.color if color is None else color)
            self._checkpoint()
            self.labels = {**self.labels, value: label}
            return label

    def delete_label(self, value: int) -> None:
        """Removes the label and its objects (undo brings both back)."""
        with self.lock:
            if value not in self.labels:
                raise StateError(f"no label {value}")
            if len(self.labels) == 1:
                raise StateError("the last label cannot be deleted")
            self._checkpoint()
            self.labels = {v: lab for v, lab in self.labels.items() if v != value}
            self.objects = tuple(o for o in self.objects if o.label != value)

    def undo(self) -> bool:
        with self.lock:
            if not self.history:
                return False
            self.labels, self.objects = self.history.pop()
            self.edit_version += 1
            return True

    # -- label maps ------------------------------------------------------------------------
    def label_plane(self, axis: int, index: int) -> np.ndarray:
        scan = self.require_scan()
        shape = [n for k, n in enumerate(scan.shape) if k != axis]
        out = np.zeros(shape, dtype=np.uint16)
        with self.lock:
            objects = self.objects
        for obj in objects:
            obj.paint_plane(out, axis, index, obj.label)
        return out

    def label_map(self, objects: list | None = None) -> np.ndarray:
        """(D, H, W) uint16 label map of the whole scan (of `objects`, a snapshot, when given)."""
        scan = self.require_scan()
        out = np.zeros(scan.shape, dtype=np.uint16)
        if objects is None:
            with self.lock:
                objects = self.objects
        for obj in objects:
            obj.paint(out, obj.label)
        return out

    def summary(self) -> dict:
        with self.lock:
            job = self.job.status() if self.job else None
            return {
                "session": self.id,
                "scan": self.scan.summary() if self.scan else None,
                "scan_version": self.scan_version,
                "edit_version": self.edit_version,
                "labels": [lab.as_dict() for lab in self.labels.values()],
                "objects": [o.summary() for o in self.objects],
                "can_undo": bool(self.history),
                "job": job,
            }


class SessionStore:
    """Sessions by id; the least recently used idle ones go when there are too many."""

    def __init__(self, limit: int = 16) -> None:
        self.limit = limit
        self.sessions: dict[str, Session] = {}
        self.lock = threading.Lock()

    def create(self) -> Session:
        with self.lock:
            if len(self.sessions) >= self.limit:
                idle = [s for s in self.sessions.values() if not (s.job and s.job.running)]
                for s in sorted(idle, key=lambda s: s.last_seen)[: len(self.sessions) - self.limit + 1]:
                    del self.sessions[s.id]
            session = Session(secrets.token_urlsafe(12))
            self.sessions[session.id] = session
            return session

    def get(self, sid: str) -> Session:
        session = self.sessions.get(sid)
        if session is None:
            raise KeyError(sid)
        session.last_seen = time.monotonic()
        return session

    def drop(self, sid: str) -> None:
        with self.lock:
            session = self.sessions.pop(sid, None)
        if session and session.job:
            session.job.cancel()
