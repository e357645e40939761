"""kijai's ComfyUI-KwaiKolorsWrapper nodes and the tutorial's `LoadKolorsLoRA`, over the native Kolors nodes.

Names, inputs, widget order and output types are those of the wrapper, so its workflows run
unchanged; the work is done by the native loaders, sampler and LoRA code (same model cache, same
numbers). Differences, all deliberate:

- "Download" loaders download nothing: `Kwai-Kolors/Kolors` is `<models>/diffusers/Kolors`
  (`--models-dir`), and a missing model is one clear error.
- On the CPU, `fp16`/`bf16` run in fp32 (as ComfyUI does on the CPU), with a warning.
- `quant8`/`quant4` quantise ChatGLM3's Linear weights with optimum-quanto (optional), or fail
  with a clear message when it is missing; they never fall back to another precision.
- `KolorsSampler` without a latent is text-to-image; with one, the latent's size wins over the
  width/height widgets (a warning says so when they differ).
"""

from __future__ import annotations

from collections.abc import Hashable
from pathlib import Path
from typing import Any

from graphgen import Choice, Float, Input, Int, Node, Output, String
from graphgen.checks import CheckContext, Problem
from graphgen.context import EngineSettings

from .models import MissingModelError, find_model, kolors_folder, model_check
from .quant import QUANT_BITS

KOLORS_REPO = "Kwai-Kolors/Kolors"
#: kijai's scheduler names (aliases of the native ones, same meaning as in the wrapper).
KIJAI_SCHEDULERS = ["EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler", "DPMSolverMultistepScheduler",
                    "DPMSolverMultistepScheduler_SDE_karras", "UniPCMultistepScheduler", "DEISMultistepScheduler"]
MAX_SEED = 0xFFFFFFFFFFFFFFFF
TUTORIAL_LORA_PATH = "/mnt/workspace/models/lightning_logs/version_0/checkpoints/epoch=0-step=500.ckpt"
CATEGORY = "KwaiKolorsWrapper"


def _identity(path: Path | None, name: str) -> Hashable:
    from graphgen.files import file_identity

    return file_identity(path) if path is not None else ("missing", name)


def _quietly(find: Any) -> Path | None:
    try:
        return find()
    except FileNotFoundError:  # MissingModelError, or refused in a confined run: the node reports it
        return None


def compute_precision(node: Node, precision: str) -> str:
    """The native precision name to load with: as asked on an accelerator, fp32 on the CPU (with a warning)."""
    from graphgen.models.devices import resolve_device

    if precision in ("fp16", "bf16") and resolve_device("auto").type == "cpu":
        node.ctx.warn(f"precision {precision} is for GPUs: on the CPU the model runs in fp32, as in ComfyUI")
        return "fp32"
    return precision


def _native(node: Node, cls: type[Node]) -> Any:
    native = cls()
    native.ctx = node.ctx
    return native


class DownloadAndLoadKolorsModel(Node):
    """Load the Kolors UNet from `<models>/diffusers/Kolors` (kijai's loader; nothing is downloaded)."""

    category = CATEGORY
    inputs = [String("model", default=KOLORS_REPO,
                     description="Kolors repository name; read from <models>/diffusers/<name>",
                     checks=(model_check("diffusers", "Kolors model"),)),
              Choice("precision", ["fp16", "bf16", "fp32"], default="fp16")]
    outputs = [Output("KOLORSMODEL", "kolors_model")]

    @classmethod
    def fingerprint(cls, model: str, settings: EngineSettings | None = None, **_: Any) -> Hashable:
        return _identity(_quietly(lambda: kolors_folder(settings, model)), model)

    def run(self, model: str, precision: str) -> Any:
        from graphgen_nodes.kolors.loader_nodes import KolorsUNetLoader

        folder = kolors_folder(self.ctx.settings, model)
        return _native(self, KolorsUNetLoader).run(path=str(folder), precision=compute_precision(self, precision),
                                                    device="auto")


