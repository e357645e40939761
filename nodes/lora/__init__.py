"""The built-in LoRA node pack: load LoRAs in every common format and stack them on a Kolors UNet."""

from . import lora_nodes

NODES: list[type] = [*lora_nodes.NODES]
