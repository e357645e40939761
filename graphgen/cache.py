"""The output cache: node outputs by lineage key, bounded by entry count and estimated bytes.

A node's key is a hash of its type, version, constant inputs, the keys of the nodes feeding it,
and the fingerprint it computes for outside state. Tensors are never hashed: a node's outputs are
identified by how they were made, not by their contents.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

from graphgen.spec import ExecutionOutcome


def node_key(type_name: str, version: str, constants: dict[str, Any], upstream: list[tuple[str, str, int]],
             fingerprint: Hashable | None) -> str:
    """The lineage key of a node.

    Args:
        type_name: Node type.
        version: Node version (bumping it invalidates old results).
        constants: Constant inputs, JSON-able.
        upstream: `(input name, source key, output index)` for each linked input.
        fingerprint: Outside state reported by the node, or None.
    """
    # repr() of JSON-like values is canonical once dict items are sorted, and much cheaper than
    # json.dumps; it distinguishes 1, 1.0, True and "1".
    payload = repr((type_name, version, _canonical(constants), sorted(upstream), fingerprint))
    return hashlib.blake2b(payload.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def _canonical(value: Any) -> Any:
    if isinstance(value, dict):
        return tuple(sorted((str(k), _canonical(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_canonical(v) for v in value) if any(isinstance(v, (dict, list, tuple)) for v in value) \
            else tuple(value)
    return value


def estimate_nbytes(value: Any, _depth: int = 0) -> int:
    """Rough memory held by a value: tensors, arrays, images, bytes, and containers of them.

    An object may answer for itself with `__graphgen_nbytes__()`, e.g. a handle to a model that a
    resource cache owns returns 0 so that the model is not counted twice.
    """
    if _depth > 8 or value is None or isinstance(value, (bool, int, float)):
        return 0
    own = getattr(value, "__graphgen_nbytes__", None)
    if callable(own):
        return int(own())
    if isinstance(value, (bytes, bytearray, str)):
        return len(value)
    if hasattr(value, "element_size") and hasattr(value, "nelement"):  # torch.Tensor
        return int(value.element_size() * value.nelement())
    nbytes = getattr(value, "nbytes", None)  # numpy arrays
    if isinstance(nbytes, int):
        return nbytes
    if hasattr(value, "getbands") and hasattr(value, "size"):  # PIL images
        width, height = value.size
        return int(width * height * len(value.getbands()))
    if isinstance(value, dict):
        return sum(estimate_nbytes(v, _depth + 1) for v in value.values())
    if isinstance(value, (list, tuple, set, frozenset)):
        return sum(estimate_nbytes(v, _depth + 1) for v in value)
    parameters = getattr(value, "parameters", None)  # torch.nn.Module
    if callable(parameters):
        try:
            return sum(estimate_nbytes(p, _depth + 1) for p in parameters())
        except Exception:
            return 0
    return 0


def default_memory_budget() -> int:
    """A quarter of physical memory, capped at 8 GiB."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 8 << 30
    return int(min(total // 4, 8 << 30))


@dataclass
class CacheStats:
    entries: int
    nbytes: int
    hits: int
    misses: int
    evictions: int


class OutputCache:
    """An LRU of node outputs with an entry limit and a byte budget. Thread-safe.

    Args:
        max_entries: Most entries kept.
        max_bytes: Most estimated bytes kept; None: `default_memory_budget()`. An output larger
            than the whole budget is not cached at all.
    """

    def __init__(self, max_entries: int = 10_000, max_bytes: int | None = None) -> None:
        self.max_entries = max_entries
        self.max_bytes = default_memory_budget() if max_bytes is None else max_bytes
        self._entries: OrderedDict[str, tuple[ExecutionOutcome, int]] = OrderedDict()
        self._nbytes = 0
        self._lock = threading.Lock()
        self.hits = self.misses = self.evictions = 0

    def get(self, key: str) -> ExecutionOutcome | None:
        with self._lock:
            item = self._entries.get(key)
            if item is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return item[0]

    def put(self, key: str, outcome: ExecutionOutcome) -> bool:
        """Store an outcome; returns False when it is too large to keep."""
        size = estimate_nbytes(outcome.values)
        if size > self.max_bytes or self.max_entries <= 0:
            return False
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._nbytes -= old[1]
            self._entries[key] = (outcome, size)
            self._nbytes += size
            while len(self._entries) > self.max_entries or self._nbytes > self.max_bytes:
                _, (_, evicted_size) = self._entries.popitem(last=False)
                self._nbytes -= evicted_size
                self.evictions += 1
        return True

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._nbytes = 0

    def stats(self) -> CacheStats:
        return CacheStats(len(self._entries), self._nbytes, self.hits, self.misses, self.evictions)
