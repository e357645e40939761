"""The SD1.5 / SDXL node pack: ComfyUI's checkpoint, CLIP and LoRA loaders, text encoding and KSamplers.

Node modules import torch and diffusers only when a node runs. The shared diffusion layer
(`graphgen_nodes.diffusion`: scheduler mapping, denoising loop, VAE ops, CLIP tokenizer) does
the work; the Kolors pack's models also run in KSampler.
"""

from . import loader_nodes, sampling_nodes

NODES: list[type] = [*loader_nodes.NODES, *sampling_nodes.NODES]
