"""Which loaded models sit on the accelerator: offload only under memory pressure (LRU), or streamed.

Policy, per model (`offload` of the loader that asked for it):

* ``"auto"`` (default): a model stays on its accelerator after use. It leaves only when a model
  the next node needs does not fit the VRAM budget next to it: then the least recently used
  models go to the host, oldest first, until the newcomer fits. On a card where everything fits,
  nothing ever moves.
* ``"on"``: the model goes back to the host right after each use (what a user who needs the room
  for something outside graphgen asks for).
* ``"off"``: the model stays on the accelerator whatever else needs room (never chosen to leave).
* A model larger than the whole budget is streamed (accelerate's sequential CPU offload: weights
  go to the device one module at a time): slow, but ChatGLM3 (12.5 GB in fp16) encodes on a 12 GB
  card.

Models in use (inside `handle.use()`) are never moved out from under their user. Moves go through
`transfer` (pinned host copies made once, non-blocking copies); a mover can be injected, which is
how the CPU tests model a device with a fake memory. Importing this module does not import torch.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .transfer import HostCopy, TransferStats, plain_tensors, same_device, to_device, to_host

if TYPE_CHECKING:
    from .store import LoadedModel

#: Memory kept free for activations when the budget is derived from the card's size.
DEFAULT_RESERVE = 3 << 30
BUDGET_ENV = "GRAPHGEN_GPU_BUDGET_GB"
OFFLOAD_MODES = ("auto", "on", "off")

Mover = Callable[["LoadedModel", Any], None]


def default_budget(device: Any) -> int | None:
    """Bytes of models allowed on `device`: `GRAPHGEN_GPU_BUDGET_GB`, or its memory minus a reserve."""
    if os.environ.get(BUDGET_ENV):
        return int(float(os.environ[BUDGET_ENV]) * (1 << 30))
    import torch

    if device.type == "cuda" and torch.cuda.is_available():
        _, total = torch.cuda.mem_get_info(device)
        return max(total - DEFAULT_RESERVE, 1 << 30)
    return None


def _cpu() -> Any:
    import torch

    return torch.device("cpu")


class DeviceMemory:
    """The accelerator side of the model store: what is resident, under a byte budget.

    Args:
        budget: Bytes of model weights allowed on the accelerator (None: `default_budget` per device).
        mover: Moves a loaded model to a device (default: `transfer`'s pinned, non-blocking moves).
    """

    def __init__(self, budget: int | None = None, mover: Mover | None = None) -> None:
        self.budget = budget
        self._mover = mover
        self._resident: list[LoadedModel] = []  # least recently used first
        self._lock = threading.RLock()
        self.stats = TransferStats()
        self.peak_bytes = 0
        """Most model bytes resident at once (what the budget bounds)."""

    # -- queries -------------------------------------------------------------------------------

    def resident(self) -> list[LoadedModel]:
        """Models on their accelerator, least recently used first."""
        return list(self._resident)

    def resident_bytes(self) -> int:
        return sum(e.nbytes for e in self._resident)

    def budget_for(self, device: Any) -> int | None:
        return self.budget if self.budget is not None else default_budget(device)

    # -- policy --------------------------------------------------------------------------------

    def acquire(self, entry: LoadedModel) -> None:
        """Make `entry`'s model ready on its compute device, moving least recently used ones out if needed."""
        if entry.device.type == "cpu":
            return
        with self._lock:
            if entry in self._resident:
                self._resident.remove(entry)
                self._resident.append(entry)
                return
            if entry.streaming:
                return
            budget = self.budget_for(entry.device)
            if budget is not None and entry.nbytes > budget and entry.offload != "off":
                self._evict_until(budget, budget, keep=entry)  # streaming needs the whole card
                self._stream(entry)
                return
            if budget is not None:
                self._evict_until(entry.nbytes, budget, keep=entry)
            self._move(entry, entry.device)
            self._add(entry)

    def release(self, entry: LoadedModel) -> None:
        """A user is done with `entry`: only an ``offload="on"`` model leaves now."""
        with self._lock:
            if entry.offload == "on" and entry.in_use == 0 and entry in self._resident:
                self._resident.remove(entry)
                self._move(entry, _cpu())

    def loaded(self, entry: LoadedModel) -> None:
        """Record a model loaded straight onto its accelerator (it takes room already)."""
        if entry.device.type == "cpu" or not _on(entry.module, entry.device):
            return
        with self._lock:
            if entry not in self._resident:
                budget = self.budget_for(entry.device)
                if budget is not None and entry.nbytes > budget and entry.offload != "off":
                    self._move(entry, _cpu())  # it can never sit whole on the card: it streams when used
                    return
                if budget is not None:
                    self._evict_until(entry.nbytes, budget, keep=entry)
                self._add(entry)

    def make_room(self, device: Any, nbytes: int) -> bool:
        """Move least recently used models out until `nbytes` more fit on `device`; False (nothing
        moved) when `nbytes` exceeds the whole budget."""
        if device.type == "cpu":
            return True
        with self._lock:
            budget = self.budget_for(device)
            if budget is None:
                return True
            if nbytes > budget:
                return False
            self._evict_until(nbytes, budget, keep=None)
            return True

    def forget(self, entry: LoadedModel) -> None:
        """The store dropped `entry`: it is no longer resident (its memory goes with the module)."""
        with self._lock:
            if entry in self._resident:
                self._resident.remove(entry)

    def offload_all(self) -> int:
        """Move every resident model not in use to the host; returns how many moved."""
        with self._lock:
            victims = [e for e in self._resident if e.in_use == 0]
            for entry in victims:
                self._resident.remove(entry)
                self._move(entry, _cpu())
            return len(victims)

    # -- mechanics -----------------------------------------------------------------------------

    def _add(self, entry: LoadedModel) -> None:
        self._resident.append(entry)
        self.peak_bytes = max(self.peak_bytes, self.resident_bytes())

    def _evict_until(self, need: int, budget: int, keep: LoadedModel | None) -> None:
        used = self.resident_bytes()
        for victim in list(self._resident):  # least recently used first
            if used + need <= budget:
                break
            if victim is keep or victim.in_use or victim.offload == "off":
                continue
            self._resident.remove(victim)
            used -= victim.nbytes
            self._move(victim, _cpu())

    def _move(self, entry: LoadedModel, device: Any) -> None:
        if self._mover is not None:
            self._mover(entry, device)
            return
        if not plain_tensors(entry.module):
            entry.module.to(device)
        elif device.type == "cpu":
            if entry.host_copy is None:
                entry.host_copy = HostCopy()
            to_host(entry.module, entry.host_copy, self.stats)
        else:
            to_device(entry.module, device, entry.host_copy, self.stats)

    def _stream(self, entry: LoadedModel) -> None:
        from accelerate import cpu_offload

        if _on(entry.module, entry.device):
            self._move(entry, _cpu())
        if self._mover is None:
            cpu_offload(entry.module, execution_device=entry.device)
        entry.streaming = True


def _on(module: Any, device: Any) -> bool:
    parameters = getattr(module, "parameters", None)
    if parameters is None:
        return False
    first = next(iter(parameters()), None)
    return first is not None and same_device(first.device, device)
