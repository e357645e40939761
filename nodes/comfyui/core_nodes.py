"""ComfyUI core loaders that the native packs lack, by ComfyUI's names: `VAELoader`, `LoraLoaderModelOnly`.

(ComfyUI's model-agnostic nodes, `VAEDecode`, `VAEEncode`, `LoadImage`, `SaveImage`, `EmptyLatentImage`
and the other image, latent, mask and conditioning utilities, are the `core` pack, `graphgen_nodes.core`.) Model names resolve under `--models-dir` in ComfyUI's
layout: `vae/<vae_name>`, `loras/<lora_name>`.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from graphgen import Float, Input, Node, Output, String
from graphgen.context import EngineSettings

from .kolors_wrapper import _identity, _native, _quietly
from .models import find_model, model_check

#: A Kolors UNet handle flows under kijai's type, the native type and ComfyUI's MODEL alike.
MODEL_TYPES = "MODEL,KOLORSMODEL,KOLORS_UNET"


class VAELoader(Node):
    """Load a VAE file from `<models>/vae` (SDXL VAE with original or diffusers key names).

    It runs in bf16 on GPUs that support it, else in fp32 (the original SDXL VAE overflows in fp16).
    """

    category = "loaders"
    inputs = [String("vae_name", default="sdxl.vae.safetensors", description="a file in <models>/vae",
                     checks=(model_check("vae", "VAE"),))]
    outputs = [Output("VAE", "VAE")]

    @classmethod
    def fingerprint(cls, vae_name: str, settings: EngineSettings | None = None, **_: Any) -> Hashable:
        return _identity(_quietly(lambda: find_model(settings, "vae", vae_name, "VAE")), vae_name)

    def run(self, vae_name: str) -> Any:
        import torch

        from graphgen_nodes.kolors.devices import resolve_device
        from graphgen_nodes.kolors.loader_nodes import KolorsVAELoader

        path = find_model(self.ctx.settings, "vae", vae_name, "VAE")
        device = resolve_device("auto")
        precision = "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
        return _native(self, KolorsVAELoader).run(path=str(path), precision=precision, device="auto")


class LoraLoaderModelOnly(Node):
    """Stack a LoRA from `<models>/loras` on a Kolors, SD1.5 or SDXL model at `strength_model` (ComfyUI's semantics:
    strength × the file's alpha / rank, alpha = rank when the file stores none)."""

    category = "loaders"
    inputs = [Input("model", MODEL_TYPES, force_link=True),
              String("lora_name", default="", description="a file in <models>/loras",
                     checks=(model_check("loras", "LoRA"),)),
              Float("strength_model", default=1.0, min=-100.0, max=100.0, step=0.01)]
    outputs = [Output(MODEL_TYPES, "MODEL")]

    @classmethod
    def fingerprint(cls, lora_name: str, settings: EngineSettings | None = None, **_: Any) -> Hashable:
        return _identity(_quietly(lambda: find_model(settings, "loras", lora_name, "LoRA")), lora_name)

    def run(self, model: Any, lora_name: str, strength_model: float) -> Any:
        from graphgen_nodes.lora.lora_file import read_lora
        from graphgen_nodes.lora.lora_nodes import KolorsApplyLoRA

        path = find_model(self.ctx.settings, "loras", lora_name, "LoRA")
        if hasattr(model, "family"):  # an SD1.5/SDXL MODEL: the SD pack reads its LoRA files
            from graphgen_nodes.sd.lora import read_sd_lora

            unet_lora, _, warnings = read_sd_lora(path, None)
            for warning in warnings:
                if "text-encoder" not in warning:
                    self.ctx.warn(warning)
            if unet_lora is None:
                raise ValueError(f"LoraLoaderModelOnly: {lora_name} holds no UNet LoRA weights; use LoraLoader "
                                 "for a LoRA that only patches the text encoder")
            return model.with_lora(unet_lora, strength_model) if strength_model else model
        return _native(self, KolorsApplyLoRA).run(model, read_lora(path), strength_model)


NODES = [VAELoader, LoraLoaderModelOnly]
