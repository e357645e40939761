"""The denoising loop behind KSampler and KSamplerAdvanced, for every UNet family (SD1.5, SDXL, Kolors).

Step for step it is diffusers' pipeline loop (``StableDiffusionPipeline`` /
``StableDiffusionXLPipeline``): ``scale_model_input``, one UNet call on ``[negative, positive]``,
``uncond + cfg · (cond − uncond)``, ``scheduler.step`` with ``eta=0`` and the CPU generator, so
with one conditioning entry per side the graph equals the pipeline on the same weights.

ComfyUI's semantics on top (graphgen follows diffusers' noise convention: initial noise times
the scheduler's ``init_noise_sigma``; ComfyUI's ``sqrt(σ_max² + 1)`` differs by up to ~1.5 levels
with "linspace" spacing, see sd-families.md):

* several CONDITIONING entries per side: each entry's prediction is computed on its own and the
  predictions are averaged, weighted by the entry's ``strength``; entries with
  ``timestep_start``/``timestep_end`` (fractions of the schedule, 0 = the noisiest end) count
  only while the step's timestep lies in their range;
* ``denoise`` < 1: a schedule of ``int(steps / denoise)`` steps of which the last ``steps`` run
  (ComfyUI's reading, not diffusers' img2img ``strength``);
* start/end steps, ``add_noise`` and ``return_with_leftover_noise`` of KSamplerAdvanced: a start
  at or beyond the last step returns the input latent unchanged;
* a LATENT ``noise_mask`` (inpainting): after each step the unmasked area is reset to the input
  latent noised to the next step's level, as diffusers' 4-channel inpainting pipeline does.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["MAX_SEED", "CondEntry", "denoise", "make_generator", "step_kwargs"]

#: Largest accepted seed (torch generators take unsigned 64-bit seeds).
MAX_SEED = 2**64 - 1

ProgressFn = Callable[[int, int], None]


@dataclass
class CondEntry:
    """One conditioning entry, ready for the UNet.

    Attributes:
        embeds: ``encoder_hidden_states`` ``[1 or B, T, C]``.
        added: SDXL/Kolors ``added_cond_kwargs`` (``text_embeds``, ``time_ids``), rows as ``embeds``.
        start: ComfyUI ``timestep_start`` (fraction of the schedule where the entry starts).
        end: ComfyUI ``timestep_end``.
        strength: Weight among the side's entries.
    """

    embeds: torch.Tensor
    added: dict[str, torch.Tensor] | None = None
    start: float = 0.0
    end: float = 1.0
    strength: float = 1.0

    def active(self, t: float, train_steps: int) -> bool:
        # ComfyUI: percent p ↔ the timestep (1 − p)·(T − 1)
        hi = (1.0 - self.start) * (train_steps - 1)
        lo = (1.0 - self.end) * (train_steps - 1)
        return lo - 1e-4 <= t <= hi + 1e-4


@dataclass
class _Side:
    entries: list[CondEntry] = field(default_factory=list)

    def at(self, t: float, train_steps: int) -> list[CondEntry]:
        live = [e for e in self.entries if e.active(t, train_steps)]
        return live or self.entries  # ComfyUI keeps sampling when no entry covers a step


def _rows(x: torch.Tensor, rows: int) -> torch.Tensor:
    if x.shape[0] == rows:
        return x
    if rows % x.shape[0] == 0:
        return x.repeat_interleave(rows // x.shape[0], dim=0)
    raise ValueError(f"conditioning has {x.shape[0]} rows, the latent batch has {rows}")


def make_generator(seed: int) -> torch.Generator:
    """Returns a CPU generator for a 64-bit seed.

    Args:
        seed: Integer in ``0 .. 2**64 - 1``; used as torch's generator seed unchanged.

    Returns:
        A seeded ``torch.Generator`` on the CPU.

    Raises:
        ValueError: If the seed is not an integer in range.
    """
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer, got {type(seed).__name__}")
    if not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed must be in 0..{MAX_SEED}, got {seed}")
    return torch.Generator(device="cpu").manual_seed(seed)


def _entry_inputs(entries: Sequence[CondEntry], rows: int, device: Any, dtype: Any
                  ) -> tuple[torch.Tensor, dict[str, torch.Tensor] | None]:
    embeds = torch.cat([_rows(e.embeds, rows) for e in entries]).to(device=device, dtype=dtype)
    if entries[0].added is None:
        return embeds, None
    added = {k: torch.cat([_rows(e.added[k], rows) for e in entries]).to(device=device, dtype=dtype)  # type: ignore[index]
             for k in entries[0].added}
    return embeds, added


def step_kwargs(scheduler: Any, generator: torch.Generator) -> dict[str, Any]:
    """The pipeline's ``prepare_extra_step_kwargs``: ``eta=0`` and the generator where accepted."""
    params = set(inspect.signature(scheduler.step).parameters)
    kwargs: dict[str, Any] = {}
    if "eta" in params:
        kwargs["eta"] = 0.0
    if "generator" in params:
        kwargs["generator"] = generator
    return kwargs


