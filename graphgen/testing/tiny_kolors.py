"""Tiny random-weight Kolors models for tests, demos and CI.

The tiny models keep the real Kolors topology (SDXL-shaped UNet with ``text_proj`` and
``text_time`` embeddings, a 4-level VAE so latents are pixels / 8, a multi-query ChatGLM text
encoder with a SentencePiece tokenizer) at a size that builds in well under a second on a CPU.

:func:`build_tiny_components` builds them in memory, deterministically from a seed.
:func:`write_tiny_models` writes the same weights in the three file layouts a Kolors user may hold
(tutorial/DiffSynth, diffusers, ComfyUI), see ``kolors.md``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
from diffusers.pipelines.kolors import ChatGLMModel, ChatGLMTokenizer
from diffusers.pipelines.kolors.text_encoder import ChatGLMConfig

from graphgen_nodes.kolors.configs import (
    KOLORS_CHATGLM_CONFIG,
    KOLORS_SCHEDULER_CONFIG,
    KOLORS_UNET_CONFIG,
    SDXL_VAE_CONFIG,
)

__all__ = [
    "KOLORS_CHATGLM_CONFIG",
    "KOLORS_SCHEDULER_CONFIG",
    "KOLORS_UNET_CONFIG",
    "SDXL_VAE_CONFIG",
    "TINY_CHATGLM_CONFIG",
    "TINY_UNET_CONFIG",
    "TINY_VAE_CONFIG",
    "TINY_SP_VOCAB_SIZE",
    "TinyKolors",
    "LAYOUTS",
    "TinyModelPaths",
    "build_tiny_components",
    "tiny_tokenizer_model",
    "vae_diffusers_to_ldm",
    "write_tiny_models",
]

# --------------------------------------------------------------------------- tiny configs

TINY_TEXT_HIDDEN = 32
TINY_TIME_EMBED_DIM = 8
#: Pieces in the tiny SentencePiece model (byte fallback needs more than 256).
TINY_SP_VOCAB_SIZE = 512

#: Tiny ChatGLM: 2 layers, hidden 32, 4 heads of 8 channels, multi-query with 2 groups.
TINY_CHATGLM_CONFIG: dict[str, Any] = {
    **KOLORS_CHATGLM_CONFIG,
    "ffn_hidden_size": 64,
    "hidden_size": TINY_TEXT_HIDDEN,
    "kv_channels": 8,
    "multi_query_group_num": 2,
    "num_attention_heads": 4,
    "num_layers": 2,
    "padded_vocab_size": 640,  # >= 512 pieces + 9 ChatGLM special tokens
    "seq_length": 2048,
}

#: Tiny UNet with the Kolors block types and conditioning (``stack.md``, gotcha 6).
TINY_UNET_CONFIG: dict[str, Any] = {
    **KOLORS_UNET_CONFIG,
    "addition_time_embed_dim": TINY_TIME_EMBED_DIM,
    "attention_head_dim": [2, 4, 8],
    "block_out_channels": [32, 64, 64],
    "cross_attention_dim": 16,
    "encoder_hid_dim": TINY_TEXT_HIDDEN,
    "norm_num_groups": 8,
    "projection_class_embeddings_input_dim": 6 * TINY_TIME_EMBED_DIM + TINY_TEXT_HIDDEN,
    "transformer_layers_per_block": [1, 2, 2],
}

#: Tiny 4-level VAE (latents = pixels / 8), SDXL conventions (32 norm groups, 0.13025).
TINY_VAE_CONFIG: dict[str, Any] = {
    **SDXL_VAE_CONFIG,
    "block_out_channels": [32, 32, 64, 64],
    "layers_per_block": 1,
}

_TOKENIZER_TEXT = [
    "a photo of a cat sitting on a wooden table",
    "a beautiful landscape with mountains and a lake at sunset",
    "portrait of a young woman, oil painting, highly detailed",
    "a red car driving on a rainy street at night, neon lights",
    "an astronaut riding a horse on the moon, digital art",
    "a bowl of fruit: apples, oranges, bananas and grapes",
    "ugly, deformed, noisy, blurry, low contrast, watermark, text",
    "一只可爱的小猫坐在木桌上",
    "夕阳下美丽的山水风景，湖面倒影",
    "一位年轻女子的肖像，油画风格，细节丰富",
    "雨夜中行驶在街道上的红色汽车，霓虹灯",
    "丑陋、变形、嘈杂、模糊、低对比度",
    "中国古代建筑，宫殿，红墙金瓦，蓝天白云",
    "穿着汉服的女孩在花园里，春天，桃花盛开",
]


@dataclass
class TinyKolors:
    """The five tiny Kolors components, built in memory.

    Attributes:
        unet: Kolors-shaped ``UNet2DConditionModel`` (fp32, eval mode).
        text_encoder: diffusers' Kolors ``ChatGLMModel`` (fp32, eval mode).
        tokenizer: ``ChatGLMTokenizer`` over a locally trained SentencePiece model.
        vae: 4-level ``AutoencoderKL`` (fp32, eval mode).
        scheduler: ``EulerDiscreteScheduler`` with Kolors' config.
        tokenizer_model: The SentencePiece model file the tokenizer reads.
        seed: The seed the weights were drawn from.
    """

    unet: UNet2DConditionModel
    text_encoder: ChatGLMModel
    tokenizer: ChatGLMTokenizer
    vae: AutoencoderKL
    scheduler: EulerDiscreteScheduler
    tokenizer_model: Path
    seed: int


def _train_sentencepiece(seed: int) -> bytes:
    """Trains the tiny BPE SentencePiece model, deterministically from ``seed``."""
    import sentencepiece as spm

    rng = random.Random(seed)
    lines = list(_TOKENIZER_TEXT)
    rng.shuffle(lines)
    spm.set_random_generator_seed(seed)
    out = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines * 4),
        model_writer=out,
        model_type="bpe",
        vocab_size=TINY_SP_VOCAB_SIZE,
        byte_fallback=True,
        character_coverage=1.0,
        num_threads=1,
        shuffle_input_sentence=False,
        minloglevel=2,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
    )
    return out.getvalue()


def tiny_tokenizer_model(seed: int = 0) -> Path:
    """Returns the path of the tiny SentencePiece model for ``seed``, training it if needed.

    The file is content-addressed in the temporary directory, so concurrent processes share it.

    Args:
        seed: Seed for the training text order and SentencePiece's generator.

    Returns:
        Path of a ``tokenizer.model`` file.
    """
    data = _train_sentencepiece(seed)
    digest = hashlib.sha256(data).hexdigest()[:16]
    path = Path(tempfile.gettempdir()) / f"graphgen-tiny-spm-{digest}.model"
    if not path.is_file() or path.read_bytes() != data:
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    return path


def _init_from_generator(module: torch.nn.Module, gen: torch.Generator) -> None:
    """Draws every parameter of ``module`` from ``gen`` (in name order)."""
    with torch.no_grad():
        for name, param in sorted(module.named_parameters(), key=lambda kv: kv[0]):
            noise = torch.randn(param.shape, generator=gen, dtype=torch.float32)
            if name.endswith("layernorm.weight"):
                value = 1.0 + 0.1 * noise
            elif name.endswith(".bias"):
                value = 0.02 * noise
            elif param.ndim >= 2 and "word_embeddings" not in name:
                value = noise / float(param.shape[1]) ** 0.5
            else:
                value = noise
            param.copy_(value.to(param.dtype))


def _build_text_encoder(seed: int) -> ChatGLMModel:
    config = ChatGLMConfig(**TINY_CHATGLM_CONFIG)
    model = ChatGLMModel(config, empty_init=False).to(torch.float32)
    gen = torch.Generator().manual_seed(seed)
    _init_from_generator(model, gen)
    return model.eval()


def build_tiny_components(seed: int = 0) -> TinyKolors:
    """Builds the tiny Kolors components in memory.

    Two calls with the same seed give bit-identical weights; the global torch RNG state is
    left untouched.

    Args:
        seed: Seed for all weights and the tokenizer training.

    Returns:
        The components, fp32 on CPU, in eval mode.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**TINY_UNET_CONFIG).eval()
        torch.manual_seed(seed + 1)
        vae = AutoencoderKL(**TINY_VAE_CONFIG).eval()
        text_encoder = _build_text_encoder(seed + 2)
    spm_path = tiny_tokenizer_model(seed)
    tokenizer = ChatGLMTokenizer(vocab_file=str(spm_path))
    scheduler = EulerDiscreteScheduler.from_config(KOLORS_SCHEDULER_CONFIG)
    return TinyKolors(
        unet=unet,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        vae=vae,
        scheduler=scheduler,
        tokenizer_model=spm_path,
        seed=seed,
    )


