"""The built-in Kolors node pack: loaders, text encoding, sampling, VAE and image nodes.

Node modules import torch and diffusers only when a node runs, so that listing or validating
workflows stays fast.
"""

from . import image_nodes, loader_nodes, sampling_nodes

NODES: list[type] = [*loader_nodes.NODES, *sampling_nodes.NODES, *image_nodes.NODES]
