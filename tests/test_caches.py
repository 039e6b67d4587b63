"""Process-wide caches are bounded: loading many distinct modules does not grow them past
their bounds, and a module whose entries were evicted still loads and runs."""

from __future__ import annotations

import pyarrow as pa
import pytest
import wat

import wasmudf
from wasmudf import module as module_py
from wasmudf.caches import LruCache
from wasmudf.runtime import ENGINES


def test_least_recently_used_goes_first():
    cache: LruCache[str, int] = LruCache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # "a" is now the most recent
    cache.put("c", 3)
    assert "b" not in cache and cache.get("a") == 1 and cache.get("c") == 3
    assert cache.put("c", 4) == 3  # the first value stays
    assert cache.get_or_make("d", lambda: 5) == 5 and len(cache) == 2
    with pytest.raises(ValueError):
        LruCache(0)


def test_many_distinct_modules_stay_within_the_bounds(monkeypatch):
    bound = 3
    for cache in (module_py._PARSED, module_py._FACTS, module_py._PASSED_CHECKS, ENGINES._modules):
        monkeypatch.setattr(cache, "bound", bound)
    names = [f"count_{i}" for i in range(bound + 4)]
    for name in names:
        mod = wasmudf.load(wat.counter(name), limits=wasmudf.Limits(fuel=None))
        assert mod.functions[name](pa.array([0])).to_pylist() == [1]
    for cache in (module_py._PARSED, module_py._FACTS, module_py._PASSED_CHECKS, ENGINES._modules):
        assert len(cache) <= bound
    # The first module's entries are gone; loading it again works as the first time did.
    again = wasmudf.load(wat.counter(names[0]))
    assert again.functions[names[0]](pa.array([0])).to_pylist() == [1]
