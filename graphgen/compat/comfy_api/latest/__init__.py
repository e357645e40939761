"""`comfy_api.latest`: the schema node API (`io`, `ui`), extensions and the node helpers."""

from __future__ import annotations

from typing import Any

from graphgen.compat.comfy_api import _progress
from graphgen.compat.comfy_api.latest import _io as io
from graphgen.compat.comfy_api.latest import _ui as ui


class ComfyAPI(_progress.ComfyAPI):
    VERSION = "latest"


class ComfyAPISync(_progress.ComfyAPISync):
    VERSION = "latest"


class ComfyExtension:
    """A pack's entry (returned by its `comfy_entrypoint()`): `get_node_list()` lists its nodes."""

    async def on_load(self) -> None:
        """Called once before `get_node_list`."""

    async def get_node_list(self) -> list[type[Any]]:
        return []


ComfyAPI_latest = ComfyAPI  # noqa: N816 - ComfyUI's name

__all__ = ["ComfyAPI", "ComfyAPISync", "ComfyAPI_latest", "ComfyExtension", "io", "ui"]