def load_chatglm(node: Node, source: Path, precision: str) -> Any:
    """A shared ChatGLM3 handle from a folder or file, in a float precision or quantised (`quant8`/`quant4`)."""
    from graphgen_nodes.kolors.loader_nodes import KolorsTextEncoderLoader

    if precision not in QUANT_BITS:
        return _native(node, KolorsTextEncoderLoader).run(path=str(source), precision=compute_precision(node, precision),
                                                          device="auto", offload="auto", tokenizer_path="")

    from graphgen.models.devices import resolve_device, resolve_dtype
    from graphgen_nodes.kolors.handles import load_shared, tokenizer_identity
    from graphgen_nodes.kolors.loading import load_text_encoder

    from .quant import quantize_text_encoder, require_quantization

    require_quantization(precision)  # before loading anything
    device = resolve_device("auto")
    dtype = resolve_dtype("auto", device)  # activations: fp16 on a GPU, fp32 on the CPU

    def loader() -> Any:  # quantised on the host; moves to the GPU when first used, and stays while it fits
        model, tokenizer = load_text_encoder(source, dtype, "cpu")
        quantize_text_encoder(model, precision)
        return model, tokenizer

    return load_shared(node.ctx, "text_encoder", source, dtype, device, loader, offload="auto",
                       extra_key=(tokenizer_identity(source), precision))


def _text_encoder_folder(settings: EngineSettings | None) -> Path:
    folder = kolors_folder(settings, KOLORS_REPO, "ChatGLM3 text encoder: the Kolors folder")
    if not (folder / "text_encoder").is_dir():
        raise MissingModelError(
            f"ChatGLM3 text encoder not found: expected {folder / 'text_encoder'} (config.json with .bin shards or "
            "safetensors, and tokenizer.model); DownloadAndLoadChatGLM3 reads it there, as kijai's node does. "
            "Put the Kolors text_encoder folder there, or use LoadChatGLM3 with a single-file ChatGLM3 in <models>/LLM. "
            "Nothing is downloaded.")
    return folder


def _text_encoder_check(_precision: str, ctx: CheckContext) -> Problem | None:
    """Validation: the folder DownloadAndLoadChatGLM3 reads (it has no path input) is there."""
    try:
        _text_encoder_folder(ctx.settings)
    except MissingModelError as exc:
        message, _, rest = str(exc).partition("; ")
        return Problem(message, rest)
    return None


class DownloadAndLoadChatGLM3(Node):
    """Load ChatGLM3 from `<models>/diffusers/Kolors/text_encoder`, in fp16 or with 8-/4-bit weights (optimum-quanto)."""

    category = CATEGORY
    inputs = [Choice("precision", ["fp16", "quant8", "quant4"], default="fp16",
                     description="quant8/quant4 need optimum-quanto (optional); never replaced by another precision",
                     checks=(_text_encoder_check,))]
    outputs = [Output("CHATGLM3MODEL", "chatglm3_model")]

    @classmethod
    def fingerprint(cls, precision: str, settings: EngineSettings | None = None, **_: Any) -> Hashable:
        folder = _quietly(lambda: kolors_folder(settings, KOLORS_REPO))
        return _identity(folder / "text_encoder" if folder else None, KOLORS_REPO)

    def run(self, precision: str) -> Any:
        return load_chatglm(self, _text_encoder_folder(self.ctx.settings), precision)


def _refuse_prequantized(path: Path) -> None:
    if path.suffix != ".safetensors":
        return
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            quantized = any(key.endswith(".weight_scale") for key in handle.keys())
    except Exception:
        return  # unreadable files get the loader's own error
    if quantized:
        raise ValueError(
            f"{path.name} holds ChatGLM3 weights pre-quantised in ChatGLM's own int8/int4 format, which graphgen "
            "does not read; use the fp16 file (chatglm3-fp16.safetensors) here, or DownloadAndLoadChatGLM3 with "
            "precision quant8/quant4 to quantise on load")


class LoadChatGLM3(Node):
    """Load a single-file ChatGLM3 checkpoint from `<models>/LLM` (tokenizer from the Kolors folder)."""

    category = CATEGORY
    inputs = [String("chatglm3_checkpoint", default="chatglm3-fp16.safetensors",
                     description="a file in <models>/LLM", checks=(model_check("LLM", "ChatGLM3 checkpoint"),))]
    outputs = [Output("CHATGLM3MODEL", "chatglm3_model")]

    @classmethod
    def fingerprint(cls, chatglm3_checkpoint: str, settings: EngineSettings | None = None, **_: Any) -> Hashable:
        from graphgen_nodes.kolors.handles import tokenizer_identity

        path = _quietly(lambda: find_model(settings, "LLM", chatglm3_checkpoint, "ChatGLM3 checkpoint"))
        return _identity(path, chatglm3_checkpoint), tokenizer_identity(path) if path is not None else None

    def run(self, chatglm3_checkpoint: str) -> Any:
        path = find_model(self.ctx.settings, "LLM", chatglm3_checkpoint, "ChatGLM3 checkpoint")
        _refuse_prequantized(path)
        return load_chatglm(self, path, "fp16")


