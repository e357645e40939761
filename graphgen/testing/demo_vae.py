"""A tiny VAE that really reconstructs images, for `graphgen demo` (the tests keep the random one).

The tiny random-weight VAE of :mod:`graphgen.testing.tiny_kolors` decodes every latent to coloured
noise, so the demo's pictures could not show what its LoRA learned. This module builds a VAE of
the same class (diffusers' ``AutoencoderKL``, saved in the same file layout, read by the same
loaders) whose latents are the mean colour of each 8x8 cell of the image:

* the encoder averages each 2x2 block at each of its three down-samplings and keeps everything
  else an identity (zero residual branches, zero attention outputs), so a latent cell holds the
  cell's mean red, green and blue (the fourth channel is zero), times ``1 / scaling_factor`` so
  the *scaled* latents the UNet sees are the colours in [-1, 1] (unit scale, as the diffusion
  noise schedule expects);
* the decoder repeats each cell (nearest up-sampling) and maps the colours back to pixels.

The weights are set, not learnt from images (no image is stored anywhere), so building it takes
milliseconds and is exact: flat colours come back within half a level; edges come back as 8x8
cells (a fitted decoder would smooth them, at the price of seconds of training per demo folder).

Only the last GroupNorm of the encoder and of the decoder sees the colours (every other
normalisation sits in a zeroed residual branch). A GroupNorm removes each group's mean and
divides by its spread, which would lose the absolute colour; so each colour travels with its
negation (the group's mean stays zero) and with a large constant pair ``+M, -M`` (the spread is
``M`` up to a relative error below 0.1 %), and the norm's affine weight multiplies the spread
back. That needs at least four channels per group: the demo VAE uses 8 norm groups where the
tests' tiny VAE uses 32 (SDXL's count), everything else as :data:`TINY_VAE_CONFIG`.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from diffusers import AutoencoderKL

from .tiny_kolors import TINY_VAE_CONFIG

#: The demo VAE: the tests' tiny VAE with 8 norm groups (4 channels per group at 32 channels).
DEMO_VAE_CONFIG: dict[str, Any] = {**TINY_VAE_CONFIG, "norm_num_groups": 8}

#: The constant that fixes each GroupNorm's spread (``M`` above) and the SiLU offset that keeps
#: the colours on SiLU's linear part (silu(x) = x within 1e-4 for x >= 11).
_SPREAD, _OFFSET = 50.0, 12.0
#: log-variance of the posterior: nearly deterministic latents (std 0.007 unscaled).
_LOGVAR = -10.0


def _centre(conv: torch.nn.Conv2d, out_ch: int, in_ch: int, value: float) -> None:
    """Sets the centre tap of `conv` from `in_ch` to `out_ch` (a 1x1 or 3x3 kernel)."""
    k = conv.kernel_size[0] // 2
    conv.weight[out_ch, in_ch, k, k] = value


def _identity_resnets(block: Any) -> None:
    """Zeroes every residual branch's last layer, so each resnet and attention passes its input on.

    The earlier layers keep diffusers' random init: training the VAE further would start from an
    identity with gradients to follow.
    """
    for resnet in getattr(block, "resnets", []) or []:
        torch.nn.init.zeros_(resnet.conv2.weight)
        torch.nn.init.zeros_(resnet.conv2.bias)
        if resnet.conv_shortcut is not None:  # channel change: keep the first channels
            shortcut = resnet.conv_shortcut
            torch.nn.init.zeros_(shortcut.weight)
            torch.nn.init.zeros_(shortcut.bias)
            for ch in range(min(shortcut.in_channels, shortcut.out_channels)):
                _centre(shortcut, ch, ch, 1.0)
    for attention in getattr(block, "attentions", []) or []:
        torch.nn.init.zeros_(attention.to_out[0].weight)
        torch.nn.init.zeros_(attention.to_out[0].bias)


def _carry_norm(norm: torch.nn.GroupNorm, colour_channels: list[int], spread: float) -> None:
    """Makes `norm` (then SiLU) pass `colour_channels` unchanged, shifted by ``_OFFSET``; others give 0."""
    torch.nn.init.zeros_(norm.weight)
    torch.nn.init.zeros_(norm.bias)
    for ch in colour_channels:
        norm.weight[ch] = spread
        norm.bias[ch] = _OFFSET


@torch.no_grad()
def colour_cell_vae(config: dict[str, Any] | None = None, seed: int = 0) -> AutoencoderKL:
    """Builds the colour-cell VAE described in the module docstring (fp32, eval mode).

    Args:
        config: ``AutoencoderKL`` config (default :data:`DEMO_VAE_CONFIG`): 3 image channels, at
            least 4 latent channels, 32+ channels at every level, 4+ channels per norm group.
        seed: Seed of the random init the residual branches keep (they start at zero output).
    """
    cfg = {**DEMO_VAE_CONFIG, **(config or {})}
    channels, groups = cfg["block_out_channels"], cfg["norm_num_groups"]
    if cfg["in_channels"] != 3 or cfg["out_channels"] != 3 or cfg["latent_channels"] < 4:
        raise ValueError("the colour-cell VAE needs RGB images and at least 4 latent channels")
    if min(channels) < 32 or channels[-1] // groups < 8 or channels[0] // groups < 4:
        raise ValueError("the colour-cell VAE needs 32+ channels, 8 per norm group at the encoder's "
                         "last level and 4 at the decoder's")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = AutoencoderKL(**cfg)
    enc, dec = vae.encoder, vae.decoder
    latent_scale = 1.0 / float(cfg["scaling_factor"])

    # Encoder: channels 0-2 colour, 3-5 its negation, 6-7 the constants +M, -M (one norm group of 8).
    for conv in (enc.conv_in, enc.conv_out, dec.conv_in, dec.conv_out, vae.quant_conv, vae.post_quant_conv):
        torch.nn.init.zeros_(conv.weight)
        torch.nn.init.zeros_(conv.bias)
    for c in range(3):
        _centre(enc.conv_in, c, c, 1.0)
        _centre(enc.conv_in, 3 + c, c, -1.0)
    enc.conv_in.bias[6], enc.conv_in.bias[7] = _SPREAD, -_SPREAD
    for block in (*enc.down_blocks, enc.mid_block):
        _identity_resnets(block)
        for down in getattr(block, "downsamplers", None) or []:  # 3x3 stride 2, no padding used: 2x2 mean
            torch.nn.init.zeros_(down.conv.weight)
            torch.nn.init.zeros_(down.conv.bias)
            for ch in range(down.conv.out_channels):
                down.conv.weight[ch, ch, :2, :2] = 0.25
    # Group of 8 with zero mean and spread ~ M / 2 (its mean square is (M^2 * 2 + small) / 8).
    _carry_norm(enc.conv_norm_out, list(range(6)), _SPREAD / 2)
    latents = cfg["latent_channels"]
    for c in range(3):  # mean = (silu(c + B) - silu(-c + B)) / 2 = c, in latent units
        _centre(enc.conv_out, c, c, 0.5 * latent_scale)
        _centre(enc.conv_out, c, 3 + c, -0.5 * latent_scale)
    enc.conv_out.bias[latents:] = _LOGVAR
    for ch in range(2 * latents):
        _centre(vae.quant_conv, ch, ch, 1.0)

    # Decoder: back to colours in [-1, 1]; colour c in channels 4c (c), 4c+1 (-c), 4c+2/3 (+M, -M).
    for ch in range(latents):
        _centre(vae.post_quant_conv, ch, ch, 1.0 / latent_scale)
    for c in range(3):
        _centre(dec.conv_in, 4 * c, c, 1.0)
        _centre(dec.conv_in, 4 * c + 1, c, -1.0)
        dec.conv_in.bias[4 * c + 2], dec.conv_in.bias[4 * c + 3] = _SPREAD, -_SPREAD
    for block in (dec.mid_block, *dec.up_blocks):
        _identity_resnets(block)
        for up in getattr(block, "upsamplers", None) or []:  # nearest x2, then the conv keeps it
            torch.nn.init.zeros_(up.conv.weight)
            torch.nn.init.zeros_(up.conv.bias)
            for ch in range(up.conv.out_channels):
                _centre(up.conv, ch, ch, 1.0)
    # Groups of 4 with zero mean and spread ~ M / sqrt(2).
    _carry_norm(dec.conv_norm_out, [4 * c + k for c in range(3) for k in (0, 1)], _SPREAD / math.sqrt(2))
    for c in range(3):
        _centre(dec.conv_out, c, 4 * c, 0.5)
        _centre(dec.conv_out, c, 4 * c + 1, -0.5)
    return vae.eval()
