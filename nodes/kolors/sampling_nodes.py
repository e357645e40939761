"""Text encoding, latents and sampling nodes.

LATENT values follow ComfyUI's convention: `{"samples": tensor [B, 4, H/8, W/8]}` holding the
VAE's *unscaled* latents (the sampler multiplies by the VAE scale 0.13025 on the way in and divides
on the way out). An empty latent also carries `"noise_only": True`: sampling it is text-to-image.
"""

from __future__ import annotations

import random
import re
from contextlib import nullcontext
from typing import Any

from graphgen import Choice, Float, Input, InputAlias, Int, Node, Output, String
from graphgen_nodes.diffusion.schedulers import scheduler_names

VAE_SCALE = 0.13025
MAX_SEED = 2**64 - 1
DEFAULT_NEGATIVE = ""


_CHOICE = re.compile(r"\{([^{}]*)\}")


def split_prompts(text: str) -> list[str]:
    """Prompts of a batch: a bare `|` separates them; `{a|b|c}` picks one option.

    kijai's KolorsTextEncode picks `{a|b}` options at random; here the pick is seeded by the
    prompt text, so the same workflow always renders the same prompt (change the text, or list the
    options with `|`, for variety).
    """
    rng = random.Random(text)
    resolved = _CHOICE.sub(lambda m: rng.choice(m.group(1).split("|")), text)
    parts = [part.strip() for part in resolved.split("|")]
    return [part for part in parts if part] or [""]


class KolorsTextEncode(Node):
    """Encode a prompt and a negative prompt with ChatGLM3 (penultimate layer, pooled before the final norm).

    `|` in the prompt makes a batch of prompts. Prompts longer than 256 tokens are cut, with a warning.
    """

    category = "kolors/conditioning"
    inputs = [Input("chatglm3_model", "CHATGLM3MODEL", force_link=True),
              String("prompt", default="", multiline=True),
              String("negative_prompt", default=DEFAULT_NEGATIVE, multiline=True),
              Int("num_images_per_prompt", default=1, min=1, max=64)]
    outputs = [Output("KOLORS_EMBEDS", "kolors_embeds")]
    # kijai's first KolorsTextEncode took the whole pipeline as `kolors_model` (KOLORSMODEL): the
    # encoder is then read from the folder that model came from.
    aliases = [InputAlias("kolors_model", "chatglm3_model", type="KOLORSMODEL")]

    def run(self, chatglm3_model: Any, prompt: str, negative_prompt: str, num_images_per_prompt: int) -> Any:
        from .encode import encode_prompts, repeat_conditioning
        from .handles import KolorsEmbeds, UNetRef

        prompts = split_prompts(prompt)
        handle = self._encoder_of(chatglm3_model) if isinstance(chatglm3_model, UNetRef) else chatglm3_model
        with handle.use() as encoder:
            positive = encode_prompts(encoder, handle.tokenizer, prompts, device=handle.device)
            negative = encode_prompts(encoder, handle.tokenizer, [negative_prompt], device=handle.device)
        for warning in positive.warnings + negative.warnings:
            self.ctx.warn(warning)
        if num_images_per_prompt > 1:
            positive = repeat_conditioning(positive, num_images_per_prompt)
        return KolorsEmbeds(positive=positive, negative=negative, prompts=prompts, negative_prompt=negative_prompt)

    def _encoder_of(self, model: Any) -> Any:
        """The ChatGLM3 encoder of the Kolors folder a (legacy `kolors_model`) UNet came from."""
        import torch

        from .loader_nodes import KolorsTextEncoderLoader

        handle = model.handle
        precision = {torch.float16: "fp16", torch.bfloat16: "bf16"}.get(handle.dtype, "fp32")
        loader = KolorsTextEncoderLoader()
        loader.ctx = self.ctx
        return loader.run(path=handle.source, precision=precision, device=handle.device.type, offload="auto",
                          tokenizer_path="")


class KolorsKSampler(Node):
    """Sample Kolors latents: text-to-image from an empty latent, image-to-image with `denoise` < 1.

    Noise is drawn on a CPU generator from the 64-bit seed, so a seed gives the same image on any
    device. The LoRAs stacked on the model are active only while this node samples.
    """

    category = "kolors/sampling"
    inputs = [Input("model", "KOLORS_UNET", force_link=True),
              Input("kolors_embeds", "KOLORS_EMBEDS", force_link=True),
              Input("latent", "LATENT", force_link=True),
              Int("seed", default=0, min=0, max=MAX_SEED),
              Int("steps", default=25, min=1, max=1000),
              Float("cfg", default=5.0, min=0.0, max=100.0, step=0.1),
              Choice("scheduler", scheduler_names(include_aliases=True), default="euler"),
              Float("denoise", default=1.0, min=0.0, max=1.0, step=0.01)]
    outputs = [Output("LATENT", "latent")]

    def run(self, model: Any, kolors_embeds: Any, latent: dict[str, Any], seed: int, steps: int, cfg: float,
            scheduler: str, denoise: float) -> dict[str, Any]:
        from graphgen_nodes.lora.apply import applied_loras

        from .sampling import sample

        samples = latent["samples"]
        prompts = kolors_embeds.batch_size
        noise_only = bool(latent.get("noise_only")) and denoise >= 1.0
        rows = int(samples.shape[0])
        height, width = int(samples.shape[-2]) * 8, int(samples.shape[-1]) * 8
        handle = model.handle
        with handle.use() as unet, (applied_loras(unet, list(model.loras)) if model.loras else nullcontext()) as report:
            for warning in getattr(report, "warnings", None) or []:
                self.ctx.warn(warning)
            latents = sample(
                unet, scheduler, kolors_embeds.positive, kolors_embeds.negative, seed=seed, steps=steps, cfg=cfg,
                width=width, height=height,
                batch_size=rows if noise_only else max(1, rows // prompts) if rows % prompts == 0 else 1,
                latents_in=None if noise_only else samples.to(handle.device, torch_float()) * VAE_SCALE,
                denoise=1.0 if noise_only else denoise,
                progress=lambda i, total: self.ctx.progress(i, total),
                check_cancelled=self.ctx.check_cancelled,
                device=handle.device, dtype=handle.dtype,
            )
        return {"samples": (latents / VAE_SCALE).cpu()}


def torch_float() -> Any:
    import torch

    return torch.float32


NODES = [KolorsTextEncode, KolorsKSampler]
