"""Values that flow between the Kolors nodes, and the shared model store behind them.

A loader node returns a *handle*, not a bare model: the model itself lives once per Engine in the
engine's resource cache (keyed by file identity, dtype and device), so two loader nodes, two
workflows or two runs that name the same files share one copy. Handles report 0 bytes to the
output cache (`__graphgen_nbytes__`) so the model is not counted twice.

A `UNetRef` is a base UNet plus the LoRAs stacked on it. Applying a LoRA makes a new ref and never
touches the base model: the LoRAs are switched in only while a sampler runs (`lora.apply`).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Hashable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from graphgen.context import EngineSettings, NodeContext

from .encode import Conditioning

# File types whose size and mtime identify a model folder's contents.
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt", ".pth", ".json", ".model", ".txt")


def file_identity(path: str | os.PathLike[str]) -> tuple[Any, ...]:
    """Size and mtime of a file, or of the weight/config files in a folder (3 levels deep).

    Used as cache-key fingerprints: replacing a model file re-runs the nodes that load it.
    """
    root = Path(path)
    try:
        if root.is_file():
            stat = root.stat()
            return (str(root.resolve()), stat.st_size, stat.st_mtime_ns)
        if not root.is_dir():
            return (str(root), "missing")
        entries: list[tuple[str, int, int]] = []
        base_depth = len(root.parts)
        for folder, dirs, files in os.walk(root):
            if len(Path(folder).parts) - base_depth >= 3:
                dirs[:] = []
            dirs.sort()
            for name in sorted(files):
                if name.endswith(_WEIGHT_SUFFIXES):
                    stat = os.stat(os.path.join(folder, name))
                    entries.append((os.path.relpath(os.path.join(folder, name), root), stat.st_size, stat.st_mtime_ns))
        digest = hashlib.blake2b(repr(entries).encode(), digest_size=12).hexdigest()
        return (str(root.resolve()), digest)
    except OSError as exc:
        return (str(root), "unreadable", exc.errno)


def resolve_model_path(settings: EngineSettings | None, path: str, *subfolders: str) -> Path:
    """A model path as given, or relative to the engine's models folder (and its subfolders)."""
    given = Path(path).expanduser()
    if given.is_absolute() or given.exists() or settings is None or settings.models_dir is None:
        return given
    models = settings.models_dir
    for candidate in [models / given, *(models / sub / given for sub in subfolders)]:
        if candidate.exists():
            return candidate
    return given


@dataclass(eq=False)
class ModelHandle:
    """A loaded model shared through the engine's resource cache.

    Attributes:
        kind: "unet", "text_encoder" or "vae".
        model: The torch module.
        device: Where it computes.
        dtype: Its weights' dtype.
        key: Its resource-cache key.
        source: The path it was loaded from.
        tokenizer: The ChatGLM tokenizer (text encoders only).
        offload: Move the model to the CPU after each use (the text encoder on a GPU).
    """

    kind: str
    model: Any
    device: torch.device
    dtype: torch.dtype
    key: Hashable
    source: str
    tokenizer: Any = None
    offload: bool = False
    memory: Any = None
    """The engine's `memory.DeviceMemory`, which decides what stays on the accelerator."""

    def __graphgen_nbytes__(self) -> int:
        return 0  # owned by the resource cache

    def resource_nbytes(self) -> int:
        """Bytes of the model's parameters (what the resource cache budgets)."""
        return sum(p.numel() * p.element_size() for p in self.model.parameters())

    def use(self) -> AbstractContextManager[Any]:
        """Context manager: the model on its compute device (moved back after, if `offload`)."""
        return _on_device(self)


class _on_device:  # noqa: N801 - a context manager
    def __init__(self, handle: ModelHandle) -> None:
        self.handle = handle

    def __enter__(self) -> Any:
        if self.handle.memory is not None:
            self.handle.memory.acquire(self.handle)
        elif self.handle.device.type != "cpu":
            self.handle.model.to(self.handle.device)
        return self.handle.model

    def __exit__(self, *exc: Any) -> None:
        if self.handle.memory is not None:
            self.handle.memory.release(self.handle)


@dataclass(frozen=True, eq=False)
class UNetRef:
    """A base UNet plus the LoRAs stacked on it, as `(LoraWeights, strength)` pairs."""

    handle: ModelHandle
    loras: tuple[tuple[Any, float], ...] = ()

    def __graphgen_nbytes__(self) -> int:
        return 0

    def with_lora(self, lora: Any, strength: float) -> UNetRef:
        return UNetRef(self.handle, self.loras + ((lora, float(strength)),))


@dataclass(eq=False)
class KolorsEmbeds:
    """Prompt and negative-prompt conditioning for a sampler (ChatGLM embeddings + pooled)."""

    positive: Conditioning
    negative: Conditioning
    prompts: list[str] = field(default_factory=list)
    negative_prompt: str = ""

    def __graphgen_nbytes__(self) -> int:
        tensors = (self.positive.embeds, self.positive.pooled, self.negative.embeds, self.negative.pooled)
        return sum(t.numel() * t.element_size() for t in tensors)

    @property
    def batch_size(self) -> int:
        return int(self.positive.embeds.shape[0])


def load_shared(ctx: NodeContext, kind: str, path: Path, dtype: torch.dtype, device: torch.device,
                loader: Any, *, offload: bool = False, extra_key: tuple[Any, ...] = ()) -> ModelHandle:
    """Load a model once per engine, keyed by file identity, dtype and device."""
    key = ("kolors", kind, file_identity(path), str(dtype), str(device), extra_key)

    from .memory import device_memory

    def load() -> ModelHandle:
        loaded = loader()
        tokenizer = None
        if isinstance(loaded, tuple):
            loaded, tokenizer = loaded
        loaded.requires_grad_(False)
        loaded.eval()
        return ModelHandle(kind=kind, model=loaded, device=device, dtype=dtype, key=key, source=str(path),
                           tokenizer=tokenizer, offload=offload, memory=device_memory(ctx.resources))

    handle: ModelHandle = ctx.resources.get_or_load(key, load)
    handle.offload = offload
    handle.memory.loaded(handle)
    return handle
