"""`comfy_api.v0_0_2`: the versioned facade (same helpers and schema API as `latest`)."""

from graphgen.compat.comfy_api import _progress
from graphgen.compat.comfy_api.latest import ComfyExtension, io, ui


class ComfyAPI(_progress.ComfyAPI):
    VERSION = "0.0.2"


class ComfyAPISync(_progress.ComfyAPISync):
    VERSION = "0.0.2"


ComfyAPIAdapter_v0_0_2 = ComfyAPI  # noqa: N816 - ComfyUI's name

__all__ = ["ComfyAPI", "ComfyAPISync", "ComfyAPIAdapter_v0_0_2", "ComfyExtension", "io", "ui"]
