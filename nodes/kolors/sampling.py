"""The Kolors denoising loop, step for step as diffusers' ``KolorsPipeline`` and ``KolorsImg2ImgPipeline``.

Seeds and noise
    All randomness comes from one ``torch.Generator`` on the **CPU**, seeded with
    ``generator.manual_seed(seed)``: torch accepts the full unsigned 64-bit range
    ``0 .. 2**64 - 1`` and uses the value as is (no hashing or folding), so a ComfyUI-style
    64-bit seed maps one-to-one to a generator state. The initial noise is drawn first, in
    fp32, shape ``[B, 4, H/8, W/8]``, then moved to the device; stochastic schedulers (Euler
    ancestral, DPM++ SDE) then draw their per-step noise from the same CPU generator. Because the
    numbers are drawn on the CPU, a seed gives the same image on any device. This is exactly
    what ``KolorsPipeline(generator=torch.Generator("cpu").manual_seed(seed))`` does for an fp32
    pipeline (its ``randn_tensor`` draws on the generator's device and moves the result), so
    the two agree without passing ``latents=``.

Precision
    Latents, the classifier-free-guidance combination and the scheduler step stay in fp32; only
    the UNet runs in its own dtype (fp16/bf16 inputs are cast on the way in, its output cast back
    to fp32). diffusers' pipeline keeps fp16 latents between steps (its schedulers upcast inside
    ``step``); for fp32 models both are the same computation.

Guidance
    ``cfg == 1`` runs the UNet on the positive prompt only. Any other value runs the
    unconditional and conditional batches together (``[negative, positive]``, as the pipeline)
    and combines ``uncond + cfg * (cond - uncond)``. The pipeline only guides for
    ``cfg > 1``; values below 1 are applied literally here (ComfyUI's behaviour).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from graphgen_nodes.diffusion.denoise import MAX_SEED, make_generator, step_kwargs
from graphgen_nodes.diffusion.schedulers import make_scheduler

from .encode import Conditioning, repeat_conditioning

__all__ = [
    "LATENT_CHANNELS",
    "MAX_SEED",
    "VAE_SCALE_FACTOR",
    "img2img_timesteps",
    "make_generator",
    "make_noise",
    "sample",
    "time_ids",
]

#: Pixels per latent cell.
VAE_SCALE_FACTOR = 8
#: Channels of Kolors/SDXL latents.
LATENT_CHANNELS = 4

ProgressFn = Callable[[int, int], None]
CancelFn = Callable[[], None]


def make_noise(
    shape: tuple[int, ...] | torch.Size, generator: torch.Generator, device: torch.device | str | None = None
) -> torch.Tensor:
    """Draws standard normal noise on the CPU in fp32 and moves it to ``device``.

    Args:
        shape: Tensor shape.
        generator: A CPU generator (see :func:`make_generator`).
        device: Target device.

    Returns:
        The noise tensor (fp32).
    """
    noise = torch.randn(tuple(shape), generator=generator, device="cpu", dtype=torch.float32)
    return noise.to(device) if device is not None else noise


def time_ids(height: int, width: int) -> list[int]:
    """Kolors/SDXL micro-conditioning ``[H, W, crop_top, crop_left, target_H, target_W]``."""
    return [int(height), int(width), 0, 0, int(height), int(width)]


def img2img_timesteps(scheduler: Any, steps: int, denoise: float) -> torch.Tensor:
    """Trims the schedule for img2img like ``KolorsImg2ImgPipeline.get_timesteps``.

    ``scheduler.set_timesteps(steps)`` must have been called. The last ``int(steps * denoise)``
    steps are kept and the scheduler's begin index is set to the first of them.

    Args:
        scheduler: A diffusers scheduler with timesteps set.
        steps: The number of steps the full schedule has.
        denoise: Strength in ``[0, 1]``.

    Returns:
        The timesteps to run (empty when ``int(steps * denoise) == 0``).
    """
    init_timestep = min(int(steps * denoise), steps)
    t_start = max(steps - init_timestep, 0)
    timesteps = scheduler.timesteps[t_start * scheduler.order :]
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(t_start * scheduler.order)
    return timesteps


def _fresh_scheduler(scheduler: str | Any) -> Any:
    """A new scheduler from a name, or a fresh copy of a scheduler object (they are stateful)."""
    if isinstance(scheduler, str):
        return make_scheduler(scheduler)
    if hasattr(scheduler, "config") and hasattr(type(scheduler), "from_config"):
        return type(scheduler).from_config(scheduler.config)
    raise TypeError(f"scheduler must be a name or a diffusers scheduler, got {type(scheduler).__name__}")


def _match_batch(neg: Conditioning, rows: int) -> Conditioning:
    """Broadcasts a one-row negative conditioning to ``rows`` rows."""
    if neg.batch_size == rows:
        return neg
    if neg.batch_size == 1:
        return repeat_conditioning(neg, rows)
    raise ValueError(f"negative conditioning has {neg.batch_size} rows, positive has {rows}")


@torch.no_grad()
def sample(
    unet: Any,
    scheduler: str | Any,
    positive: Conditioning,
    negative: Conditioning | None,
    *,
    seed: int,
    steps: int,
    cfg: float,
    width: int | None = None,
    height: int | None = None,
    batch_size: int = 1,
    latents_in: torch.Tensor | None = None,
    denoise: float = 1.0,
    progress: ProgressFn | None = None,
    check_cancelled: CancelFn | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Runs Kolors sampling (text-to-image, or image-to-image when ``latents_in`` is given).

    Text-to-image follows ``KolorsPipeline.__call__``: noise ``[B, 4, H/8, W/8]`` times the
    scheduler's ``init_noise_sigma``, then ``steps`` denoising steps. Image-to-image follows
    ``KolorsImg2ImgPipeline``: of the ``steps``-step schedule only the last
    ``int(steps * denoise)`` steps run, and the input latents are noised to the first of them
    with ``scheduler.add_noise`` (so ``denoise=1.0`` on an input still keeps a trace of it with
    Kolors' "leading" spacing, exactly as diffusers).

    Args:
        unet: Kolors ``UNet2DConditionModel`` (fp32, fp16 or bf16).
        scheduler: A name for :func:`~.schedulers.make_scheduler` or a diffusers scheduler; an
            object is not mutated (a fresh copy is built from its config).
        positive: Positive conditioning, ``P`` rows (one per prompt).
        negative: Negative conditioning with ``P`` rows or 1 row (broadcast); may be None only
            when ``cfg == 1``.
        seed: 64-bit seed, ``0 .. 2**64 - 1`` (see the module notes for the mapping).
        steps: Number of steps of the full schedule (at least 1).
        cfg: Classifier-free guidance scale; 1 disables the unconditional pass.
        width: Image width in pixels (multiple of 8). With ``latents_in`` it may be omitted
            (taken from the latents) and must match when given.
        height: Image height in pixels, as ``width``.
        batch_size: Images per prompt; the result has ``P * batch_size`` rows, grouped per prompt.
        latents_in: For img2img: scaled latents ``[1 or P * batch_size, 4, H/8, W/8]`` (what
            :func:`~.vae_ops.encode` returns); a single row is repeated.
        denoise: img2img strength in ``[0, 1]``; must be 1 without ``latents_in``. When it
            leaves no step to run, the input latents are returned unchanged.
        progress: Called as ``progress(i, total)`` after step ``i`` (1-based) of ``total``.
        check_cancelled: Called before every step; raise from it to stop.
        device: Where to run; defaults to the UNet's device.
        dtype: The UNet's input dtype; defaults to the UNet's parameter dtype.

    Returns:
        Scaled latents ``[P * batch_size, 4, H/8, W/8]``, fp32, on ``device`` (divide by the
        VAE's scaling factor 0.13025 before decoding; :func:`~.vae_ops.decode` does that).

    Raises:
        ValueError: On bad sizes, seeds, steps, denoise or mismatched batches.
    """
    generator = make_generator(seed)
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    if not 0.0 <= denoise <= 1.0:
        raise ValueError(f"denoise must be in [0, 1], got {denoise}")
    if latents_in is None and denoise != 1.0:
        raise ValueError("denoise < 1 needs input latents (img2img)")
    do_cfg = cfg != 1.0
    if do_cfg and negative is None:
        raise ValueError("a negative conditioning is needed when cfg != 1")

    param = next(unet.parameters())
    device = torch.device(device) if device is not None else param.device
    dtype = dtype or param.dtype

    if latents_in is not None:
        if latents_in.ndim != 4 or latents_in.shape[1] != LATENT_CHANNELS:
            raise ValueError(f"latents_in must be [B, 4, h, w], got {tuple(latents_in.shape)}")
        lat_h, lat_w = int(latents_in.shape[-2]), int(latents_in.shape[-1])
        if (height is not None and height != lat_h * VAE_SCALE_FACTOR) or (
            width is not None and width != lat_w * VAE_SCALE_FACTOR
        ):
            raise ValueError(
                f"width/height {width}x{height} do not match the input latents "
                f"({lat_w * VAE_SCALE_FACTOR}x{lat_h * VAE_SCALE_FACTOR})"
            )
        height, width = lat_h * VAE_SCALE_FACTOR, lat_w * VAE_SCALE_FACTOR
    if width is None or height is None:
        raise ValueError("width and height are needed for text-to-image")
    if width <= 0 or height <= 0 or width % VAE_SCALE_FACTOR or height % VAE_SCALE_FACTOR:
        raise ValueError(f"width and height must be positive multiples of 8, got {width}x{height}")

    pos = repeat_conditioning(positive, batch_size)
    rows = pos.batch_size
    shape = (rows, LATENT_CHANNELS, height // VAE_SCALE_FACTOR, width // VAE_SCALE_FACTOR)

    if do_cfg:
        assert negative is not None
        if negative.batch_size == positive.batch_size:
            neg = repeat_conditioning(negative, batch_size)
        else:
            neg = _match_batch(negative, rows)
        embeds = torch.cat([neg.embeds, pos.embeds], dim=0)
        pooled = torch.cat([neg.pooled, pos.pooled], dim=0)
    else:
        embeds, pooled = pos.embeds, pos.pooled
    embeds = embeds.to(device=device, dtype=dtype)
    pooled = pooled.to(device=device, dtype=dtype)
    add_time_ids = torch.tensor([time_ids(height, width)], dtype=dtype, device=device).repeat(
        embeds.shape[0], 1
    )
    added_cond = {"text_embeds": pooled, "time_ids": add_time_ids}

    sched = _fresh_scheduler(scheduler)
    sched.set_timesteps(steps, device=device)
    if latents_in is None:
        timesteps = sched.timesteps
        latents = make_noise(shape, generator, device) * sched.init_noise_sigma
    else:
        init = latents_in.to(device=device, dtype=torch.float32)
        if init.shape[0] != rows:
            if init.shape[0] == 1 or rows % init.shape[0] == 0:
                init = torch.cat([init] * (rows // init.shape[0]), dim=0)
            else:
                raise ValueError(f"cannot spread {init.shape[0]} input latents over {rows} images")
        timesteps = img2img_timesteps(sched, steps, denoise)
        if len(timesteps) == 0:
            return init.clone()
        noise = make_noise(shape, generator, device)
        latents = sched.add_noise(init, noise, timesteps[:1].repeat(rows))
    latents = latents.to(torch.float32)

    extra = step_kwargs(sched, generator)
    total = len(timesteps)
    for i, t in enumerate(timesteps):
        if check_cancelled is not None:
            check_cancelled()
        model_in = torch.cat([latents] * 2) if do_cfg else latents
        model_in = sched.scale_model_input(model_in, t).to(dtype)
        noise_pred = unet(
            model_in,
            t,
            encoder_hidden_states=embeds,
            added_cond_kwargs=added_cond,
            return_dict=False,
        )[0].to(torch.float32)
        if do_cfg:
            uncond, cond = noise_pred.chunk(2)
            noise_pred = uncond + cfg * (cond - uncond)
        latents = sched.step(noise_pred, t, latents, **extra, return_dict=False)[0].to(torch.float32)
        if progress is not None:
            progress(i + 1, total)
    return latents
