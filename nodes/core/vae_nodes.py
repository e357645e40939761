"""VAE decode and encode nodes (ComfyUI's names), for every model family's VAE handle.

A VAE handle (what the loaders return) gives `use()`, a context manager yielding the diffusers
`AutoencoderKL` on its compute device, and `device`. LATENT values hold the VAE's *unscaled*
latents; the shared VAE ops take and give scaled latents, so the nodes multiply/divide by the
VAE's `scaling_factor` on the way. Images whose sides are not multiples of the VAE's 8-pixel cell
are cropped to them, centred, as ComfyUI does.
"""

from __future__ import annotations

from typing import Any

from graphgen import Choice, Input, Int, Node, Output
from graphgen.spec import InputSpec


def _decode(node: Node, samples: dict[str, Any], vae: Any, **options: Any) -> Any:
    from graphgen_nodes.diffusion.vae_ops import decode

    with vae.use() as model:
        scaled = samples["samples"].to(vae.device) * model.config.scaling_factor
        result = decode(model, scaled, **options)
    for warning in result.warnings:
        node.ctx.warn(warning)
    return result.images.cpu()


def _encode(node: Node, pixels: Any, vae: Any, *, tile_size: int | None = None, overlap: int = 0) -> tuple[Any, int]:
    """Unscaled latents of the (centre-cropped) pixels, and the VAE's cell size in pixels."""
    from graphgen_nodes.diffusion.vae_ops import encode, vae_scale_factor

    from .vae_tiling import center_crop_to_multiple, encode_tiled

    warnings: list[str] = []
    with vae.use() as model:
        cell = vae_scale_factor(model)
        height, width = int(pixels.shape[1]), int(pixels.shape[2])
        if height < cell or width < cell:  # graphgen's message, not the VAE's convolution error
            name = type(node).type_name or type(node).__name__
            raise ValueError(f"the image is {width}×{height} pixels; {name} needs at least {cell}×{cell} (the VAE "
                             "works on blocks of that size): scale the image up first, e.g. with ImageScale")
        pixels = center_crop_to_multiple(pixels[..., :3], cell).to(vae.device)
        if tile_size is None:
            scaled = encode(model, pixels, warnings=warnings)
        else:
            scaled = encode_tiled(model, pixels, tile_size=tile_size, overlap=overlap, warnings=warnings)
        latents = (scaled / model.config.scaling_factor).cpu()
    for warning in dict.fromkeys(warnings):  # a tiled encode repeats the same warning per tile
        node.ctx.warn(warning)
    return latents, cell


def _tiling_inputs(verb: str, tile_step: int) -> list[InputSpec]:
    """The tiled nodes' inputs after `vae`, as ComfyUI declares them (the temporal ones for its video VAEs)."""
    return [Int("tile_size", default=512, min=64, max=4096, step=tile_step),
            Int("overlap", default=64, min=0, max=4096, step=32),
            Int("temporal_size", default=64, min=8, max=4096, step=4,
                description=f"video VAEs only: frames {verb} at a time (unused by image VAEs)"),
            Int("temporal_overlap", default=8, min=4, max=4096, step=4,
                description="video VAEs only: frames of overlap (unused by image VAEs)")]


class VAEDecode(Node):
    """Decode latents to images. An fp16 decode that overflows (NaN/inf) is redone in fp32, with a warning."""

    display_name = "VAE Decode"
    category = "latent"
    inputs = [Input("samples", "LATENT", force_link=True), Input("vae", "VAE", force_link=True),
              Choice("tiled", ["auto", "on", "off"], default="auto", optional=True,
                     description="decode in overlapping tiles (auto: for images over 4 megapixels; "
                                 "a graphgen extra, ComfyUI's VAEDecode has no widget)")]
    outputs = [Output("IMAGE", "image")]

    def run(self, samples: dict[str, Any], vae: Any, tiled: str = "auto") -> Any:
        return _decode(self, samples, vae, tiled="auto" if tiled == "auto" else tiled == "on")


