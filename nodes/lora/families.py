"""What the LoRA trainer needs to know about a model family, in one adapter per family.

The trainer itself is family-agnostic (peft-style: a config, layers, a loop). A
:class:`TrainFamily` says, for one family:

* the noise schedule (``alphas_cumprod``); which UNet layers get LoRA is the config's
  ``network_modules`` (:data:`NETWORK_MODULES`, the same names in every family);
* how the UNet is called with the cached text conditioning and any added conditioning
  (:meth:`TrainFamily.unet_kwargs`: SD1.5 takes the hidden states only; SDXL and Kolors also take a
  pooled embedding and the size/crop ids);
* how the trained file is named for kohya-aware tools (``kohya_layout``, ``ss_base_model_version``);
* how a sample image is rendered with the LoRA being trained (:meth:`TrainFamily.render`).

What is encoded and cached per family (ChatGLM hidden states and pooled output for Kolors; both
CLIP encoders, pooled output for SDXL; CLIP hidden states for SD1.5) is chosen by the node that
builds the text encoder function; the cache stores ``(prompt_embeds, pooled)`` for every family
(``pooled`` is empty for SD1.5).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["FAMILIES", "KOLORS", "NETWORK_MODULES", "SD15", "SDXL", "SDTrainFamily", "TrainFamily", "get_family"]

#: peft target modules of every family so far: each attention's query, key, value and output.
ATTENTION_MODULES = ["to_q", "to_k", "to_v", "to_out.0"]
#: kohya's default LoRA (``networks.lora``): every Linear layer of the transformer blocks, i.e. the
#: attentions plus the feed-forward layers and ``proj_in``/``proj_out`` (where they are Linear).
TRANSFORMER_MODULES = [*ATTENTION_MODULES, "ff.net.0.proj", "ff.net.2", "proj_in", "proj_out"]
#: ``network_modules`` choices: which layers of the UNet get LoRA.
NETWORK_MODULES = {"attention": ATTENTION_MODULES, "transformer": TRANSFORMER_MODULES}


def scaled_linear_alphas(start: float, end: float, steps: int) -> torch.Tensor:
    """``alphas_cumprod`` of a "scaled_linear" beta schedule (fp32, CPU)."""
    betas = torch.linspace(start**0.5, end**0.5, steps, dtype=torch.float32) ** 2
    return torch.cumprod(1.0 - betas, dim=0)


@dataclass(frozen=True)
class TrainFamily:
    """One model family's training facts.

    Attributes:
        name: ``"kolors"``, ``"sdxl"``, ``"sd15"``.
        beta_schedule: ``(beta_start, beta_end, num_train_timesteps)`` of its scaled-linear schedule.
        added_cond: The UNet takes ``added_cond_kwargs`` (pooled text embedding and time ids).
        crop_conditioning: Time ids carry the image's original size and crop (SDXL, as kohya);
            otherwise ``[H, W, 0, 0, H, W]`` of the training size (Kolors, as DiffSynth's trainer).
        kohya_layout: ``convert.write_lora`` format of the trained file. ``"kohya_diffusers"``
            (``lora_unet_down_blocks_0_attentions_0_...`` with ``.alpha``, as kohya writes SD1.5)
            is the default for every family: ComfyUI's ``LoraLoader`` maps these names for any
            UNet, and diffusers' kohya converter reads them for any block layout, while its LDM
            ("SGM", ``input_blocks``) mapping assumes SDXL's exact block counts.
        ss_base_model_version: kohya's ``ss_base_model_version`` metadata value.
        default_resolution: Training resolution people use for it.
    """

    name: str
    beta_schedule: tuple[float, float, int] = (0.00085, 0.012, 1000)
    added_cond: bool = True
    crop_conditioning: bool = True
    kohya_layout: str = "kohya_diffusers"
    ss_base_model_version: str = "sdxl_base_v1-0"
    default_resolution: int = 1024

    def alphas_cumprod(self, scheduler: Any | None = None) -> torch.Tensor:
        """``alphas_cumprod`` (fp32, CPU) of ``scheduler``, or of the family's own schedule."""
        if scheduler is not None and getattr(scheduler, "alphas_cumprod", None) is not None:
            return scheduler.alphas_cumprod.detach().to("cpu", torch.float32)
        return scaled_linear_alphas(*self.beta_schedule)

    def time_ids(
        self,
        target: tuple[int, int],
        original: tuple[int, int],
        crop: tuple[int, int],
    ) -> list[int]:
        """The six size/crop ids of one sample: ``[orig_h, orig_w, top, left, target_h, target_w]``.

        Args:
            target: Training size ``(height, width)``.
            original: The image's size ``(height, width)`` before resizing.
            crop: The crop's ``(top, left)`` in resized pixels.
        """
        h, w = target
        if not self.crop_conditioning or original == (0, 0):
            return [h, w, 0, 0, h, w]
        return [original[0], original[1], crop[0], crop[1], h, w]

    def unet_kwargs(
        self,
        embeds: torch.Tensor,
        pooled: torch.Tensor,
        time_ids: torch.Tensor,
    ) -> dict[str, Any]:
        """Keyword arguments of the UNet call besides the noisy latents and the timestep.

        Args:
            embeds: ``[B, L, D]`` text hidden states (on the device, input dtype).
            pooled: ``[B, P]`` pooled text embeddings (ignored without added conditioning).
            time_ids: ``[B, 6]`` size/crop ids (ignored without added conditioning).
        """
        kwargs: dict[str, Any] = {"encoder_hidden_states": embeds}
        if self.added_cond:
            kwargs["added_cond_kwargs"] = {"text_embeds": pooled, "time_ids": time_ids}
        return kwargs

    def render(
        self,
        unet: Any,
        positive: tuple[torch.Tensor, torch.Tensor],
        negative: tuple[torch.Tensor, torch.Tensor],
        *,
        width: int,
        height: int,
        seed: int,
        steps: int,
        cfg: float,
    ) -> torch.Tensor:
        """Samples scaled latents ``[P, 4, H/8, W/8]`` for ``P`` encoded prompts (Euler).

        Args:
            unet: The UNet to sample with (the training copy with its LoRA).
            positive: ``(prompt_embeds [P, L, D], pooled [P, D])``.
            negative: The same for one negative prompt (``[1, L, D]``).
            width: Image width in pixels.
            height: Image height in pixels.
            seed: Noise seed (the same for every checkpoint, so grids compare).
            steps: Sampling steps.
            cfg: Guidance scale.
        """
        from ..kolors.encode import Conditioning
        from ..kolors.sampling import sample

        return sample(
            unet,
            "euler",
            Conditioning(positive[0], positive[1]),
            Conditioning(negative[0], negative[1]),
            seed=seed,
            steps=steps,
            cfg=cfg,
            width=width,
            height=height,
        )


#: Kolors: ChatGLM3 hidden states (4096) and pooled output, SDXL-shaped UNet, 1100-step schedule,
#: time ids of the training size (the tutorial's DiffSynth trainer).
KOLORS = TrainFamily(
    name="kolors",
    beta_schedule=(0.00085, 0.014, 1100),
    crop_conditioning=False,
    ss_base_model_version="kolors",
)



@dataclass(frozen=True)
class SDTrainFamily(TrainFamily):
    """SD1.5 and SDXL: CLIP conditioning, 1000-step schedule, sampled with the shared denoise loop."""

    def render(
        self,
        unet: Any,
        positive: tuple[torch.Tensor, torch.Tensor],
        negative: tuple[torch.Tensor, torch.Tensor],
        *,
        width: int,
        height: int,
        seed: int,
        steps: int,
        cfg: float,
    ) -> torch.Tensor:
        """Euler with ComfyUI's ``normal`` schedule, one prompt at a time, the same seed for each."""
        from ..diffusion.comfy_samplers import SD_SCHEDULER_CONFIG, make_comfy_scheduler
        from ..diffusion.denoise import CondEntry, denoise, make_generator

        param = next(unet.parameters())
        ids = torch.tensor([[height, width, 0, 0, height, width]], dtype=torch.float32)

        def entry(embeds: torch.Tensor, pooled: torch.Tensor) -> CondEntry:
            added = {"text_embeds": pooled, "time_ids": ids} if self.added_cond else None
            return CondEntry(embeds=embeds, added=added)

        out = []
        for row in range(positive[0].shape[0]):
            out.append(denoise(
                unet, make_comfy_scheduler("euler", "normal", SD_SCHEDULER_CONFIG),
                [entry(positive[0][row : row + 1], positive[1][row : row + 1])],
                [entry(negative[0][:1], negative[1][:1])],
                torch.zeros(1, 4, height // 8, width // 8), generator=make_generator(seed), steps=steps,
                cfg=cfg, device=param.device, dtype=param.dtype,
            ))
        return torch.cat(out)


#: SD1.5: CLIP ViT-L hidden states (the family's CLIPTextEncode), no added conditioning.
SD15 = SDTrainFamily(name="sd15", added_cond=False, ss_base_model_version="sd_v1", default_resolution=512)
#: SDXL: both CLIP encoders' penultimate states, bigG's pooled output, and kohya's size/crop ids
#: (original size, crop top-left, bucket size).
SDXL = SDTrainFamily(name="sdxl", crop_conditioning=True, ss_base_model_version="sdxl_base_v1-0")

FAMILIES: dict[str, TrainFamily] = {"kolors": KOLORS, "sd15": SD15, "sdxl": SDXL}


def get_family(name: str) -> TrainFamily:
    """The adapter of family ``name``.

    Raises:
        KeyError: Naming the known families.
    """
    try:
        return FAMILIES[name]
    except KeyError:
        raise KeyError(f"no LoRA training for model family {name!r}: known are {', '.join(sorted(FAMILIES))}") \
            from None
