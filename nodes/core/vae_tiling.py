"""Tiled VAE encoding and the pixel preparation the VAE encode nodes share.

Tiled encode mirrors the shared VAE ops' tiled decode: the image is cut into overlapping tiles
(aligned to the VAE's 8-pixel cells), each tile is encoded on its own (with the ops' fp16 guard),
and the latent tiles are blended with linear ramps across the overlaps. Memory is bounded by the
tile size; the result is close to, not equal to, a one-piece encode (the encoder's group norms
and attention see one tile at a time).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 - the usual name

# The decode side's tile placement and blending weights, so both directions tile alike.
from graphgen_nodes.diffusion.vae_ops import _ramp, _tile_starts, encode, vae_scale_factor

__all__ = ["center_crop_to_multiple", "encode_tiled", "grow_mask", "inpaint_pixels"]


def center_crop_to_multiple(pixels: torch.Tensor, multiple: int) -> torch.Tensor:
    """Crop `[B, H, W, C]` to the largest multiple of `multiple` on each side, centred (as ComfyUI)."""
    height, width = int(pixels.shape[1]), int(pixels.shape[2])
    new_h, new_w = height // multiple * multiple, width // multiple * multiple
    if (new_h, new_w) == (height, width):
        return pixels
    if new_h == 0 or new_w == 0:
        raise ValueError(f"image {width}x{height} is smaller than one VAE cell ({multiple} pixels); "
                         f"scale it to at least {multiple}x{multiple}")
    top, left = (height - new_h) // 2, (width - new_w) // 2
    return pixels[:, top : top + new_h, left : left + new_w, :]


def encode_tiled(vae: Any, pixels: torch.Tensor, *, tile_size: int = 512, overlap: int = 64,
                 warnings: list[str] | None = None) -> torch.Tensor:
    """Encode `[B, H, W, 3]` images (H, W multiples of the VAE's cell) to scaled latents, tile by tile."""
    f = vae_scale_factor(vae)
    h, w = int(pixels.shape[1]) // f, int(pixels.shape[2]) // f
    tile = max(tile_size // f, 1)
    lap = min(max(overlap // f, 0), tile - 1)
    ys, xs = _tile_starts(h, tile, tile - lap), _tile_starts(w, tile, tile - lap)
    out: torch.Tensor | None = None
    weight: torch.Tensor | None = None
    for y in ys:
        for x in xs:
            part = encode(vae, pixels[:, y * f : (y + tile) * f, x * f : (x + tile) * f, :], warnings=warnings)
            if out is None:
                out = torch.zeros((part.shape[0], part.shape[1], h, w), dtype=torch.float32, device=part.device)
                weight = torch.zeros((1, 1, h, w), dtype=torch.float32, device=part.device)
            th, tw = int(part.shape[-2]), int(part.shape[-1])
            ramp = (_ramp(th, lap, y == 0, y + tile >= h)[:, None] * _ramp(tw, lap, x == 0, x + tile >= w)[None, :])
            ramp = ramp.to(part.device)[None, None]
            out[:, :, y : y + th, x : x + tw] += part * ramp
            assert weight is not None
            weight[:, :, y : y + th, x : x + tw] += ramp
    assert out is not None and weight is not None
    return out / weight


def grow_mask(mask: torch.Tensor, pixels: int) -> torch.Tensor:
    """Binarize `[B, 1, H, W]` (round) and grow it by a `pixels`-wide square (0: just round).

    A `pixels` x `pixels` window marks a pixel when any pixel under it is marked, so the region to
    repaint reaches a few pixels past the mask's edge and the seam falls inside it.
    """
    binary = mask.round()
    if pixels <= 0:
        return binary
    pad = (pixels - 1 + 1) // 2  # ceil((pixels - 1) / 2)
    grown = F.max_pool2d(binary, kernel_size=pixels, stride=1, padding=pad)
    return grown[:, :, : mask.shape[-2], : mask.shape[-1]]


def inpaint_pixels(pixels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Pixels `[B, H, W, 3]` with the masked area (`[B or 1, 1, H, W]`, rounded) set to grey 0.5."""
    keep = (1.0 - mask.round()).squeeze(1).unsqueeze(-1)
    return (pixels - 0.5) * keep + 0.5
