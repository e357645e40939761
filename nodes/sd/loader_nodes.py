"""ComfyUI's loaders for SD1.5 / SDXL: CheckpointLoaderSimple, UNETLoader, CLIPLoader, DualCLIPLoader, LoraLoader.

Names resolve under ``--models-dir`` in ComfyUI's layout (``checkpoints/``, ``unet/`` or
``diffusion_models/``, ``clip/`` or ``text_encoders/``, ``loras/``); absolute paths work too.
The architecture is read from the file (``detect.py``); nothing is downloaded. Each component is
loaded once per engine and shared (a second loader of the same file reuses it).
"""

from __future__ import annotations

from collections.abc import Hashable
from pathlib import Path
from typing import Any

from graphgen import Choice, Float, Input, Node, Output, String
from graphgen.context import EngineSettings

#: An SD or Kolors UNet flows as ComfyUI's MODEL (Kolors' own type names stay accepted).
MODEL_TYPES = "MODEL,KOLORSMODEL,KOLORS_UNET"


def _find(settings: EngineSettings | None, folders: tuple[str, ...], name: str, what: str) -> Path:
    from graphgen_nodes.comfyui.models import MissingModelError, find_model

    error: MissingModelError | None = None
    for folder in folders:
        try:
            return find_model(settings, folder, name, what)
        except MissingModelError as exc:
            error = error or exc
    assert error is not None
    raise error


def _file_check(folders: tuple[str, ...], what: str) -> Any:
    """A validation check: the named file exists where the loader will look (`_find`), so a missing
    checkpoint is reported by `graphgen validate` and before anything loads, not after minutes."""
    from graphgen.checks import CheckContext, Problem

    def check(name: str, ctx: CheckContext) -> Problem | None:
        from graphgen_nodes.comfyui.models import MissingModelError

        try:
            _find(ctx.settings, folders, name, what)
        except MissingModelError as exc:
            message, _, rest = str(exc).partition("; ")
            return Problem(message, f"{rest}; or set it with --set {ctx.node_id}.{ctx.input.name}=FILE")
        return None

    return check


def _identity(settings: EngineSettings | None, folders: tuple[str, ...], name: str, what: str) -> Hashable:
    from graphgen.models import file_identity

    try:
        return file_identity(_find(settings, folders, name, what))
    except FileNotFoundError:
        return ("missing", name)


def _device_dtype() -> tuple[Any, Any]:
    from graphgen.models import resolve_device, resolve_dtype

    device = resolve_device("auto")
    return device, resolve_dtype("auto", device)


