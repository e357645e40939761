"""Mask nodes (ComfyUI's names): a solid mask and inversion. MASK values are `[B, H, W]` in [0, 1].

(`LoadImageMask` reads a mask from a file; it is with the other file nodes in `io_nodes`.)
"""

from __future__ import annotations

from typing import Any

from graphgen import Float, Input, Int, Node, Output

from .sizes import MAX_RESOLUTION


class SolidMask(Node):
    """A mask of one value everywhere."""

    display_name = "SolidMask"
    category = "mask"
    inputs = [Float("value", default=1.0, min=0.0, max=1.0, step=0.01),
              Int("width", default=512, min=1, max=MAX_RESOLUTION, step=1),
              Int("height", default=512, min=1, max=MAX_RESOLUTION, step=1)]
    outputs = [Output("MASK", "mask")]

    def run(self, value: float, width: int, height: int) -> Any:
        import torch

        return torch.full((1, height, width), value, dtype=torch.float32)


class InvertMask(Node):
    """Invert a mask (1 - value)."""

    display_name = "InvertMask"
    category = "mask"
    inputs = [Input("mask", "MASK", force_link=True)]
    outputs = [Output("MASK", "mask")]

    def run(self, mask: Any) -> Any:
        return 1.0 - mask.reshape((-1, mask.shape[-2], mask.shape[-1]))


NODES = [SolidMask, InvertMask]
