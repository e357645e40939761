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
from graphgen.checks import CheckContext, Problem
from graphgen.context import EngineSettings


def _find_input(settings: EngineSettings | None, image: str) -> Path:
    path = Path(image).expanduser()
    if path.is_absolute() or settings is None:
        return path
    in_input = settings.input_dir / path
    return in_input if in_input.exists() or not path.exists() else path


def _input_path(settings: EngineSettings | None, image: str) -> Path:
    """A file name in the input folder, or a path (in a confined run: inside the engine's folders)."""
    from graphgen.paths import locate

    return locate(settings, "image", image, lambda: _find_input(settings, image))


def image_file_check(image: str, ctx: CheckContext) -> Problem | None:
    """Validation: the image exists (input folder or path) and its header is one Pillow reads.

    In a confined (server) run `_input_path` refuses a missing file and one outside the folders alike,
    with `graphgen.paths`' one message (a `FileNotFoundError`, reported as it is), so the check never
    tells whether a file exists outside them.
    """
    from PIL import UnidentifiedImageError

    from graphgen.limits import ImageTooLargeError, open_image

    if not image:
        return Problem("no image is given", f"give a file name in the input folder {str(ctx.input_dir)!r}, or a path")
    path = _input_path(ctx.settings, image)
    if not path.is_file():
        return Problem(f"image {image!r} not found in the input folder {str(ctx.input_dir)!r} nor as a path",
                       "put it in the input folder (--input-dir), or give its full path")
    try:
        with open_image(path, f"image {image!r}"):  # reads the header only; refuses one over the pixel limit
            pass
    except ImageTooLargeError as exc:
        return Problem(str(exc))
    except (UnidentifiedImageError, OSError) as exc:
        return Problem(f"{image!r} is not an image Pillow can read ({type(exc).__name__})",
                       "give a PNG, JPEG or WebP file")
    return None


class LoadImage(Node):
    """Load a PNG, JPEG or WebP image (EXIF orientation applied); alpha becomes the mask."""

    display_name = "Load Image"
    category = "image"
    inputs = [String("image", default="", description="a file name in the input folder, or a path",
                     checks=(image_file_check,)),
              String("upload", default="image", optional=True, description="editor upload widget (unused)")]
    outputs = [Output("IMAGE", "image"), Output("MASK", "mask")]

    @classmethod
    def fingerprint(cls, image: str, settings: EngineSettings | None = None, **_: Any) -> Hashable:
        from graphgen.paths import located_identity

        return located_identity(settings, "image", image, lambda: _find_input(settings, image))

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
    inputs = [String("image", default="", description="a file name in the input folder, or a path",
                     checks=(image_file_check,)),
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


def comfy_levels(image: Any) -> Any:
    """The image on ComfyUI's 8-bit levels: `255 * x` clipped and truncated (not rounded).

    ComfyUI writes PNGs that way, so a saved 0.5 is 127 in both; `save_png` rounds, and rounding
    a value already on a level leaves it there.
    """
    import torch

    return torch.floor((255.0 * image.detach().to(torch.float32).cpu()).clamp(0, 255)) / 255.0


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
            path = save_png(comfy_levels(images[index]), self.ctx.output_dir, filename_prefix, chunks)
            saved.append({"path": str(path), "filename": path.name,
                          "subfolder": str(path.parent.relative_to(self.ctx.output_dir.resolve()))
                          if path.is_absolute() else str(path.parent), "type": "output"})
            self.ctx.progress(index + 1, images.shape[0])
        return Result(ui={"images": saved})


PREVIEW_PREFIX = "preview_"
PREVIEWS_KEPT = 200
"""Most preview PNGs kept in the temp folder: older ones are deleted as new ones are written."""


def prune_previews(temp: Path, keep: int = PREVIEWS_KEPT) -> int:
    """Delete all but the `keep` newest preview PNGs in `temp` (never any other file); returns how many went.

    Previews are throwaway views, and a long session (a server, an app calling `Engine.run` in a
    loop) would otherwise fill the disk with them.
    """
    try:
        previews = [(entry.stat().st_mtime_ns, entry) for entry in temp.iterdir()
                    if entry.name.startswith(PREVIEW_PREFIX) and entry.suffix == ".png" and entry.is_file()
                    and not entry.is_symlink()]
    except OSError:
        return 0
    previews.sort(reverse=True)
    removed = 0
    for _, old in previews[keep:]:
        try:
            old.unlink()
            removed += 1
        except OSError:  # another process got there first, or it is not ours to delete
            pass
    return removed


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
        prune_previews(temp, keep=max(PREVIEWS_KEPT - images.shape[0], 0))
        prefix = f"{PREVIEW_PREFIX}{uuid.uuid4().hex[:8]}"
        saved = []
        for index in range(images.shape[0]):
            path = save_png(comfy_levels(images[index]), temp, prefix, compress_level=1)
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
    if not isinstance(value, (dict, list, tuple)):
        return _summary(value)  # a tensor or another object: its summary, not a quoted JSON string
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
