"""What the training nodes need from the loaders' objects, per model family.

The trainer (:mod:`.trainer`) sees only tensors and a :class:`~.families.TrainFamily`. This
module turns what the ordinary loader nodes produce (a MODEL, a CLIP or ChatGLM text encoder, a
VAE) into: the family, the UNet to train, a text encoder function for the latent cache, the text
encoders to train with ``text_encoder_lr > 0`` (CLIP families), an image encoder function, and an
image decoder for sample images. A family added later registers a :class:`Glue` in :data:`GLUES`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from .families import KOLORS, SD15, SDXL, TrainFamily
from .formats import KOHYA_TE_PREFIXES
from .latent_cache import ImageEncoder, TextEncoder, chatglm_encoder, vae_encoder
from .train_text import TextEncoders

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
        text_modules: ``(text object, open) -> TextEncoders`` for text-encoder training (the
            encoders opened on their device for the run); ``None``: the family's text encoder
            does not train (Kolors' ChatGLM3).
    """

    family: TrainFamily
    accepts: Callable[[Any], bool]
    unet_handle: Callable[[Any], tuple[Any, tuple[Any, ...]]]
    text_id: Callable[[Any], str]
    text_encoder: Callable[[Any, Opener], TextEncoder]
    decode: Callable[[Any, torch.Tensor], list[Image.Image]] = lambda vae, latents: _decode(vae, latents)
    text_modules: Callable[[Any, Opener], TextEncoders] | None = None

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


def _sd_text_encoder(clip: Any, open_: Opener) -> TextEncoder:
    """CLIPTextEncode's conditioning of each caption's first chunk, for the cache (no gradients)."""
    from ..sd.encode import encode_first_chunks

    def encode(prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        modules = {name: open_(name, getattr(clip, name)) for name in KOHYA_TE_PREFIXES[clip.family]}
        with torch.no_grad():  # one caption at a time: cached values do not depend on the batch
            rows = [encode_first_chunks(clip.family, clip.last_layer, modules, [p]) for p in prompts]
        return torch.cat([e for e, _ in rows]).cpu(), torch.cat([p for _, p in rows]).cpu()

    return encode


def _sd_text_modules(clip: Any, open_: Opener) -> TextEncoders:
    """The CLIP encoders of an ``SDClip``, opened, with kohya's key prefixes and ``encode_text``'s rules."""
    from ..sd.encode import encode_first_chunks

    prefixes = KOHYA_TE_PREFIXES[clip.family]
    modules = {name: open_(name, getattr(clip, name)) for name in prefixes}
    return TextEncoders(
        modules=modules, prefixes=prefixes,
        encode=lambda encoders, texts: encode_first_chunks(clip.family, clip.last_layer, encoders, texts),
    )


SD15_GLUE = Glue(family=SD15, accepts=_is_sd("sd15"), unet_handle=lambda m: (m.handle, tuple(m.loras)),
                 text_id=_clip_id, text_encoder=_sd_text_encoder, text_modules=_sd_text_modules)
SDXL_GLUE = Glue(family=SDXL, accepts=_is_sd("sdxl"), unet_handle=lambda m: (m.handle, tuple(m.loras)),
                 text_id=_clip_id, text_encoder=_sd_text_encoder, text_modules=_sd_text_modules)

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
