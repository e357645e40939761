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
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from graphgen.files import atomic_write_via_path

from .convert import write_lora
from .lora_file import LoraModule, LoraWeights

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
) -> Path:
    """Writes the final LoRA in the ``"diffusers"`` layout through ``convert.write_lora`` (atomic).

    Args:
        path: The ``.safetensors`` target (replaced if it exists).
        lora: ``{module: (A, B)}``.
        alpha: LoRA alpha (peft scale = alpha / rank).
        metadata: Extra string metadata (the ``graphgen.*`` keys).

    Returns:
        The written path.
    """
    return write_lora(
        lora_weights(lora, alpha), path, to="diffusers", overwrite=True, metadata=dict(metadata)
    )


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
