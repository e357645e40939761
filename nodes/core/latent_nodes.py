"""Latent nodes (ComfyUI's names, inputs and widget order).

LATENT values are dicts: `samples` `[B, 4, H/8, W/8]` (the VAE's unscaled latents), optionally
`noise_mask` (`[B or 1, 1, h, w]`, 1 = repaint) and `batch_index` (which noise rows a sub-batch
uses), as in ComfyUI. graphgen adds `noise_only: True` to a latent that is all zeros by
construction (an empty latent): samplers then do text-to-image. Nodes never modify their input
dicts; they return new ones (other keys carried over, as ComfyUI's `samples.copy()`).
"""

from __future__ import annotations

from typing import Any

from graphgen import Choice, Float, Input, Int, Node, Output

from .sizes import CROPS, LATENT_METHODS, MAX_RESOLUTION, fit_size, scale_size


class EmptyLatentImage(Node):
    """An empty latent of a size: sampling it is text-to-image.

    A side that is not a multiple of 8 is rounded down to one (as ComfyUI does), with a warning.
    """

    display_name = "Empty Latent Image"
    category = "latent"
    inputs = [Int("width", default=512, min=16, max=MAX_RESOLUTION, step=8),
              Int("height", default=512, min=16, max=MAX_RESOLUTION, step=8),
              Int("batch_size", default=1, min=1, max=4096)]
    outputs = [Output("LATENT", "latent")]

    def run(self, width: int, height: int, batch_size: int) -> dict[str, Any]:
        import torch

        if width % 8 or height % 8:
            self.ctx.warn(f"{width}x{height} is not a multiple of 8: the latent is "
                          f"{width - width % 8}x{height - height % 8}; give multiples of 8 to silence this")
        return {"samples": torch.zeros(batch_size, 4, height // 8, width // 8), "noise_only": True}


class SetLatentNoiseMask(Node):
    """Attach a mask to a latent: a sampler repaints only where the mask is 1 (inpainting)."""

    display_name = "Set Latent Noise Mask"
    category = "latent/inpaint"
    inputs = [Input("samples", "LATENT", force_link=True), Input("mask", "MASK", force_link=True)]
    outputs = [Output("LATENT", "latent")]

    def run(self, samples: dict[str, Any], mask: Any) -> dict[str, Any]:
        return {**samples, "noise_mask": mask.reshape((-1, 1, mask.shape[-2], mask.shape[-1]))}


def _upscaled(samples: dict[str, Any], width: int, height: int, method: str, crop: str) -> dict[str, Any]:
    from .resize import upscale

    return {**samples, "samples": upscale(samples["samples"], width, height, method, crop)}


class LatentUpscale(Node):
    """Resize a latent to a size in pixels (0 for one side keeps the aspect ratio; 0 for both: unchanged).

    Sides are at least 64 pixels and are rounded down to a multiple of 8.
    """

    display_name = "Upscale Latent"
    category = "latent"
    inputs = [Input("samples", "LATENT", force_link=True),
              Choice("upscale_method", LATENT_METHODS),
              Int("width", default=512, min=0, max=MAX_RESOLUTION, step=8),
              Int("height", default=512, min=0, max=MAX_RESOLUTION, step=8),
              Choice("crop", CROPS)]
    outputs = [Output("LATENT", "latent")]

    def run(self, samples: dict[str, Any], upscale_method: str, width: int, height: int,
            crop: str) -> dict[str, Any]:
        if width == 0 and height == 0:
            return samples
        rows, cols = int(samples["samples"].shape[-2]), int(samples["samples"].shape[-1])
        width, height = fit_size(rows, cols, width, height, minimum=64)
        return _upscaled(samples, width // 8, height // 8, upscale_method, crop)


class LatentUpscaleBy(Node):
    """Resize a latent by a factor (each side rounded to whole latent cells)."""

    display_name = "Upscale Latent By"
    category = "latent"
    inputs = [Input("samples", "LATENT", force_link=True),
              Choice("upscale_method", LATENT_METHODS),
              Float("scale_by", default=1.5, min=0.01, max=8.0, step=0.01)]
    outputs = [Output("LATENT", "latent")]

    def run(self, samples: dict[str, Any], upscale_method: str, scale_by: float) -> dict[str, Any]:
        width, height = scale_size(int(samples["samples"].shape[-2]), int(samples["samples"].shape[-1]), scale_by)
        return _upscaled(samples, width, height, upscale_method, "disabled")


class LatentFromBatch(Node):
    """Take `length` latents from a batch, starting at `batch_index` (clamped to the batch).

    The picked latents keep their batch position, so a sampler gives them the same noise as in
    the whole batch.
    """

    display_name = "Latent From Batch"
    category = "latent/batch"
    inputs = [Input("samples", "LATENT", force_link=True),
              Int("batch_index", default=0, min=0, max=63),
              Int("length", default=1, min=1, max=64)]
    outputs = [Output("LATENT", "latent")]

    def run(self, samples: dict[str, Any], batch_index: int, length: int) -> dict[str, Any]:
        from .latent_batch import latent_from_batch

        return latent_from_batch(samples, batch_index, length)


class RepeatLatentBatch(Node):
    """Repeat a latent batch `amount` times (e.g. to sample one image several times)."""

    display_name = "Repeat Latent Batch"
    category = "latent/batch"
    inputs = [Input("samples", "LATENT", force_link=True), Int("amount", default=1, min=1, max=64)]
    outputs = [Output("LATENT", "latent")]

    def run(self, samples: dict[str, Any], amount: int) -> dict[str, Any]:
        from .latent_batch import repeat_latent_batch

        return repeat_latent_batch(samples, amount)


class RebatchLatents(Node):
    """Regroup a list of latent batches into batches of `batch_size` (a list of latents out).

    Latents of different sizes are never joined: a change of size starts a new batch.
    """

    display_name = "Rebatch Latents"
    category = "latent/batch"
    input_is_list = True  # called once with every latent of the list (and `batch_size` as [n])
    output_is_list = (True,)  # each batch flows on as its own item
    inputs = [Input("latents", "LATENT", force_link=True), Int("batch_size", default=1, min=1, max=4096)]
    outputs = [Output("LATENT", "latent")]

    def run(self, latents: list[dict[str, Any]], batch_size: list[int]) -> list[dict[str, Any]]:
        from .latent_batch import rebatch_latents

        return rebatch_latents(latents, batch_size[0])


NODES = [EmptyLatentImage, SetLatentNoiseMask, LatentUpscale, LatentUpscaleBy, LatentFromBatch,
         RepeatLatentBatch, RebatchLatents]
