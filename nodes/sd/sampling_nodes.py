"""CLIPTextEncode, CLIPSetLastLayer, KSampler and KSamplerAdvanced with ComfyUI's names, inputs and widget order.

LATENT values are ``{"samples": [B, 4, H/8, W/8]}`` in the VAE's unscaled space (ComfyUI's
convention); the sampler applies the model family's latent scale on the way in and out. A
``noise_mask`` makes it inpaint; graphgen's ``noise_only`` flag marks an empty latent.

Seeds: the initial noise is drawn on a CPU generator seeded with the 64-bit seed (as the Kolors
sampler), so a seed gives the same image on any device. Sampler × scheduler pairs without a
faithful diffusers equivalent are refused when the workflow is validated
(``nodes/diffusion/comfy_samplers.py``).
"""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any

from graphgen import Choice, Float, Input, Int, Node, Output, String
from graphgen.spec import InputSpec

from .loader_nodes import MODEL_TYPES

MAX_SEED = 2**64 - 1


def _sampler_names() -> list[str]:
    from graphgen_nodes.diffusion.comfy_samplers import SAMPLERS

    return list(SAMPLERS)


def _scheduler_names() -> list[str]:
    from graphgen_nodes.diffusion.comfy_samplers import SCHEDULERS

    return list(SCHEDULERS)


class CLIPTextEncode(Node):
    """Encode a prompt with the CLIP text encoder(s) of an SD1.5 or SDXL checkpoint (SDXL: both, with pooled output)."""

    category = "conditioning"
    inputs = [String("text", default="", multiline=True), Input("clip", "CLIP", force_link=True)]
    outputs = [Output("CONDITIONING", "CONDITIONING")]

    def run(self, text: str, clip: Any) -> list[list[Any]]:
        from .encode import encode_text

        return encode_text(clip, text)


class CLIPSetLastLayer(Node):
    """Stop the CLIP text encoder at an earlier layer (-1: the last; -2: the penultimate, "clip skip 2")."""

    category = "conditioning"
    inputs = [Input("clip", "CLIP", force_link=True), Int("stop_at_clip_layer", default=-1, min=-24, max=-1)]
    outputs = [Output("CLIP", "CLIP")]

    def run(self, clip: Any, stop_at_clip_layer: int) -> Any:
        from dataclasses import replace

        return replace(clip, last_layer=int(stop_at_clip_layer))


def _entries(conditioning: Any, family: str, width: int, height: int, negative: bool) -> list[Any]:
    """CONDITIONING (or a Kolors embeds value) as the sampler's entries, with SDXL size ids."""
    import torch

    from graphgen_nodes.diffusion.denoise import CondEntry

    if hasattr(conditioning, "positive") and hasattr(conditioning, "negative"):  # Kolors embeds
        cond = conditioning.negative if negative else conditioning.positive
        conditioning = [[cond.embeds, {"pooled_output": cond.pooled}]]
    out = []
    for item in conditioning:
        embeds, options = item[0], dict(item[1]) if len(item) > 1 else {}
        added = None
        if family != "sd15":
            pooled = options.get("pooled_output")
            if pooled is None:
                raise ValueError("this conditioning has no pooled_output, which SDXL/Kolors models need; "
                                 "encode it with the model's own CLIP (CLIPTextEncode)")
            h, w = int(options.get("height", height)), int(options.get("width", width))
            crop = [int(options.get("crop_h", 0)), int(options.get("crop_w", 0))]
            if family == "sdxl_refiner":
                score = float(options.get("aesthetic_score", 2.5 if negative else 6.0))
                ids = [h, w, *crop, score]
            else:
                ids = [h, w, *crop, int(options.get("target_height", height)), int(options.get("target_width", width))]
            added = {"text_embeds": pooled, "time_ids": torch.tensor([ids], dtype=torch.float32).repeat(pooled.shape[0], 1)}
        out.append(CondEntry(embeds=embeds, added=added, start=float(options.get("start_percent", 0.0)),
                             end=float(options.get("end_percent", 1.0)), strength=float(options.get("strength", 1.0))))
    return out


def _check(sampler_name: str, scheduler: str) -> bool | str:
    """True, or one line naming the unsupported pair and what runs (the node's `validate_inputs`)."""
    from graphgen_nodes.diffusion.comfy_samplers import check_combination

    return check_combination(sampler_name, scheduler) or True


