"""The engine's model store: every family's loaded models, under a RAM and a VRAM budget.

One `ModelStore` per Engine (it is the engine's resource cache, `ctx.resources`), shared by every
node, run and family pack. A loader node asks the store for a model with `ModelStore.load`; the
store loads it once per key (family, kind, file identity, dtype, device, extra key) and returns a
`ModelHandle`.

Budgets:

* RAM (`max_bytes`, the Engine's `resource_bytes`): bytes of model weights the store keeps loaded
  at all. Beyond it the least recently used model not in use is *dropped*: the store holds the
  only strong reference to a module, so dropping it frees its memory (host and device).
* VRAM (`vram_budget`, default the card's memory minus 3 GB or `GRAPHGEN_GPU_BUDGET_GB`): bytes of
  weights on the accelerator; beyond it the least recently used model is moved to the host
  (see `device_memory` for the offload policy and streaming).

Handles hold a key and the recipe to load, never the module: a handle kept in the output cache
(or by an app) does not keep an evicted model alive; using it again reloads the model.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from graphgen.resources import ResourceCache

from .device_memory import OFFLOAD_MODES, DeviceMemory, Mover
from .identity import file_identity

#: What a loader returns: a module, or (module, extras) where extras are small companions
#: (a tokenizer, a config) kept with the module and dropped with it.
Loader = Callable[[], Any]


@dataclass(eq=False)
class LoadedModel:
    """One loaded model as the store holds it: the only strong reference to its module."""

    key: Hashable
    family: str
    kind: str
    module: Any
    device: Any
    offload: str
    extras: dict[str, Any] = field(default_factory=dict)
    nbytes: int = 0
    in_use: int = 0
    host_copy: Any = None
    streaming: bool = False

    def resource_nbytes(self) -> int:
        return self.nbytes

    def resource_busy(self) -> bool:
        """In use by a node: the RAM budget must not drop it now."""
        return self.in_use > 0


def module_nbytes(module: Any) -> int:
    """Bytes of a module's parameters and buffers."""
    tensors = list(module.parameters()) + list(module.buffers()) if hasattr(module, "parameters") else []
    return sum(t.numel() * t.element_size() for t in tensors)


@dataclass(frozen=True, eq=False)
class ModelHandle:
    """What loader nodes return: a key into the store and how to (re)load the model, not the model.

    Attributes:
        store: The engine's store.
        key: The store key.
        family: The family pack ("kolors", "sd", ...).
        kind: "unet", "text_encoder", "vae", ...
        device: Where the model computes (`torch.device`).
        dtype: Its weights' dtype.
        source: The path it was loaded from.
        loader: Loads it again after an eviction (captures paths, never a module).
        offload: "auto", "on" or "off" (see `device_memory`).
    """

    store: ModelStore
    key: Hashable
    family: str
    kind: str
    device: Any
    dtype: Any
    source: str
    loader: Loader
    offload: str = "auto"

    def __graphgen_nbytes__(self) -> int:
        return 0  # the store accounts for the model; a cached handle costs nothing

    @property
    def model(self) -> Any:
        """The module (loaded again if it was evicted). Prefer `use()` to compute with it."""
        return self.store.resolve(self).module

    @property
    def extras(self) -> dict[str, Any]:
        return self.store.resolve(self).extras

    @property
    def tokenizer(self) -> Any:
        return self.extras.get("tokenizer")

    def resource_nbytes(self) -> int:
        return int(self.store.resolve(self).nbytes)

    def use(self) -> Any:
        """Context manager: the module on its compute device for the block (see `ModelStore.use`)."""
        return self.store.use(self)


