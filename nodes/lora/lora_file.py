"""Reading LoRA files into one canonical in-memory form, and the safe file primitives.

Every supported format (see ``formats.LAYOUTS``) becomes a ``LoraWeights``: per diffusers UNet
module path, the fp32 ``down`` [r, in] and ``up`` [out, r] matrices and the module's ``alpha``
(``None`` when the file stores none). The update a module receives is
``strength · alpha / rank · up @ down``, with alpha = rank when it is ``None`` (see ``apply``).

Pickled checkpoints (DiffSynth ``.ckpt``, ``.bin``, ``.pt``) are only ever opened with
``torch.load(weights_only=True)``: a pickle that asks for anything but tensors and plain
containers is refused with ``LoraError``.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from graphgen.files import atomic_write_via_path

from .formats import LAYOUTS, KeyLayout, Part, detect_layout, parse_key

#: safetensors metadata key under which diffusers / peft store the ``LoraConfig`` as JSON.
ADAPTER_METADATA_KEY = "lora_adapter_metadata"
#: file names looked up when ``read_lora`` is given a folder (peft and diffusers save layouts).
FOLDER_WEIGHT_NAMES = (
    "adapter_model.safetensors",
    "pytorch_lora_weights.safetensors",
    "adapter_model.bin",
    "pytorch_lora_weights.bin",
)
PEFT_CONFIG_NAME = "adapter_config.json"


class LoraError(ValueError):
    """A LoRA file or state dict that cannot be read, written or applied as asked."""


@dataclass(eq=False)
class LoraModule:
    """The LoRA factors of one UNet Linear layer.

    Attributes:
        down: fp32 ``[rank, in_features]`` (peft ``lora_A``, kohya ``lora_down``).
        up: fp32 ``[out_features, rank]`` (peft ``lora_B``, kohya ``lora_up``).
        alpha: the stored alpha, or ``None`` when the file stores none (then alpha = rank).
    """

    down: torch.Tensor
    up: torch.Tensor
    alpha: float | None = None

    @property
    def rank(self) -> int:
        """The LoRA rank r."""
        return int(self.down.shape[0])

    @property
    def effective_alpha(self) -> float:
        """``alpha``, or the rank when no alpha is stored."""
        return float(self.rank) if self.alpha is None else self.alpha

    @property
    def scale(self) -> float:
        """``alpha / rank``: the factor applied at strength 1."""
        return self.effective_alpha / self.rank

    def delta(self) -> torch.Tensor:
        """The fp32 weight update at strength 1, ``scale · up @ down`` ([out, in])."""
        return (self.up.float() @ self.down.float()) * self.scale


@dataclass(eq=False)
class LoraWeights:
    """A LoRA for a Kolors UNet in canonical form.

    Attributes:
        modules: diffusers UNet module path → ``LoraModule``.
        format: the detected source format (a ``formats.LAYOUTS`` name), or ``"memory"``.
        metadata: string metadata of the source file (safetensors ``__metadata__``).
        unmatched: source keys that map to no UNet Linear module (kohya ``lora_te1_``/``lora_te2_``
            CLIP keys, DoRA/LyCORIS extras, conv LoRA factors...).
        source: where it came from, for messages.
    """

    modules: dict[str, LoraModule]
    format: str = "memory"
    metadata: dict[str, str] = field(default_factory=dict)
    unmatched: list[str] = field(default_factory=list)
    source: str = "<memory>"

    @property
    def ranks(self) -> set[int]:
        """The distinct ranks of the modules."""
        return {m.rank for m in self.modules.values()}

    def with_alpha(self, alpha: float | None) -> LoraWeights:
        """Returns a copy (sharing tensors) whose every module has ``alpha``.

        ``lora.with_alpha(4.0)`` reproduces the tutorial's trained scale 4/16 at strength 1 for a
        DiffSynth file; ``with_alpha(None)`` drops stored alphas (scale 1 at strength 1).
        """
        modules = {
            p: replace(m, alpha=None if alpha is None else float(alpha)) for p, m in self.modules.items()
        }
        return replace(self, modules=modules, metadata=dict(self.metadata), unmatched=list(self.unmatched))

    def same_weights(self, other: LoraWeights) -> bool:
        """Whether both hold exactly the same modules, tensors (bit for bit) and alphas."""
        if self.modules.keys() != other.modules.keys():
            return False
        for path, mine in self.modules.items():
            theirs = other.modules[path]
            if mine.alpha != theirs.alpha:
                return False
            if not (torch.equal(mine.down, theirs.down) and torch.equal(mine.up, theirs.up)):
                return False
        return True

    def __repr__(self) -> str:
        ranks = sorted(self.ranks)
        return (
            f"LoraWeights({self.source!r}, format={self.format!r}, modules={len(self.modules)}, "
            f"ranks={ranks}, unmatched={len(self.unmatched)})"
        )


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


def _is_safetensors(path: Path) -> bool:
    with path.open("rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{"


def load_state_dict(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, str]]:
    """Loads a LoRA state dict and its string metadata without executing any pickled code.

    Args:
        path: a ``.safetensors`` file, a pickled checkpoint (``.ckpt``/``.bin``/``.pt``), or a
            folder holding ``adapter_model.*`` / ``pytorch_lora_weights.*``. A peft
            ``adapter_config.json`` next to the weights is returned as ``lora_adapter_metadata``.

    Returns:
        ``(state_dict, metadata)``.

    Raises:
        LoraError: missing file, unreadable file, or a pickle that is not plain tensors.
    """
    path = Path(path)
    if path.is_dir():
        found = next((path / n for n in FOLDER_WEIGHT_NAMES if (path / n).is_file()), None)
        if found is None:
            raise LoraError(f"{path}: folder holds none of {', '.join(FOLDER_WEIGHT_NAMES)}")
        path = found
    if not path.is_file():
        raise LoraError(f"{path}: no such LoRA file")
    metadata: dict[str, str] = {}
    if _is_safetensors(path):
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                metadata = dict(f.metadata() or {})
                state = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as exc:  # safetensors raises its own error types
            raise LoraError(f"{path}: not a readable safetensors file ({exc})") from exc
    else:
        from graphgen.pickles import UnsafeOrUnreadablePickle, load_weights_pickle

        try:
            loaded = load_weights_pickle(path)
        except UnsafeOrUnreadablePickle as exc:
            raise LoraError(f"{path}: {exc}") from None
        if not isinstance(loaded, Mapping):
            raise LoraError(f"{path}: checkpoint holds a {type(loaded).__name__}, not a dict of tensors")
        nested = loaded.get("state_dict")
        state = dict(nested if isinstance(nested, Mapping) else loaded)
    config = path.with_name(PEFT_CONFIG_NAME)
    if ADAPTER_METADATA_KEY not in metadata and config.is_file():
        metadata[ADAPTER_METADATA_KEY] = config.read_text(encoding="utf-8")
    return state, metadata


def save_state_dict(
    state: Mapping[str, torch.Tensor],
    path: str | os.PathLike[str],
    metadata: Mapping[str, str] | None = None,
    *,
    container: str = "safetensors",
    overwrite: bool = False,
) -> Path:
    """Writes tensors atomically (``graphgen.files``): a temp file in the same folder, then published.

    Args:
        state: tensors to write.
        path: destination file.
        metadata: string metadata (safetensors only).
        container: ``"safetensors"`` or ``"pickle"`` (a plain dict via ``torch.save``).
        overwrite: replace an existing file; otherwise refuse.

    Returns:
        The destination path.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is false.
    """
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
    if container not in ("safetensors", "pickle"):
        raise ValueError(f"unknown container {container!r}")

    def write(tmp: Path) -> None:
        if container == "safetensors":
            from safetensors.torch import save_file

            save_file(tensors, str(tmp), metadata=dict(metadata or {}))
        else:
            torch.save(tensors, tmp)

    try:
        return atomic_write_via_path(path, write, overwrite=overwrite)
    except FileExistsError:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it") from None


# --------------------------------------------------------------------------------------------
# State dict → canonical
# --------------------------------------------------------------------------------------------


def _config_alphas(metadata: Mapping[str, str]) -> tuple[float | None, dict[str, float]]:
    """Reads ``lora_alpha`` and ``alpha_pattern`` of a peft ``LoraConfig`` stored as metadata JSON.

    diffusers pipelines store the UNet's config with keys prefixed ``unet.``; peft and
    ``save_lora_adapter`` store it unprefixed.
    """
    raw = metadata.get(ADAPTER_METADATA_KEY)
    if not raw:
        return None, {}
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise LoraError(f"metadata {ADAPTER_METADATA_KEY!r} is not valid JSON: {exc}") from exc
    if not isinstance(config, dict):
        return None, {}
    if any(k.startswith("unet.") for k in config):
        config = {k[len("unet.") :]: v for k, v in config.items() if k.startswith("unet.")}
    alpha = config.get("lora_alpha")
    pattern = config.get("alpha_pattern") or {}
    return (None if alpha is None else float(alpha)), {k: float(v) for k, v in pattern.items()}


def _pattern_alpha(path: str, patterns: Mapping[str, float]) -> float | None:
    """peft's ``get_pattern_key`` rule: a pattern matches a dotted suffix of the module path."""
    for pattern, value in patterns.items():
        if re.match(rf"(.*\.)?({pattern})$", path):
            return value
    return None


