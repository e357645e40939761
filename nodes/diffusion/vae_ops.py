"""VAE decode/encode between Kolors latents and ComfyUI-style images.

Images are float tensors ``[B, H, W, 3]`` in ``[0, 1]`` (ComfyUI's IMAGE convention); latents
are *scaled* latents ``[B, 4, H/8, W/8]``, i.e. the VAE's latents times ``scaling_factor``
(0.13025 for Kolors/SDXL), which is what the UNet sees.

fp16 overflow
    The original SDXL/Kolors VAE overflows in fp16 (NaN/inf, black images). When a decode or
    encode in a non-fp32 dtype gives a non-finite value, it is redone on an fp32 copy of the VAE
    and a warning is reported (the caller's model is never modified). The ``sdxl-vae-fp16-fix``
    weights avoid the retry.

Encode: mean, not sample
    :func:`encode` returns the posterior **mean** by default. diffusers' img2img pipeline samples
    the posterior with its generator; ComfyUI's VAEEncode and the Kolors LoRA trainer use the
    mean. The mean is deterministic and independent of the sampler's seed; the difference is the
    posterior's standard deviation, tiny for the real VAE. ``sample=True`` with a generator
    reproduces diffusers.

Tiling
    :func:`decode` can decode in overlapping latent tiles, each decoded on its own and blended
    with linear ramps across the overlap. It is not bit-equal to a full decode (the decoder's
    group norms and mid-block attention see only one tile), but it bounds memory for large
    images. ``tiled="auto"`` decodes in one piece unless the image has more than
    ``auto_max_pixels`` pixels or the one-piece decode runs out of GPU memory.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

__all__ = ["DecodeResult", "VAEMemoryError", "check_encode_fits", "decode", "encode", "encode_memory_bytes",
           "vae_scale_factor"]

logger = logging.getLogger(__name__)

_FP16_HINT = "use the sdxl-vae-fp16-fix VAE or an fp32/bf16 VAE to avoid this"


class VAEMemoryError(ValueError):
    """An encode that cannot fit in the device's memory (the message names the size and what to do)."""


@dataclass
class DecodeResult:
    """What :func:`decode` returns.

    Attributes:
        images: ``[B, H, W, 3]`` float32 in ``[0, 1]``, on the CPU.
        warnings: Human-readable notes (fp32 retry, tiling fallback).
    """

    images: torch.Tensor
    warnings: list[str] = field(default_factory=list)


def vae_scale_factor(vae: Any) -> int:
    """Pixels per latent cell: ``2 ** (levels - 1)`` (8 for Kolors/SDXL)."""
    return 2 ** (len(vae.config.block_out_channels) - 1)


def _vae_dtype(vae: Any) -> torch.dtype:
    return next(vae.parameters()).dtype


def _vae_device(vae: Any) -> torch.device:
    return next(vae.parameters()).device


def _fp32_copy(vae: Any) -> Any:
    """An fp32 copy of the VAE (the shared model is left as it is)."""
    return copy.deepcopy(vae).to(torch.float32)


def _ramp(length: int, overlap: int, at_start: bool, at_end: bool) -> torch.Tensor:
    """1D blending weights: linear ramps over ``overlap`` at inner tile edges, 1 elsewhere."""
    w = torch.ones(length, dtype=torch.float32)
    if overlap > 0:
        ramp = torch.arange(1, overlap + 1, dtype=torch.float32) / (overlap + 1)
        n = min(overlap, length)
        if not at_start:
            w[:n] = torch.minimum(w[:n], ramp[:n])
        if not at_end:
            w[-n:] = torch.minimum(w[-n:], ramp[:n].flip(0))
    return w


def _tile_starts(size: int, tile: int, stride: int) -> list[int]:
    """Tile start offsets covering ``[0, size)``, the last tile flush with the end."""
    if size <= tile:
        return [0]
    starts = list(range(0, size - tile + 1, stride))
    if starts[-1] != size - tile:
        starts.append(size - tile)
    return starts


