"""Sizes for the core image, latent and mask nodes: limits, ComfyUI's resize choices, and the target
size of a resize node. Kept free of torch so that declaring the nodes imports nothing heavy
(`resize` does the resizing itself)."""

from __future__ import annotations

MAX_RESOLUTION = 16384
"""The largest side a size widget accepts (ComfyUI's `nodes.MAX_RESOLUTION`)."""
IMAGE_METHODS = ["nearest-exact", "bilinear", "area", "bicubic", "lanczos"]
LATENT_METHODS = ["nearest-exact", "bilinear", "area", "bicubic", "bislerp"]
CROPS = ["disabled", "center"]


def fit_size(rows: int, cols: int, width: int, height: int, minimum: int = 1) -> tuple[int, int]:
    """`(width, height)` of a resize to `width` x `height`, each at least `minimum`; a side given as 0
    follows the other one keeping the `cols`:`rows` aspect ratio (the caller handles both being 0)."""
    if width == 0:
        height = max(minimum, height)
        return max(minimum, round(cols * height / rows)), height
    if height == 0:
        width = max(minimum, width)
        return width, max(minimum, round(rows * width / cols))
    return max(minimum, width), max(minimum, height)


def scale_size(rows: int, cols: int, factor: float) -> tuple[int, int]:
    """`(width, height)` of `cols` x `rows` scaled by `factor`, each side rounded and at least 1."""
    return max(1, round(cols * factor)), max(1, round(rows * factor))
