"""The built-in LoRA node pack: load LoRAs in every common format, stack them on a Kolors UNet, train them."""

from . import lora_nodes, train_node

NODES: list[type] = [*lora_nodes.NODES, *train_node.NODES]