class _CheckpointFile:
    """Reads a checkpoint at most once per load, only when a component is not in the store yet.

    A component's loader keeps this object (to re-read the file after an eviction), so the tensors
    are dropped (`release`) once the loader node has what it needs.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._state: dict[str, Any] | None = None

    def component(self, fn: Any, dtype: Any, place: Any) -> Any:
        from .detect import detect
        from .loading import read_checkpoint

        if self._state is None:
            self._state = read_checkpoint(self.path)
        return fn(self._state, detect(self._state, str(self.path)), dtype).to(place)

    def release(self) -> None:
        self._state = None


#: Rough share of a checkpoint file per component, for VRAM placement before reading it.
_SHARE = {"unet": 0.8, "clip_l": 0.05, "clip_g": 0.2, "vae": 0.04}


def load_checkpoint(node: Node, path: Path, want: tuple[str, ...] = ("unet", "clip", "vae")) -> tuple[Any, ...]:
    """MODEL, CLIP and VAE values of a single-file checkpoint (components not in ``want`` are None)."""
    from . import loading
    from .detect import detect_family_from_keys
    from .handles import SDClip, SDModel, load_component

    device, dtype = _device_dtype()
    family = detect_family_from_keys(path)
    ckpt = _CheckpointFile(path)

    def load(kind: str, fn: Any) -> Any:
        return load_component(node.ctx, f"{family}/{kind}", path, dtype, device,
                              lambda place: ckpt.component(fn, dtype, place), share=_SHARE[kind])

    try:
        model = SDModel(load("unet", loading.load_unet), family) if "unet" in want else None
        clip = None
        if "clip" in want:
            clip_l = load("clip_l", loading.load_clip_l) if family != "sdxl_refiner" else None
            clip_g = load("clip_g", loading.load_clip_g) if family != "sd15" else None
            clip = SDClip(family, clip_l, clip_g)
        vae = load("vae", loading.load_vae) if "vae" in want else None
    finally:
        ckpt.release()
    return model, clip, vae


_PIPELINE_FAMILIES = {"StableDiffusionPipeline": "sd15", "StableDiffusionXLPipeline": "sdxl",
                      "StableDiffusionXLImg2ImgPipeline": "sdxl"}


def load_diffusers_folder(node: Node, path: Path) -> tuple[Any, Any, Any]:
    """MODEL, CLIP and VAE of a diffusers pipeline folder (``model_index.json``, ``unet/``, ``vae/``...)."""
    import json

    from .handles import SDClip, SDModel, load_component

    try:
        index = json.loads((path / "model_index.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path} is a folder but not a diffusers pipeline (no readable model_index.json: {exc}); "
                         "give a single-file checkpoint or a diffusers SD1.5/SDXL folder") from None
    family = _PIPELINE_FAMILIES.get(str(index.get("_class_name")))
    if family is None:
        raise ValueError(f"{path} holds a {index.get('_class_name')}, not an SD1.5/SDXL pipeline")
    if family == "sdxl" and not (path / "text_encoder").is_dir():
        family = "sdxl_refiner"
    device, dtype = _device_dtype()

    def load(kind: str, cls_path: str, sub: str) -> Any:
        module_name, cls_name = cls_path.rsplit(".", 1)

        def build(place: Any) -> Any:
            import importlib

            cls = getattr(importlib.import_module(module_name), cls_name)
            return cls.from_pretrained(path / sub, dtype=dtype, local_files_only=True).to(place).eval()

        return load_component(node.ctx, f"{family}/{kind}", path / sub, dtype, device, build)

    model = SDModel(load("unet", "diffusers.UNet2DConditionModel", "unet"), family)
    clip_l = load("clip_l", "transformers.CLIPTextModel", "text_encoder") if family != "sdxl_refiner" else None
    clip_g = load("clip_g", "transformers.CLIPTextModelWithProjection", "text_encoder_2") \
        if family != "sd15" else None
    return model, SDClip(family, clip_l, clip_g), load("vae", "diffusers.AutoencoderKL", "vae")


class CheckpointLoaderSimple(Node):
    """Load an SD1.5 or SDXL checkpoint from `<models>/checkpoints`: a single .safetensors in the original
    layout, or a diffusers pipeline folder.

    The architecture is read from the file's tensor shapes, so fine-tunes and small test
    checkpoints load like the originals; nothing is downloaded.
    """

    category = "loaders"
    inputs = [String("ckpt_name", default="v1-5-pruned-emaonly.safetensors",
                     description="a file in <models>/checkpoints, or a path",
                     checks=(_file_check(("checkpoints",), "checkpoint"),))]
    outputs = [Output(MODEL_TYPES, "MODEL"), Output("CLIP", "CLIP"), Output("VAE", "VAE")]

    @classmethod
    def fingerprint(cls, ckpt_name: str, settings: EngineSettings | None = None, **_: Any) -> Hashable:
        return _identity(settings, ("checkpoints",), ckpt_name, "checkpoint")

    def run(self, ckpt_name: str) -> tuple[Any, Any, Any]:
        path = _find(self.ctx.settings, ("checkpoints",), ckpt_name, "checkpoint")
        if path.is_dir():
            return load_diffusers_folder(self, path)
        return load_checkpoint(self, path)


class UNETLoader(Node):
    """Load a UNet alone (an SD checkpoint or a UNet-only file in the original layout) from `<models>/unet`."""

    category = "advanced/loaders"
    inputs = [String("unet_name", default="", description="a file in <models>/unet or <models>/diffusion_models",
                     checks=(_file_check(('unet', 'diffusion_models', 'checkpoints'), "UNet"),)),
              Choice("weight_dtype", ["default"], default="default")]
    outputs = [Output(MODEL_TYPES, "MODEL")]
    folders = ("unet", "diffusion_models", "checkpoints")

    @classmethod
    def fingerprint(cls, unet_name: str, settings: EngineSettings | None = None, **_: Any) -> Hashable:
        return _identity(settings, cls.folders, unet_name, "UNet")

    def run(self, unet_name: str, weight_dtype: str = "default") -> Any:
        path = _find(self.ctx.settings, self.folders, unet_name, "UNet")
        return load_checkpoint(self, path, ("unet",))[0]


class CLIPLoader(Node):
    """Load SD1.5's CLIP ViT-L text encoder from `<models>/clip` (a checkpoint or a CLIP-only file)."""

    category = "advanced/loaders"
    inputs = [String("clip_name", default="", description="a file in <models>/clip or <models>/text_encoders",
                     checks=(_file_check(('clip', 'text_encoders', 'checkpoints'), "CLIP"),)),
              Choice("type", ["stable_diffusion"], default="stable_diffusion")]
    outputs = [Output("CLIP", "CLIP")]
    folders = ("clip", "text_encoders", "checkpoints")

    @classmethod
    def fingerprint(cls, clip_name: str, settings: EngineSettings | None = None, **_: Any) -> Hashable:
        return _identity(settings, cls.folders, clip_name, "CLIP")

    def run(self, clip_name: str, type: str = "stable_diffusion") -> Any:  # noqa: A002 - ComfyUI's name
        path = _find(self.ctx.settings, self.folders, clip_name, "CLIP")
        return load_checkpoint(self, path, ("clip",))[1]


