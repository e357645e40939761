"""Values that flow between the Kolors nodes, and how the Kolors loaders reach the model store.

A loader node returns a *handle* (`graphgen.models.ModelHandle`), not a bare model: the model
itself lives once per Engine in the engine's model store (keyed by family, file identity, dtype
and device), so two loader nodes, two workflows or two runs that name the same files share one
copy, and every family shares one RAM/VRAM budget. Handles report 0 bytes to the output cache.

A `UNetRef` is a base UNet plus the LoRAs stacked on it. Applying a LoRA makes a new ref and never
touches the base model: the LoRAs are switched in only while a sampler runs (`lora.apply`).
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from graphgen.context import NodeContext
from graphgen.models import ModelHandle, file_identity, model_identity, model_store, resolve_model_path

from .encode import Conditioning

__all__ = ["KolorsEmbeds", "ModelHandle", "UNetRef", "file_identity", "load_shared", "model_identity",
           "resolve_model_path", "tokenizer_identity"]


def tokenizer_identity(source: Path, tokenizer: Path | None = None) -> Hashable:
    """`file_identity` of the ChatGLM tokenizer that loading `source` would use: a single-file encoder takes
    it from a folder beside the file, which the file's own identity does not cover."""
    from .loading import find_tokenizer

    try:
        found = find_tokenizer(source, tokenizer)
    except (OSError, ValueError):
        return None
    return file_identity(found) if found is not None else None


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
                loader: Any, *, offload: bool | str = "auto", extra_key: tuple[Any, ...] = ()) -> ModelHandle:
    """Load a Kolors component once per engine through the model store.

    `loader()` returns the module, or (ChatGLM model, tokenizer); `offload` is "auto", "on" or
    "off" (True means "on", False "auto").
    """

    def load() -> Any:
        loaded = loader()
        if isinstance(loaded, tuple):
            model, tokenizer = loaded
            return model, {"tokenizer": tokenizer}
        return loaded

    mode = offload if isinstance(offload, str) else ("on" if offload else "auto")
    return model_store(ctx.resources).load(family="kolors", kind=kind, source=path, device=device, dtype=dtype,
                                           loader=load, offload=mode, extra_key=extra_key)
