"""Files the LoRA trainer writes: resumable checkpoints and the final LoRA, all atomically.

Every file is first written to a temporary name in the same folder, flushed to disk and then
moved over the target with ``os.replace``, so a run killed at any moment leaves either the old
file or the new one, never a torn one.

The final LoRA is built as the canonical ``lora_file.LoraWeights`` and written by
``convert.write_lora(..., to="diffusers")``, the layout ``KolorsPipeline.load_lora_weights`` reads:

* ``unet.<module>.lora_A.weight`` ``[rank, in]`` and ``unet.<module>.lora_B.weight`` ``[out, rank]``
  (fp32), e.g. ``unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight``;
* metadata ``lora_adapter_metadata``: diffusers' JSON of the peft ``LoraConfig`` (``unet.r``,
  ``unet.lora_alpha``, ...), so diffusers applies alpha / rank;
* metadata ``graphgen.*``: base model id, rank, alpha, target modules, steps, fingerprints,
  training parameters (JSON) and the run key that ``find_existing`` compares.

``TrainLoRA`` writes kohya's layout instead (``lora_unet_…`` with ``.alpha`` and ``ss_*``
metadata), plus kohya's ``lora_te_…`` (SD1.5) or ``lora_te1_…``/``lora_te2_…`` (SDXL) keys when
the text encoders were trained.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from graphgen.files import atomic_write_via_path

from .convert import lora_to_state_dict
from .formats import LAYOUTS, kohya_te_name
from .lora_file import LoraModule, LoraWeights, save_state_dict

__all__ = [
    "CHECKPOINT_VERSION",
    "atomic_torch_save",
    "load_checkpoint",
    "lora_weights",
    "read_lora_metadata",
    "write_lora_file",
]

CHECKPOINT_VERSION = 1


def _replace_from_tmp(path: Path, write: Any) -> None:
    atomic_write_via_path(path, write, overwrite=True)


def atomic_torch_save(obj: Mapping[str, Any], path: Path) -> None:
    """``torch.save`` through a temporary file and ``os.replace``.

    Args:
        obj: Plain data: dicts, lists, numbers, strings and tensors (loadable with ``weights_only``).
        path: The target file.
    """
    _replace_from_tmp(path, lambda tmp: torch.save(dict(obj), tmp))


def load_checkpoint(path: Path) -> dict[str, Any] | None:
    """Loads a checkpoint written by :func:`atomic_torch_save` (``weights_only``, CPU).

    Args:
        path: The checkpoint file.

    Returns:
        The checkpoint dict, or ``None`` when the file is missing.

    Raises:
        ValueError: If the file exists but is not a readable checkpoint of this version.
    """
    if not path.is_file():
        return None
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"checkpoint {path} is unreadable ({exc}): delete it or set resume=False") from exc
    if not isinstance(ckpt, dict) or ckpt.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"checkpoint {path} is not a graphgen v{CHECKPOINT_VERSION} checkpoint: delete it")
    return ckpt


def lora_weights(lora: Mapping[str, tuple[torch.Tensor, torch.Tensor]], alpha: float) -> LoraWeights:
    """The canonical in-memory LoRA (``lora_file.LoraWeights``) of trained factors.

    Args:
        lora: Module path (diffusers naming) to ``(lora_A [rank, in], lora_B [out, rank])``.
        alpha: LoRA alpha of every module.

    Returns:
        The LoRA, fp32 CPU tensors.
    """
    modules = {
        name: LoraModule(down=a.detach().float().cpu(), up=b.detach().float().cpu(), alpha=float(alpha))
        for name, (a, b) in sorted(lora.items())
    }
    return LoraWeights(modules=modules, format="memory", source="graphgen trainer")


def write_lora_file(
    path: Path,
    lora: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
    *,
    alpha: float,
    metadata: Mapping[str, str],
    layout: str = "diffusers",
    text_encoders: Mapping[str, Mapping[str, tuple[torch.Tensor, torch.Tensor]]] | None = None,
) -> Path:
    """Writes the final LoRA in ``layout`` (``convert.lora_to_state_dict``; atomic).

    Args:
        path: The ``.safetensors`` target (replaced if it exists).
        lora: ``{module: (A, B)}`` of the UNet.
        alpha: LoRA alpha (peft scale = alpha / rank).
        metadata: Extra string metadata (the ``graphgen.*`` and ``ss_*`` keys).
        layout: ``"diffusers"`` (what ``load_lora_weights`` reads natively), ``"kohya"`` (LDM
            names with ``.alpha``, as kohya writes SDXL) or ``"kohya_diffusers"`` (as kohya
            writes SD1.5).
        text_encoders: ``{kohya prefix: {CLIP module path: (A, B)}}`` of trained text encoders,
            written as kohya writes them (``lora_te1_text_model_encoder_layers_0_self_attn_q_proj``
            ``.lora_down.weight``/``.lora_up.weight``/``.alpha``); kohya layouts only.

    Returns:
        The written path.
    """
    state, meta = lora_to_state_dict(lora_weights(lora, alpha), layout, metadata=dict(metadata))
    if text_encoders:
        if not layout.startswith("kohya"):
            raise ValueError(f"text-encoder LoRA is written in kohya's layout only, not {layout!r}")
        for prefix, modules in sorted(text_encoders.items()):
            for module, (a, b) in sorted(modules.items()):
                name = prefix + kohya_te_name(module)
                state[f"{name}.lora_down.weight"] = a.detach().float().cpu().contiguous()
                state[f"{name}.lora_up.weight"] = b.detach().float().cpu().contiguous()
                state[f"{name}.alpha"] = torch.tensor(float(alpha), dtype=torch.float32)
    return save_state_dict(state, path, meta, container=LAYOUTS[layout].container, overwrite=True)


def kohya_metadata(config: Any, data: Any, family: Any, steps: int) -> dict[str, str]:
    """The ``ss_*`` metadata kohya sd-scripts writes, which kohya-aware tools read.

    Args:
        config: The :class:`~.train_config.TrainConfig`.
        data: The :class:`~.latent_cache.CachedData` trained on.
        family: The :class:`~.families.TrainFamily`.
        steps: Steps trained.

    Returns:
        String metadata (JSON for the structured keys, as kohya).
    """
    import json
    from collections import Counter

    tags: Counter[str] = Counter(t.strip() for it in data.items for t in it.caption.split(",") if t.strip())
    dirs: Counter[str] = Counter(it.file_name.rpartition("/")[0] or "." for it in data.items)
    repeats = {it.file_name.rpartition("/")[0] or ".": it.repeats for it in data.items}
    buckets: Counter[str] = Counter(f"{it.target_size[1]}x{it.target_size[0]}" for it in data.items)
    meta = {
        "ss_network_module": "networks.lora",
        "ss_network_dim": str(config.lora_rank),
        "ss_network_alpha": f"{float(config.lora_alpha):g}",
        "ss_network_dropout": f"{config.network_dropout:g}",
        "ss_base_model_version": family.ss_base_model_version,
        "ss_v2": "False",
        "ss_output_name": config.output_name,
        "ss_learning_rate": f"{config.learning_rate:g}",
        "ss_unet_lr": f"{config.learning_rate:g}",
        "ss_text_encoder_lr": f"{config.text_encoder_lr:g}",
        "ss_network_train_unet_only": str(not config.text_encoder_lr),
        "ss_lr_scheduler": config.lr_scheduler,
        "ss_lr_warmup_steps": str(config.lr_warmup_steps),
        "ss_optimizer": "torch.optim.AdamW" if config.optimizer == "AdamW" else "bitsandbytes.optim.AdamW8bit",
        "ss_max_train_steps": str(steps),
        "ss_steps": str(steps),
        "ss_epoch": str(config.max_epochs),
        "ss_batch_size_per_device": str(config.batch_size),
        "ss_gradient_accumulation_steps": str(config.gradient_accumulation_steps),
        "ss_mixed_precision": {"32": "no", "16-mixed": "fp16", "bf16-mixed": "bf16"}[config.precision],
        "ss_gradient_checkpointing": str(bool(config.use_gradient_checkpointing)),
        "ss_seed": str(config.seed),
        "ss_noise_offset": f"{config.noise_offset:g}",
        "ss_min_snr_gamma": f"{config.min_snr_gamma:g}",
        "ss_resolution": f"({config.width}, {config.height})",
        "ss_enable_bucket": str(bool(config.enable_bucket)),
        "ss_min_bucket_reso": str(config.min_bucket_reso),
        "ss_max_bucket_reso": str(config.max_bucket_reso),
        "ss_bucket_info": json.dumps({"buckets": dict(buckets)}),
        "ss_num_train_images": str(sum(it.repeats for it in data.items)),
        "ss_caption_dropout_rate": f"{config.caption_dropout_rate:g}",
        "ss_shuffle_caption": str(bool(config.shuffle_caption)),
        "ss_keep_tokens": str(config.keep_tokens),
        "ss_flip_aug": str(bool(config.random_flip)),
        "ss_random_crop": str(not config.center_crop),
        "ss_dataset_dirs": json.dumps({d: {"n_repeats": repeats[d], "img_count": n} for d, n in dirs.items()}),
        "ss_tag_frequency": json.dumps({d: dict(tags) for d in list(dirs)[:1]}, ensure_ascii=False),
        "ss_training_comment": "trained by graphgen",
    }
    return meta


def read_lora_metadata(path: Path) -> dict[str, str] | None:
    """Reads a safetensors file's metadata without loading tensors.

    Args:
        path: The file.

    Returns:
        The metadata, or ``None`` when the file is missing or unreadable.
    """
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return dict(f.metadata() or {})
    except Exception:
        return None
