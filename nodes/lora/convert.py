"""Writing canonical LoRAs in any supported format (convert DiffSynth ``.ckpt`` → kohya, ...).

Formats (``to=``), all key spellings from ``formats.LAYOUTS``:

* ``"kohya"``: ``lora_unet_<LDM name>.lora_down.weight`` / ``.lora_up.weight`` / ``.alpha``
  (what kohya sd-scripts writes for SDXL-shaped UNets and ComfyUI loads). ``.alpha`` carries
  the module's alpha (rank when none is stored), so strength 1 in ComfyUI gives alpha / rank.
* ``"kohya_diffusers"``: the same with diffusers module paths (``lora_unet_down_blocks_1_...``).
  ``KolorsPipeline.load_lora_weights`` (diffusers 0.42) reads this spelling but not LDM names:
  it uses the SD 1.x loader mixin, which does not pass ``unet_config`` to diffusers' SGM → diffusers
  block remapping, and fails with "Target modules {'down_blocks.4.1....'} not found".
* ``"diffusers"``: ``unet.<path>.lora_A.weight`` / ``lora_B.weight`` plus the peft
  ``LoraConfig`` (``r``, ``lora_alpha``, ``rank_pattern``, ``alpha_pattern``, ``target_modules``)
  as ``lora_adapter_metadata`` JSON with ``unet.``-prefixed keys, exactly as diffusers'
  ``save_lora_weights(unet_lora_adapter_metadata=...)`` writes it, so that
  ``KolorsPipeline.load_lora_weights`` keeps every module's alpha.
* ``"peft"``: ``<path>.lora_A.weight`` / ``lora_B.weight`` with the unprefixed config, as
  ``UNet2DConditionModel.save_lora_adapter`` writes it.
* ``"diffusers_legacy"``, ``"diffusers_attn_procs"``, ``"diffsynth"`` (a pickled ``.ckpt``):
  formats that store no alpha. A module with alpha ≠ rank has ``alpha / rank`` folded into its
  ``up`` matrix so the file still applies the same update at strength 1.

Files are written atomically (temp file in the same folder, then ``os.replace``) and never
overwrite an existing file unless ``overwrite=True``.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .formats import LAYOUTS, KeyLayout, layout_key
from .lora_file import ADAPTER_METADATA_KEY, LoraError, LoraWeights, read_lora, save_state_dict

#: The formats ``write_lora`` writes (every readable format).
WRITE_FORMATS: tuple[str, ...] = tuple(LAYOUTS)

#: Metadata keys regenerated on every write; stale copies from the source file are dropped
#: (everything else, e.g. the trainer's ``graphgen.*`` provenance keys, is carried over).
_REGENERATED = frozenset(
    {
        "format",
        ADAPTER_METADATA_KEY,
        "ss_network_module",
        "ss_network_dim",
        "ss_network_alpha",
        "graphgen.lora_format",
        "graphgen.source_format",
        "graphgen.modules",
    }
)


def peft_config_dict(lora: LoraWeights) -> dict[str, Any]:
    """The peft ``LoraConfig`` fields that reproduce ``lora``'s ranks and alphas.

    The most common rank / alpha become ``r`` / ``lora_alpha``; the other modules go to
    ``rank_pattern`` / ``alpha_pattern`` keyed ``^<module path>`` (an exact match for peft).

    Args:
        lora: the LoRA.

    Returns:
        A JSON-serialisable dict accepted by ``peft.LoraConfig(**d)``.
    """
    ranks = {p: m.rank for p, m in lora.modules.items()}
    alphas = {p: m.effective_alpha for p, m in lora.modules.items()}
    r = Counter(ranks.values()).most_common(1)[0][0]
    alpha = Counter(alphas.values()).most_common(1)[0][0]
    return {
        "peft_type": "LORA",
        "r": r,
        "lora_alpha": alpha,
        "rank_pattern": {f"^{p}": v for p, v in ranks.items() if v != r},
        "alpha_pattern": {f"^{p}": v for p, v in alphas.items() if v != alpha},
        "target_modules": sorted(lora.modules),
        "lora_dropout": 0.0,
        "bias": "none",
        "use_rslora": False,
        "use_dora": False,
        "lora_bias": False,
        "init_lora_weights": True,
    }


def _metadata(lora: LoraWeights, layout: KeyLayout, extra: Mapping[str, str] | None) -> dict[str, str]:
    """Source metadata minus regenerated keys, plus the target format's own keys."""
    out = {k: v for k, v in lora.metadata.items() if k not in _REGENERATED}
    ranks = sorted(lora.ranks)
    alphas = sorted({m.effective_alpha for m in lora.modules.values()})
    out.update(
        {
            "format": "pt",
            "graphgen.lora_format": layout.name,
            "graphgen.source_format": lora.format,
            "graphgen.modules": str(len(lora.modules)),
        }
    )
    if layout.name.startswith("kohya"):
        out["ss_network_module"] = "networks.lora"
        out["ss_network_dim"] = str(ranks[0]) if len(ranks) == 1 else "dynamic"
        out["ss_network_alpha"] = f"{alphas[0]:g}" if len(alphas) == 1 else "dynamic"
    if layout.alpha_in_metadata:
        config = peft_config_dict(lora)
        if layout.prefixes[0]:
            prefix = layout.prefixes[0]
            config = {f"{prefix}{k}": v for k, v in config.items()}
        out[ADAPTER_METADATA_KEY] = json.dumps(config, indent=2, sort_keys=True)
    out.update(extra or {})
    return out


