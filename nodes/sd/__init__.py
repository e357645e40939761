"""The SD1.5 / SDXL node pack (placeholder until its nodes land)."""

NODES: list[type] = []
