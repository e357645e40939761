"""Loader nodes: the Kolors UNet, the ChatGLM3 text encoder and the VAE, from any layout a user holds.

Paths may be a Kolors root folder (tutorial or diffusers layout), a component folder or a single
file; relative paths are also looked up under `--models-dir`. Loaded models are shared by every
node and run of an Engine through its model store (see `graphgen.models`). Each model lands
straight on its device when it fits the VRAM budget (least recently used models make room), else
on the host, from where it moves in (or streams) when used.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from graphgen import Bool, Choice, Node, Output, String
from graphgen.checks import CheckContext, Problem, models_dir_hint
from graphgen.context import EngineSettings
from graphgen.models import OFFLOAD_MODES

PRECISIONS = ["auto", "fp32", "fp16", "bf16"]
DEVICES = ["auto", "cpu", "cuda", "mps"]


def _precision(description: str = "") -> Any:
    return Choice("precision", PRECISIONS, default="auto",
                  description=description or "weights dtype; auto: fp16 on a GPU, fp32 on the CPU")


def _device() -> Any:
    return Choice("device", DEVICES, default="auto", description="where the model computes; auto: cuda > mps > cpu")


def _component_bytes(source: Any, component: str) -> int:
    """Upper bound of a component's size, from its files (the whole folder when it is not apart)."""
    from graphgen.models import weights_on_disk

    return weights_on_disk(source / component if (source / component).is_dir() else source)


def _placed(store: Any, device: Any, source: Any, component: str, offload: str = "auto") -> Any:
    """Where a loader puts a component: the host for offload "on", the device for "off", else the
    device when it fits the VRAM budget (room made), the host when not (see `ModelStore.place`)."""
    import torch

    if offload == "on" and device.type != "cpu":
        return torch.device("cpu")
    if offload == "off" or device.type == "cpu":
        return device
    return store.place(device, _component_bytes(source, component))


def _speedups() -> list[Any]:
    return [Bool("compile", default=False,
                 description="torch.compile the UNet: the first image compiles (slow), later ones run faster"),
            Bool("channels_last", default=False,
                 description="NHWC weights for the UNet's convolutions (faster on NVIDIA tensor cores)")]


def _unet_loader(source: Any, dtype: Any, device: Any, store: Any, compile: bool, channels_last: bool) -> Any:
    from graphgen.models.speedups import apply_speedups

    from .loading import load_unet

    return lambda: apply_speedups(load_unet(source, dtype, _placed(store, device, source, "unet")),
                                  compile=compile, channels_last=channels_last)


def weights_check(components: dict[str, tuple[str, ...]], subfolders: tuple[str, ...]) -> Any:
    """A validation check: the path holds each component (`{"UNet": ("unet",)}`) as the loaders look.

    Cheap: it stats files (`loading.locate_component`), it never reads weights.
    """

    def check(path: str, ctx: CheckContext) -> Problem | None:
        from .handles import resolve_model_path
        from .loading import locate_component

        if not path:
            return Problem("no model path is given", "give the model's folder or file")
        resolved = resolve_model_path(ctx.settings, path, *subfolders)
        for what, names in components.items():
            found, looked = locate_component(resolved, names)
            if found is None:
                shown = ", ".join(str(p) for p in list(dict.fromkeys(looked))[:3])
                where = f"{path!r}" if str(resolved) == path else f"{path!r} ({resolved})"
                return Problem(f"no {what} weights found at {where}" + (f"; looked for {shown} ..." if shown else ""),
                               models_dir_hint(ctx.settings))
        return None

    return check


class _Loader(Node):
    category = "kolors/loaders"
    subfolders: tuple[str, ...] = ()

    @classmethod
    def fingerprint(cls, path: str, settings: EngineSettings | None = None, **_: Any) -> Hashable:
        from graphgen.models import model_identity

        return model_identity(settings, path, *cls.subfolders)

    def _store(self) -> Any:
        from graphgen.models import model_store

        return model_store(self.ctx.resources)

    def _resolve(self, path: str, precision: str, device: str) -> tuple[Any, Any, Any]:
        from graphgen.models import resolve_model_path
        from graphgen.models.devices import resolve_device, resolve_dtype

        torch_device = resolve_device(device)
        return resolve_model_path(self.ctx.settings, path, *self.subfolders), resolve_dtype(precision, torch_device), \
            torch_device


class KolorsUNetLoader(_Loader):
    """Load the Kolors UNet (diffusers UNet2DConditionModel with Kolors' text_proj/text_time settings)."""

    subfolders = ("unet", "diffusers")
    inputs = [String("path", default="models/kolors/Kolors", description="Kolors folder, unet folder or file",
                     checks=(weights_check({"UNet": ("unet",)}, subfolders),)),
              _precision(), _device(), *_speedups()]
    outputs = [Output("KOLORS_UNET", "model")]

    def run(self, path: str, precision: str, device: str, compile: bool = False, channels_last: bool = False) -> Any:
        from graphgen.models.speedups import speedup_key

        from .handles import UNetRef, load_shared

        source, dtype, torch_device = self._resolve(path, precision, device)
        loader = _unet_loader(source, dtype, torch_device, self._store(), compile, channels_last)
        handle = load_shared(self.ctx, "unet", source, dtype, torch_device, loader,
                             extra_key=speedup_key(compile=compile, channels_last=channels_last))
        return UNetRef(handle)


