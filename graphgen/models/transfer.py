"""Moving a model's weights between host and accelerator fast: pinned host copies made once.

`module.to("cpu")` and back, as naive offloading does, allocates pageable host memory and copies
the weights both ways on every round trip, synchronously. Here:

* The first offload copies each weight into *pinned* host memory (page-locked: the GPU reads it by
  DMA, at several times pageable speed) and keeps that copy in a `HostCopy`.
* Onloading copies host → device with `non_blocking=True` from the pinned copy: the host thread
  goes on queueing work while the copy runs, and kernels on the same stream start once their
  weights are there (stream order), so transfer and the next node's host-side setup overlap.
* The next offload copies nothing: inference weights do not change on the device, so each weight
  just points at its host copy again and the device memory is released. A weight that *was*
  written in place on the device (its autograd version counter moved, e.g. a LoRA merged and
  restored) is copied back, so the host copy is never stale.

Without CUDA nothing is pinned (pinning needs the CUDA runtime); the logic is the same, which is
how the CPU tests exercise it (with the `meta` device standing in for an accelerator).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any


@dataclass
class TransferStats:
    """What the transfers of one store cost (the GPU benchmark reports GB/s from it)."""

    to_device_bytes: int = 0
    to_host_bytes: int = 0
    seconds: float = 0.0
    moves: int = 0

    def gbps(self) -> float:
        moved = self.to_device_bytes + self.to_host_bytes
        return moved / self.seconds / 1e9 if self.seconds > 0 else 0.0


@dataclass
class HostCopy:
    """Host copies of one module's tensors, by slot name, and the device versions they mirror."""

    tensors: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, tuple[int, int]] = field(default_factory=dict)
    copies_made: int = 0


def _slots(module: Any) -> Iterator[tuple[str, Any, str, Any]]:
    """(qualified name, owning module, local name, tensor) for every parameter and buffer."""
    for prefix, sub in module.named_modules():
        for kind in ("_parameters", "_buffers"):
            for name, tensor in getattr(sub, kind).items():
                if tensor is not None:
                    yield f"{prefix}.{name}" if prefix else name, sub, name, tensor


def plain_tensors(module: Any) -> bool:
    """Whether every tensor is a plain tensor; quantised weights (tensor subclasses, e.g. quanto's)
    are moved with `module.to()` instead, which knows their layout."""
    import torch

    return all(type(t.data) is torch.Tensor for _, _, _, t in _slots(module))


def _set(owner: Any, name: str, tensor: Any, new: Any) -> None:
    import torch

    if name not in owner._parameters:
        owner._buffers[name] = new
    elif torch._has_compatible_shallow_copy_type(tensor, new):
        tensor.data = new  # keeps the Parameter object (optimisers, hooks and LoRA locks see the same one)
    else:  # e.g. to or from `meta`: a new Parameter, as Module._apply makes
        owner._parameters[name] = torch.nn.Parameter(new, requires_grad=tensor.requires_grad)


def _version(owner: Any, name: str) -> tuple[int, int]:
    tensor = owner._parameters.get(name)
    if tensor is None:
        tensor = owner._buffers[name]
    return id(tensor), tensor._version


def _dense(tensor: Any) -> bool:
    import torch

    return bool(tensor.is_contiguous() or (tensor.dim() == 4 and tensor.is_contiguous(memory_format=torch.channels_last)))


def same_device(have: Any, want: Any) -> bool:
    """`cuda:0` is `cuda` (the current device) for our purposes; torch.device equality says no."""
    return bool(have.type == want.type and (want.index is None or have.index is None or have.index == want.index))


def _pin_available() -> bool:
    import torch

    return torch.cuda.is_available()


def to_device(module: Any, device: Any, host: HostCopy | None = None, stats: TransferStats | None = None) -> None:
    """Put `module`'s tensors on `device`: non-blocking from pinned host copies.

    Records each tensor's version so that `to_host` can tell an untouched weight (no copy back)
    from one written on the device.
    """
    start, moved = time.perf_counter(), 0
    for qualified, owner, name, tensor in _slots(module):
        if not same_device(tensor.device, device):
            _set(owner, name, tensor, tensor.detach().to(device, non_blocking=tensor.is_pinned()))
            moved += tensor.numel() * tensor.element_size()
        if host is not None:
            host.versions[qualified] = _version(owner, name)
    if stats is not None:
        stats.to_device_bytes += moved
        stats.seconds += time.perf_counter() - start
        stats.moves += 1


def needs_copy(host: HostCopy, qualified: str, owner: Any, name: str, tensor: Any) -> bool:
    """Whether a device tensor must be copied to the host: no host copy of its shape and dtype yet,
    or it was replaced or written in place since `to_device` (its version moved)."""
    copy = host.tensors.get(qualified)
    return bool(copy is None or copy.shape != tensor.shape or copy.dtype != tensor.dtype
                or host.versions.get(qualified) != _version(owner, name))


def to_host(module: Any, host: HostCopy, stats: TransferStats | None = None) -> None:
    """Move `module` to the host, reusing `host`'s copies of weights unchanged since `to_device`.

    New or changed tensors are copied into (pinned, when CUDA is there) host memory allocated once
    per tensor; the device tensors are then dropped, giving their memory back to the allocator.
    """
    import torch

    pin = _pin_available()
    start, moved, pending = time.perf_counter(), 0, False
    for qualified, owner, name, tensor in _slots(module):
        if tensor.device.type == "cpu":
            host.tensors[qualified] = tensor
            continue
        copy = host.tensors.get(qualified)
        if needs_copy(host, qualified, owner, name, tensor):
            if copy is None or copy.shape != tensor.shape or copy.dtype != tensor.dtype:
                # Same strides as the device tensor, so channels_last weights stay channels_last.
                copy = (torch.empty_strided(tensor.size(), tensor.stride(), dtype=tensor.dtype, device="cpu",
                                            pin_memory=pin) if _dense(tensor) else
                        torch.empty(tensor.shape, dtype=tensor.dtype, device="cpu", pin_memory=pin))
                host.tensors[qualified] = copy
            copy.copy_(tensor.detach(), non_blocking=pin)
            pending = pending or pin
            host.copies_made += 1
            moved += tensor.numel() * tensor.element_size()
        _set(owner, name, tensor, copy)
    if pending:
        torch.cuda.synchronize()  # the host copies are read by the CPU next time (streaming, saving)
    if stats is not None:
        stats.to_host_bytes += moved
        stats.seconds += time.perf_counter() - start
        stats.moves += 1
