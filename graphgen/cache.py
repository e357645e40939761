"""The output cache: node outputs by lineage key, bounded by entry count and estimated bytes.

A node's key is a hash of its type, version, constant inputs, the keys of the nodes feeding it,
and the fingerprint it computes for outside state. Tensors are never hashed: a node's outputs are
identified by how they were made, not by their contents.

`CachePolicy` is the per-run policy: each node's key, whether its result may come from (and go
to) the cache, and why a node executed (`RunResult.reasons`).
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from graphgen.spec import ALWAYS_RERUN, ExecutionOutcome

if TYPE_CHECKING:
    from graphgen.context import EngineSettings
    from graphgen.validation import PreparedNode


def node_key(type_name: str, version: str, constants: dict[str, Any], upstream: list[tuple[str, str, int]],
             fingerprint: Hashable | None, lineage: str = "") -> str:
    """The lineage key of a node.

    Args:
        type_name: Node type.
        version: Node version (bumping it invalidates old results).
        constants: Constant inputs, JSON-able.
        upstream: `(input name, source key, output index)` for each linked input.
        fingerprint: Outside state reported by the node, or None.
        lineage: For a node an expansion added: the expanding node's key and the node's id.
    """
    # repr() of JSON-like values is canonical once dict items are sorted, and much cheaper than
    # json.dumps; it distinguishes 1, 1.0, True and "1".
    payload = repr((type_name, version, _canonical(constants), sorted(upstream), fingerprint, lineage))
    return hashlib.blake2b(payload.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


_PLAIN = (str, int, float, bool, type(None))


def _plain_or_kind(value: Any) -> Any:
    """A constant an expansion passed on, for its key: JSON-like values as they are, anything else
    (a tensor, a model) by type only; its content is fixed by the expanding node's key."""
    if isinstance(value, _PLAIN):
        return value
    if isinstance(value, (list, tuple)):
        return tuple(_plain_or_kind(v) for v in value)
    if isinstance(value, dict):
        return {str(k): _plain_or_kind(v) for k, v in value.items()}
    return f"<{type(value).__module__}.{type(value).__qualname__}>"


