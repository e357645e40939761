"""Building diffusers/transformers modules from an SD1.5/SDXL single file, with no hub access.

Key renaming is diffusers' own single-file conversion (``diffusers.loaders.single_file_utils``:
``convert_ldm_unet_checkpoint``, ``convert_ldm_vae_checkpoint``, ``convert_ldm_clip_checkpoint``,
``convert_open_clip_checkpoint``), called with the configs :mod:`.detect` reads from the shapes,
never with a hub repository. Modules are built on the meta device and take the file's tensors
(no random initialisation of billions of parameters that are overwritten next).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .detect import CLIP_L_PREFIXES, Architecture, DetectionError

__all__ = ["load_clip_g", "load_clip_l", "load_unet", "load_vae", "read_checkpoint"]


def read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of a ``.safetensors`` (or, read with ``weights_only=True``, ``.ckpt``) file."""
    from graphgen_nodes.kolors.loading import load_state_dict_file

    state = load_state_dict_file(path)
    if "state_dict" in state and isinstance(state["state_dict"], Mapping):  # old .ckpt wrapping
        state = dict(state["state_dict"])
    return state


def _assign(model: torch.nn.Module, state: dict[str, torch.Tensor], dtype: torch.dtype, what: str) -> Any:
    """Loads ``state`` into a meta-device model (strict), casting floating tensors to ``dtype``."""
    state = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in state.items()}
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise DetectionError(f"the {what} weights do not fit the architecture read from the file: "
                             f"missing {missing[:3]}, unexpected {unexpected[:3]}")
    for k, v in state.items():
        if tuple(v.shape) != tuple(expected[k].shape):
            raise DetectionError(f"the {what} weight {k} has shape {tuple(v.shape)}, the architecture "
                                 f"read from the file needs {tuple(expected[k].shape)}")
    model.load_state_dict(state, assign=True, strict=True)
    # buffers that are not in the file (CLIP's position ids) are still on the meta device
    for name, buf in list(model.named_buffers()):
        if buf.is_meta:
            raise DetectionError(f"the {what} has an unset buffer {name}")
    return model.eval().requires_grad_(False)


def _from_ldm(model_class: Any, convert: Any, config: Mapping[str, Any] | None, state: Mapping[str, torch.Tensor],
              dtype: torch.dtype, what: str) -> Any:
    """A diffusers model of `config` built on the meta device, taking `state` renamed by diffusers' `convert`."""
    assert config is not None
    converted = convert(dict(state), dict(config))
    with torch.device("meta"):
        model = model_class.from_config(config)
    return _assign(model, converted, dtype, what)


def load_unet(state: Mapping[str, torch.Tensor], arch: Architecture, dtype: torch.dtype) -> Any:
    """The UNet as ``UNet2DConditionModel``."""
    from diffusers import UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    return _from_ldm(UNet2DConditionModel, convert_ldm_unet_checkpoint, arch.unet, state, dtype, "UNet")


def load_vae(state: Mapping[str, torch.Tensor], arch: Architecture, dtype: torch.dtype) -> Any:
    """The VAE as ``AutoencoderKL``."""
    from diffusers import AutoencoderKL
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    return _from_ldm(AutoencoderKL, convert_ldm_vae_checkpoint, arch.vae, state, dtype, "VAE")


def _clip_model(config: dict[str, Any], with_projection: bool) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    cfg = CLIPTextConfig(**config)
    cls = CLIPTextModelWithProjection if with_projection else CLIPTextModel
    with torch.device("meta"):
        model = cls(cfg)
    return model


def _fit_names(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Matches the file's ``text_model.`` names to the model's own (transformers 5's CLIPTextModel drops
    the prefix) and leaves out the position-ids buffer the model makes itself."""
    own = set(model.state_dict())
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.endswith("position_ids") or key == "logit_scale":
            continue
        if key not in own and key.removeprefix("text_model.") in own:
            key = key.removeprefix("text_model.")
        out[key] = value
    return out


def _restore_position_ids(model: torch.nn.Module) -> None:
    """Non-persistent buffers built on the meta device: CLIP's position ids, made here."""
    for module in model.modules():
        buf = getattr(module, "position_ids", None)
        if isinstance(buf, torch.Tensor) and buf.is_meta:
            module.register_buffer("position_ids", torch.arange(buf.shape[-1]).expand(1, -1), persistent=False)


def load_clip_l(state: Mapping[str, torch.Tensor], arch: Architecture, dtype: torch.dtype) -> Any:
    """CLIP ViT-L as ``CLIPTextModel`` (SD1.5's encoder, SDXL's first)."""
    from diffusers.loaders.single_file_utils import convert_ldm_clip_checkpoint

    assert arch.clip_l is not None
    prefix = next(p for p in CLIP_L_PREFIXES if any(k.startswith(p) for k in state))
    converted = convert_ldm_clip_checkpoint({k: v for k, v in state.items() if k.startswith(prefix)})
    model = _clip_model(arch.clip_l, with_projection=False)
    _restore_position_ids(model)
    return _assign(model, _fit_names(model, converted), dtype, "CLIP ViT-L text encoder")


def load_clip_g(state: Mapping[str, torch.Tensor], arch: Architecture, dtype: torch.dtype) -> Any:
    """OpenCLIP ViT-bigG as ``CLIPTextModelWithProjection`` (SDXL's second encoder, the refiner's only)."""
    from diffusers.loaders.single_file_utils import convert_open_clip_checkpoint

    assert arch.clip_g is not None and arch.clip_g_prefix is not None
    model = _clip_model(arch.clip_g, with_projection=True)
    _restore_position_ids(model)
    converted = convert_open_clip_checkpoint(model, dict(state), prefix=arch.clip_g_prefix)
    return _assign(model, _fit_names(model, converted), dtype, "OpenCLIP ViT-bigG text encoder")
