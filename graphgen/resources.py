"""Shared resources: expensive objects (loaded models) that every node and run of an Engine shares.

Node packs ask for a resource by a key that identifies it (file identity, dtype, device); the
first request loads it, later ones get the same object. Entries carry an estimated size and are
evicted least-recently-used first when a budget is exceeded (skipping those in use); `free()`
drops them all (an app calls `Engine.free_resources()` to give memory back). Loaded models live in
`graphgen.models.ModelStore`, which is this cache plus the accelerator's budget.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

from graphgen.cache import estimate_nbytes


@dataclass
class ResourceEntry:
    value: Any
    nbytes: int
    on_evict: Callable[[Any], None] | None = None


def _resource_size(value: Any) -> int:
    own = getattr(value, "resource_nbytes", None)
    return int(own()) if callable(own) else estimate_nbytes(value)


def _busy(value: Any) -> bool:
    """A resource in use right now (e.g. a model inside `handle.use()`) is never evicted."""
    busy = getattr(value, "resource_busy", None)
    return bool(busy()) if callable(busy) else False


class ResourceCache:
    """A keyed store of shared objects with an optional byte budget. Thread-safe.

    Args:
        max_bytes: Evict least-recently-used entries beyond this estimate (None: no limit).
    """

    def __init__(self, max_bytes: int | None = None) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[Hashable, ResourceEntry] = OrderedDict()
        self._lock = threading.RLock()
        self.loads = 0

    def get_or_load(self, key: Hashable, loader: Callable[[], Any], *, nbytes: int | None = None,
                    on_evict: Callable[[Any], None] | None = None) -> Any:
        """Return the resource for `key`, calling `loader()` the first time."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
                return entry.value
            value = loader()
            self.loads += 1
            size = nbytes if nbytes is not None else _resource_size(value)
            self._entries[key] = ResourceEntry(value, size, on_evict)
            self._enforce_budget(keep=key)
            return value

    def get(self, key: Hashable) -> Any | None:
        with self._lock:
            entry = self._entries.get(key)
            return None if entry is None else entry.value

    def __contains__(self, key: Hashable) -> bool:
        return key in self._entries

    def keys(self) -> list[Hashable]:
        return list(self._entries)

    @property
    def nbytes(self) -> int:
        return sum(e.nbytes for e in self._entries.values())

    def release(self, key: Hashable) -> bool:
        """Drop one resource; returns whether it was there."""
        with self._lock:
            entry = self._entries.pop(key, None)
        if entry is None:
            return False
        if entry.on_evict:
            entry.on_evict(entry.value)
        return True

    def free(self) -> int:
        """Drop every resource; returns how many were dropped."""
        with self._lock:
            entries = list(self._entries.values())
            self._entries.clear()
        for entry in entries:
            if entry.on_evict:
                entry.on_evict(entry.value)
        return len(entries)

    def _enforce_budget(self, keep: Hashable) -> None:
        if self.max_bytes is None:
            return
        for key in list(self._entries):  # least recently used first
            if self.nbytes <= self.max_bytes:
                break
            if key != keep and not _busy(self._entries[key].value):
                self.release(key)