def run_sampler(node: Node, model: Any, positive: Any, negative: Any, latent_image: dict[str, Any], *, seed: int,
                steps: int, cfg: float, sampler_name: str, scheduler: str, denoise: float = 1.0,
                start_step: int = 0, end_step: int | None = None, add_noise: bool = True,
                leftover_noise: bool = False) -> dict[str, Any]:
    """Runs the denoising loop for KSampler and KSamplerAdvanced; returns the new LATENT."""
    from graphgen_nodes.diffusion.comfy_samplers import make_comfy_scheduler
    from graphgen_nodes.diffusion.denoise import denoise as run_denoise
    from graphgen_nodes.diffusion.denoise import make_generator
    from graphgen_nodes.lora.apply import applied_loras

    family, scale, base_config = _model_family(model)
    samples = latent_image["samples"]
    height, width = int(samples.shape[-2]) * 8, int(samples.shape[-1]) * 8
    sched = make_comfy_scheduler(sampler_name, scheduler, base_config)
    handle = model.handle
    with ExitStack() as stack:
        unet = stack.enter_context(handle.use())
        if model.loras:
            report = stack.enter_context(applied_loras(unet, list(model.loras)))
            for warning in report.warnings:
                node.ctx.warn(warning)
        out = run_denoise(
            unet, sched, _entries(positive, family, width, height, False),
            _entries(negative, family, width, height, True), samples.to(handle.device) * scale,
            generator=make_generator(seed), steps=steps, cfg=cfg, denoise_strength=denoise,
            start_step=start_step, end_step=end_step, add_noise=add_noise,
            noise_only=bool(latent_image.get("noise_only")), leftover_noise=leftover_noise,
            noise_mask=latent_image.get("noise_mask"), progress=lambda i, n: node.ctx.progress(i, n),
            check_cancelled=node.ctx.check_cancelled, device=handle.device, dtype=handle.dtype)
    result = {k: v for k, v in latent_image.items() if k not in ("samples", "noise_only")}
    result["samples"] = out / scale
    return result


def _model_family(model: Any) -> tuple[str, float, Any]:
    """(family, latent scale, scheduler base config) of an SD MODEL or a Kolors one."""
    if hasattr(model, "family"):
        from graphgen_nodes.diffusion.comfy_samplers import SD_SCHEDULER_CONFIG

        return model.family, model.latent_scale, SD_SCHEDULER_CONFIG
    from graphgen_nodes.diffusion.schedulers import KOLORS_SCHEDULER_CONFIG

    return "kolors", 0.13025, KOLORS_SCHEDULER_CONFIG


def _schedule_inputs() -> list[InputSpec]:
    """The inputs KSampler and KSamplerAdvanced share, in ComfyUI's order: steps to latent_image."""
    return [Int("steps", default=20, min=1, max=10000),
            Float("cfg", default=8.0, min=0.0, max=100.0, step=0.1),
            Choice("sampler_name", _sampler_names(), default="euler"),
            Choice("scheduler", _scheduler_names(), default="normal"),
            Input("positive", "CONDITIONING,KOLORS_EMBEDS", force_link=True),
            Input("negative", "CONDITIONING,KOLORS_EMBEDS", force_link=True),
            Input("latent_image", "LATENT", force_link=True)]


class _SamplerNode(Node):
    """What KSampler and KSamplerAdvanced share besides `run_sampler`: category, output and the check
    of the sampler/scheduler pair at validation."""

    category = "sampling"
    outputs = [Output("LATENT", "LATENT")]

    @classmethod
    def validate_inputs(cls, sampler_name: str, scheduler: str) -> bool | str:
        return _check(sampler_name, scheduler)


class KSampler(_SamplerNode):
    """Denoise a latent with a model and positive/negative conditioning (text-to-image from an empty latent,
    image-to-image with `denoise` < 1, inpainting when the latent has a noise mask)."""

    inputs = [Input("model", MODEL_TYPES, force_link=True),
              Int("seed", default=0, min=0, max=MAX_SEED),
              *_schedule_inputs(),
              Float("denoise", default=1.0, min=0.0, max=1.0, step=0.01)]

    def run(self, model: Any, seed: int, steps: int, cfg: float, sampler_name: str, scheduler: str, positive: Any,
            negative: Any, latent_image: dict[str, Any], denoise: float = 1.0) -> dict[str, Any]:
        if denoise <= 0:
            return dict(latent_image)
        return run_sampler(self, model, positive, negative, latent_image, seed=seed, steps=steps, cfg=cfg,
                           sampler_name=sampler_name, scheduler=scheduler, denoise=denoise)


class KSamplerAdvanced(_SamplerNode):
    """KSampler over a part of the schedule: start/end steps, optional added noise, optional leftover noise
    (a start at or beyond the last step passes the latent through, as refiner stages rely on)."""

    inputs = [Input("model", MODEL_TYPES, force_link=True),
              Choice("add_noise", ["enable", "disable"], default="enable"),
              Int("noise_seed", default=0, min=0, max=MAX_SEED),
              *_schedule_inputs(),
              Int("start_at_step", default=0, min=0, max=10000),
              Int("end_at_step", default=10000, min=0, max=10000),
              # ComfyUI's own SDXL test graph writes true/false here: accepted as well
              Choice("return_with_leftover_noise", ["disable", "enable", False, True], default="disable")]

    def run(self, model: Any, add_noise: str, noise_seed: int, steps: int, cfg: float, sampler_name: str,
            scheduler: str, positive: Any, negative: Any, latent_image: dict[str, Any], start_at_step: int,
            end_at_step: int, return_with_leftover_noise: Any) -> dict[str, Any]:
        leftover = return_with_leftover_noise in ("enable", True)
        if start_at_step >= min(steps, end_at_step):
            return dict(latent_image)  # nothing to run: ComfyUI passes the latent through
        return run_sampler(self, model, positive, negative, latent_image, seed=noise_seed, steps=steps, cfg=cfg,
                           sampler_name=sampler_name, scheduler=scheduler, start_step=start_at_step,
                           end_step=end_at_step, add_noise=add_noise in ("enable", True), leftover_noise=leftover)


NODES = [CLIPTextEncode, CLIPSetLastLayer, KSampler, KSamplerAdvanced]