def lora_to_state_dict(
    lora: LoraWeights,
    to: str = "kohya",
    *,
    dtype: torch.dtype = torch.float32,
    metadata: Mapping[str, str] | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Spells a canonical LoRA as one format's state dict and metadata.

    Args:
        lora: the LoRA.
        to: a ``WRITE_FORMATS`` name.
        dtype: dtype of the down/up tensors (alphas are always fp32 scalars).
        metadata: extra string metadata, added last.

    Returns:
        ``(state_dict, metadata)``.

    Raises:
        LoraError: unknown format, or a module the format has no name for.
    """
    if to not in LAYOUTS:
        raise LoraError(f"unknown LoRA format {to!r}; write one of {', '.join(WRITE_FORMATS)}")
    layout = LAYOUTS[to]
    state: dict[str, torch.Tensor] = {}
    for path, module in lora.modules.items():
        down_key = layout_key(path, "down", layout)
        up_key = layout_key(path, "up", layout)
        if down_key is None or up_key is None:
            hint = ' (try to="kohya_diffusers")' if to == "kohya" else ""
            raise LoraError(f"format {to!r} has no name for UNet module {path}{hint}")
        up = module.up
        if not layout.stores_alpha and module.alpha is not None and module.scale != 1.0:
            up = up * module.scale
        state[down_key] = module.down.to(dtype)
        state[up_key] = up.to(dtype)
        alpha_key = layout_key(path, "alpha", layout)
        if alpha_key is not None:
            state[alpha_key] = torch.tensor(module.effective_alpha, dtype=torch.float32)
    return state, _metadata(lora, layout, metadata)


def write_lora(
    lora: LoraWeights,
    path: str | os.PathLike[str],
    to: str = "kohya",
    *,
    overwrite: bool = False,
    metadata: Mapping[str, str] | None = None,
    dtype: torch.dtype = torch.float32,
) -> Path:
    """Writes a LoRA file in format ``to`` (safetensors; ``"diffsynth"`` is a pickled ``.ckpt``).

    Args:
        lora: the LoRA.
        path: destination file.
        to: ``"kohya"`` (default), ``"diffusers"``, ``"peft"`` or another ``WRITE_FORMATS`` name.
        overwrite: replace an existing file; otherwise ``FileExistsError``.
        metadata: extra string metadata for the safetensors header.
        dtype: dtype of the down/up tensors.

    Returns:
        The written path.

    Raises:
        LoraError: unknown format or unnamed module.
        FileExistsError: ``path`` exists and ``overwrite`` is false.
    """
    state, meta = lora_to_state_dict(lora, to, dtype=dtype, metadata=metadata)
    return save_state_dict(state, path, meta, container=LAYOUTS[to].container, overwrite=overwrite)


def convert_lora(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    to: str = "kohya",
    *,
    lora_alpha: float | None = None,
    overwrite: bool = False,
) -> Path:
    """Reads a LoRA file of any format and writes it in format ``to``.

    Args:
        src: source file or folder.
        dst: destination file.
        to: target format.
        lora_alpha: alpha for source modules that store none. For the tutorial's DiffSynth
            ``.ckpt`` pass 4.0 (its ``--lora_alpha``) so the kohya file applies the trained
            scale 4/16 at strength 1; leave ``None`` for scale 1 (DiffSynth's own default).
        overwrite: replace an existing ``dst``.

    Returns:
        The written path.
    """
    return write_lora(read_lora(src, lora_alpha=lora_alpha), dst, to, overwrite=overwrite)
