"""LoRA files for SD models: the UNet part through the LoRA pack, the CLIP part (kohya ``lora_te*``) here.

The LoRA pack (``nodes/lora``) reads every UNet key format (kohya with diffusers or LDM names,
diffusers, peft) into module paths and merges them while a sampler runs. Text-encoder keys are
kohya's ``lora_te_`` (SD1.5), ``lora_te1_`` (SDXL's ViT-L) and ``lora_te2_`` (bigG), with module
names flattened by ``_``; they are matched against the encoder's own module names (with the
``text_model.`` prefix the released files use) and merged the same way while the encoder runs.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from graphgen_nodes.lora.formats import KOHYA_TE_PREFIXES, kohya_te_name

__all__ = ["read_sd_lora"]

#: kohya text-encoder prefix → which encoder of an ``SDClip`` it patches, per family (the names
#: the trainer writes; the refiner's bigG takes an SDXL file's ``lora_te2_`` keys, or ``lora_te1_``).
_TE_PREFIXES = {**{family: {prefix: name for name, prefix in names.items()}
                   for family, names in KOHYA_TE_PREFIXES.items()},
                "sdxl_refiner": {"lora_te2_": "clip_g", "lora_te1_": "clip_g"}}


def _flat_names(encoder: torch.nn.Module) -> dict[str, str]:
    """kohya's flattened name (``text_model_encoder_layers_0_self_attn_q_proj``) → module path."""
    return {kohya_te_name(path): path for path, module in encoder.named_modules()
            if isinstance(module, torch.nn.Linear)}


def read_sd_lora(path: Path, clip: Any | None) -> tuple[Any | None, list[tuple[str, Any]], list[str]]:
    """Reads a LoRA file for an SD model.

    Returns:
        ``(unet LoraWeights or None, [(encoder name, LoraWeights)], warnings)``.
    """
    from graphgen_nodes.lora.lora_file import (
        LoraError,
        LoraModule,
        LoraWeights,
        load_state_dict,
        lora_from_state_dict,
    )

    state, metadata = load_state_dict(path)
    warnings: list[str] = []
    te_keys = [k for k in state if isinstance(k, str) and k.startswith("lora_te")]
    unet_state = {k: v for k, v in state.items() if k not in te_keys}
    unet = None
    if any(isinstance(k, str) and not k.startswith("lora_te") for k in unet_state):
        try:
            unet = lora_from_state_dict(unet_state, metadata, source=str(path))
        except LoraError as exc:
            warnings.append(str(exc))
    encoders: list[tuple[str, Any]] = []
    if te_keys and clip is not None:
        for prefix, name in _TE_PREFIXES.get(clip.family, {}).items():
            handle = getattr(clip, name)
            keys = [k for k in te_keys if k.startswith(prefix)]
            if handle is None or not keys:
                continue
            names = _flat_names(handle.model)
            modules: dict[str, Any] = {}
            unmatched = []
            for key in keys:
                stem, _, part = key[len(prefix):].partition(".")
                if stem not in names or part not in ("lora_down.weight", "lora_up.weight", "alpha"):
                    unmatched.append(key)
                    continue
                slot = modules.setdefault(names[stem], {})
                slot[part] = state[key]
            built = {p: LoraModule(down=s["lora_down.weight"].float(), up=s["lora_up.weight"].float(),
                                   alpha=float(s["alpha"]) if "alpha" in s else None)
                     for p, s in modules.items() if "lora_down.weight" in s and "lora_up.weight" in s}
            if built:
                encoders.append((name, LoraWeights(modules=built, format="kohya", source=f"{path} ({prefix}*)",
                                                   unmatched=unmatched)))
            if unmatched:
                warnings.append(f"{path}: {len(unmatched)} text-encoder keys match no layer (e.g. {unmatched[0]})")
    elif te_keys:
        warnings.append(f"{path}: {len(te_keys)} text-encoder keys ignored (no CLIP given)")
    if unet is not None:
        unet = replace(unet, unmatched=[k for k in unet.unmatched if not k.startswith("lora_te")])
    return unet, encoders, warnings
