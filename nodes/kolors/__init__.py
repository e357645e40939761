"""The built-in Kolors node pack: loaders, ChatGLM3 text encoding and sampling.

The model-agnostic nodes Kolors workflows also use (VAE decode/encode, images, empty latents) are
in the `core` pack. Node modules import torch and diffusers only when a node runs, so that listing
or validating workflows stays fast.
"""

from . import loader_nodes, sampling_nodes

NODES: list[type] = [*loader_nodes.NODES, *sampling_nodes.NODES]