class KolorsSampler(Node):
    """Sample Kolors latents (kijai's sampler): text-to-image, or image-to-image from `latent` with `denoise_strength`.

    LATENT values are unscaled (divided by 0.13025), as ComfyUI's VAE nodes expect.
    """

    category = CATEGORY
    inputs = [Input("kolors_model", "KOLORSMODEL", force_link=True),
              Input("kolors_embeds", "KOLORS_EMBEDS", force_link=True),
              Int("width", default=1024, min=64, max=2048, step=64),
              Int("height", default=1024, min=64, max=2048, step=64),
              Int("seed", default=0, min=0, max=MAX_SEED),
              Int("steps", default=25, min=1, max=200),
              Float("cfg", default=5.0, min=0.0, max=20.0, step=0.01),
              Choice("scheduler", KIJAI_SCHEDULERS, default="EulerDiscreteScheduler"),
              Float("denoise_strength", default=1.0, min=0.0, max=1.0, step=0.01, optional=True),
              Input("latent", "LATENT", force_link=True, optional=True)]
    outputs = [Output("LATENT", "latent")]

    def run(self, kolors_model: Any, kolors_embeds: Any, width: int, height: int, seed: int, steps: int, cfg: float,
            scheduler: str, denoise_strength: float = 1.0, latent: dict[str, Any] | None = None) -> Any:
        import torch

        from graphgen_nodes.kolors.sampling_nodes import KolorsKSampler

        if latent is None:
            if width % 8 or height % 8:
                raise ValueError(f"width and height must be multiples of 8, got {width}x{height}")
            if denoise_strength < 1.0:
                self.ctx.warn(f"denoise_strength {denoise_strength:g} applies only with a latent input: "
                              "without one this is plain text-to-image")
            latent = {"samples": torch.zeros(1, 4, height // 8, width // 8), "noise_only": True}
            denoise_strength = 1.0
        else:
            h, w = int(latent["samples"].shape[-2]) * 8, int(latent["samples"].shape[-1]) * 8
            if (w, h) != (width, height):
                self.ctx.warn(f"the input latent is {w}x{h}: that size is used, not the width/height "
                              f"widgets ({width}x{height})")
        return _native(self, KolorsKSampler).run(kolors_model, kolors_embeds, latent, seed, steps, cfg, scheduler,
                                                 denoise_strength)


class LoadKolorsLoRA(Node):
    """Apply a LoRA (the tutorial's node): DiffSynth `.ckpt` or any supported format, at scale `lora_alpha / rank`.

    For the tutorial's rank-16 file the default `lora_alpha` 2.0 gives 0.125; 4.0 gives the trained scale 0.25.
    """

    category = CATEGORY
    inputs = [Input("kolors_model", "KOLORSMODEL", force_link=True),
              String("lora_path", default=TUTORIAL_LORA_PATH,
                     description="LoRA file: a path, or a name in <models>/loras",
                     checks=(model_check("loras", "LoRA file", allow_relative=True),)),
              Float("lora_alpha", default=2.0, min=0.0, max=4.0, step=0.01,
                    description="every module is applied at lora_alpha / rank")]
    outputs = [Output("KOLORSMODEL", "kolors_model")]

    @classmethod
    def fingerprint(cls, lora_path: str, settings: EngineSettings | None = None, **_: Any) -> Hashable:
        path = _quietly(lambda: find_model(settings, "loras", lora_path, "LoRA", allow_relative=True))
        return _identity(path, lora_path)

    def run(self, kolors_model: Any, lora_path: str, lora_alpha: float) -> Any:
        from graphgen_nodes.lora.lora_file import read_lora
        from graphgen_nodes.lora.lora_nodes import KolorsApplyLoRA

        path = find_model(self.ctx.settings, "loras", lora_path, "LoRA file", allow_relative=True,
                          extra=f"set it with --set {self.ctx.node_id}.lora_path=FILE")
        lora = read_lora(path).with_alpha(lora_alpha)
        return _native(self, KolorsApplyLoRA).run(kolors_model, lora, 1.0)


NODES = [DownloadAndLoadKolorsModel, DownloadAndLoadChatGLM3, LoadChatGLM3, KolorsSampler, LoadKolorsLoRA]