def _decode_tiled(vae: Any, z: torch.Tensor, tile_size: int, tile_overlap: int) -> torch.Tensor:
    """Decodes unscaled latents tile by tile; returns ``[B, 3, H, W]`` in the decoder's range."""
    f = vae_scale_factor(vae)
    tile = max(tile_size // f, 1)
    overlap = min(max(tile_overlap // f, 0), tile - 1)
    h, w = int(z.shape[-2]), int(z.shape[-1])
    ys, xs = _tile_starts(h, tile, tile - overlap), _tile_starts(w, tile, tile - overlap)
    out: torch.Tensor | None = None
    weight: torch.Tensor | None = None
    for y in ys:
        for x in xs:
            part = vae.decode(z[:, :, y : y + tile, x : x + tile], return_dict=False)[0].to(torch.float32)
            if out is None:
                out = torch.zeros(
                    (z.shape[0], part.shape[1], h * f, w * f), dtype=torch.float32, device=part.device
                )
                weight = torch.zeros((1, 1, h * f, w * f), dtype=torch.float32, device=part.device)
            th, tw = part.shape[-2], part.shape[-1]
            wy = _ramp(th, overlap * f, y == 0, y + tile >= h)
            wx = _ramp(tw, overlap * f, x == 0, x + tile >= w)
            mask = (wy[:, None] * wx[None, :]).to(part.device)[None, None]
            out[:, :, y * f : y * f + th, x * f : x * f + tw] += part * mask
            assert weight is not None
            weight[:, :, y * f : y * f + th, x * f : x * f + tw] += mask
    assert out is not None and weight is not None
    return out / weight


def _decode_once(vae: Any, z: torch.Tensor, tiled: bool, tile_size: int, tile_overlap: int) -> torch.Tensor:
    z = z.to(device=_vae_device(vae), dtype=_vae_dtype(vae))
    if tiled:
        return _decode_tiled(vae, z, tile_size, tile_overlap)
    return vae.decode(z, return_dict=False)[0]


def _unscale(vae: Any, latents: torch.Tensor) -> torch.Tensor:
    z = latents.to(torch.float32) / vae.config.scaling_factor
    shift = getattr(vae.config, "shift_factor", None)
    return z + shift if shift else z


@torch.no_grad()
def decode(
    vae: Any,
    latents: torch.Tensor,
    *,
    tiled: bool | Literal["auto"] = False,
    tile_size: int = 512,
    tile_overlap: int = 64,
    auto_max_pixels: int = 2048 * 2048,
    fp32_fallback: bool = True,
) -> DecodeResult:
    """Decodes scaled latents to images, as ``KolorsPipeline`` does for ``output_type="pt"/"np"``.

    Args:
        vae: ``AutoencoderKL`` (any dtype, any device).
        latents: Scaled latents ``[B, 4, h, w]`` (e.g. :func:`~.sampling.sample`'s output).
        tiled: True to decode in tiles, False for one piece, ``"auto"`` to tile only for large
            images (more than ``auto_max_pixels``) or after running out of GPU memory.
        tile_size: Tile edge in pixels (rounded down to a multiple of 8).
        tile_overlap: Overlap between neighbouring tiles in pixels.
        auto_max_pixels: Pixel count above which ``"auto"`` tiles directly.
        fp32_fallback: Redo a non-finite non-fp32 decode on an fp32 copy of the VAE.

    Returns:
        The images ``[B, H, W, 3]`` (float32, ``[0, 1]``, CPU) and any warnings.

    Raises:
        ValueError: If ``latents`` is not 4-D.
    """
    if latents.ndim != 4:
        raise ValueError(f"latents must be [B, C, h, w], got {tuple(latents.shape)}")
    if tiled not in (True, False, "auto"):
        raise ValueError(f"tiled must be True, False or 'auto', got {tiled!r}")
    warnings: list[str] = []
    z = _unscale(vae, latents)
    f = vae_scale_factor(vae)
    use_tiles = tiled is True or (tiled == "auto" and z.shape[-2] * z.shape[-1] * f * f > auto_max_pixels)
    try:
        pixels = _decode_once(vae, z, use_tiles, tile_size, tile_overlap)
    except torch.OutOfMemoryError:
        if tiled != "auto" or use_tiles:
            raise
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        warnings.append("VAE decode ran out of memory; decoded in tiles instead")
        use_tiles = True
        pixels = _decode_once(vae, z, use_tiles, tile_size, tile_overlap)

    dtype = _vae_dtype(vae)
    if fp32_fallback and dtype != torch.float32 and not torch.isfinite(pixels).all():
        name = str(dtype).removeprefix("torch.")
        warnings.append(f"VAE decode in {name} gave NaN/inf values; decoded again in float32 ({_FP16_HINT})")
        pixels = _decode_once(_fp32_copy(vae), z, use_tiles, tile_size, tile_overlap)
    for message in warnings:
        logger.warning(message)

    images = (pixels.to(torch.float32) / 2 + 0.5).clamp(0, 1)
    return DecodeResult(images=images.permute(0, 2, 3, 1).contiguous().cpu(), warnings=warnings)


def _encode_once(vae: Any, x: torch.Tensor, sample: bool, generator: torch.Generator | None) -> torch.Tensor:
    x = x.to(device=_vae_device(vae), dtype=_vae_dtype(vae))
    dist = vae.encode(x).latent_dist
    return dist.sample(generator) if sample else dist.mean


#: Full-resolution activations alive at once in the encoder's first block (input, normed, convolved).
_LIVE_ACTIVATIONS = 3


def encode_memory_bytes(vae: Any, batch: int, height: int, width: int) -> int:
    """A lower bound of the memory a one-piece encode needs: the first block's activations.

    The encoder's first block works at full resolution with `block_out_channels[0]` channels (128
    for SDXL/Kolors) and holds about three such tensors at once; everything after it is smaller
    (attention runs at 1/8 resolution through fused kernels). For 1024x1024 in fp32 that is
    1.5 GiB; for 12000x12000, 206 GiB.
    """
    channels = int(vae.config.block_out_channels[0])
    element = torch.finfo(_vae_dtype(vae)).bits // 8
    return _LIVE_ACTIVATIONS * batch * channels * height * width * element


def check_encode_fits(vae: Any, batch: int, height: int, width: int) -> None:
    """Refuse, before any work, an encode that cannot fit in its device's free memory.

    Only refuses what certainly cannot fit (`encode_memory_bytes` is a lower bound); when the free
    memory is unknown nothing is refused.

    Raises:
        VAEMemoryError: one line naming the image size, the memory it needs and the memory free.
    """
    from graphgen.models.devices import free_memory_bytes

    device = _vae_device(vae)
    need = encode_memory_bytes(vae, batch, height, width)
    free = free_memory_bytes(device)
    if free is not None and need > free:
        gib = 1024 ** 3
        images = f"{batch} images of {width}x{height}" if batch > 1 else f"a {width}x{height} image"
        raise VAEMemoryError(
            f"encoding {images} needs at least {need / gib:.1f} GiB on {device.type}, but only {free / gib:.1f} GiB "
            "is free: scale the image down (Kolors works at about 1024x1024) or crop it into tiles and encode "
            "each; a smaller batch also helps")


@torch.no_grad()
def encode(
    vae: Any,
    images: torch.Tensor,
    *,
    sample: bool = False,
    generator: torch.Generator | None = None,
    fp32_fallback: bool = True,
    warnings: list[str] | None = None,
) -> torch.Tensor:
    """Encodes images to scaled latents.

    Args:
        vae: ``AutoencoderKL``.
        images: ``[B, H, W, 3]`` floats in ``[0, 1]``; H and W multiples of 8.
        sample: Sample the posterior (diffusers img2img) instead of taking its mean (default,
            ComfyUI and the trainer).
        generator: Generator for ``sample=True`` (a CPU generator gives device-independent noise).
        fp32_fallback: Redo a non-finite non-fp32 encode on an fp32 copy of the VAE.
        warnings: If given, warnings (fp32 retry) are appended to it.

    Returns:
        Scaled latents ``[B, 4, H/8, W/8]`` (float32, on the VAE's device).

    Raises:
        ValueError: If the tensor is not ``[B, H, W, 3]`` or the size is not a multiple of 8.
        VAEMemoryError: If the encode cannot fit in the device's free memory (checked first).
    """
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be [B, H, W, 3], got {tuple(images.shape)}")
    f = vae_scale_factor(vae)
    h, w = int(images.shape[1]), int(images.shape[2])
    if h % f or w % f:
        raise ValueError(
            f"image size {w}x{h} is not a multiple of {f}; resize or crop it to "
            f"{w // f * f}x{h // f * f} first"
        )
    check_encode_fits(vae, int(images.shape[0]), h, w)
    x = images.to(torch.float32).permute(0, 3, 1, 2) * 2.0 - 1.0
    z = _encode_once(vae, x, sample, generator)
    dtype = _vae_dtype(vae)
    if fp32_fallback and dtype != torch.float32 and not torch.isfinite(z).all():
        name = str(dtype).removeprefix("torch.")
        message = f"VAE encode in {name} gave NaN/inf values; encoded again in float32 ({_FP16_HINT})"
        logger.warning(message)
        if warnings is not None:
            warnings.append(message)
        z = _encode_once(_fp32_copy(vae), x, sample, generator)
    z = z.to(torch.float32)
    shift = getattr(vae.config, "shift_factor", None)
    if shift:
        z = z - shift
    return z * vae.config.scaling_factor
