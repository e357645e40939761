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

from .families import KOLORS, TrainFamily
from .latent_cache import ImageEncoder, TextEncoder, chatglm_encoder, vae_encoder

__all__ = ["GLUES", "Glue", "glue_for"]


@dataclass(frozen=True)
class Glue:
    """How the training node talks to one family's loader objects.

    Attributes:
        family: The trainer's adapter.
        accepts: Whether a MODEL object belongs to this family.
        unet_handle: The MODEL's handle (``.use()`` gives the UNet on its device, ``.key``
            identifies it) and the LoRAs stacked on it.
        text_encoder: ``(text object, opened model) -> TextEncoder``.
        text_handle: The text object's handle (``.use()``, ``.key``).
        image_encoder: ``(vae object, opened model) -> ImageEncoder``.
        decode: ``(opened vae, latents) -> images``.
    """

    family: TrainFamily
    accepts: Callable[[Any], bool]
    unet_handle: Callable[[Any], tuple[Any, tuple[Any, ...]]]
    text_encoder: Callable[[Any, Any], TextEncoder]
    text_handle: Callable[[Any], Any]
    image_encoder: Callable[[Any, Any], ImageEncoder]
    decode: Callable[[Any, torch.Tensor], list[Image.Image]]


def _kolors_decode(vae: Any, latents: torch.Tensor) -> list[Image.Image]:
    from ..kolors.images import tensor_to_pil
    from ..kolors.vae_ops import decode

    return [tensor_to_pil(img) for img in decode(vae, latents).images]


def _is_kolors(model: Any) -> bool:
    handle = getattr(model, "handle", None)
    key = getattr(handle, "key", None)
    return isinstance(key, tuple) and bool(key) and key[0] == "kolors" and getattr(handle, "kind", "") == "unet"


KOLORS_GLUE = Glue(
    family=KOLORS,
    accepts=_is_kolors,
    unet_handle=lambda model: (model.handle, tuple(model.loras)),
    text_encoder=lambda text, opened: chatglm_encoder(opened, text.tokenizer, device=text.device),
    text_handle=lambda text: text,
    image_encoder=lambda vae, opened: vae_encoder(opened, device=vae.device),
    decode=_kolors_decode,
)

#: Registered families, tried in order.
GLUES: list[Glue] = [KOLORS_GLUE]


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
