"""A tiny base UNet that really denoises, for `graphgen demo` (the tests keep the random one).

A LoRA adapts a model that already denoises. The tiny random-weight UNet does not: its noise
prediction is unrelated to its input, so sampling returns the starting noise times the largest
sigma, and a LoRA on its transformer layers (everything else frozen and random) cannot fix that
in a demo's minute. :func:`pretrain_unet` gives the demo a base model the way real ones are
made, in miniature: every weight of the tiny UNet trained for a few seconds on generic pictures
(:func:`~graphgen.testing.demo_data.shape_pictures`: shapes in random colours, captions naming
the shape), encoded by the demo's VAE and the tiny ChatGLM, with the noise schedule and the
noise-prediction loss of Kolors. Deterministic: a fixed seed, one torch thread, no data from
outside. The demo's subject (a red disc on off-white) is not taught; the LoRA teaches it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from diffusers import DDPMScheduler
from PIL import Image

from graphgen_nodes.kolors.encode import encode_prompts
from graphgen_nodes.kolors.sampling import time_ids

from .demo_data import shape_pictures
from .tiny_kolors import KOLORS_SCHEDULER_CONFIG, TinyKolors

#: Pretraining: pictures, optimiser steps, batch, learning rate, the share of empty captions
#: (so classifier-free guidance has an unconditional model to work from).
PICTURES, STEPS, BATCH, LEARNING_RATE, EMPTY_CAPTIONS = 512, 128, 16, 2e-3, 0.2


def _pixels(pictures: Sequence[tuple[Image.Image, str]]) -> torch.Tensor:
    """``[n, 3, h, w]`` in [-1, 1]."""
    import numpy as np

    arrays = np.stack([np.asarray(image, dtype=np.float32) for image, _ in pictures])
    return torch.from_numpy(arrays).permute(0, 3, 1, 2) / 127.5 - 1.0


def pretrain_unet(tiny: TinyKolors, *, size: int = 64, steps: int = STEPS, seed: int = 0,
                  progress: Callable[[int, int], None] | None = None) -> list[float]:
    """Trains every weight of ``tiny.unet`` in place on shape pictures at `size`; returns the losses.

    ``tiny.vae`` must reconstruct images (:func:`graphgen.testing.demo_vae.colour_cell_vae`);
    the UNet is left in eval mode, the global torch RNG untouched. ``progress(step, steps)`` is
    called after every step.
    """
    pictures = shape_pictures(PICTURES, size, seed)
    captions = sorted({caption for _, caption in pictures}) + [""]
    with torch.no_grad():
        latents = tiny.vae.encode(_pixels(pictures)).latent_dist.mean * tiny.vae.config.scaling_factor
        cond = encode_prompts(tiny.text_encoder, tiny.tokenizer, captions)
    caption_index = torch.tensor([captions.index(caption) for _, caption in pictures])
    scheduler = DDPMScheduler.from_config(KOLORS_SCHEDULER_CONFIG)
    add_time_ids = torch.tensor([time_ids(size, size)], dtype=torch.float32)
    unet = tiny.unet.train()
    optimiser = torch.optim.AdamW(unet.parameters(), lr=LEARNING_RATE)
    gen = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(steps):
        rows = torch.randint(0, len(pictures), (BATCH,), generator=gen)
        text = torch.where(torch.rand(BATCH, generator=gen) < EMPTY_CAPTIONS, len(captions) - 1, caption_index[rows])
        noise = torch.randn(latents[rows].shape, generator=gen)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (BATCH,), generator=gen)
        noisy = scheduler.add_noise(latents[rows], noise, t)
        predicted = unet(noisy, t, encoder_hidden_states=cond.embeds[text],
                         added_cond_kwargs={"text_embeds": cond.pooled[text],
                                            "time_ids": add_time_ids.expand(BATCH, -1)}).sample
        loss = torch.nn.functional.mse_loss(predicted, noise)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
        if progress is not None:
            progress(len(losses), steps)
    unet.eval()
    return losses