# --------------------------------------------------------------------------- writing layouts


@dataclass
class TinyModelPaths:
    """Where :func:`write_tiny_models` put the tiny models.

    Attributes:
        root: The folder passed to :func:`write_tiny_models`.
        tutorial_models: Tutorial/DiffSynth ``models`` folder.
        tutorial_kolors: ``models/kolors/Kolors`` (unet, text_encoder with ``.bin`` shards, vae, scheduler).
        tutorial_fp16_vae: ``models/sdxl-vae-fp16-fix`` (diffusers keys).
        diffusers_root: ``Kolors-diffusers`` folder (fp32 plain files and fp16 variant files).
        comfyui_models: ComfyUI ``models`` folder.
        comfyui_kolors: ``models/diffusers/Kolors`` (diffusers layout, fp32 only).
        comfyui_vae_file: ``models/vae/sdxl.vae.safetensors`` (single file, LDM key names, fp32).
        comfyui_llm_file: ``models/LLM/chatglm3-fp16.safetensors`` (single file ChatGLM, fp16).
        comfyui_unet_file: ``models/unet/kolors_unet.safetensors`` (bare UNet, diffusers keys, fp16).
        comfyui_loras: ``models/loras`` (empty).
        seed: Seed of the weights.
    """

    root: Path
    tutorial_models: Path
    tutorial_kolors: Path
    tutorial_fp16_vae: Path
    diffusers_root: Path
    comfyui_models: Path
    comfyui_kolors: Path
    comfyui_vae_file: Path
    comfyui_llm_file: Path
    comfyui_unet_file: Path
    comfyui_loras: Path
    seed: int


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False, sort_keys=True) + "\n", encoding="utf-8")


