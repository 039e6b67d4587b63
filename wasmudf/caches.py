"""Bounded process-wide caches: a long-lived process that loads many distinct modules (a
SaaS host with one module per tenant) must not grow without limit.

Each cache keeps its most recently used entries up to its bound; the bounds are set where
the caches are made (module.py, runtime.py) and listed in docs/architecture.md.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class LruCache(Generic[K, V]):
    """A thread-safe mapping of at most ``bound`` entries, least recently used out first."""

    def __init__(self, bound: int):
        if bound < 1:
            raise ValueError("a cache holds at least one entry")
        self.bound = bound
        self._entries: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        with self._lock:
            value = self._entries.get(key)
            if value is not None:
                self._entries.move_to_end(key)
            return value

    def put(self, key: K, value: V) -> V:
        """Store ``value`` unless ``key`` has one already; return the one stored."""
        with self._lock:
            found = self._entries.setdefault(key, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self.bound:
                self._entries.popitem(last=False)
            return found

    def get_or_make(self, key: K, make: Callable[[], V]) -> V:
        """The value for ``key``, made now (outside the lock) if there is none."""
        found = self.get(key)
        return found if found is not None else self.put(key, make())

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)
