"""VAE decode and encode nodes (ComfyUI's names), for every model family's VAE handle.

A VAE handle (what the loaders return) gives `use()`, a context manager yielding the diffusers
`AutoencoderKL` on its compute device, and `device`. LATENT values hold the VAE's *unscaled*
latents; the shared VAE ops take scaled latents, so the nodes multiply/divide by the VAE's
`scaling_factor` on the way.
"""

from __future__ import annotations

from typing import Any

from graphgen import Choice, Input, Node, Output


class VAEDecode(Node):
    """Decode latents to images. An fp16 decode that overflows (NaN/inf) is redone in fp32, with a warning."""

    category = "latent"
    inputs = [Input("samples", "LATENT", force_link=True), Input("vae", "VAE", force_link=True),
              Choice("tiled", ["auto", "on", "off"], default="auto",
                     description="decode in overlapping tiles (auto: for images over 4 megapixels)")]
    outputs = [Output("IMAGE", "image")]

    def run(self, samples: dict[str, Any], vae: Any, tiled: str = "auto") -> Any:
        from graphgen_nodes.kolors.vae_ops import decode

        with vae.use() as model:
            scaled = samples["samples"].to(vae.device) * model.config.scaling_factor
            result = decode(model, scaled, tiled="auto" if tiled == "auto" else tiled == "on")
        for warning in result.warnings:
            self.ctx.warn(warning)
        return result.images.cpu()


class VAEEncode(Node):
    """Encode images to latents (the posterior mean), for image-to-image."""

    category = "latent"
    inputs = [Input("pixels", "IMAGE", force_link=True), Input("vae", "VAE", force_link=True)]
    outputs = [Output("LATENT", "latent")]

    def run(self, pixels: Any, vae: Any) -> dict[str, Any]:
        from graphgen_nodes.kolors.vae_ops import encode

        warnings: list[str] = []
        with vae.use() as model:
            height, width = pixels.shape[1], pixels.shape[2]
            if height % 8 or width % 8:  # crop to a multiple of 8, as ComfyUI does
                pixels = pixels[:, : height - height % 8, : width - width % 8, :]
            scaled = encode(model, pixels.to(vae.device), warnings=warnings)
            latents = (scaled / model.config.scaling_factor).cpu()
        for warning in warnings:
            self.ctx.warn(warning)
        return {"samples": latents}


NODES = [VAEDecode, VAEEncode]