def _matrix(key: str, tensor: Any) -> torch.Tensor:
    """Validates one down/up tensor and returns it as a 2-D fp32 matrix."""
    if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point():
        raise LoraError(f"{key}: expected a floating-point tensor, got {type(tensor).__name__}")
    if tensor.ndim == 4 and tensor.shape[2:] == (1, 1):
        tensor = tensor[:, :, 0, 0]
    if tensor.ndim != 2 or 0 in tensor.shape:
        raise LoraError(f"{key}: expected a 2-D LoRA matrix, got shape {tuple(tensor.shape)}")
    tensor = tensor.to(torch.float32)
    if not torch.isfinite(tensor).all():
        raise LoraError(f"{key}: contains NaN or infinite values")
    return tensor


def _alpha_value(key: str, tensor: Any) -> float:
    if isinstance(tensor, torch.Tensor):
        if tensor.numel() != 1:
            raise LoraError(f"{key}: alpha must be a scalar, got shape {tuple(tensor.shape)}")
        value = float(tensor.float().item())
    elif isinstance(tensor, (int, float)):
        value = float(tensor)
    else:
        raise LoraError(f"{key}: alpha must be a number, got {type(tensor).__name__}")
    if not math.isfinite(value):
        raise LoraError(f"{key}: alpha is not finite ({value})")
    return value


