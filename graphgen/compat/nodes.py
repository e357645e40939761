"""`nodes`: ComfyUI's core node module, as packs subclass and call it.

`MAX_RESOLUTION`, and classic-style `SaveImage`, `PreviewImage` and `LoadImage` (with ComfyUI's
methods `save_images` and `load_image`) that write and read through graphgen's image functions.
Other core node types are looked up among graphgen's built-in nodes (`nodes.ImageInvert`,
`nodes.NODE_CLASS_MAPPINGS["ImageInvert"]`), so the module grows with the core vocabulary; a native
graphgen node is offered as a classic class whose methods all run it (`ImageInvert().invert(image)`).
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import uuid
from typing import Any

from graphgen.compat import _runtime, folder_paths
from graphgen.compat.comfy import model_management
from graphgen.paths import not_available

MAX_RESOLUTION = 16384
EXTENSION_WEB_DIRS: dict[str, str] = {}


def before_node_execution() -> None:
    model_management.throw_exception_if_processing_interrupted()


def interrupt_processing(value: bool = True) -> None:
    model_management.interrupt_current_processing(value)


def _images() -> Any:
    from graphgen_nodes.diffusion import images  # type: ignore[import-not-found,unused-ignore]

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
    def VALIDATE_INPUTS(cls, image: str) -> bool | str:  # noqa: N802
        """A missing image, or one a served run may not read, is named before anything runs (served:
        one message for both, as `graphgen.paths` answers, so that nothing tells them apart)."""
        if folder_paths.exists_annotated_filepath(image):
            return True
        if _runtime.settings().confine_paths:
            return str(not_available("image", image))
        return f"image file {image!r} not found in the input folder; upload it or put it there"

    @classmethod
    def IS_CHANGED(cls, image: str) -> str:  # noqa: N802
        path = folder_paths.get_annotated_filepath(image)
        stat = os.stat(path)
        return f"{stat.st_ino}:{stat.st_size}:{stat.st_mtime_ns}:{stat.st_ctime_ns}"


class _CoreNode:
    """A built-in graphgen node dressed as a ComfyUI classic class, for packs that call or subclass
    core nodes: any method name runs the node (`ImageInvert().invert(image)`), positional
    arguments in the editor's input order, and returns the outputs as a tuple."""

    _spec: Any = None
    FUNCTION = "execute"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:  # noqa: N802
        from graphgen.formats import editor_inputs
        from graphgen.server.object_info import input_definition

        spec = cls._spec
        declared: dict[str, Any] = {"required": {}, "optional": {}}
        for item in editor_inputs(spec):
            declared["optional" if item.optional else "required"][item.name] = tuple(input_definition(item))
        return declared

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        from graphgen.formats import editor_inputs

        names = [i.name for i in editor_inputs(self._spec)]
        if len(args) > len(names):
            raise TypeError(f"{self._spec.type_name} takes {len(names)} inputs ({', '.join(names)}), "
                            f"got {len(args)} positional arguments")
        kwargs.update(zip(names, args, strict=False))
        outcome = self._spec.execute(_runtime.context(), kwargs)
        if inspect.isawaitable(outcome):
            raise TypeError(f"{self._spec.type_name} is an async node: it cannot be called from another node")
        values = tuple(outcome.values)
        return {"ui": outcome.ui, "result": values} if outcome.ui else values

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return self.execute


def _core_class(name: str) -> type | None:
    """The built-in node `name` as a classic class (its own, or a `_CoreNode` facade)."""
    from graphgen.comfy_classic import is_classic_node

    registry = _runtime.registry()
    if registry is None or name not in registry:
        return None
    try:
        spec = registry.get(name)
    except KeyError:
        return None
    if spec.pack not in _builtin_packs():
        return None  # only graphgen's own nodes stand for ComfyUI's core ones
    if is_classic_node(spec.source):
        return spec.source  # type: ignore[no-any-return]
    return type(name, (_CoreNode,), {
        "_spec": spec, "RETURN_TYPES": tuple(o.type for o in spec.outputs),
        "RETURN_NAMES": tuple(o.name or o.type for o in spec.outputs), "OUTPUT_NODE": spec.output_node,
        "CATEGORY": spec.category, "DESCRIPTION": spec.description, "__doc__": spec.description})


@functools.cache
def _builtin_packs() -> frozenset[str]:
    import pkgutil

    try:
        import graphgen_nodes  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return frozenset()
    return frozenset(info.name for info in pkgutil.iter_modules(graphgen_nodes.__path__) if info.ispkg)


class _Mappings(dict):  # type: ignore[type-arg]
    """`NODE_CLASS_MAPPINGS`: the classes above, and any built-in node looked up by name."""

    def __missing__(self, name: str) -> type:
        found = _core_class(name)
        if found is None:
            raise KeyError(name)
        self[name] = found
        return found

    def __contains__(self, name: object) -> bool:
        return dict.__contains__(self, name) or (isinstance(name, str) and _core_class(name) is not None)

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        try:
            return self[name]
        except KeyError:
            return default


NODE_CLASS_MAPPINGS: dict[str, type] = _Mappings({"SaveImage": SaveImage, "PreviewImage": PreviewImage,
                                                  "LoadImage": LoadImage})
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {"SaveImage": "Save Image", "PreviewImage": "Preview Image",
                                              "LoadImage": "Load Image"}


def __getattr__(name: str) -> Any:
    found = NODE_CLASS_MAPPINGS.get(name) if name[:1].isupper() else None
    if found is None:
        raise AttributeError(f"module 'nodes' has no attribute {name!r} (graphgen does not provide it)")
    return found
