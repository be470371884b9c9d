"""The embedding cache: a byte budget that is never exceeded, least recently used out first."""
import numpy as np

from MedSAMLiteLib.core.embedding_cache import MB, EmbeddingCache, default_bytes


def _embedding(value: float) -> np.ndarray:
    return np.full((1, 256, 64, 64), value, np.float32)  # 4 MiB, a real embedding's size


def test_budget_is_never_exceeded_and_least_recently_used_goes_first():
    cache = EmbeddingCache(max_bytes=3 * 4 * MB)
    for z in range(3):
        cache.put(("volume", z), _embedding(z))
    assert cache.get(("volume", 0))[0, 0, 0, 0] == 0  # slice 0 is now the most recent
    cache.put(("volume", 3), _embedding(3))
    assert ("volume", 1) not in cache and ("volume", 0) in cache and len(cache) == 3
    assert cache.nbytes == 3 * 4 * MB <= cache.max_bytes
    cache.resize(4 * MB)
    assert len(cache) == 1 and ("volume", 3) in cache
    assert (cache.hits, cache.misses) == (1, 0)


def test_stored_embeddings_are_read_only_and_replacing_keeps_the_count_right():
    cache = EmbeddingCache(max_bytes=10 * MB)
    cache.put("a", _embedding(1))
    cache.put("a", _embedding(2))
    assert cache.nbytes == 4 * MB and cache.get("a")[0, 0, 0, 0] == 2
    assert not cache.get("a").flags.writeable
    cache.put("huge", np.zeros(11 * MB, np.uint8))  # larger than the budget: not kept, nothing evicted
    assert "huge" not in cache and "a" in cache
    assert cache.get("missing") is None and cache.misses == 1


def test_budget_setting(monkeypatch):
    monkeypatch.delenv("MEDSAMLITE_CACHE_MB", raising=False)
    assert default_bytes() == 512 * MB
    monkeypatch.setenv("MEDSAMLITE_CACHE_MB", "64")
    assert EmbeddingCache().max_bytes == 64 * MB
