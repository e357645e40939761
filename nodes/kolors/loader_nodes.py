"""Loader nodes: the Kolors UNet, the ChatGLM3 text encoder and the VAE, from any layout a user holds.

Paths may be a Kolors root folder (tutorial or diffusers layout), a component folder or a single
file; relative paths are also looked up under `--models-dir`. Loaded models are shared by every
node and run of an Engine (see `handles.load_shared`).
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from graphgen import Choice, Node, Output, String
from graphgen.context import EngineSettings

PRECISIONS = ["auto", "fp32", "fp16", "bf16"]
DEVICES = ["auto", "cpu", "cuda", "mps"]


def _precision(description: str = "") -> Any:
    return Choice("precision", PRECISIONS, default="auto",
                  description=description or "weights dtype; auto: fp16 on a GPU, fp32 on the CPU")


def _device() -> Any:
    return Choice("device", DEVICES, default="auto", description="where the model computes; auto: cuda > mps > cpu")


class _Loader(Node):
    category = "kolors/loaders"
    subfolders: tuple[str, ...] = ()

    @classmethod
    def fingerprint(cls, path: str, settings: EngineSettings | None = None, **_: Any) -> Hashable:
        from .handles import file_identity, resolve_model_path

        return file_identity(resolve_model_path(settings, path, *cls.subfolders))

    def _resolve(self, path: str, precision: str, device: str) -> tuple[Any, Any, Any]:
        from .devices import resolve_device, resolve_dtype
        from .handles import resolve_model_path

        torch_device = resolve_device(device)
        return resolve_model_path(self.ctx.settings, path, *self.subfolders), resolve_dtype(precision, torch_device), \
            torch_device


class KolorsUNetLoader(_Loader):
    """Load the Kolors UNet (diffusers UNet2DConditionModel with Kolors' text_proj/text_time settings)."""

    subfolders = ("unet", "diffusers")
    inputs = [String("path", default="models/kolors/Kolors", description="Kolors folder, unet folder or file"),
              _precision(), _device()]
    outputs = [Output("KOLORS_UNET", "model")]

    def run(self, path: str, precision: str, device: str) -> Any:
        from .handles import UNetRef, load_shared
        from .loading import load_unet

        source, dtype, torch_device = self._resolve(path, precision, device)
        handle = load_shared(self.ctx, "unet", source, dtype, torch_device,
                             lambda: load_unet(source, dtype, torch_device))
        return UNetRef(handle)


class KolorsTextEncoderLoader(_Loader):
    """Load the ChatGLM3 text encoder and its tokenizer (sharded .bin, safetensors or a single file)."""

    subfolders = ("LLM", "diffusers")
    inputs = [String("path", default="models/kolors/Kolors", description="Kolors folder, text_encoder folder or file"),
              _precision(), _device(),
              Choice("offload", ["auto", "on", "off"], default="auto",
                     description="move the encoder off the GPU once prompts are encoded (auto: on for CUDA)"),
              String("tokenizer_path", default="", description="tokenizer folder, for a single-file encoder")]
    outputs = [Output("CHATGLM3MODEL", "chatglm3_model")]

    def run(self, path: str, precision: str, device: str, offload: str, tokenizer_path: str) -> Any:
        from .handles import load_shared, resolve_model_path
        from .loading import load_text_encoder

        source, dtype, torch_device = self._resolve(path, precision, device)
        tokenizer = resolve_model_path(self.ctx.settings, tokenizer_path, "diffusers") if tokenizer_path else None
        # Loaded on the CPU; moved to the compute device only while encoding.
        do_offload = offload == "on" or (offload == "auto" and torch_device.type == "cuda")
        handle = load_shared(self.ctx, "text_encoder", source, dtype, torch_device,
                             lambda: load_text_encoder(source, dtype, "cpu" if do_offload else torch_device,
                                                       tokenizer_path=tokenizer),
                             offload=do_offload, extra_key=(str(tokenizer),))
        return handle


class KolorsVAELoader(_Loader):
    """Load the SDXL VAE (diffusers folder or file, or a single file with original LDM key names)."""

    subfolders = ("vae", "diffusers")
    inputs = [String("path", default="models/sdxl-vae-fp16-fix", description="VAE folder or file"),
              _precision("dtype; an fp16 decode that overflows is redone in fp32"), _device()]
    outputs = [Output("VAE", "vae")]

    def run(self, path: str, precision: str, device: str) -> Any:
        from .handles import load_shared
        from .loading import load_vae

        source, dtype, torch_device = self._resolve(path, precision, device)
        return load_shared(self.ctx, "vae", source, dtype, torch_device, lambda: load_vae(source, dtype, torch_device))


class KolorsModelLoader(_Loader):
    """Load UNet, text encoder and VAE from one Kolors folder (tutorial or diffusers layout)."""

    subfolders = ("diffusers",)
    inputs = [String("path", default="models/kolors/Kolors", description="the Kolors root folder"),
              _precision(), _device()]
    outputs = [Output("KOLORS_UNET", "model"), Output("CHATGLM3MODEL", "chatglm3_model"), Output("VAE", "vae")]

    def run(self, path: str, precision: str, device: str) -> Any:
        from .handles import UNetRef, load_shared
        from .loading import load_text_encoder, load_unet, load_vae

        source, dtype, torch_device = self._resolve(path, precision, device)
        offload = torch_device.type == "cuda"
        unet = load_shared(self.ctx, "unet", source, dtype, torch_device, lambda: load_unet(source, dtype, torch_device))
        text = load_shared(self.ctx, "text_encoder", source, dtype, torch_device,
                           lambda: load_text_encoder(source, dtype, "cpu" if offload else torch_device),
                           offload=offload, extra_key=("None",))
        vae = load_shared(self.ctx, "vae", source, dtype, torch_device, lambda: load_vae(source, dtype, torch_device))
        return UNetRef(unet), text, vae


NODES = [KolorsModelLoader, KolorsUNetLoader, KolorsTextEncoderLoader, KolorsVAELoader]
