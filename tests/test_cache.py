"""The output cache: keys, LRU, the memory budget, size estimates."""

from __future__ import annotations

import numpy as np

from graphgen.cache import OutputCache, estimate_nbytes, node_key
from graphgen.spec import ExecutionOutcome


def outcome(*values):
    return ExecutionOutcome(values=values)


def test_key_depends_on_every_part():
    base = node_key("T", "1", {"a": 1}, [("x", "k1", 0)], None)
    assert base == node_key("T", "1", {"a": 1}, [("x", "k1", 0)], None)
    variants = [
        node_key("U", "1", {"a": 1}, [("x", "k1", 0)], None),
        node_key("T", "2", {"a": 1}, [("x", "k1", 0)], None),
        node_key("T", "1", {"a": 2}, [("x", "k1", 0)], None),
        node_key("T", "1", {"a": 1}, [("x", "k2", 0)], None),
        node_key("T", "1", {"a": 1}, [("x", "k1", 1)], None),
        node_key("T", "1", {"a": 1}, [("y", "k1", 0)], None),
        node_key("T", "1", {"a": 1}, [("x", "k1", 0)], (10, 20)),
        node_key("T", "1", {"a": 1.0000001}, [("x", "k1", 0)], None),
    ]
    assert len({base, *variants}) == len(variants) + 1
    assert node_key("T", "1", {"a": 1, "b": 2}, [], None) == node_key("T", "1", {"b": 2, "a": 1}, [], None)


def test_lru_by_entries():
    cache = OutputCache(max_entries=2, max_bytes=10**9)
    cache.put("a", outcome(1))
    cache.put("b", outcome(2))
    assert cache.get("a") is not None  # a is now most recent
    cache.put("c", outcome(3))
    assert "b" not in cache and "a" in cache and "c" in cache
    assert cache.stats().evictions == 1


def test_memory_budget_evicts_and_refuses_oversized():
    cache = OutputCache(max_entries=100, max_bytes=1000)
    cache.put("a", outcome(np.zeros(100, dtype=np.float32)))  # 400 bytes
    cache.put("b", outcome(np.zeros(100, dtype=np.float32)))
    cache.put("c", outcome(np.zeros(100, dtype=np.float32)))
    assert "a" not in cache and cache.stats().nbytes == 800
    assert cache.put("huge", outcome(np.zeros(1000, dtype=np.float32))) is False
    assert "huge" not in cache and "b" in cache


def test_estimate_nbytes():
    class Handle:
        def __graphgen_nbytes__(self):
            return 0

    class Tensorish:
        def element_size(self):
            return 2

        def nelement(self):
            return 10

    assert estimate_nbytes((np.zeros(10, dtype=np.float64), [b"abc", {"k": "de"}])) == 85
    assert estimate_nbytes(Handle()) == 0
    assert estimate_nbytes(Tensorish()) == 20
    assert estimate_nbytes(5) == 0
