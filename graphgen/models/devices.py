"""Device and precision resolution for every model family (the loaders' `device` and `precision` inputs).

``"auto"`` policy:

* device: CUDA when available, else Apple MPS when available, else CPU.
* dtype: fp16 on CUDA and MPS (Kolors and ChatGLM3 are published in fp16, every CUDA GPU and
  MPS runs it, and the VAE overflow is handled by the fp16-fix VAE or by upcasting the VAE);
  fp32 on CPU (fp16/bf16 matmuls on CPUs are slow or unsupported, and fp32 is bit-reproducible).
  bf16 is never chosen automatically, because pre-Ampere GPUs emulate it slowly; ask for it.
"""

from __future__ import annotations

import os

import torch

__all__ = ["DEVICE_CHOICES", "DTYPE_CHOICES", "free_memory_bytes", "resolve_device", "resolve_dtype"]

#: Values accepted by :func:`resolve_device` (``"cuda:N"`` is accepted too).
DEVICE_CHOICES: tuple[str, ...] = ("auto", "cuda", "mps", "cpu")
#: Values accepted by :func:`resolve_dtype`.
DTYPE_CHOICES: tuple[str, ...] = ("auto", "fp32", "fp16", "bf16")

_DTYPE_ALIASES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "float": torch.float32,
    "fp16": torch.float16,
    "float16": torch.float16,
    "half": torch.float16,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
}


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """Turns a device name into a ``torch.device`` that exists on this machine.

    Args:
        name: ``"auto"``, ``"cuda"`` (or ``"cuda:N"``), ``"mps"``, ``"cpu"``, or a ``torch.device``.

    Returns:
        The device.

    Raises:
        ValueError: For an unknown name, or a device this machine does not have.
    """
    if isinstance(name, torch.device):
        name = str(name)
    if not isinstance(name, str):
        raise ValueError(f"device must be one of {', '.join(DEVICE_CHOICES)} (or 'cuda:N'), got {name!r}")
    key = name.strip().lower()
    if key == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if key == "cpu":
        return torch.device("cpu")
    if key == "mps":
        if not _mps_available():
            raise ValueError(
                "device 'mps' was requested but Apple MPS is not available here; use 'auto' or 'cpu'"
            )
        return torch.device("mps")
    if key == "cuda" or key.startswith("cuda:"):
        index_text = key.partition(":")[2]
        if index_text and not index_text.isdigit():
            raise ValueError(f"device {name!r} is not valid: expected 'cuda' or 'cuda:N' with N a number")
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {name!r} was requested but CUDA is not available here "
                "(torch.cuda.is_available() is False); use 'auto' or 'cpu'"
            )
        if index_text and int(index_text) >= torch.cuda.device_count():
            raise ValueError(
                f"device {name!r} does not exist: this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
        return torch.device(key)
    raise ValueError(f"unknown device {name!r}: allowed values are {', '.join(DEVICE_CHOICES)} (or 'cuda:N')")


def resolve_dtype(name: str | torch.dtype = "auto", device: torch.device | str = "cpu") -> torch.dtype:
    """Turns a precision name into a ``torch.dtype`` suitable for ``device``.

    Args:
        name: ``"auto"``, ``"fp32"``, ``"fp16"`` or ``"bf16"`` (the long names ``float32``,
            ``float16``, ``bfloat16`` and ``half`` are accepted too), or a floating ``torch.dtype``.
        device: The device the weights will live on (used by ``"auto"`` and to reject bf16 on a
            CUDA GPU without bf16 support).

    Returns:
        The dtype.

    Raises:
        ValueError: For an unknown name, or bf16 on a CUDA GPU that does not support it.
    """
    dev = torch.device(device) if isinstance(device, str) else device
    if isinstance(name, torch.dtype):
        dtype = name
        if dtype not in (torch.float32, torch.float16, torch.bfloat16):
            raise ValueError(f"dtype {dtype} is not supported: allowed values are {', '.join(DTYPE_CHOICES)}")
    elif isinstance(name, str) and name.strip().lower() == "auto":
        return torch.float16 if dev.type in ("cuda", "mps") else torch.float32
    elif isinstance(name, str) and name.strip().lower() in _DTYPE_ALIASES:
        dtype = _DTYPE_ALIASES[name.strip().lower()]
    else:
        raise ValueError(f"unknown dtype {name!r}: allowed values are {', '.join(DTYPE_CHOICES)}")
    if dtype == torch.bfloat16 and dev.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError(
            "dtype 'bf16' was requested but this CUDA GPU does not support bfloat16; use 'fp16' or 'fp32'"
        )
    return dtype


def free_memory_bytes(device: torch.device | str) -> int | None:
    """Memory a new allocation can still get on `device`, in bytes; None when unknown (MPS, other OSes).

    CUDA: the card's free memory plus what torch holds cached but unused. CPU: the kernel's
    `MemAvailable` (free plus reclaimable page cache), else the free physical pages.
    """
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    if device.type != "cpu":
        return None
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None
