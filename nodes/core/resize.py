"""Resizing image and latent tensors with ComfyUI's upscale methods and crop rule.

Tensors are channels-first `[B, C, H, W]` (IMAGE values are moved to that layout by the caller).

Methods:
    nearest-exact, bilinear, area, bicubic: `torch.nn.functional.interpolate` (half-pixel centres,
        no antialiasing, no clamping; bicubic may overshoot [0, 1] as in ComfyUI).
    lanczos: Pillow's LANCZOS filter per channel in 32-bit float mode, so nothing is rounded to
        8 bits on the way (ComfyUI rounds; the two differ by less than one 8-bit level).
    bislerp: bilinear interpolation whose blend of two neighbouring latent vectors is spherical
        (slerp of their directions, linear blend of their lengths), so upscaled latents keep the
        magnitude statistics the sampler expects instead of shrinking between cells.

Crop "center" first cuts the input to the target aspect ratio, centred, then resizes.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the usual name
from PIL import Image

from .sizes import CROPS, IMAGE_METHODS, LATENT_METHODS

__all__ = ["IMAGE_METHODS", "LATENT_METHODS", "CROPS", "center_crop", "upscale"]



def center_crop(samples: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """The centred part of `samples` with the aspect ratio of `width` x `height`."""
    old_h, old_w = int(samples.shape[-2]), int(samples.shape[-1])
    old_aspect, new_aspect = old_w / old_h, width / height
    x = y = 0
    if old_aspect > new_aspect:  # too wide: cut left and right
        x = round((old_w - old_w * new_aspect / old_aspect) / 2)
    elif old_aspect < new_aspect:  # too tall: cut top and bottom
        y = round((old_h - old_h * old_aspect / new_aspect) / 2)
    return samples[..., y : old_h - y, x : old_w - x]


def upscale(samples: torch.Tensor, width: int, height: int, method: str, crop: str = "disabled") -> torch.Tensor:
    """Resize `[B, C, H, W]` to `height` x `width` with one of the methods above.

    Raises:
        ValueError: For an unknown method or crop, or a target size below 1.
    """
    if width < 1 or height < 1:
        raise ValueError(f"target size must be at least 1x1, got {width}x{height}")
    if crop not in CROPS:
        raise ValueError(f"crop must be one of {CROPS}, got {crop!r}")
    if crop == "center":
        samples = center_crop(samples, width, height)
    if method == "lanczos":
        return _lanczos(samples, width, height)
    if method == "bislerp":
        return _bislerp(samples, width, height)
    if method in ("nearest-exact", "bilinear", "area", "bicubic"):
        return F.interpolate(samples, size=(height, width), mode=method)
    raise ValueError(f"unknown upscale method {method!r}; use one of {sorted(set(IMAGE_METHODS + LATENT_METHODS))}")


def _lanczos(samples: torch.Tensor, width: int, height: int) -> torch.Tensor:
    array = samples.detach().to(torch.float32).cpu().numpy()
    out = np.empty((*array.shape[:2], height, width), dtype=np.float32)
    for b in range(array.shape[0]):
        for c in range(array.shape[1]):
            plane = Image.fromarray(np.ascontiguousarray(array[b, c]), mode="F")
            out[b, c] = np.asarray(plane.resize((width, height), Image.Resampling.LANCZOS))
    return torch.from_numpy(out).to(device=samples.device, dtype=samples.dtype)


def _source_positions(size_in: int, size_out: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For each output index: the left/right source indices and the weight of the right one.

    Half-pixel centres, as bilinear interpolation without corner alignment.
    """
    pos = ((torch.arange(size_out, dtype=torch.float64) + 0.5) * size_in / size_out - 0.5).clamp(0, size_in - 1)
    left = pos.floor().long()
    right = (left + 1).clamp(max=size_in - 1)
    return left, right, (pos - left).to(torch.float32)


def _slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Blend vectors along dim 1: slerp of the directions, linear blend of the lengths."""
    norm_a = a.norm(dim=1, keepdim=True)
    norm_b = b.norm(dim=1, keepdim=True)
    unit_a = a / norm_a.clamp_min(1e-12)
    unit_b = b / norm_b.clamp_min(1e-12)
    cos = (unit_a * unit_b).sum(dim=1, keepdim=True).clamp(-1.0, 1.0)
    omega = torch.acos(cos)
    sin = torch.sin(omega)
    # Near-parallel (or zero) vectors: slerp degenerates to lerp of the directions.
    safe = sin.abs() > 1e-6
    wa = torch.where(safe, torch.sin((1 - t) * omega) / torch.where(safe, sin, 1.0), 1 - t)
    wb = torch.where(safe, torch.sin(t * omega) / torch.where(safe, sin, 1.0), t)
    direction = wa * unit_a + wb * unit_b
    length = (1 - t) * norm_a + t * norm_b
    # Opposite vectors have no defined slerp path; their linear blend is used instead.
    linear = (1 - t) * a + t * b
    opposite = cos < -0.9999
    return torch.where(opposite, linear, direction * length)


def _bislerp(samples: torch.Tensor, width: int, height: int) -> torch.Tensor:
    dtype = samples.dtype
    x = samples.to(torch.float32)
    left, right, t = _source_positions(int(x.shape[-1]), width)
    x = _slerp(x[..., left], x[..., right], t.view(1, 1, 1, -1))
    top, bottom, t = _source_positions(int(x.shape[-2]), height)
    x = _slerp(x[..., top, :], x[..., bottom, :], t.view(1, 1, -1, 1))
    return x.to(dtype)
