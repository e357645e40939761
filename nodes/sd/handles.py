"""The values SD loaders give: MODEL, CLIP (and VAE, the same handle type as Kolors').

A MODEL is a shared UNet handle plus the LoRAs stacked on it, the family (which decides the
latent scale, the scheduler config and the size conditioning); a CLIP is one or two shared text
encoder handles with their tokenizers, the ``CLIPSetLastLayer`` choice and its own LoRA stack.
Applying a LoRA makes a new value and never touches the shared model: LoRAs are merged only
while a sampler or an encoder runs (``nodes/lora/apply.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from graphgen.context import NodeContext

from .detect import LATENT_SCALE

__all__ = ["SDClip", "SDModel", "load_component"]


@dataclass(frozen=True, eq=False)
class SDModel:
    """MODEL: a UNet handle, its family and the LoRAs (``(LoraWeights, strength)``) stacked on it."""

    handle: Any
    family: str
    loras: tuple[tuple[Any, float], ...] = ()

    def __graphgen_nbytes__(self) -> int:
        return 0  # owned by the model store

    @property
    def latent_scale(self) -> float:
        return LATENT_SCALE[self.family]

    def with_lora(self, lora: Any, strength: float) -> SDModel:
        return replace(self, loras=self.loras + ((lora, float(strength)),))


@dataclass(frozen=True, eq=False)
class SDClip:
    """CLIP: SD1.5's ViT-L, SDXL's ViT-L + bigG, or the refiner's bigG.

    Attributes:
        family: ``sd15``, ``sdxl`` or ``sdxl_refiner``.
        clip_l, clip_g: Text-encoder handles (None where the family has none).
        last_layer: ``CLIPSetLastLayer``'s ``stop_at_clip_layer`` (-1: the last layer), or None for
            the family default (SD1.5: last layer; SDXL: penultimate).
        loras: ``(encoder name, LoraWeights, strength)`` stacked on the encoders.
    """

    family: str
    clip_l: Any = None
    clip_g: Any = None
    last_layer: int | None = None
    loras: tuple[tuple[str, Any, float], ...] = ()

    def __graphgen_nbytes__(self) -> int:
        return 0


def load_component(ctx: NodeContext, kind: str, path: Path, dtype: torch.dtype, device: torch.device,
                   build: Any, *, share: float = 1.0) -> Any:
    """Loads one component of a checkpoint once per engine through the engine's model store.

    Args:
        kind: ``"<family>/unet"``, ``"<family>/clip_l"``...
        build: ``build(place)`` returns the module on ``place`` (re-run after an eviction, so it
            reads the file again: it captures paths, never tensors or modules).
        share: About which fraction of the file this component is (for the VRAM placement).
    """
    from graphgen.models import model_store, weights_on_disk

    store = model_store(ctx.resources)
    return store.load(family="sd", kind=kind, source=path, device=device, dtype=dtype,
                      loader=lambda: build(store.place(device, int(weights_on_disk(path) * share))))
