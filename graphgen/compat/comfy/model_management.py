"""`comfy.model_management`: devices, memory and interruption, answered by graphgen.

graphgen manages its own models, so the loading functions here do nothing; the device and memory
questions are answered from torch; an interrupt is graphgen's cancel of the running node.
"""

from __future__ import annotations

import enum
import os
from typing import Any

from graphgen.compat import _runtime
from graphgen.context import Cancelled

# Packs catch this name around long loops; it is graphgen's cancel (a BaseException, so that a
# node's broad `except Exception` does not swallow it).
InterruptProcessingException = Cancelled


class VRAMState(enum.Enum):
    DISABLED = 0
    NO_VRAM = 1
    LOW_VRAM = 2
    NORMAL_VRAM = 3
    HIGH_VRAM = 4
    SHARED = 5


class CPUState(enum.Enum):
    GPU = 0
    CPU = 1
    MPS = 2


def _torch() -> Any:
    import torch

    return torch


def get_torch_device() -> Any:
    """The device graphgen computes on: CUDA, else MPS, else the CPU."""
    torch = _torch()
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def _state() -> tuple[VRAMState, CPUState]:
    kind = get_torch_device().type
    if kind == "cuda":
        return VRAMState.NORMAL_VRAM, CPUState.GPU
    if kind == "mps":
        return VRAMState.SHARED, CPUState.MPS
    return VRAMState.DISABLED, CPUState.CPU


directml_enabled = False


def __getattr__(name: str) -> Any:
    # Module variables in ComfyUI, computed here on first use (no torch import when the pack loads).
    if name == "vram_state":
        return _state()[0]
    if name == "cpu_state":
        return _state()[1]
    if name == "OOM_EXCEPTION":
        return _torch().cuda.OutOfMemoryError
    if name in ("total_vram", "total_ram"):  # in MiB, as ComfyUI keeps them
        device = get_torch_device() if name == "total_vram" else _torch().device("cpu")
        return get_total_memory(device) / (1024 * 1024)
    raise AttributeError(f"module 'comfy.model_management' has no attribute {name!r} (graphgen does not provide it)")


def get_torch_device_name(device: Any) -> str:
    """`"cpu"`, or the device and the card's name (`"cuda:0 NVIDIA H100"`)."""
    if getattr(device, "type", "cpu") == "cuda":
        return f"{device} {_torch().cuda.get_device_name(device)}"
    return str(getattr(device, "type", device))


def is_amd() -> bool:
    return bool(getattr(_torch().version, "hip", None)) and get_torch_device().type == "cuda"


def intermediate_device() -> Any:
    return _torch().device("cpu")


def unet_offload_device() -> Any:
    return _torch().device("cpu")


def text_encoder_device() -> Any:
    return get_torch_device()


def text_encoder_offload_device() -> Any:
    return _torch().device("cpu")


def vae_device() -> Any:
    return get_torch_device()


def vae_offload_device() -> Any:
    return _torch().device("cpu")


def unet_inital_load_device(parameters: int = 0, dtype: Any = None) -> Any:  # ComfyUI's spelling
    return get_torch_device()


def get_autocast_device(device: Any) -> str:
    return getattr(device, "type", "cuda")


def is_device_mps(device: Any) -> bool:
    return getattr(device, "type", "") == "mps"


def is_device_cpu(device: Any) -> bool:
    return getattr(device, "type", "") == "cpu"


def is_device_cuda(device: Any) -> bool:
    return getattr(device, "type", "") == "cuda"


def is_intel_xpu() -> bool:
    return False


def is_nvidia() -> bool:
    return get_torch_device().type == "cuda"


def xformers_enabled() -> bool:
    return False


def xformers_enabled_vae() -> bool:
    return False


def pytorch_attention_enabled() -> bool:
    return True


def should_use_fp16(device: Any = None, model_params: int = 0, prioritize_performance: bool = True,
                    manual_cast: bool = False) -> bool:
    device = device or get_torch_device()
    return getattr(device, "type", "cpu") == "cuda"


def should_use_bf16(device: Any = None, model_params: int = 0, prioritize_performance: bool = True,
                    manual_cast: bool = False) -> bool:
    torch = _torch()
    device = device or get_torch_device()
    return getattr(device, "type", "cpu") == "cuda" and torch.cuda.is_bf16_supported()


def unet_dtype(device: Any = None, model_params: int = 0, supported_dtypes: Any = None) -> Any:
    torch = _torch()
    return torch.float16 if should_use_fp16(device) else torch.float32


def vae_dtype(device: Any = None, allowed_dtypes: Any = None) -> Any:
    return _torch().float32


def _memory(dev: Any) -> tuple[int, int]:
    """(free, total) bytes of a device: the card's, or the machine's RAM for the CPU."""
    dev = dev or get_torch_device()
    if getattr(dev, "type", "cpu") == "cuda":
        free, total = _torch().cuda.mem_get_info(dev)
        return int(free), int(total)
    page = os.sysconf("SC_PAGE_SIZE")
    return page * os.sysconf("SC_AVPHYS_PAGES"), page * os.sysconf("SC_PHYS_PAGES")


def get_total_memory(dev: Any = None, torch_total_too: bool = False) -> Any:
    total = _memory(dev)[1]
    return (total, total) if torch_total_too else total


def get_free_memory(dev: Any = None, torch_free_too: bool = False) -> Any:
    free = _memory(dev)[0]
    return (free, free) if torch_free_too else free


def soft_empty_cache(force: bool = False) -> None:
    """Give cached, unused device memory back (torch's allocator cache)."""
    torch = _torch()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    elif getattr(torch, "mps", None) is not None and torch.backends.mps.is_available():
        torch.mps.empty_cache()


def unload_all_models() -> None:
    """graphgen keeps its models in the Engine's store; freeing them is `Engine.free_resources()`."""
    soft_empty_cache()


current_loaded_models: list[Any] = []


def load_models_gpu(models: Any, memory_required: int = 0, force_patch_weights: bool = False,
                    minimum_memory_required: Any = None, force_full_load: bool = False) -> None:
    """graphgen's loaders place models themselves: nothing to do."""


def load_model_gpu(model: Any) -> None:
    """graphgen's loaders place models themselves: nothing to do."""


def free_memory(memory_required: int, device: Any, keep_loaded: Any = ()) -> list[Any]:
    soft_empty_cache()
    return []


def cast_to_device(tensor: Any, device: Any, dtype: Any, copy: bool = False) -> Any:
    return tensor.to(device=device, dtype=dtype, copy=copy)


def device_supports_non_blocking(device: Any) -> bool:
    return getattr(device, "type", "cpu") == "cuda"


def module_size(module: Any) -> int:
    return sum(t.nelement() * t.element_size() for t in module.state_dict().values())


# -- interruption -------------------------------------------------------------------------------

def interrupt_current_processing(value: bool = True) -> None:
    """Ask the running node's run to stop (graphgen's cancel)."""
    ctx = _runtime.context()
    event = getattr(ctx, "_cancel_event", None)
    if value and event is not None:
        event.set()


def processing_interrupted() -> bool:
    ctx = _runtime.context()
    return bool(ctx is not None and ctx.cancelled)


def throw_exception_if_processing_interrupted() -> None:
    """Raise graphgen's `Cancelled` when the run was cancelled."""
    ctx = _runtime.context()
    if ctx is not None:
        ctx.check_cancelled()
