"""GPU memory management for the Kolors models: keep what fits, move the rest to the CPU.

Real Kolors is a 5 GB fp16 UNet, a 12.5 GB fp16 ChatGLM3 and a small VAE: together they do not fit
a 16-24 GB card with room for activations. The manager keeps models on their compute device under a
byte budget (the card's memory minus a reserve for activations), moving the least recently used
model to the CPU when another one needs room. The text encoder is only needed to encode prompts:
its handle is marked `offload`, so it goes back to the CPU right after encoding. A model larger
than the whole budget runs with accelerate's sequential CPU offload (weights stream to the GPU one
module at a time), which is slow but lets ChatGLM3 encode on a 12 GB card.

On the CPU there is nothing to manage: every call is a no-op.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

import torch

from .handles import ModelHandle

#: Memory kept free for activations when the budget is derived from the card's size.
DEFAULT_RESERVE = 3 << 30
BUDGET_ENV = "GRAPHGEN_GPU_BUDGET_GB"

Mover = Callable[[ModelHandle, torch.device], None]


def _move(handle: ModelHandle, device: torch.device) -> None:
    handle.model.to(device)
    if device.type == "cpu" and torch.cuda.is_available():
        torch.cuda.empty_cache()


def default_budget(device: torch.device) -> int | None:
    """Bytes of models allowed on `device`: `GRAPHGEN_GPU_BUDGET_GB`, or its memory minus a reserve."""
    if os.environ.get(BUDGET_ENV):
        return int(float(os.environ[BUDGET_ENV]) * (1 << 30))
    if device.type == "cuda" and torch.cuda.is_available():
        _, total = torch.cuda.mem_get_info(device)
        return max(total - DEFAULT_RESERVE, 1 << 30)
    return None


class DeviceMemory:
    """Which models sit on the accelerator, under a byte budget.

    Args:
        budget: Bytes of model weights allowed on the accelerator (None: derived per device).
        mover: Moves a handle's model to a device (injectable for tests).
    """

    def __init__(self, budget: int | None = None, mover: Mover = _move) -> None:
        self.budget = budget
        self.mover = mover
        self._resident: list[ModelHandle] = []  # least recently used first
        self._sequential: set[int] = set()
        self._lock = threading.RLock()

    def resident(self) -> list[ModelHandle]:
        return list(self._resident)

    def acquire(self, handle: ModelHandle) -> None:
        """Make `handle`'s model ready on its compute device, evicting others if needed."""
        if handle.device.type == "cpu":
            return
        with self._lock:
            if handle in self._resident:
                self._resident.remove(handle)
                self._resident.append(handle)
                return
            if id(handle) in self._sequential:
                return
            budget = self.budget if self.budget is not None else default_budget(handle.device)
            need = handle.resource_nbytes()
            if budget is not None and need > budget:
                self._evict_until(budget, budget)  # streaming needs the whole card
                self._sequential_offload(handle)
                return
            if budget is not None:
                self._evict_until(need, budget)
            self.mover(handle, handle.device)
            self._resident.append(handle)

    def loaded(self, handle: ModelHandle) -> None:
        """Record a model that was loaded straight onto its accelerator (it already takes room)."""
        if handle.device.type == "cpu":
            return
        with self._lock:
            if handle not in self._resident and _on(handle, handle.device):
                self._resident.append(handle)

    def release(self, handle: ModelHandle) -> None:
        """Done with `handle` for now: an `offload` model goes back to the CPU."""
        with self._lock:
            if handle.offload and handle in self._resident:
                self._resident.remove(handle)
                self.mover(handle, torch.device("cpu"))

    def free(self) -> None:
        """Move every resident model to the CPU."""
        with self._lock:
            for handle in self._resident:
                self.mover(handle, torch.device("cpu"))
            self._resident.clear()

    def _evict_until(self, need: int, budget: int) -> None:
        used = sum(h.resource_nbytes() for h in self._resident)
        while self._resident and used + need > budget:
            victim = self._resident.pop(0)
            used -= victim.resource_nbytes()
            self.mover(victim, torch.device("cpu"))

    def _sequential_offload(self, handle: ModelHandle) -> None:
        from accelerate import cpu_offload

        self.mover(handle, torch.device("cpu"))
        cpu_offload(handle.model, execution_device=handle.device)
        self._sequential.add(id(handle))


def _on(handle: ModelHandle, device: torch.device) -> bool:
    parameters = getattr(handle.model, "parameters", None)
    if parameters is None:
        return False
    first = next(iter(parameters()), None)
    return first is not None and first.device.type == device.type


def device_memory(resources: Any) -> DeviceMemory:
    """The engine's one `DeviceMemory`, kept in its resource cache."""
    manager: DeviceMemory = resources.get_or_load(("kolors", "device-memory"), DeviceMemory, nbytes=0)
    return manager
