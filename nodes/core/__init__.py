"""The core pack: ComfyUI's model-agnostic nodes, by ComfyUI's names, inputs and widget order.

VAE decode/encode, images (load, save, preview, scale, crop, batch, pad), latents (empty, upscale,
batch, noise mask), masks and conditioning utilities. They work on ComfyUI's value conventions:
IMAGE `[B, H, W, 3]` floats in [0, 1], MASK `[B, H, W]`, LATENT `{"samples": [B, 4, H/8, W/8], ...}`,
CONDITIONING a list of `[tensor, {"pooled_output": tensor, ...}]`. Node modules import torch only
when a node runs, so listing and validating workflows stays fast.
"""

from . import conditioning_nodes, image_nodes, io_nodes, latent_nodes, mask_nodes, vae_nodes

NODES: list[type] = [*vae_nodes.NODES, *latent_nodes.NODES, *io_nodes.NODES, *image_nodes.NODES,
                     *mask_nodes.NODES, *conditioning_nodes.NODES]
