"""Nodes that read files and show or save results: images, masks, and any value as text.

IMAGE values are float tensors `[B, H, W, 3]` in [0, 1]; MASK values `[B, H, W]` (1 = transparent).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Hashable
from pathlib import Path
from typing import Any

from graphgen import Choice, Input, Node, Output, Result, String
from graphgen.context import EngineSettings


def _input_path(settings: EngineSettings | None, image: str) -> Path:
    path = Path(image).expanduser()
    if path.is_absolute() or settings is None:
        return path
    in_input = settings.input_dir / path
    return in_input if in_input.exists() or not path.exists() else path


class LoadImage(Node):
    """Load a PNG, JPEG or WebP image (EXIF orientation applied); alpha becomes the mask."""

    display_name = "Load Image"
    category = "image"
    inputs = [String("image", default="", description="a file name in the input folder, or a path"),
              String("upload", default="image", optional=True, description="editor upload widget (unused)")]
    outputs = [Output("IMAGE", "image"), Output("MASK", "mask")]

    @classmethod
    def fingerprint(cls, image: str, settings: EngineSettings | None = None, **_: Any) -> Hashable:
        from graphgen_nodes.kolors.handles import file_identity

        return file_identity(_input_path(settings, image))

    def run(self, image: str, upload: str = "image") -> tuple[Any, Any]:
        import torch

        from graphgen_nodes.diffusion.images import load_image

        path = _input_path(self.ctx.settings, image)
        if not path.is_file():
            raise FileNotFoundError(f"image {image!r} not found in the input folder {str(self.ctx.input_dir)!r} "
                                    "nor as a path; put it there or give its full path")
        pixels, mask = load_image(path)
        if mask is None:
            mask = torch.zeros(pixels.shape[0], pixels.shape[1], pixels.shape[2])
        return pixels, mask


class LoadImageMask(Node):
    """Load one channel of an image as a mask (alpha is inverted: transparent = 1, as LoadImage's mask)."""

    display_name = "Load Image (as Mask)"
    category = "mask"
    inputs = [String("image", default="", description="a file name in the input folder, or a path"),
              Choice("channel", ["alpha", "red", "green", "blue"]),
              String("upload", default="image", optional=True, description="editor upload widget (unused)")]
    outputs = [Output("MASK", "mask")]

    @classmethod
    def fingerprint(cls, image: str, settings: EngineSettings | None = None, **_: Any) -> Hashable:
        return LoadImage.fingerprint(image, settings=settings)

    def run(self, image: str, channel: str, upload: str = "image") -> Any:
        import torch

        from graphgen_nodes.diffusion.images import load_image

        path = _input_path(self.ctx.settings, image)
        if not path.is_file():
            raise FileNotFoundError(f"image {image!r} not found in the input folder {str(self.ctx.input_dir)!r} "
                                    "nor as a path; put it there or give its full path")
        pixels, transparent = load_image(path)
        if channel == "alpha":  # an image without alpha is opaque everywhere: nothing masked
            return transparent if transparent is not None else torch.zeros(pixels.shape[:3])
        return pixels[..., ["red", "green", "blue"].index(channel)].clone()


def _ancestors(nodes: dict[str, Any], node_id: str) -> list[str]:
    seen: list[str] = []
    stack = [node_id]
    while stack:
        current = stack.pop()
        for value in (nodes.get(current, {}).get("inputs") or {}).values():
            if isinstance(value, list) and len(value) == 2 and str(value[0]) not in seen:
                seen.append(str(value[0]))
                stack.append(str(value[0]))
    return seen


def png_text_chunks(workflow: dict[str, Any], node_id: str) -> dict[str, str]:
    """What a saved PNG carries: the graphgen workflow, the API prompt, the generation parameters.

    `parameters` lists the constant inputs of every node this image was made from. A workflow
    converted from ComfyUI's editor format also gets its original graph as the `workflow` chunk,
    as ComfyUI's own PNGs do, so dropping the image into the editor restores it.
    """
    nodes = workflow.get("nodes", {})
    api = {nid: {"class_type": n.get("class_type"), "inputs": n.get("inputs", {})} for nid, n in nodes.items()}
    recipe = {nid: {"class_type": api[nid]["class_type"],
                    **{k: v for k, v in api[nid]["inputs"].items() if not isinstance(v, list)}}
              for nid in sorted(_ancestors(api, node_id)) if nid in api}
    metadata = dict(workflow.get("metadata") or {})
    ui = metadata.pop("comfyui_workflow", None)
    chunks = {
        "graphgen_workflow": json.dumps({**workflow, "metadata": metadata}, ensure_ascii=False),
        "prompt": json.dumps(api, ensure_ascii=False),
        "parameters": json.dumps(recipe, ensure_ascii=False),
    }
    if ui:  # a workflow that came from ComfyUI's editor: the PNG reopens as that graph there
        chunks["workflow"] = json.dumps(ui, ensure_ascii=False)
    return chunks


class SaveImage(Node):
    """Save images as PNGs in the output folder, with the workflow and generation parameters embedded.

    Files are numbered (`prefix_00001_.png`) and never overwrite; the prefix may name subfolders but
    cannot leave the output folder.
    """

    display_name = "Save Image"
    category = "image"
    output_node = True
    inputs = [Input("images", "IMAGE", force_link=True), String("filename_prefix", default="graphgen")]

    def run(self, images: Any, filename_prefix: str) -> Result:
        from graphgen_nodes.diffusion.images import save_png

        chunks = png_text_chunks(self.ctx.workflow, self.ctx.node_id)
        saved = []
        for index in range(images.shape[0]):
            path = save_png(images[index], self.ctx.output_dir, filename_prefix, chunks)
            saved.append({"path": str(path), "filename": path.name,
                          "subfolder": str(path.parent.relative_to(self.ctx.output_dir.resolve()))
                          if path.is_absolute() else str(path.parent), "type": "output"})
            self.ctx.progress(index + 1, images.shape[0])
        return Result(ui={"images": saved})


class PreviewImage(Node):
    """Show images: saved as temporary PNGs (in the output folder's `.temp`), not as results."""

    display_name = "Preview Image"
    category = "image"
    output_node = True
    deterministic = False
    inputs = [Input("images", "IMAGE", force_link=True)]

    def run(self, images: Any) -> Result:
        from graphgen_nodes.diffusion.images import save_png

        temp = self.ctx.settings.temp_dir or self.ctx.output_dir / ".temp"
        prefix = f"preview_{uuid.uuid4().hex[:8]}"
        saved = []
        for index in range(images.shape[0]):
            path = save_png(images[index], temp, prefix, compress_level=1)
            saved.append({"path": str(path), "filename": path.name, "subfolder": "", "type": "temp"})
        return Result(ui={"images": saved})


def _summary(value: Any) -> Any:
    """JSON for values that have none: tensors by shape, dtype and range; other objects by repr."""
    shape = getattr(value, "shape", None)
    if shape is not None and hasattr(value, "dtype"):
        text = f"tensor(shape={list(shape)}, dtype={str(value.dtype).removeprefix('torch.')}"
        if getattr(value, "numel", lambda: 0)() and value.dtype.is_floating_point:
            text += f", min={float(value.min()):.4g}, max={float(value.max()):.4g}"
        return text + ")"
    return repr(value)


def preview_text(value: Any) -> str:
    """How PreviewAny shows a value: text as it is, numbers as written, anything else as JSON."""
    if isinstance(value, str):
        return value
    if value is None or isinstance(value, (bool, int, float)):
        return str(value)
    try:
        return json.dumps(value, indent=4, ensure_ascii=False, default=_summary)
    except (TypeError, ValueError):  # e.g. keys that are not strings, or a circular structure
        return repr(value)


class PreviewAny(Node):
    """Show any value as text (tensors by shape, dtype and range)."""

    display_name = "Preview Any"
    category = "utils"
    output_node = True
    inputs = [Input("source", "*", description="any value")]

    def run(self, source: Any = None) -> Result:
        return Result(ui={"text": [preview_text(source)]})


NODES = [LoadImage, LoadImageMask, SaveImage, PreviewImage, PreviewAny]
