"""One model runtime for every family: the engine's model store, devices, transfers.

A family pack (Kolors, SD1.5/SDXL, ...) loads its models through the engine's `ModelStore`,
never by keeping modules itself, so that every family shares one RAM and one VRAM budget, one
LRU order and one `Engine.free_resources()`:

    from graphgen.models import model_store, resolve_device, resolve_dtype, resolve_model_path, weights_on_disk

    class MyUNetLoader(Node):
        inputs = [String("path"), Choice("precision", [...]), Choice("device", [...])]
        outputs = [Output("MODEL", "model")]

        def run(self, path, precision, device):
            source = resolve_model_path(self.ctx.settings, path, "checkpoints")
            torch_device = resolve_device(device)                # auto: cuda > mps > cpu
            dtype = resolve_dtype(precision, torch_device)       # auto: fp16 on a GPU, fp32 on the CPU
            store = model_store(self.ctx.resources)
            return store.load(
                family="sd", kind="unet", source=source, device=torch_device, dtype=dtype,
                # place(): the device when it fits the VRAM budget (LRU models make room), else the
                # host (it moves in, or streams, when used). Capture paths and the store, never a module.
                loader=lambda: load_my_unet(source, dtype, store.place(torch_device, weights_on_disk(source))),
                offload="auto",                                  # leave the GPU only under memory pressure
                extra_key=(),                                    # anything else that makes another model
            )                                                    # -> a ModelHandle (loaded now)

    class MySampler(Node):
        def run(self, model, ...):
            with model.use() as unet:                            # on its device; others move out if needed
                ...                                              # model.device, model.dtype for inputs

A loader may return ``(module, {"tokenizer": tok, ...})``: the extras live and die with the module
(`handle.extras`, `handle.tokenizer`). Handles hold a key, not the module: an evicted model is
really freed, and a handle used again reloads it. See `store` (budgets, keys), `device_memory`
(the offload policy), `transfer` (pinned, non-blocking moves), `devices`, `identity`.

Importing this package does not import torch (`resolve_device`/`resolve_dtype` load it on use).
"""

from __future__ import annotations

from typing import Any

from .device_memory import BUDGET_ENV, OFFLOAD_MODES, DeviceMemory, default_budget
from .identity import file_identity, model_identity, resolve_model_path, weights_on_disk
from .store import LoadedModel, ModelHandle, ModelStore, model_store, module_nbytes

__all__ = [
    "BUDGET_ENV", "OFFLOAD_MODES", "DeviceMemory", "LoadedModel", "ModelHandle", "ModelStore",
    "default_budget", "file_identity", "model_identity", "model_store", "module_nbytes", "resolve_device", "resolve_dtype",
    "resolve_model_path", "weights_on_disk",
]


def __getattr__(name: str) -> Any:
    if name in ("resolve_device", "resolve_dtype", "DEVICE_CHOICES", "DTYPE_CHOICES"):
        from . import devices

        return getattr(devices, name)
    raise AttributeError(name)