class VAEDecodeTiled(Node):
    """Decode latents to images in overlapping tiles of `tile_size` pixels (bounded memory for large images).

    An overlap over a quarter of the tile is reduced to a quarter, as in ComfyUI. The temporal
    inputs apply to video VAEs only and are accepted for ComfyUI workflows.
    """

    display_name = "VAE Decode (Tiled)"
    category = "_for_testing"
    inputs = [Input("samples", "LATENT", force_link=True), Input("vae", "VAE", force_link=True),
              *_tiling_inputs("decoded", tile_step=32)]
    outputs = [Output("IMAGE", "image")]

    def run(self, samples: dict[str, Any], vae: Any, tile_size: int, overlap: int, temporal_size: int = 64,
            temporal_overlap: int = 8) -> Any:
        if tile_size < overlap * 4:
            overlap = tile_size // 4
        return _decode(self, samples, vae, tiled=True, tile_size=tile_size, tile_overlap=overlap)


class VAEEncode(Node):
    """Encode images to latents (the posterior mean), for image-to-image."""

    display_name = "VAE Encode"
    category = "latent"
    inputs = [Input("pixels", "IMAGE", force_link=True), Input("vae", "VAE", force_link=True)]
    outputs = [Output("LATENT", "latent")]

    def run(self, pixels: Any, vae: Any) -> dict[str, Any]:
        return {"samples": _encode(self, pixels, vae)[0]}


class VAEEncodeTiled(Node):
    """Encode images to latents in overlapping tiles of `tile_size` pixels (bounded memory for large images)."""

    display_name = "VAE Encode (Tiled)"
    category = "_for_testing"
    inputs = [Input("pixels", "IMAGE", force_link=True), Input("vae", "VAE", force_link=True),
              *_tiling_inputs("encoded", tile_step=64)]
    outputs = [Output("LATENT", "latent")]

    def run(self, pixels: Any, vae: Any, tile_size: int, overlap: int, temporal_size: int = 64,
            temporal_overlap: int = 8) -> dict[str, Any]:
        return {"samples": _encode(self, pixels, vae, tile_size=tile_size, overlap=overlap)[0]}


class VAEEncodeForInpaint(Node):
    """Encode images for inpainting: the masked area is greyed out and becomes the latent's noise mask.

    The mask (1 = repaint) is scaled to the image, rounded to 0/1 and grown by `grow_mask_by`
    pixels so that the repainted area reaches a little past its edge.
    """

    display_name = "VAE Encode (for Inpainting)"
    category = "latent/inpaint"
    inputs = [Input("pixels", "IMAGE", force_link=True), Input("vae", "VAE", force_link=True),
              Input("mask", "MASK", force_link=True),
              Int("grow_mask_by", default=6, min=0, max=64, step=1)]
    outputs = [Output("LATENT", "latent")]

    def run(self, pixels: Any, vae: Any, mask: Any, grow_mask_by: int = 6) -> dict[str, Any]:
        import torch
        import torch.nn.functional as F  # noqa: N812 - the usual name

        from .vae_tiling import center_crop_to_multiple, grow_mask, inpaint_pixels

        mask = mask.reshape((-1, 1, mask.shape[-2], mask.shape[-1])).to(torch.float32)
        if mask.shape[0] not in (1, pixels.shape[0]):
            raise ValueError(f"mask batch of {mask.shape[0]} does not fit an image batch of {pixels.shape[0]}; "
                             "give one mask, or one per image")
        mask = F.interpolate(mask, size=(int(pixels.shape[1]), int(pixels.shape[2])), mode="bilinear")
        greyed = inpaint_pixels(pixels[..., :3].to(torch.float32), mask)
        latents, cell = _encode(self, greyed, vae)
        # The encode cropped the pixels to whole cells, centred; the mask is cut alike.
        mask = center_crop_to_multiple(mask.movedim(1, -1), cell).movedim(-1, 1)
        return {"samples": latents, "noise_mask": grow_mask(mask, grow_mask_by)}


NODES = [VAEDecode, VAEDecodeTiled, VAEEncode, VAEEncodeTiled, VAEEncodeForInpaint]
