"""Image embeddings kept between Segment clicks, bounded in bytes, least recently used out first.

A key names exactly what the embedding was computed from: the image (its identity and modification
time, the slice axis, the preset), the backend (model, weights, precision) and the slice. Any change
to one of them is a new key, so a stale embedding can never be served; old ones age out. Keys given
to `keep` (the slices of the results kept for corrections) age out only after all others, so a correction
decodes from cached embeddings even after other work filled the cache.
"""
from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Hashable

import numpy as np

MB = 1024 * 1024


def default_bytes() -> int:
    """The budget: MEDSAMLITE_CACHE_MB (a setting; default 512 MB = 128 LiteMedSAM slices)."""
    try:
        return max(0, int(os.environ.get("MEDSAMLITE_CACHE_MB", "512"))) * MB
    except ValueError:
        return 512 * MB


class EmbeddingCache:
    """Thread-safe LRU of numpy embeddings with a byte budget."""

    def __init__(self, max_bytes: int | None = None) -> None:
        self.max_bytes = default_bytes() if max_bytes is None else int(max_bytes)
        self._items: OrderedDict[Hashable, np.ndarray] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._kept: frozenset = frozenset()
        self.hits = self.misses = 0

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._items

    def get(self, key: Hashable) -> np.ndarray | None:
        with self._lock:
            value = self._items.get(key)
            if value is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return value

    def put(self, key: Hashable, value: np.ndarray) -> None:
        """Store `value` (read-only from now on); evict the least recently used until within budget."""
        if value.nbytes > self.max_bytes:
            return
        value.setflags(write=False)
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old.nbytes
            self._items[key] = value
            self._bytes += value.nbytes
            self._evict(spare=key)

    def keep(self, keys) -> None:
        """Evict these keys only when nothing else is left to evict (they replace the keys kept before)."""
        with self._lock:
            self._kept = frozenset(keys)

    def _evict(self, spare: Hashable = None) -> None:
        """Least recently used first, kept keys last, `spare` (the item just stored) never: until within budget."""
        while self._bytes > self.max_bytes and self._items:
            victim = next((k for k in self._items if k not in self._kept and k != spare), None)
            if victim is None:
                victim = next(k for k in self._items if k != spare)
            self._bytes -= self._items.pop(victim).nbytes

    def resize(self, max_bytes: int) -> None:
        with self._lock:
            self.max_bytes = int(max_bytes)
            self._evict()

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0
