"""`nodes`: ComfyUI's core node module, as packs subclass and call it.

`MAX_RESOLUTION`, and classic-style `SaveImage`, `PreviewImage` and `LoadImage` (with ComfyUI's
methods `save_images` and `load_image`) that write and read through graphgen's image functions.
Other core node types are looked up among graphgen's built-in packs (their classic classes), so
`nodes.NODE_CLASS_MAPPINGS` grows with the core vocabulary.
"""

from __future__ import annotations

import json
import os
import uuid
from typing import Any

from graphgen.compat import folder_paths
from graphgen.compat.comfy import model_management

MAX_RESOLUTION = 16384
EXTENSION_WEB_DIRS: dict[str, str] = {}


def before_node_execution() -> None:
    model_management.throw_exception_if_processing_interrupted()


def interrupt_processing(value: bool = True) -> None:
    model_management.interrupt_current_processing(value)


def _images() -> Any:
    from graphgen_nodes.kolors import images  # type: ignore[import-not-found,unused-ignore]

    return images


def _levels(image: Any) -> Any:
    """The image on ComfyUI's 8-bit levels (truncated), as ComfyUI's SaveImage writes it."""
    try:
        from graphgen_nodes.core.io_nodes import comfy_levels  # type: ignore[import-not-found,unused-ignore]
    except ImportError:  # a graphgen without the core pack: its own rounding
        return image
    return comfy_levels(image)


class SaveImage:
    """Save images as numbered PNGs in the output folder (never overwriting), metadata embedded."""

    def __init__(self) -> None:
        self.output_dir = folder_paths.get_output_directory()
        self.type = "output"
        self.prefix_append = ""
        self.compress_level = 4

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:  # noqa: N802 - ComfyUI's name
        return {"required": {"images": ("IMAGE",), "filename_prefix": ("STRING", {"default": "ComfyUI"})},
                "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}}

    RETURN_TYPES: tuple[str, ...] = ()
    FUNCTION = "save_images"
    OUTPUT_NODE = True
    CATEGORY = "image"
    DESCRIPTION = "Saves the input images to your output directory."

    def save_images(self, images: Any, filename_prefix: str = "ComfyUI", prompt: Any = None,
                    extra_pnginfo: Any = None) -> dict[str, Any]:
        save_png = _images().save_png
        chunks: dict[str, str] = {}
        if prompt is not None:
            chunks["prompt"] = json.dumps(prompt)
        for key, value in (extra_pnginfo or {}).items():
            chunks[str(key)] = json.dumps(value)
        results = []
        for image in images:
            path = save_png(_levels(image), self.output_dir, filename_prefix + self.prefix_append, chunks,
                            compress_level=self.compress_level)
            subfolder = os.path.relpath(path.parent, os.path.abspath(self.output_dir))
            results.append({"filename": path.name, "subfolder": "" if subfolder == "." else subfolder,
                            "type": self.type})
        return {"ui": {"images": results}}


class PreviewImage(SaveImage):
    """Show images: saved as temporary PNGs in the temp folder."""

    def __init__(self) -> None:
        self.output_dir = folder_paths.get_temp_directory()
        self.type = "temp"
        self.prefix_append = "_temp_" + uuid.uuid4().hex[:5]
        self.compress_level = 1

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:  # noqa: N802
        return {"required": {"images": ("IMAGE",)}, "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}}


class LoadImage:
    """Load an image of the input folder as (IMAGE, MASK)."""

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:  # noqa: N802
        directory = folder_paths.get_input_directory()
        files = sorted(f for f in os.listdir(directory) if os.path.isfile(os.path.join(directory, f))) \
            if os.path.isdir(directory) else []
        return {"required": {"image": (files, {"image_upload": True})}}

    CATEGORY = "image"
    RETURN_TYPES = ("IMAGE", "MASK")
    FUNCTION = "load_image"

    def load_image(self, image: str) -> tuple[Any, Any]:
        import torch

        path = folder_paths.get_annotated_filepath(image)
        pixels, mask = _images().load_image(path)
        if mask is None:
            mask = torch.zeros(pixels.shape[0], pixels.shape[1], pixels.shape[2])
        return pixels, mask

    @classmethod
    def IS_CHANGED(cls, image: str) -> str:  # noqa: N802
        path = folder_paths.get_annotated_filepath(image)
        stat = os.stat(path)
        return f"{stat.st_ino}:{stat.st_size}:{stat.st_mtime_ns}:{stat.st_ctime_ns}"


NODE_CLASS_MAPPINGS: dict[str, type] = {"SaveImage": SaveImage, "PreviewImage": PreviewImage,
                                        "LoadImage": LoadImage}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {"SaveImage": "Save Image", "PreviewImage": "Preview Image",
                                              "LoadImage": "Load Image"}


def _builtin_classic(name: str) -> type | None:
    """A classic node class named `name` in graphgen's built-in packs, if one exists."""
    import importlib
    import pkgutil

    from graphgen.comfy_classic import is_classic_node

    try:
        package = importlib.import_module("graphgen_nodes")
    except ImportError:
        return None
    for info in pkgutil.iter_modules(package.__path__):
        if not info.ispkg or info.name.startswith("_"):
            continue
        try:
            module = importlib.import_module(f"graphgen_nodes.{info.name}")
        except Exception:
            continue
        found = (getattr(module, "NODE_CLASS_MAPPINGS", None) or {}).get(name)
        if found is None:
            found = next((n for n in getattr(module, "NODES", None) or () if getattr(n, "__name__", "") == name), None)
        if found is not None and is_classic_node(found):
            return found  # type: ignore[no-any-return]
    return None


def __getattr__(name: str) -> Any:
    found = _builtin_classic(name) if name[:1].isupper() else None
    if found is None:
        raise AttributeError(f"module 'nodes' has no attribute {name!r} (graphgen does not provide it)")
    NODE_CLASS_MAPPINGS.setdefault(name, found)
    return found