class ModelStore(ResourceCache):
    """Loaded models of every family, with a RAM and a VRAM budget. Thread-safe.

    Args:
        max_bytes: RAM budget: bytes of loaded weights kept at all (None: no limit).
        vram_budget: Bytes of weights on the accelerator (None: per device, see `device_memory`).
        mover: Replaces the real host/device moves (tests model a device with it).
    """

    def __init__(self, max_bytes: int | None = None, *, vram_budget: int | None = None,
                 mover: Mover | None = None) -> None:
        super().__init__(max_bytes)
        self.memory = DeviceMemory(budget=vram_budget, mover=mover)

    def load(self, *, family: str, kind: str, source: Any, device: Any, dtype: Any, loader: Loader,
             offload: str = "auto", extra_key: tuple[Any, ...] = ()) -> ModelHandle:
        """Load a model once per key and return its handle (loads now, so errors show at the loader).

        Args:
            family: The pack's family name (part of the key: families never share entries).
            kind: The component ("unet", "text_encoder", "vae", ...).
            source: The file or folder it comes from (its identity is part of the key).
            device: Where it computes. The loader decides where it first lands: straight on the
                accelerator is fastest; on the host when it should only move in when used.
            dtype: Its weights' dtype.
            loader: Returns the module, or (module, extras dict); captures paths, not modules.
            offload: "auto" (leave the accelerator only under memory pressure), "on" (after each
                use) or "off" (never).
            extra_key: Anything else that makes a different model from the same files.
        """
        if offload not in OFFLOAD_MODES:
            raise ValueError(f"offload must be one of {', '.join(OFFLOAD_MODES)}, got {offload!r}")
        key = (family, kind, file_identity(source), str(dtype), str(device), tuple(extra_key))
        handle = ModelHandle(self, key, family, kind, device, dtype, str(source), loader, offload)
        self.resolve(handle)
        return handle

    def resolve(self, handle: ModelHandle) -> LoadedModel:
        """The loaded model behind `handle`, loading it (again) if it is not in the store."""
        entry: LoadedModel = self.get_or_load(handle.key, lambda: self._load(handle), on_evict=self._dropped)
        entry.offload = handle.offload  # the latest loader's wish wins
        return entry

    @contextmanager
    def use(self, handle: ModelHandle) -> Iterator[Any]:
        """The module on its compute device while the block runs; neither budget moves or drops it
        meanwhile. On exit an ``offload="on"`` model goes back to the host."""
        with self._lock:
            entry = self.resolve(handle)
            entry.in_use += 1
        try:
            self.memory.acquire(entry)
            yield entry.module
        finally:
            with self._lock:
                entry.in_use -= 1
            self.memory.release(entry)

    def place(self, device: Any, nbytes: int) -> Any:
        """Where a loader should put a model of about `nbytes` computing on `device`: on `device`
        (room made: least recently used models moved out) when it fits the VRAM budget, else on the
        host (it moves in, or streams, when used). Call it inside the loader, so a reload after an
        eviction decides again."""
        import torch

        return device if self.memory.make_room(device, nbytes) else torch.device("cpu")

    def loaded_models(self) -> list[LoadedModel]:
        """Models in the store, least recently used first."""
        with self._lock:
            return [e.value for e in self._entries.values() if isinstance(e.value, LoadedModel)]

    def device_bytes(self) -> int:
        """Bytes of weights resident on accelerators (what the VRAM budget bounds)."""
        return self.memory.resident_bytes()

    def _load(self, handle: ModelHandle) -> LoadedModel:
        loaded = handle.loader()
        module, extras = loaded if isinstance(loaded, tuple) else (loaded, {})
        if not isinstance(extras, dict):
            raise TypeError(f"a {handle.family} {handle.kind} loader returned ({type(module).__name__}, "
                            f"{type(extras).__name__}); extras must be a dict")
        if hasattr(module, "requires_grad_"):
            module.requires_grad_(False)
            module.eval()
        entry = LoadedModel(key=handle.key, family=handle.family, kind=handle.kind, module=module,
                            device=handle.device, offload=handle.offload, extras=extras,
                            nbytes=module_nbytes(module))
        self.memory.loaded(entry)
        return entry

    def _dropped(self, value: Any) -> None:
        if isinstance(value, LoadedModel):
            self.memory.forget(value)
            value.module = None  # drop our reference now, whoever still holds the entry
            value.host_copy = None
            value.extras = {}


def model_store(resources: Any) -> ModelStore:
    """The engine's model store, from `ctx.resources` (an Engine's resource cache is one).

    A plain `ResourceCache` (an executor built by hand) gets a store kept inside it.
    """
    if isinstance(resources, ModelStore):
        return resources
    store: ModelStore = resources.get_or_load(("graphgen", "model-store"), ModelStore, nbytes=0)
    return store
