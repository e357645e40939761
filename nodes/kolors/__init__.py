"""The built-in kolors node pack."""

NODES: list[type] = []