def _resized_mask(mask: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
    """A pixel or latent mask ``[B?, 1?, H, W]`` as ``[B, 1, h, w]`` at the latent size (1 = resample)."""
    m = mask.to(torch.float32)
    if m.ndim == 2:
        m = m[None, None]
    elif m.ndim == 3:
        m = m[:, None]
    m = torch.nn.functional.interpolate(m, size=latents.shape[-2:], mode="bilinear", align_corners=False)
    return _rows(m, latents.shape[0]).to(latents.device).clamp(0, 1)


@torch.no_grad()
def denoise(
    unet: Any,
    scheduler: Any,
    positive: Sequence[CondEntry],
    negative: Sequence[CondEntry],
    latents: torch.Tensor,
    *,
    generator: torch.Generator,
    steps: int,
    cfg: float,
    denoise_strength: float = 1.0,
    start_step: int = 0,
    end_step: int | None = None,
    add_noise: bool = True,
    noise_only: bool = False,
    leftover_noise: bool = False,
    noise_mask: torch.Tensor | None = None,
    progress: ProgressFn | None = None,
    check_cancelled: Callable[[], None] | None = None,
    device: torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Samples scaled latents ``[B, 4, h, w]`` (fp32, returned on the CPU).

    Args:
        unet: A diffusers ``UNet2DConditionModel``.
        scheduler: A fresh diffusers scheduler (it is stateful).
        positive, negative: The sides' entries (``negative`` may be empty when ``cfg == 1``).
        latents: Scaled input latents (zeros for an empty latent).
        generator: CPU generator; noise ``[B, 4, h, w]`` is drawn first, then the solver's own.
        steps: Steps of the schedule (KSampler: steps that run).
        cfg: Guidance scale; 1 runs the positive side only.
        denoise_strength: KSampler's ``denoise`` (ComfyUI: a longer schedule, its last ``steps``).
        start_step, end_step: KSamplerAdvanced's range of the schedule.
        add_noise: Noise the input to the start step's level (KSamplerAdvanced's ``add_noise``).
        noise_only: The input is an empty latent: the pure-noise start of text-to-image.
        leftover_noise: Keep the noise at ``end_step`` (else the last step goes to σ = 0).
        noise_mask: Inpainting mask (1 = resample), pixel or latent sized.
    """
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    if not 0.0 < denoise_strength <= 1.0:
        raise ValueError(f"denoise must be in (0, 1], got {denoise_strength}")
    param = next(unet.parameters())
    device = device or param.device
    dtype = dtype or param.dtype
    rows = int(latents.shape[0])
    noise = torch.randn(tuple(latents.shape), generator=generator, dtype=torch.float32).to(device)
    x0 = latents.to(device=device, dtype=torch.float32)

    total = steps if denoise_strength >= 1.0 else max(steps, int(steps / denoise_strength))
    first = start_step + (total - steps)
    last = total if end_step is None else min(end_step + (total - steps), total)
    if first >= last:
        return latents.to(torch.float32).cpu().clone()

    scheduler.set_timesteps(total, device=device)
    order = getattr(scheduler, "order", 1)
    timesteps = scheduler.timesteps[first * order : last * order]
    if first and hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(first * order)
    if not leftover_noise and last < total:
        sigmas = getattr(scheduler, "sigmas", None)
        if sigmas is None or order != 1:
            raise ValueError(f"{type(scheduler).__name__} cannot stop early with a full denoise; "
                             "use return_with_leftover_noise, or an Euler/DPM sampler")
        scheduler.sigmas = torch.cat([sigmas[:last], sigmas.new_zeros(len(sigmas) - last)])

    if not add_noise:
        x = x0.clone()
    elif noise_only and first == 0:
        x = noise * scheduler.init_noise_sigma
    else:
        x = scheduler.add_noise(x0, noise, timesteps[:1].repeat(rows))
    mask = _resized_mask(noise_mask, x) if noise_mask is not None else None

    do_cfg = cfg != 1.0
    pos, neg = _Side(list(positive)), _Side(list(negative))
    if do_cfg and not neg.entries:
        raise ValueError("a negative conditioning is needed when cfg != 1")
    train_steps = int(scheduler.config.num_train_timesteps)
    extra = step_kwargs(scheduler, generator)
    n = len(timesteps)
    for i, t in enumerate(timesteps):
        if check_cancelled is not None:
            check_cancelled()
        p_live, n_live = pos.at(float(t), train_steps), neg.at(float(t), train_steps)
        model_in = scheduler.scale_model_input(x, t).to(dtype)
        if len(p_live) == 1 and (not do_cfg or len(n_live) == 1):
            # the pipeline's batch: [negative, positive] in one call
            sides = (n_live + p_live) if do_cfg else p_live
            embeds, added = _entry_inputs(sides, rows, device, dtype)
            batch = torch.cat([model_in] * len(sides))
            pred = unet(batch, t, encoder_hidden_states=embeds, added_cond_kwargs=added,
                        return_dict=False)[0].to(torch.float32)
            if do_cfg:
                uncond, cond = pred.chunk(2)
                pred = uncond + cfg * (cond - uncond)
        else:
            def side_pred(entries: list[CondEntry], model_in: torch.Tensor = model_in, t: Any = t,
                          like: torch.Tensor = x) -> torch.Tensor:
                acc = torch.zeros_like(like)
                weight = 0.0
                for e in entries:
                    embeds, added = _entry_inputs([e], rows, device, dtype)
                    out = unet(model_in, t, encoder_hidden_states=embeds, added_cond_kwargs=added,
                               return_dict=False)[0].to(torch.float32)
                    acc += e.strength * out
                    weight += e.strength
                return acc / (weight or 1.0)

            pred = side_pred(p_live)
            if do_cfg:
                uncond = side_pred(n_live)
                pred = uncond + cfg * (pred - uncond)
        x = scheduler.step(pred, t, x, **extra, return_dict=False)[0].to(torch.float32)
        if mask is not None:
            known = scheduler.add_noise(x0, noise, timesteps[i + 1 : i + 2].repeat(rows)) if i + 1 < n else x0
            x = mask * x + (1 - mask) * known
        if progress is not None:
            progress(i + 1, n)
    return x.cpu()
