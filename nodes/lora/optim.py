"""Optimiser, learning-rate schedule and loss weighting of the LoRA trainer.

* Optimisers: ``AdamW`` (torch) and ``AdamW8bit`` (bitsandbytes, CUDA only; refused clearly
  elsewhere, since bitsandbytes' 8-bit states need a GPU).
* Schedules: diffusers' ``get_scheduler`` (``constant``, ``constant_with_warmup``, ``linear``,
  ``cosine``), counted in optimiser steps.
* min-SNR-γ (Hang et al. 2023, kohya's ``min_snr_gamma``): an epsilon-prediction loss at
  timestep ``t`` is weighted by ``min(SNR(t), γ) / SNR(t)`` with ``SNR = ᾱ / (1 - ᾱ)``.
* Noise offset (kohya's ``noise_offset``): ``noise + offset · N(0, 1)`` per sample and channel,
  constant over the image, so the model learns to shift overall brightness.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import torch

__all__ = [
    "LR_SCHEDULERS",
    "OPTIMIZERS",
    "check_optimizer",
    "make_lr_scheduler",
    "make_optimizer",
    "min_snr_weight",
    "offset_noise",
]

OPTIMIZERS = ("AdamW", "AdamW8bit")
LR_SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine")


def check_optimizer(name: str, device: torch.device | None) -> str | None:
    """Why ``name`` cannot run on ``device`` (one line with the fix), or ``None`` if it can.

    Args:
        name: Optimiser name.
        device: The training device (``None``: only what is known without it).
    """
    if name not in OPTIMIZERS:
        return f"optimizer must be one of {', '.join(OPTIMIZERS)} (got {name!r})"
    if name == "AdamW8bit":
        if importlib.util.find_spec("bitsandbytes") is None:
            return "optimizer AdamW8bit needs bitsandbytes (pip install bitsandbytes) and a CUDA GPU: use AdamW"
        if not torch.cuda.is_available() or (device is not None and device.type != "cuda"):
            return "optimizer AdamW8bit runs only on a CUDA GPU (bitsandbytes): use AdamW on this device"
    return None


def make_optimizer(
    name: str, params: list[torch.nn.Parameter] | list[dict[str, Any]], lr: float, weight_decay: float,
    device: torch.device,
) -> torch.optim.Optimizer:
    """The optimiser (betas 0.9/0.999, eps 1e-8, as kohya and the tutorial).

    ``params`` is a list of tensors, or of torch parameter groups (``{"params": [...], "lr": x}``;
    the trainer's UNet and text-encoder groups), each at its own learning rate; ``lr`` is the default.

    Raises:
        ValueError: When :func:`check_optimizer` refuses it.
    """
    problem = check_optimizer(name, device)
    if problem:
        raise ValueError(problem)
    if name == "AdamW8bit":
        import bitsandbytes as bnb  # type: ignore[import-not-found]

        return bnb.optim.AdamW8bit(params, lr=lr, weight_decay=weight_decay)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=device.type == "cuda" or None)


def make_lr_scheduler(name: str, optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int) -> Any:
    """diffusers' ``get_scheduler`` for ``name`` (warmup is ignored by ``constant``)."""
    from diffusers.optimization import get_scheduler

    if name not in LR_SCHEDULERS:
        raise ValueError(f"lr_scheduler must be one of {', '.join(LR_SCHEDULERS)} (got {name!r})")
    return get_scheduler(name, optimizer, num_warmup_steps=warmup_steps, num_training_steps=total_steps)


def min_snr_weight(alpha_bar: torch.Tensor, gamma: float) -> torch.Tensor:
    """``min(SNR, γ) / SNR`` for epsilon prediction (1 where ``γ <= 0``, i.e. off)."""
    if gamma <= 0:
        return torch.ones_like(alpha_bar)
    snr = alpha_bar / (1.0 - alpha_bar)
    return torch.clamp(snr, max=gamma) / snr


def offset_noise(noise: torch.Tensor, offset: float, generator: torch.Generator) -> torch.Tensor:
    """``noise + offset · N(0, 1)[B, C, 1, 1]`` drawn from ``generator`` (unchanged when 0)."""
    if offset <= 0:
        return noise
    b, c = noise.shape[:2]
    return noise + offset * torch.randn((b, c, 1, 1), generator=generator)
