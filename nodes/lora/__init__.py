"""The built-in lora node pack."""

NODES: list[type] = []
