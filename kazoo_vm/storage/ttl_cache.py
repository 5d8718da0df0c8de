"""A small in-process memory of what was read from CouchDB, for a few seconds.

Several instances share one CouchDB, so what one instance remembers can be stale by
another's writes: every entry is kept at most ``ttl`` seconds (0 keeps nothing), and
the instance that writes forgets its own entry at once. The size is bounded: the
oldest entries go first.

A read that was sent before a write and answers after it holds what was there before the
write: ``put(..., since=cache.mark())`` with the mark taken before the read keeps nothing
when anything was forgotten meanwhile, so a write counts at once for this instance.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")
DEFAULT_SIZE = 4096


class TtlCache(Generic[K, V]):
    def __init__(self, ttl: float, size: int = DEFAULT_SIZE) -> None:
        self.ttl = ttl
        self._size = size
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self._forgotten = 0  # how many forgets so far: the mark of ``put(since=…)``

    def get(self, key: K) -> V | None:
        """The value remembered for ``key`` if it is younger than the TTL."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] <= time.monotonic():
            del self._entries[key]
            return None
        return entry[1]

    def mark(self) -> int:
        """To take before a read whose answer may be put (see ``put``)."""
        return self._forgotten

    def put(self, key: K, value: V, *, since: int | None = None) -> None:
        """Remember ``value``; with ``since`` (a ``mark()``), only if nothing was forgotten
        since that mark (the value may predate a write)."""
        if self.ttl <= 0 or (since is not None and since != self._forgotten):
            return
        self._entries.pop(key, None)
        self._entries[key] = (time.monotonic() + self.ttl, value)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)

    def forget(self, key: K) -> None:
        self._forgotten += 1
        self._entries.pop(key, None)

    def clear(self) -> None:
        self._forgotten += 1
        self._entries.clear()