class KolorsTextEncoderLoader(_Loader):
    """Load the ChatGLM3 text encoder and its tokenizer (sharded .bin, safetensors or a single file)."""

    subfolders = ("LLM", "diffusers")
    inputs = [String("path", default="models/kolors/Kolors", description="Kolors folder, text_encoder folder or file",
                     checks=(weights_check({"ChatGLM3 text encoder": ("text_encoder",)}, subfolders),)),
              _precision(), _device(),
              Choice("offload", list(OFFLOAD_MODES), default="auto",
                     description="auto: the encoder leaves the GPU only when another model needs the room; "
                                 "on: right after encoding; off: never"),
              String("tokenizer_path", default="", description="tokenizer folder, for a single-file encoder")]
    outputs = [Output("CHATGLM3MODEL", "chatglm3_model")]

    @classmethod
    def fingerprint(cls, path: str, settings: EngineSettings | None = None, tokenizer_path: str = "",
                    **_: Any) -> Hashable:
        from .handles import resolve_model_path, tokenizer_identity

        try:
            source = resolve_model_path(settings, path, *cls.subfolders)
            tokenizer = resolve_model_path(settings, tokenizer_path, "diffusers", what="tokenizer") \
                if tokenizer_path else None
            used: Hashable = tokenizer_identity(source, tokenizer)
        except (OSError, ValueError) as exc:  # refused in a confined run: the node reports it
            used = ("not available", type(exc).__name__)
        return (super().fingerprint(path=path, settings=settings), used)

    def run(self, path: str, precision: str, device: str, offload: str, tokenizer_path: str) -> Any:
        from .handles import load_shared, resolve_model_path, tokenizer_identity
        from .loading import load_text_encoder

        source, dtype, torch_device = self._resolve(path, precision, device)
        tokenizer = resolve_model_path(self.ctx.settings, tokenizer_path, "diffusers", what="tokenizer") \
            if tokenizer_path else None
        store = self._store()
        return load_shared(self.ctx, "text_encoder", source, dtype, torch_device,
                           lambda: load_text_encoder(source, dtype,
                                                     _placed(store, torch_device, source, "text_encoder", offload),
                                                     tokenizer_path=tokenizer),
                           offload=offload,
                           extra_key=(tokenizer_identity(source, tokenizer),))


class KolorsVAELoader(_Loader):
    """Load the SDXL VAE (diffusers folder or file, or a single file with original LDM key names)."""

    subfolders = ("vae", "diffusers")
    inputs = [String("path", default="models/sdxl-vae-fp16-fix", description="VAE folder or file",
                     checks=(weights_check({"VAE": ("vae", "sdxl-vae-fp16-fix")}, subfolders),)),
              _precision("dtype; an fp16 decode that overflows is redone in fp32"), _device()]
    outputs = [Output("VAE", "vae")]

    def run(self, path: str, precision: str, device: str) -> Any:
        from .handles import load_shared
        from .loading import load_vae

        source, dtype, torch_device = self._resolve(path, precision, device)
        store = self._store()
        return load_shared(self.ctx, "vae", source, dtype, torch_device,
                           lambda: load_vae(source, dtype, _placed(store, torch_device, source, "vae")))


class KolorsModelLoader(_Loader):
    """Load UNet, text encoder and VAE from one Kolors folder (tutorial or diffusers layout)."""

    subfolders = ("diffusers",)
    inputs = [String("path", default="models/kolors/Kolors", description="the Kolors root folder",
                     checks=(weights_check({"UNet": ("unet",), "ChatGLM3 text encoder": ("text_encoder",),
                                            "VAE": ("vae",)}, subfolders),)),
              _precision(), _device(), *_speedups()]
    outputs = [Output("KOLORS_UNET", "model"), Output("CHATGLM3MODEL", "chatglm3_model"), Output("VAE", "vae")]

    def run(self, path: str, precision: str, device: str, compile: bool = False, channels_last: bool = False) -> Any:
        from graphgen.models.speedups import speedup_key

        from .handles import UNetRef, load_shared, tokenizer_identity
        from .loading import load_text_encoder, load_vae

        source, dtype, torch_device = self._resolve(path, precision, device)
        ctx, store = self.ctx, self._store()
        unet = load_shared(ctx, "unet", source, dtype, torch_device,
                           _unet_loader(source, dtype, torch_device, store, compile, channels_last),
                           extra_key=speedup_key(compile=compile, channels_last=channels_last))
        text = load_shared(ctx, "text_encoder", source, dtype, torch_device,
                           lambda: load_text_encoder(source, dtype, _placed(store, torch_device, source, "text_encoder")),
                           extra_key=(tokenizer_identity(source),))
        vae = load_shared(ctx, "vae", source, dtype, torch_device,
                          lambda: load_vae(source, dtype, _placed(store, torch_device, source, "vae")))
        return UNetRef(unet), text, vae


NODES = [KolorsModelLoader, KolorsUNetLoader, KolorsTextEncoderLoader, KolorsVAELoader]
