"""Latent nodes (ComfyUI's names and conventions).

LATENT values are dicts: `samples` `[B, 4, H/8, W/8]` (the VAE's unscaled latents), optionally
`noise_mask` (`[B or 1, 1, h, w]`, 1 = repaint) and `batch_index` (which noise rows a sub-batch
uses), as in ComfyUI. graphgen adds `noise_only: True` to a latent that is all zeros by
construction (an empty latent): samplers then do text-to-image.
"""

from __future__ import annotations

from typing import Any

from graphgen import Int, Node, Output


class EmptyLatentImage(Node):
    """An empty latent of a size: sampling it is text-to-image."""

    category = "latent"
    inputs = [Int("width", default=1024, min=64, max=8192, step=8),
              Int("height", default=1024, min=64, max=8192, step=8),
              Int("batch_size", default=1, min=1, max=4096)]
    outputs = [Output("LATENT", "latent")]

    def run(self, width: int, height: int, batch_size: int) -> dict[str, Any]:
        import torch

        if width % 8 or height % 8:
            raise ValueError(f"width and height must be multiples of 8, got {width}x{height}; "
                             f"try {width - width % 8}x{height - height % 8}")
        return {"samples": torch.zeros(batch_size, 4, height // 8, width // 8), "noise_only": True}


NODES = [EmptyLatentImage]
