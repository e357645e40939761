"""What the training nodes need from the loaders' objects, per model family.

The trainer (:mod:`.trainer`) sees only tensors and a :class:`~.families.TrainFamily`. This
module turns what the ordinary loader nodes produce (a MODEL, a CLIP or ChatGLM text encoder, a
VAE) into: the family, the UNet to train, a text encoder function for the latent cache, an image
encoder function, and an image decoder for sample images. A family added later registers a
:class:`Glue` in :data:`GLUES`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from .families import KOLORS, SD15, SDXL, TrainFamily
from .latent_cache import ImageEncoder, TextEncoder, chatglm_encoder, vae_encoder

__all__ = ["GLUES", "Glue", "Opener", "glue_for"]

#: ``open(name, handle) -> model on its device`` (kept open until the cache is built).
Opener = Callable[[str, Any], Any]


@dataclass(frozen=True)
class Glue:
    """How the training node talks to one family's loader objects.

    Attributes:
        family: The trainer's adapter.
        accepts: Whether a MODEL object belongs to this family.
        unet_handle: The MODEL's handle (``.use()`` gives the UNet on its device, ``.key``
            identifies it) and the LoRAs stacked on it.
        text_id: Identity string of the text object (part of the cache key).
        text_encoder: ``(text object, open) -> TextEncoder``; ``open(name, handle)`` gives the
            handle's model on its device, kept there until the cache is built.
        decode: ``(opened vae, scaled latents) -> images``.
    """

    family: TrainFamily
    accepts: Callable[[Any], bool]
    unet_handle: Callable[[Any], tuple[Any, tuple[Any, ...]]]
    text_id: Callable[[Any], str]
    text_encoder: Callable[[Any, Opener], TextEncoder]
    decode: Callable[[Any, torch.Tensor], list[Image.Image]] = lambda vae, latents: _decode(vae, latents)

    def image_encoder(self, vae: Any, open_: Opener) -> ImageEncoder:
        """The VAE (a shared handle, the same type for every family) as the cache's image encoder."""
        return vae_encoder(open_("vae", vae), device=vae.device)


def _decode(vae: Any, latents: torch.Tensor) -> list[Image.Image]:
    from ..diffusion.images import tensor_to_pil
    from ..diffusion.vae_ops import decode

    return [tensor_to_pil(img) for img in decode(vae, latents).images]


def _is_kolors(model: Any) -> bool:
    handle = getattr(model, "handle", None)
    key = getattr(handle, "key", None)
    return isinstance(key, tuple) and bool(key) and key[0] == "kolors" and getattr(handle, "kind", "") == "unet"


KOLORS_GLUE = Glue(
    family=KOLORS,
    accepts=_is_kolors,
    unet_handle=lambda model: (model.handle, tuple(model.loras)),
    text_id=lambda text: repr(text.key),
    text_encoder=lambda text, open_: chatglm_encoder(open_("text", text), text.tokenizer, device=text.device),
)


def _is_sd(family: str) -> Callable[[Any], bool]:
    return lambda model: getattr(model, "family", None) == family and hasattr(model, "handle")


def _clip_id(clip: Any) -> str:
    if getattr(clip, "loras", ()):
        raise ValueError("TrainLoRA: the CLIP has LoRAs stacked on it; connect the loader's plain CLIP "
                         "(captions are encoded once and cached)")
    keys = [getattr(h, "key", None) for h in (clip.clip_l, clip.clip_g)]
    return repr((clip.family, keys, clip.last_layer))


#: Tokens per caption in training: one CLIP chunk (start, 75 tokens, end), as kohya's default
#: ``max_token_length`` (longer captions are cut, with the rest of the chunk dropped).
CLIP_TOKENS = 77


def _sd_text_encoder(clip: Any, open_: Opener) -> TextEncoder:
    from ..sd.encode import encode_text

    def encode(prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        rows = [encode_text(clip, p)[0] for p in prompts]
        embeds = torch.cat([r[0][:, :CLIP_TOKENS] for r in rows])
        pooled = torch.cat([r[1]["pooled_output"] for r in rows])
        return embeds.cpu(), pooled.cpu()

    return encode


SD15_GLUE = Glue(family=SD15, accepts=_is_sd("sd15"), unet_handle=lambda m: (m.handle, tuple(m.loras)),
                 text_id=_clip_id, text_encoder=_sd_text_encoder)
SDXL_GLUE = Glue(family=SDXL, accepts=_is_sd("sdxl"), unet_handle=lambda m: (m.handle, tuple(m.loras)),
                 text_id=_clip_id, text_encoder=_sd_text_encoder)

#: Registered families, tried in order.
GLUES: list[Glue] = [KOLORS_GLUE, SD15_GLUE, SDXL_GLUE]


def glue_for(model: Any) -> Glue:
    """The glue of the family a MODEL belongs to.

    Raises:
        ValueError: One line naming the object's type and the families that train.
    """
    for glue in GLUES:
        if glue.accepts(model):
            return glue
    names = ", ".join(g.family.name for g in GLUES)
    raise ValueError(
        f"TrainLoRA cannot train a {type(model).__name__}: connect the MODEL output of a loader of "
        f"one of these families: {names}"
    )