def lora_from_state_dict(
    state: Mapping[str, Any],
    metadata: Mapping[str, str] | None = None,
    *,
    lora_alpha: float | None = None,
    source: str = "<state dict>",
    layout: str | None = None,
) -> LoraWeights:
    """Builds the canonical LoRA from a state dict of any supported format.

    Args:
        state: the state dict (tensor values; other values are reported as unmatched).
        metadata: string metadata; peft/diffusers alphas are read from its ``LoraConfig`` JSON.
        lora_alpha: alpha for modules whose file stores none (DiffSynth ``.ckpt``, old diffusers
            formats, peft without config). ``None`` keeps alpha = rank (scale 1 at strength 1).
        source: name used in messages.
        layout: force a format instead of detecting it.

    Returns:
        The canonical ``LoraWeights``.

    Raises:
        LoraError: no key maps to a Kolors UNet module, or a tensor is malformed
            (wrong rank/shape, down/up mismatch, missing half, NaN).
    """
    metadata = dict(metadata or {})
    keys = [k for k in state if isinstance(k, str)]
    if layout is None:
        found, counts = detect_layout(keys)
        if found is None:
            sample = ", ".join(keys[:3]) or "(no keys)"
            te = sum(k.startswith(("lora_te", "text_encoder", "te_")) for k in keys)
            hint = (
                f" ({te} of {len(keys)} keys target a text encoder, which Kolors LoRAs do not patch)"
                if te
                else ""
            )
            raise LoraError(f"{source}: no key maps to a Kolors UNet module{hint}; keys look like: {sample}")
        chosen: KeyLayout = found
    else:
        if layout not in LAYOUTS:
            raise LoraError(f"unknown LoRA format {layout!r}; known: {', '.join(LAYOUTS)}")
        chosen = LAYOUTS[layout]

    parts: dict[str, dict[Part, str]] = {}
    unmatched: list[str] = []
    for key in keys:
        parsed = parse_key(key, chosen)
        if parsed is None:
            unmatched.append(key)
            continue
        path, part = parsed
        slot = parts.setdefault(path, {})
        if part in slot:
            raise LoraError(f"{source}: keys {slot[part]!r} and {key!r} both give the {part} of {path}")
        slot[part] = key
    unmatched.extend(str(k) for k in state if not isinstance(k, str))

    default_alpha, patterns = _config_alphas(metadata) if chosen.alpha_in_metadata else (None, {})
    modules: dict[str, LoraModule] = {}
    for path, slot in parts.items():
        if "down" not in slot or "up" not in slot:
            have = slot.get("down") or slot.get("up")
            if have is None:  # a lone alpha: nothing to apply
                unmatched.append(slot["alpha"])
                continue
            missing = "up" if "down" in slot else "down"
            raise LoraError(f"{source}: {have!r} has no matching {missing} weight for module {path}")
        raw_down, raw_up = state[slot["down"]], state[slot["up"]]
        if any(
            isinstance(t, torch.Tensor) and t.ndim == 4 and t.shape[2:] != (1, 1) for t in (raw_down, raw_up)
        ):
            unmatched.extend(slot.values())  # conv (LoCon) factors: not a Linear LoRA
            continue
        down, up = _matrix(slot["down"], raw_down), _matrix(slot["up"], raw_up)
        if down.shape[0] != up.shape[1]:
            raise LoraError(
                f"{source}: rank mismatch for {path}: {slot['down']!r} has shape {tuple(down.shape)} "
                f"([rank, in]) but {slot['up']!r} has shape {tuple(up.shape)} ([out, rank])"
            )
        alpha: float | None
        if "alpha" in slot:
            alpha = _alpha_value(slot["alpha"], state[slot["alpha"]])
        else:
            alpha = _pattern_alpha(path, patterns)
            if alpha is None:
                alpha = default_alpha
        if alpha is None and lora_alpha is not None:
            alpha = float(lora_alpha)
        modules[path] = LoraModule(down=down, up=up, alpha=alpha)

    if not modules:
        raise LoraError(f"{source}: no complete LoRA module for a Kolors UNet (format {chosen.name})")
    return LoraWeights(
        modules=dict(sorted(modules.items())),
        format=chosen.name,
        metadata=metadata,
        unmatched=unmatched,
        source=source,
    )


def read_lora(path: str | os.PathLike[str], *, lora_alpha: float | None = None) -> LoraWeights:
    """Reads a LoRA file of any supported format into the canonical form.

    Args:
        path: ``.safetensors``, DiffSynth ``.ckpt`` (or other pickled checkpoint), or a peft /
            diffusers save folder.
        lora_alpha: alpha for modules whose file stores none (e.g. 4.0 for the tutorial's
            DiffSynth ``.ckpt`` trained with ``--lora_alpha 4.0`` to get its trained scale).

    Returns:
        The canonical ``LoraWeights``.

    Raises:
        LoraError: unreadable, unsafe, malformed, or matching no Kolors UNet module.
    """
    state, metadata = load_state_dict(path)
    return lora_from_state_dict(state, metadata, lora_alpha=lora_alpha, source=str(path))