def _canonical(value: Any) -> Any:
    if isinstance(value, dict):
        return tuple(sorted((str(k), _canonical(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_canonical(v) for v in value) if any(isinstance(v, (dict, list, tuple)) for v in value) \
            else tuple(value)
    return value


_FREE = frozenset({type(None), bool, int, float})


def estimate_nbytes(value: Any, _depth: int = 0) -> int:
    """Rough memory held by a value: tensors, arrays, images, bytes, and containers of them.

    An object may answer for itself with `__graphgen_nbytes__()`, e.g. a handle to a model that a
    resource cache owns returns 0 so that the model is not counted twice.
    """
    kind = type(value)
    if kind in _FREE or _depth > 8:
        return 0
    if kind is list or kind is tuple:  # node outputs: a tuple of lists of items, mostly small
        total = 0
        for v in value:
            inner = type(v)
            if inner in _FREE or (inner is list and len(v) == 1 and type(v[0]) in _FREE):
                continue  # a plain item, or an output holding one (no recursion for the usual node)
            total += estimate_nbytes(v, _depth + 1)
        return total
    if isinstance(value, (bool, int, float)):
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


# Why a node executed (RunResult.reasons, NodeStarted.reason).
REASON_NOT_CACHED = "no cached result for these inputs"
REASON_FORCED = "forced"
REASON_ALWAYS = "it re-runs every time"
REASON_UPSTREAM = "a node it depends on re-ran"
REASON_NO_CACHE = "the cache is off for this run"
REASON_FINGERPRINT_FAILED = "its fingerprint failed"


class CachePolicy:
    """One run's cache policy: node keys, what may be served from and stored in the cache, and why.

    A node re-runs when forced, when it is non-deterministic, when its fingerprint says so
    (`ALWAYS_RERUN`), or when a node it depends on (linked, lazily or not) re-ran for one of these
    reasons ("tainted"): then its key cannot identify its outputs. Results made from untainted
    inputs are stored; a forced re-run of a deterministic node refreshes its entry.

    Args:
        cache: The engine's output cache.
        settings: The run's settings (fingerprints read folders).
        force: Node ids to re-run.
        use_cache: False: nothing is read from or written to the cache.
    """

    __slots__ = ("cache", "settings", "forced", "use_cache", "keys", "tainted", "storable", "stored")

    def __init__(self, cache: OutputCache, settings: EngineSettings, force: Iterable[str] = (),
                 use_cache: bool = True) -> None:
        self.cache = cache
        self.settings = settings
        self.forced = set(force)
        self.use_cache = use_cache
        self.keys: dict[str, str] = {}
        self.tainted: dict[str, str] = {}  # node id -> why it must run
        self.storable: set[str] = set()
        self.stored: set[str] = set()  # keys this run stored

    def add(self, node: PreparedNode) -> str:
        """Compute a node's key (the keys of its sources first); raises what its fingerprint raises
        (the node then has a key nothing shares and must run: see `add_all`)."""
        failures = self.add_all((node,))
        if failures:
            raise failures[0][1]
        return self.keys[node.node_id]

    def add_all(self, nodes: Iterable[PreparedNode]) -> list[tuple[PreparedNode, Exception]]:
        """`add` for each node, in order (sources first); one loop, since every run keys every
        node. A node whose fingerprint raises gets a key of its own and is tainted; it is
        returned with the exception, the others go on."""
        keys = self.keys
        tainted = self.tainted
        forced = self.forced
        use_cache = self.use_cache
        failures: list[tuple[PreparedNode, Exception]] = []
        for node in nodes:
            spec = node.spec
            node_id = node.node_id
            fingerprint = None
            if spec.fingerprint is not None:
                inputs = node.constants
                if spec.fingerprint_links and node.links:
                    inputs = {**inputs, **dict.fromkeys(node.links)}
                try:
                    fingerprint = spec.fingerprint(dict(inputs), self.settings)
                except Exception as exc:
                    keys[node_id] = "broken:" + node_id
                    tainted[node_id] = REASON_FINGERPRINT_FAILED
                    failures.append((node, exc))
                    continue
            always = fingerprint is ALWAYS_RERUN
            upstream = []
            upstream_tainted = False
            for name, (src, index) in node.links.items():
                upstream.append((name, keys[src], index))
                if src in tainted:
                    upstream_tainted = True
            lineage = ""
            constants: dict[str, Any] = node.constants
            if node.parent is not None:
                lineage = keys.get(node.parent, "") + "/" + node_id
                constants = {k: _plain_or_kind(v) for k, v in constants.items()}
                upstream_tainted = upstream_tainted or node.parent in tainted
            keys[node_id] = node_key(spec.type_name + "@" + spec.pack, spec.version, constants, upstream,
                                     None if always else fingerprint, lineage)
            if node_id in forced:
                tainted[node_id] = REASON_FORCED
            elif not spec.deterministic or always:
                tainted[node_id] = REASON_ALWAYS
            elif upstream_tainted:
                tainted[node_id] = REASON_UPSTREAM
            elif not use_cache:
                tainted[node_id] = REASON_NO_CACHE
            if use_cache and (node_id not in tainted or (
                    node_id in forced and spec.deterministic and not always and not upstream_tainted)):
                self.storable.add(node_id)
        return failures

    def lookup(self, node_id: str) -> ExecutionOutcome | None:
        """The cached outcome of a node, unless it must run."""
        if node_id in self.tainted:
            return None
        return self.cache.get(self.keys[node_id])

    def recheck(self, node_id: str) -> ExecutionOutcome | None:
        """Look again just before running: an identical node earlier in this run may have stored
        the result meanwhile (only keys this run stored are looked up again)."""
        key = self.keys[node_id]
        if key not in self.stored or node_id in self.tainted:
            return None
        return self.cache.get(key)

    def peek(self, node_id: str) -> ExecutionOutcome | None:
        """The cached outcome of a node the run did not need (no miss counted when absent)."""
        key = self.keys.get(node_id)
        if key is None or node_id in self.tainted or key not in self.cache:
            return None
        return self.cache.get(key)

    def store(self, node_id: str, outcome: ExecutionOutcome) -> None:
        if node_id in self.storable:
            key = self.keys[node_id]
            self.cache.put(key, outcome)
            self.stored.add(key)

    def reason(self, node_id: str) -> str:
        """Why a node executed."""
        return self.tainted.get(node_id, REASON_NOT_CACHED)
