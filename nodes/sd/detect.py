"""SD1.5 / SDXL / SDXL-refiner architecture read from a single file's tensor shapes.

What shapes tell (as ComfyUI's model detection reads them): UNet input channels, per-level
widths and depths, which levels carry transformers and how deep, linear or conv projections,
the context width, the size-embedding input; VAE widths and depths; CLIP widths, depths and
vocabulary. What they cannot tell comes from each family's fixed rules: SD1.5 uses 8 heads per
transformer, SDXL 64 channels per head; CLIP 64 channels per head (quick-GELU for ViT-L, GELU for
bigG); 32 norm groups; SDXL's size embeddings are 256 wide; the VAE latent scale is 0.18215
(SD1.5) or 0.13025 (SDXL). Because only shapes are read, fine-tunes and narrowed test
checkpoints of a family load like the originals.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["CLIP_G_PREFIXES", "CLIP_L_PREFIXES", "UNET_PREFIX", "VAE_PREFIX", "Architecture", "detect"]

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_L_PREFIXES = ("cond_stage_model.transformer.", "conditioner.embedders.0.transformer.")
CLIP_G_PREFIXES = ("conditioner.embedders.1.model.", "conditioner.embedders.0.model.")

#: Family → (latent scale, default scheduler config tweaks are the same for all three).
LATENT_SCALE = {"sd15": 0.18215, "sdxl": 0.13025, "sdxl_refiner": 0.13025}
FAMILY_NAMES = {"sd15": "SD1.5", "sdxl": "SDXL", "sdxl_refiner": "SDXL refiner"}
SDXL_SIZE_EMBED = 256


class DetectionError(ValueError):
    """The file is not an SD1.5/SDXL checkpoint in a layout graphgen reads."""


@dataclass
class Architecture:
    """What a checkpoint holds: its family and a diffusers config per component (None: absent)."""

    family: str
    unet: dict[str, Any] | None
    vae: dict[str, Any] | None
    clip_l: dict[str, Any] | None
    clip_g: dict[str, Any] | None
    clip_g_prefix: str | None


def _indices(keys: list[str], prefix: str) -> list[int]:
    found = {int(m.group(1)) for k in keys if (m := re.match(re.escape(prefix) + r"(\d+)\.", k))}
    return sorted(found)


def unet_config(state: Mapping[str, torch.Tensor], family: str) -> dict[str, Any]:
    """A ``UNet2DConditionModel`` config from LDM-named UNet weights (prefix removed)."""
    keys = list(state)
    widths: list[int] = []
    depths: list[int] = []  # transformer depth per level (0: no attention)
    layers = 0
    level_layers = 0
    level_depth = 0
    for k in _indices(keys, "input_blocks.")[1:]:
        if f"input_blocks.{k}.0.op.weight" in state:  # downsampler closes a level
            depths.append(level_depth)
            layers = layers or level_layers
            level_layers, level_depth = 0, 0
            continue
        if not widths or len(widths) == len(depths):
            widths.append(int(state[f"input_blocks.{k}.0.out_layers.3.weight"].shape[0]))
        level_layers += 1
        level_depth = len(_indices(keys, f"input_blocks.{k}.1.transformer_blocks."))
    depths.append(level_depth)
    layers = layers or level_layers
    context = next(int(v.shape[1]) for k, v in state.items() if k.endswith("attn2.to_k.weight"))
    proj = next(v for k, v in state.items() if k.endswith(".proj_in.weight"))
    config: dict[str, Any] = {
        "sample_size": 64 if family == "sd15" else 128,
        "in_channels": int(state["input_blocks.0.0.weight"].shape[1]),
        "out_channels": int(state["out.2.weight"].shape[0]),
        "block_out_channels": widths,
        "layers_per_block": layers,
        "down_block_types": ["CrossAttnDownBlock2D" if d else "DownBlock2D" for d in depths],
        "up_block_types": ["CrossAttnUpBlock2D" if d else "UpBlock2D" for d in reversed(depths)],
        "cross_attention_dim": context,
        "norm_num_groups": 32,
        "use_linear_projection": proj.ndim == 2,
    }
    if family == "sd15":
        config["attention_head_dim"] = 8
    else:
        config["attention_head_dim"] = [max(1, w // 64) for w in widths]
        # levels without attention take the middle block's depth: diffusers sizes the middle
        # block by the last level's entry
        mid = len(_indices(keys, "middle_block.1.transformer_blocks.")) or 1
        config["transformer_layers_per_block"] = [d or mid for d in depths]
        config["addition_embed_type"] = "text_time"
        config["addition_time_embed_dim"] = SDXL_SIZE_EMBED
        config["projection_class_embeddings_input_dim"] = int(state["label_emb.0.0.weight"].shape[1])
    return config


def vae_config(state: Mapping[str, torch.Tensor], family: str) -> dict[str, Any]:
    """An ``AutoencoderKL`` config from LDM-named VAE weights (prefix removed)."""
    keys = list(state)
    levels = _indices(keys, "encoder.down.")
    widths = [int(state[f"encoder.down.{i}.block.0.conv1.weight"].shape[0]) for i in levels]
    return {
        "in_channels": int(state["encoder.conv_in.weight"].shape[1]),
        "out_channels": int(state["decoder.conv_out.weight"].shape[0]),
        "block_out_channels": widths,
        "down_block_types": ["DownEncoderBlock2D"] * len(widths),
        "up_block_types": ["UpDecoderBlock2D"] * len(widths),
        "layers_per_block": len(_indices(keys, "encoder.down.0.block.")),
        "latent_channels": int(state["decoder.conv_in.weight"].shape[1]),
        "norm_num_groups": 32,
        "sample_size": 512 if family == "sd15" else 1024,
        "scaling_factor": LATENT_SCALE[family],
        "force_upcast": family != "sd15",
    }


def clip_l_config(state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """A ``CLIPTextConfig`` for CLIP ViT-L from HF-named weights (prefix removed)."""
    emb = state["text_model.embeddings.token_embedding.weight"]
    hidden = int(emb.shape[1])
    return {
        "vocab_size": int(emb.shape[0]),
        "hidden_size": hidden,
        "intermediate_size": int(state["text_model.encoder.layers.0.mlp.fc1.weight"].shape[0]),
        "num_hidden_layers": len(_indices(list(state), "text_model.encoder.layers.")),
        "num_attention_heads": max(1, hidden // 64),
        "max_position_embeddings": int(state["text_model.embeddings.position_embedding.weight"].shape[0]),
        "hidden_act": "quick_gelu",
        "projection_dim": hidden,
        "bos_token_id": 49406, "eos_token_id": 49407, "pad_token_id": 1,
    }


def clip_g_config(state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """A ``CLIPTextConfig`` for OpenCLIP ViT-bigG from OpenCLIP-named weights (prefix removed)."""
    emb = state["token_embedding.weight"]
    hidden = int(emb.shape[1])
    return {
        "vocab_size": int(emb.shape[0]),
        "hidden_size": hidden,
        "intermediate_size": int(state["transformer.resblocks.0.mlp.c_fc.weight"].shape[0]),
        "num_hidden_layers": len(_indices(list(state), "transformer.resblocks.")),
        "num_attention_heads": max(1, hidden // 64),
        "max_position_embeddings": int(state["positional_embedding"].shape[0]),
        "hidden_act": "gelu",
        "projection_dim": int(state["text_projection"].shape[1]),
        "bos_token_id": 49406, "eos_token_id": 49407, "pad_token_id": 1,
    }


def _strip(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def detect(state: Mapping[str, torch.Tensor], source: str = "checkpoint") -> Architecture:
    """Reads family and component configs from a single-file checkpoint's keys and shapes.

    Raises:
        DetectionError: one line saying what was found and what is accepted.
    """
    keys = list(state)
    unet = _strip(state, UNET_PREFIX)
    clip_l_prefix = next((p for p in CLIP_L_PREFIXES if any(k.startswith(p) for k in keys)), None)
    clip_g_prefix = next((p for p in CLIP_G_PREFIXES if p + "token_embedding.weight" in state), None)
    if unet and "input_blocks.0.0.weight" not in unet:
        raise DetectionError(f"{source}: the UNet weights are incomplete (no input_blocks.0.0.weight)")
    if "label_emb.0.0.weight" in unet or clip_g_prefix:
        family = "sdxl" if clip_l_prefix or clip_g_prefix == CLIP_G_PREFIXES[0] else "sdxl_refiner"
    elif unet or clip_l_prefix:
        family = "sd15"
    else:
        sample = ", ".join(keys[:3]) or "(no tensors)"
        raise DetectionError(
            f"{source} is not an SD1.5/SDXL checkpoint in the original layout (model.diffusion_model.*, "
            f"first_stage_model.*, cond_stage_model.* or conditioner.embedders.*); its keys look like: {sample}")
    if family == "sd15" and unet and any(k.endswith(".proj_in.weight") and v.ndim == 2 for k, v in unet.items()):
        raise DetectionError(f"{source} looks like an SD2.x checkpoint (linear projections, OpenCLIP-H); "
                             "only SD1.5 and SDXL are supported")
    vae = _strip(state, VAE_PREFIX)
    try:
        return Architecture(
            family=family,
            unet=unet_config(unet, family) if unet else None,
            vae=vae_config(vae, family) if vae else None,
            clip_l=clip_l_config(_strip(state, clip_l_prefix)) if clip_l_prefix else None,
            clip_g=clip_g_config(_strip(state, clip_g_prefix)) if clip_g_prefix else None,
            clip_g_prefix=clip_g_prefix,
        )
    except (KeyError, StopIteration, IndexError) as exc:
        raise DetectionError(f"{source}: a {FAMILY_NAMES[family]} checkpoint with missing weights ({exc})") from None


def detect_family_from_keys(path: Any) -> str:
    """The family of a checkpoint file from its key names alone (a safetensors header read, no tensors).

    Raises:
        DetectionError: not an SD1.5/SDXL file.
    """
    from pathlib import Path

    p = Path(path)
    if p.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(p), framework="pt") as handle:
            keys = list(handle.keys())
    else:
        from .loading import read_checkpoint

        keys = list(read_checkpoint(p))
    has = set(keys)
    if UNET_PREFIX + "label_emb.0.0.weight" in has or any(p + "token_embedding.weight" in has for p in CLIP_G_PREFIXES):
        clip_l = any(k.startswith(CLIP_L_PREFIXES) for k in keys)
        return "sdxl" if clip_l or CLIP_G_PREFIXES[0] + "token_embedding.weight" in has else "sdxl_refiner"
    if any(k.startswith((UNET_PREFIX, *CLIP_L_PREFIXES)) for k in keys):
        return "sd15"
    sample = ", ".join(keys[:3]) or "(no tensors)"
    raise DetectionError(
        f"{p} is not an SD1.5/SDXL checkpoint in the original layout (model.diffusion_model.*, "
        f"first_stage_model.*, cond_stage_model.* or conditioner.embedders.*); its keys look like: {sample}")