def _state_dict(module: torch.nn.Module, dtype: torch.dtype, prefix: str = "") -> dict[str, torch.Tensor]:
    return {prefix + k: v.detach().to(dtype).contiguous().clone() for k, v in module.state_dict().items()}


def _save_safetensors(
    path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None
) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={"format": "pt", **(metadata or {})})


def _split(keys: list[str], parts: int) -> list[list[str]]:
    size = -(-len(keys) // parts)
    return [keys[i : i + size] for i in range(0, len(keys), size)]


def _save_sharded(
    folder: Path,
    tensors: dict[str, torch.Tensor],
    parts: int,
    *,
    stem: str,
    ext: str,
    variant: str | None = None,
) -> None:
    """Writes ``tensors`` in ``parts`` shards plus an index, with Hugging Face file naming."""
    folder.mkdir(parents=True, exist_ok=True)
    chunks = _split(sorted(tensors), parts)
    infix = f".{variant}" if variant else ""
    weight_map: dict[str, str] = {}
    for n, chunk in enumerate(chunks, start=1):
        name = f"{stem}{infix}-{n:05d}-of-{len(chunks):05d}.{ext}"
        shard = {k: tensors[k] for k in chunk}
        if ext == "bin":
            torch.save(shard, folder / name)
        else:
            _save_safetensors(folder / name, shard)
        weight_map.update(dict.fromkeys(chunk, name))
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    index_name = f"{stem}.{ext}.index{infix}.json"
    _write_json(folder / index_name, {"metadata": {"total_size": total}, "weight_map": weight_map})


def _chatglm_config_json() -> dict[str, Any]:
    return {
        **TINY_CHATGLM_CONFIG,
        "_name_or_path": "THUDM/chatglm3-6b-base",
        "auto_map": {
            "AutoConfig": "configuration_chatglm.ChatGLMConfig",
            "AutoModel": "modeling_chatglm.ChatGLMForConditionalGeneration",
        },
        "torch_dtype": "float16",
    }


def _write_tokenizer(folder: Path, spm_bytes: bytes) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tokenizer.model").write_bytes(spm_bytes)
    (folder / "vocab.txt").write_bytes(spm_bytes)  # Kolors ships the SentencePiece model twice
    _write_json(
        folder / "tokenizer_config.json",
        {
            "auto_map": {"AutoTokenizer": ["tokenization_chatglm.ChatGLMTokenizer", None]},
            "clean_up_tokenization_spaces": False,
            "do_lower_case": False,
            "padding_side": "left",
            "remove_space": False,
            "tokenizer_class": "ChatGLMTokenizer",
        },
    )


def _write_diffusers_model(folder: Path, model: torch.nn.Module, *, fp16_variant: bool) -> None:
    model.save_config(folder)  # type: ignore[attr-defined]
    _save_safetensors(folder / "diffusion_pytorch_model.safetensors", _state_dict(model, torch.float32))
    if fp16_variant:
        _save_safetensors(
            folder / "diffusion_pytorch_model.fp16.safetensors", _state_dict(model, torch.float16)
        )


def _write_diffusers_layout(root: Path, tiny: TinyKolors, spm_bytes: bytes, *, fp16_variant: bool) -> None:
    _write_json(
        root / "model_index.json",
        {
            "_class_name": "KolorsPipeline",
            "_diffusers_version": "0.30.0.dev0",
            "force_zeros_for_empty_prompt": False,
            "scheduler": ["diffusers", "EulerDiscreteScheduler"],
            "text_encoder": ["kolors", "ChatGLMModel"],
            "tokenizer": ["kolors", "ChatGLMTokenizer"],
            "unet": ["diffusers", "UNet2DConditionModel"],
            "vae": ["diffusers", "AutoencoderKL"],
        },
    )
    tiny.scheduler.save_config(root / "scheduler")
    te = root / "text_encoder"
    _write_json(te / "config.json", _chatglm_config_json())
    _save_safetensors(te / "model.safetensors", _state_dict(tiny.text_encoder, torch.float32))
    if fp16_variant:
        _save_sharded(
            te,
            _state_dict(tiny.text_encoder, torch.float16),
            2,
            stem="model",
            ext="safetensors",
            variant="fp16",
        )
    _write_tokenizer(root / "tokenizer", spm_bytes)
    _write_diffusers_model(root / "unet", tiny.unet, fp16_variant=fp16_variant)
    _write_diffusers_model(root / "vae", tiny.vae, fp16_variant=fp16_variant)


def vae_diffusers_to_ldm(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Renames a diffusers ``AutoencoderKL`` state dict to original LDM key names.

    ``encoder.down_blocks.0.resnets.0.conv1.weight`` becomes ``encoder.down.0.block.0.conv1.weight``,
    decoder up blocks are numbered in reverse, and mid-block attention projections become 1×1
    convolutions, as in SDXL's ``sdxl_vae.safetensors``.

    Args:
        state_dict: diffusers-named VAE weights.

    Returns:
        LDM-named weights (the same tensors, attention weights reshaped).
    """
    n_up = 1 + max(int(k.split(".")[2]) for k in state_dict if k.startswith("decoder.up_blocks."))
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        parts = key.split(".")
        new = key
        if parts[1] == "down_blocks":
            rest = ".".join(parts[3:]).replace("resnets.", "block.").replace("downsamplers.0.", "downsample.")
            new = f"{parts[0]}.down.{parts[2]}.{rest}"
        elif parts[1] == "up_blocks":
            rest = ".".join(parts[3:]).replace("resnets.", "block.").replace("upsamplers.0.", "upsample.")
            new = f"{parts[0]}.up.{n_up - 1 - int(parts[2])}.{rest}"
        elif parts[1] == "mid_block" and parts[2] == "resnets":
            new = f"{parts[0]}.mid.block_{int(parts[3]) + 1}.{'.'.join(parts[4:])}"
        elif parts[1] == "mid_block" and parts[2] == "attentions":
            names = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out": "proj_out"}
            leaf = parts[4:6] if parts[4] != "to_out" else [parts[4], parts[6]]
            new = f"{parts[0]}.mid.attn_1.{names[leaf[0]]}.{leaf[1]}"
            if leaf[1] == "weight" and leaf[0] != "group_norm":
                value = value[:, :, None, None]
        elif parts[1] == "conv_norm_out":
            new = f"{parts[0]}.norm_out.{parts[2]}"
        out[new.replace("conv_shortcut", "nin_shortcut")] = value
    return out


#: The file layouts :func:`write_tiny_models` can write.
LAYOUTS = ("tutorial", "diffusers", "comfyui")


def write_tiny_models(
    root: Path,
    seed: int = 0,
    *,
    components: TinyKolors | None = None,
    layouts: tuple[str, ...] = LAYOUTS,
) -> TinyModelPaths:
    """Writes the tiny Kolors weights in the tutorial, diffusers and ComfyUI file layouts.

    All layouts hold the weights of ``build_tiny_components(seed)``: fp32 copies are bit-exact,
    fp16 copies (diffusers ``fp16`` variant, the ComfyUI ChatGLM and UNet files) are rounded.

    Args:
        root: Folder to write into (created if needed).
        seed: Seed passed to :func:`build_tiny_components`.
        components: Components to write instead of ``build_tiny_components(seed)`` (``graphgen
            demo`` writes a fitted VAE and UNet). ComfyUI's single VAE file has no config, so its
            loaders assume SDXL's; a VAE with another config is refused in the ``comfyui`` layout.
        layouts: Which of :data:`LAYOUTS` to write; the paths of the others are not created.

    Returns:
        The important paths.
    """
    root = Path(root)
    if unknown := set(layouts) - set(LAYOUTS):
        raise ValueError(f"unknown layouts {sorted(unknown)}; choose from {LAYOUTS}")
    tiny = components or build_tiny_components(seed)
    if "comfyui" in layouts and tiny.vae.config.norm_num_groups != SDXL_VAE_CONFIG["norm_num_groups"]:
        raise ValueError("ComfyUI's single VAE file implies SDXL's 32 norm groups; write this VAE "
                         "in the tutorial or diffusers layout only")
    spm_bytes = tiny.tokenizer_model.read_bytes()
    models = root / "tutorial" / "models"
    kolors = models / "kolors" / "Kolors"
    fp16_fix = models / "sdxl-vae-fp16-fix"
    diffusers_root = root / "diffusers" / "Kolors-diffusers"
    comfy = root / "comfyui" / "models"
    vae_file = comfy / "vae" / "sdxl.vae.safetensors"
    llm_file = comfy / "LLM" / "chatglm3-fp16.safetensors"
    unet_file = comfy / "unet" / "kolors_unet.safetensors"
    loras = comfy / "loras"

    if "tutorial" in layouts:  # (a) tutorial / DiffSynth layout
        _write_diffusers_model(kolors / "unet", tiny.unet, fp16_variant=False)
        _write_diffusers_model(kolors / "vae", tiny.vae, fp16_variant=False)
        tiny.scheduler.save_config(kolors / "scheduler")
        te = kolors / "text_encoder"
        _write_json(te / "config.json", _chatglm_config_json())
        te_sd = _state_dict(tiny.text_encoder, torch.float32, prefix="transformer.")
        _save_sharded(te, te_sd, 3, stem="pytorch_model", ext="bin")
        _write_tokenizer(te, spm_bytes)
        _write_diffusers_model(fp16_fix, tiny.vae, fp16_variant=False)
        cfg = json.loads((fp16_fix / "config.json").read_text(encoding="utf-8"))
        _write_json(fp16_fix / "config.json", {**cfg, "force_upcast": False})

    if "diffusers" in layouts:  # (b) diffusers layout
        _write_diffusers_layout(diffusers_root, tiny, spm_bytes, fp16_variant=True)

    if "comfyui" in layouts:  # (c) ComfyUI layout
        _write_diffusers_layout(comfy / "diffusers" / "Kolors", tiny, spm_bytes, fp16_variant=False)
        _save_safetensors(vae_file, vae_diffusers_to_ldm(_state_dict(tiny.vae, torch.float32)))
        _save_safetensors(llm_file, _state_dict(tiny.text_encoder, torch.float16, prefix="transformer."))
        unet_config = {k: v for k, v in tiny.unet.config.items() if not k.startswith("_")}
        _save_safetensors(
            unet_file,
            _state_dict(tiny.unet, torch.float16),
            metadata={"config": json.dumps(unet_config, sort_keys=True)},
        )
        loras.mkdir(parents=True, exist_ok=True)

    return TinyModelPaths(
        root=root,
        tutorial_models=models,
        tutorial_kolors=kolors,
        tutorial_fp16_vae=fp16_fix,
        diffusers_root=diffusers_root,
        comfyui_models=comfy,
        comfyui_kolors=comfy / "diffusers" / "Kolors",
        comfyui_vae_file=vae_file,
        comfyui_llm_file=llm_file,
        comfyui_unet_file=unet_file,
        comfyui_loras=loras,
        seed=tiny.seed,
    )