class DualCLIPLoader(Node):
    """Load SDXL's two text encoders (ViT-L and bigG) from two files in `<models>/clip` (checkpoints work too)."""

    category = "advanced/loaders"
    inputs = [String("clip_name1", default="", description="ViT-L: a file in <models>/clip",
                     checks=(_file_check(('clip', 'text_encoders', 'checkpoints'), "CLIP"),)),
              String("clip_name2", default="", description="bigG: a file in <models>/clip",
                     checks=(_file_check(('clip', 'text_encoders', 'checkpoints'), "CLIP"),)),
              Choice("type", ["sdxl"], default="sdxl")]
    outputs = [Output("CLIP", "CLIP")]
    folders = ("clip", "text_encoders", "checkpoints")

    @classmethod
    def fingerprint(cls, clip_name1: str, clip_name2: str, settings: EngineSettings | None = None,
                    **_: Any) -> Hashable:
        return (_identity(settings, cls.folders, clip_name1, "CLIP"),
                _identity(settings, cls.folders, clip_name2, "CLIP"))

    def run(self, clip_name1: str, clip_name2: str, type: str = "sdxl") -> Any:  # noqa: A002
        from .handles import SDClip

        first = load_checkpoint(self, _find(self.ctx.settings, self.folders, clip_name1, "CLIP"), ("clip",))[1]
        second = load_checkpoint(self, _find(self.ctx.settings, self.folders, clip_name2, "CLIP"), ("clip",))[1]
        clip_l = first.clip_l or second.clip_l
        clip_g = second.clip_g or first.clip_g
        if clip_l is None or clip_g is None:
            raise ValueError("DualCLIPLoader: clip_name1/clip_name2 must hold a CLIP ViT-L and an OpenCLIP bigG "
                             "text encoder (SDXL's); give the SDXL files")
        return SDClip("sdxl", clip_l, clip_g)


class LoraLoader(Node):
    """Stack a LoRA from `<models>/loras` on a MODEL and a CLIP (kohya, diffusers or peft files).

    Each module adds strength × alpha / rank × up @ down (alpha = rank when the file stores none),
    merged only while the sampler or the text encoder runs; the loaded models are never changed.
    """

    category = "loaders"
    inputs = [Input("model", MODEL_TYPES, force_link=True), Input("clip", "CLIP", force_link=True),
              String("lora_name", default="", description="a file in <models>/loras"),
              Float("strength_model", default=1.0, min=-100.0, max=100.0, step=0.01),
              Float("strength_clip", default=1.0, min=-100.0, max=100.0, step=0.01)]
    outputs = [Output(MODEL_TYPES, "MODEL"), Output("CLIP", "CLIP")]

    @classmethod
    def fingerprint(cls, lora_name: str, settings: EngineSettings | None = None, **_: Any) -> Hashable:
        return _identity(settings, ("loras",), lora_name, "LoRA")

    def run(self, model: Any, clip: Any, lora_name: str, strength_model: float,
            strength_clip: float) -> tuple[Any, Any]:
        from dataclasses import replace

        from .lora import read_sd_lora

        path = _find(self.ctx.settings, ("loras",), lora_name, "LoRA")
        unet_lora, encoder_loras, warnings = read_sd_lora(path, clip)
        for warning in warnings:
            self.ctx.warn(warning)
        if unet_lora is not None and strength_model != 0:
            model = model.with_lora(unet_lora, strength_model)
        if encoder_loras and strength_clip != 0:
            clip = replace(clip, loras=clip.loras + tuple((n, lw, float(strength_clip)) for n, lw in encoder_loras))
        return model, clip


NODES = [CheckpointLoaderSimple, UNETLoader, CLIPLoader, DualCLIPLoader, LoraLoader]
