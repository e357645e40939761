"""Loading Kolors components from the file layouts users hold, real or tiny, by the same code.

Accepted layouts (see ``kolors.md``):

* a Kolors root folder: the diffusers layout (``unet/``, ``vae/``, ``text_encoder/``, ``tokenizer/``,
  ``scheduler/``), the tutorial/DiffSynth ``models`` folder (``kolors/Kolors/...``), or a ComfyUI
  ``models`` folder (``diffusers/Kolors/...``);
* a component folder (``config.json`` plus weights: single, ``fp16`` variant, or sharded with an
  index, as ``.safetensors`` or ``.bin``);
* a single ``.safetensors`` file: a bare UNet (diffusers keys), a VAE (diffusers or original LDM
  keys), or a ChatGLM text encoder (``transformer.encoder.layers.N...`` keys).

Weights are read by this module (never by ``from_pretrained``): ``.safetensors`` with safetensors,
``.bin`` pickles only with ``torch.load(weights_only=True)``, straight onto the target device
(shards in parallel), then cast there. Models are built on the meta device
and the weights assigned, so no random initialisation is paid for. Nothing is ever downloaded and
no remote code is run.
"""

from __future__ import annotations

import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
from diffusers.pipelines.kolors import ChatGLMModel, ChatGLMTokenizer
from diffusers.pipelines.kolors.text_encoder import ChatGLMConfig

from .configs import KOLORS_CHATGLM_CONFIG, KOLORS_SCHEDULER_CONFIG, KOLORS_UNET_CONFIG, SDXL_VAE_CONFIG

__all__ = [
    "ACCEPTED_LAYOUTS",
    "ModelFileError",
    "infer_chatglm_config",
    "infer_unet_config",
    "find_tokenizer",
    "infer_vae_config",
    "load_scheduler",
    "load_state_dict_file",
    "load_text_encoder",
    "load_unet",
    "load_vae",
    "locate_component",
]

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]

ACCEPTED_LAYOUTS = (
    "accepted layouts: a Kolors folder in the diffusers layout (unet/, vae/, text_encoder/, tokenizer/, "
    "scheduler/), the tutorial/DiffSynth models folder (kolors/Kolors/...), a ComfyUI models folder "
    "(diffusers/Kolors/...), a component folder (config.json + weights as .safetensors or .bin, "
    "optionally an fp16 variant or shards with an index), or a single .safetensors file"
)

# Folders, relative to what the user passed, that may hold a Kolors root.
_ROOT_PREFIXES = (
    "",
    "Kolors",
    "Kolors-diffusers",
    "kolors/Kolors",
    "diffusers/Kolors",
    "diffusers/Kolors-diffusers",
    "models/kolors/Kolors",
    "models/diffusers/Kolors",
)
_WEIGHT_STEMS = ("diffusion_pytorch_model", "model", "pytorch_model")
_CHATGLM_PREFIX = "transformer."
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")


class ModelFileError(ValueError):
    """A model file or folder is missing, unreadable, or not the expected component.

    The message lists every path that was looked at and the accepted layouts.
    """

    def __init__(self, what: str, looked_at: list[Path] | None = None, hint: str = ACCEPTED_LAYOUTS) -> None:
        lines = [what]
        if looked_at:
            lines.append("looked for:")
            lines.extend(f"  - {p}" for p in dict.fromkeys(looked_at))
        if hint:
            lines.append(hint)
        super().__init__("\n".join(lines))
        self.looked_at = list(looked_at or [])


# --------------------------------------------------------------------------- reading tensors


def load_state_dict_file(path: PathLike, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """Reads one weights file onto ``device``.

    Args:
        path: A ``.safetensors`` file, or a ``.bin``/``.pt``/``.ckpt`` pickle.
        device: Where the tensors land. On a GPU, safetensors copies each tensor from the mapped
            file straight to the device (no host copy of the whole model: the cold-start path).

    Returns:
        Tensor name to tensor.

    Raises:
        ModelFileError: If the file is missing, unreadable, or a pickle holds anything other than
            tensors and plain containers (pickles are read with ``weights_only=True`` only).
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"weights file not found: {path}", [path])
    if path.suffix not in _WEIGHT_SUFFIXES:
        raise ModelFileError(
            f"{path} is not a weights file (expected one of {', '.join(_WEIGHT_SUFFIXES)})", [path]
        )
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device=str(device))
        except (SafetensorError, OSError) as exc:
            raise ModelFileError(f"cannot read safetensors file {path}: {exc}", [path], hint="") from exc
    from graphgen.pickles import UnsafeOrUnreadablePickle, load_weights_pickle

    try:
        data = load_weights_pickle(path, map_location=device)
    except UnsafeOrUnreadablePickle as exc:
        raise ModelFileError(f"cannot load {path}: {exc}", [path], hint="") from None
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise ModelFileError(f"{path} does not hold a flat dict of tensors", [path], hint="")
    return data


def _safetensors_metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"cannot read JSON file {path}: {exc}", [path], hint="") from exc
    if not isinstance(data, dict):
        raise ModelFileError(f"{path} does not hold a JSON object", [path], hint="")
    return data


def _weight_candidates(folder: Path, dtype: torch.dtype) -> list[tuple[Path, bool]]:
    """Candidate weight files in a component folder, best first: (path, is_index)."""
    variants: list[str | None] = ["fp16", None] if dtype == torch.float16 else [None, "fp16"]
    out: list[tuple[Path, bool]] = []
    for variant in variants:
        infix = f".{variant}" if variant else ""
        for ext in ("safetensors", "bin"):
            for stem in _WEIGHT_STEMS:
                out.append((folder / f"{stem}{infix}.{ext}", False))
                out.append((folder / f"{stem}.{ext}.index{infix}.json", True))
    return out


def _load_folder_weights(
    folder: Path, dtype: torch.dtype, looked: list[Path], device: torch.device | str = "cpu"
) -> dict[str, torch.Tensor] | None:
    """Reads the preferred weights of a component folder, or returns None (recording paths looked at)."""
    for path, is_index in _weight_candidates(folder, dtype):
        looked.append(path)
        if not path.is_file():
            continue
        logger.info("reading weights for %s from %s", dtype, path)
        if not is_index:
            return load_state_dict_file(path, device)
        weight_map = _read_json(path).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise ModelFileError(f"index file {path} has no weight_map", [path], hint="")
        state: dict[str, torch.Tensor] = {}
        shards = list(dict.fromkeys(weight_map.values()))
        # Shards are independent files: read them in parallel (file reads and copies release the GIL).
        with ThreadPoolExecutor(max_workers=max(1, min(4, len(shards)))) as pool:
            for part in pool.map(lambda shard: load_state_dict_file(folder / shard, device), shards):
                state.update(part)
        missing = sorted(set(weight_map) - set(state))
        if missing:
            raise ModelFileError(
                f"shards listed in {path} lack {len(missing)} tensors, e.g. {missing[0]}", [path], hint=""
            )
        return state
    return None


def _find_component(path: Path, names: tuple[str, ...], looked: list[Path]) -> Path | None:
    """Finds a component folder (one with ``config.json``) at ``path`` or below a Kolors root there."""
    candidates = [path] + [
        path / prefix / name if prefix else path / name for name in names for prefix in _ROOT_PREFIXES
    ]
    for cand in candidates:
        looked.append(cand / "config.json")
        if (cand / "config.json").is_file():
            return cand
    return None


def locate_component(path: PathLike, names: tuple[str, ...]) -> tuple[Path | None, list[Path]]:
    """Where a component's weights would be read from, without reading them (for validation).

    Returns the file or component folder (with `config.json` and a weights file or index), or None
    and the paths looked at, as the loaders would look.
    """
    p = Path(path).expanduser()
    looked: list[Path] = []
    if p.is_file():
        return p, looked
    if not p.is_dir():
        return None, [p]
    folder = _find_component(p, names, looked)
    if folder is None:
        return None, looked
    for weights, _ in _weight_candidates(folder, torch.float32):
        if weights.is_file():
            return folder, looked
        looked.append(weights)
    return None, looked


# --------------------------------------------------------------------------- building models


def _assign(model: torch.nn.Module, state: dict[str, torch.Tensor], dtype: torch.dtype, source: Path) -> None:
    """Assigns ``state`` (cast to ``dtype``) to a meta-device ``model``; every tensor must match."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if tuple(expected[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if wrong:
            k = wrong[0]
            parts.append(
                f"{len(wrong)} with wrong shapes (e.g. {k}: {tuple(state[k].shape)} vs {tuple(expected[k].shape)})"
            )
        raise ModelFileError(
            f"the weights in {source} do not fit a {type(model).__name__} with the given config: "
            + "; ".join(parts),
            [source],
        )
    for k, v in state.items():  # in place, so each source tensor is freed as soon as it is cast
        if v.is_floating_point() and v.dtype != dtype:
            state[k] = v.to(dtype)
    model.load_state_dict(state, strict=True, assign=True)


def _finish(model: torch.nn.Module, device: torch.device | str) -> Any:
    for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
        if tensor.is_meta:
            raise ModelFileError(f"{type(model).__name__} tensor {name} was not loaded", [], hint="")
    return model.to(device).eval()


def _from_config(model_class: Any, cfg: dict[str, Any], state: dict[str, torch.Tensor], dtype: torch.dtype,
                 source: Path, device: torch.device | str) -> Any:
    """A diffusers model built from `cfg` on the meta device (no random init paid for), `state` assigned."""
    with torch.device("meta"):
        model = model_class.from_config(cfg)
    _assign(model, state, dtype, source)
    return _finish(model, device)


def _config_override(config: dict[str, Any] | PathLike | None) -> dict[str, Any] | None:
    if config is None or isinstance(config, dict):
        return config
    p = Path(config)
    return _read_json(p / "config.json" if p.is_dir() else p)


def _infer(fn: Any, state: dict[str, torch.Tensor], source: Path, what: str) -> dict[str, Any]:
    """Runs a config inference, turning a missing/odd tensor into a ModelFileError."""
    try:
        return fn(state)
    except (KeyError, ValueError, StopIteration, IndexError, ZeroDivisionError) as exc:
        raise ModelFileError(
            f"{source} does not look like a {what} (cannot infer its config: missing or odd tensor {exc})",
            [source],
        ) from exc


def _resolve(
    path: PathLike, names: tuple[str, ...], dtype: torch.dtype, what: str, device: torch.device | str = "cpu"
) -> tuple[Path, dict[str, torch.Tensor], dict[str, Any] | None]:
    """Returns (source, state dict, config from config.json or None for single files)."""
    p = Path(path).expanduser()
    looked: list[Path] = []
    if p.is_file():
        return p, load_state_dict_file(p, device), None
    if p.is_dir():
        folder = _find_component(p, names, looked)
        if folder is not None:
            state = _load_folder_weights(folder, dtype, looked, device)
            if state is not None:
                return folder, state, _read_json(folder / "config.json")
    else:
        looked.append(p)
    raise ModelFileError(f"no {what} weights found at {p}", looked)


def infer_unet_config(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Infers a Kolors UNet config from diffusers-named weights.

    Widths, depths, transformer depths, cross-attention width, ``encoder_hid_dim`` and the
    time-embedding width are read from shapes; head counts and norm groups cannot be, so the
    SDXL/Kolors conventions (64 channels per head, 32 groups) are used.

    Args:
        state: UNet weights with diffusers key names.

    Returns:
        A ``UNet2DConditionModel`` config.
    """

    def count(prefix: str) -> int:
        idx = {int(k[len(prefix) :].split(".")[0]) for k in state if k.startswith(prefix)}
        return max(idx) + 1 if idx else 0

    levels = count("down_blocks.")
    widths = [state[f"down_blocks.{i}.resnets.0.conv1.weight"].shape[0] for i in range(levels)]
    depths = [count(f"down_blocks.{i}.attentions.0.transformer_blocks.") for i in range(levels)]
    hid = state["encoder_hid_proj.weight"]
    add_in = state["add_embedding.linear_1.weight"].shape[1]
    cross = next(v.shape[1] for k, v in state.items() if k.endswith("attn2.to_k.weight"))
    return {
        **KOLORS_UNET_CONFIG,
        "addition_time_embed_dim": (add_in - hid.shape[1]) // 6,
        "attention_head_dim": [max(1, w // 64) for w in widths],
        "block_out_channels": widths,
        "cross_attention_dim": cross,
        "down_block_types": ["CrossAttnDownBlock2D" if d else "DownBlock2D" for d in depths],
        "encoder_hid_dim": hid.shape[1],
        "in_channels": state["conv_in.weight"].shape[1],
        "layers_per_block": count("down_blocks.0.resnets."),
        "out_channels": state["conv_out.weight"].shape[0],
        "projection_class_embeddings_input_dim": add_in,
        "transformer_layers_per_block": [max(1, d) for d in depths],
        "up_block_types": ["CrossAttnUpBlock2D" if d else "UpBlock2D" for d in reversed(depths)],
    }


def load_unet(
    path: PathLike,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    *,
    config: dict[str, Any] | PathLike | None = None,
) -> UNet2DConditionModel:
    """Loads the Kolors UNet.

    Args:
        path: Kolors root folder, ``unet`` folder, or single ``.safetensors`` file (diffusers keys).
        dtype: Weights dtype. fp16 prefers ``*.fp16.*`` variant files, other dtypes the plain files;
            either falls back to the other.
        device: Where to put the model.
        config: Config (dict, ``config.json`` or its folder) overriding the one found. For a
            single file the default is the file's ``config`` metadata, else ``config.json`` next
            to it, else :func:`infer_unet_config`.

    Returns:
        The UNet in eval mode.

    Raises:
        ModelFileError: If no weights are found or they do not fit.
    """
    source, state, cfg = _resolve(path, ("unet",), dtype, "UNet", device)
    state = {k.removeprefix("unet."): v for k, v in state.items()}
    if any(k.startswith(("input_blocks.", "model.diffusion_model.")) for k in state):
        raise ModelFileError(
            f"{source} holds a UNet with original LDM key names; only diffusers-named UNet files are supported "
            "(e.g. unet/diffusion_pytorch_model.safetensors from Kolors-diffusers)",
            [source],
        )
    cfg = _config_override(config) or cfg
    if cfg is None:
        meta = _safetensors_metadata(source) if source.suffix == ".safetensors" else {}
        if "config" in meta:
            cfg = json.loads(meta["config"])
        elif (source.parent / "config.json").is_file():
            cfg = _read_json(source.parent / "config.json")
        else:
            cfg = _infer(infer_unet_config, state, source, "Kolors UNet")
    return _from_config(UNet2DConditionModel, cfg, state, dtype, source, device)


def infer_vae_config(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Infers an SDXL-style VAE config from diffusers-named weights (32 norm groups, scale 0.13025).

    Args:
        state: VAE weights with diffusers key names.

    Returns:
        An ``AutoencoderKL`` config.
    """
    levels = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("encoder.down_blocks."))
    layers = 1 + max(int(k.split(".")[4]) for k in state if k.startswith("encoder.down_blocks.0.resnets."))
    return {
        **SDXL_VAE_CONFIG,
        "block_out_channels": [
            state[f"encoder.down_blocks.{i}.resnets.0.conv1.weight"].shape[0] for i in range(levels)
        ],
        "down_block_types": ["DownEncoderBlock2D"] * levels,
        "in_channels": state["encoder.conv_in.weight"].shape[1],
        "latent_channels": state["encoder.conv_out.weight"].shape[0] // 2,
        "layers_per_block": layers,
        "mid_block_add_attention": "encoder.mid_block.attentions.0.to_q.weight" in state,
        "out_channels": state["decoder.conv_out.weight"].shape[0],
        "up_block_types": ["UpDecoderBlock2D"] * levels,
    }


def load_vae(
    path: PathLike,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    *,
    config: dict[str, Any] | PathLike | None = None,
) -> AutoencoderKL:
    """Loads the SDXL/Kolors VAE.

    A single file may use diffusers key names or original LDM names (``encoder.down.0.block.0...``,
    optionally prefixed ``first_stage_model.``/``vae.``); LDM names are converted with diffusers'
    single-file converter against a local config, never a hub lookup.

    Args:
        path: Kolors root, tutorial models folder, ``vae`` folder, or single ``.safetensors`` file.
        dtype: Weights dtype (see :func:`load_unet` for variant preference). Note the original SDXL
            VAE overflows in fp16; the fp16-fix VAE does not.
        device: Where to put the model.
        config: Config overriding the one found; for single files the default is inferred.

    Returns:
        The VAE in eval mode.

    Raises:
        ModelFileError: If no weights are found or they do not fit.
    """
    source, state, cfg = _resolve(path, ("vae", "sdxl-vae-fp16-fix"), dtype, "VAE", device)
    if any(".down.0.block." in k or k.startswith(("first_stage_model.", "vae.")) for k in state):
        from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

        levels = 1 + max(int(k.split(".down.")[1].split(".")[0]) for k in state if ".down." in k)
        shape_cfg = {
            "down_block_types": ["DownEncoderBlock2D"] * levels,
            "up_block_types": ["UpDecoderBlock2D"] * levels,
        }
        state = convert_ldm_vae_checkpoint(state, shape_cfg)
    cfg = _config_override(config) or cfg or _infer(infer_vae_config, state, source, "VAE")
    return _from_config(AutoencoderKL, cfg, state, dtype, source, device)


def infer_chatglm_config(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Infers a ChatGLM config from its weights (``transformer.`` prefix already removed).

    Args:
        state: ChatGLM weights.

    Returns:
        A ``ChatGLMConfig`` dict (Kolors' ChatGLM3 values for everything shapes do not tell).
    """
    layer = "encoder.layers.0."
    emb = state["embedding.word_embeddings.weight"]
    proj = state[layer + "self_attention.dense.weight"].shape[1]
    inv_freq = state.get("rotary_pos_emb.inv_freq")
    kv = 4 * inv_freq.numel() if inv_freq is not None else 128
    heads = proj // kv
    qkv_out = state[layer + "self_attention.query_key_value.weight"].shape[0]
    groups = (qkv_out - proj) // (2 * kv)
    layers = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("encoder.layers."))
    return {
        **KOLORS_CHATGLM_CONFIG,
        "add_bias_linear": layer + "self_attention.dense.bias" in state,
        "add_qkv_bias": layer + "self_attention.query_key_value.bias" in state,
        "ffn_hidden_size": state[layer + "mlp.dense_4h_to_h.weight"].shape[1],
        "hidden_size": emb.shape[1],
        "kv_channels": kv,
        "multi_query_attention": groups != heads,
        "multi_query_group_num": groups if groups != heads else 1,
        "num_attention_heads": heads,
        "num_layers": layers,
        "padded_vocab_size": emb.shape[0],
        "post_layer_norm": "encoder.final_layernorm.weight" in state,
        "rmsnorm": layer + "input_layernorm.bias" not in state,
    }


def find_tokenizer(source: PathLike, tokenizer_path: PathLike | None = None) -> Path | None:
    """The ``tokenizer.model`` :func:`load_text_encoder` would use for ``source``, or None (nothing is read)."""
    return _find_tokenizer(Path(source), tokenizer_path, [])


def _find_tokenizer(source: Path, tokenizer_path: PathLike | None, looked: list[Path]) -> Path | None:
    def under_root(root: Path) -> list[Path]:
        return [
            root / prefix / name if prefix else root / name
            for prefix in _ROOT_PREFIXES
            for name in ("tokenizer", "text_encoder")
        ]

    bases: list[Path] = []
    if tokenizer_path is not None:
        tp = Path(tokenizer_path).expanduser()
        if tp.is_file():
            return tp
        bases += [tp, *under_root(tp)]
    folder = source if source.is_dir() else source.parent
    bases += [folder, folder / "tokenizer", folder.parent / "tokenizer"]
    if source.is_file():  # e.g. ComfyUI models/LLM/x.safetensors next to models/diffusers/Kolors
        bases += under_root(folder.parent)
    for base in bases:
        looked.append(base / "tokenizer.model")
        if (base / "tokenizer.model").is_file():
            return base / "tokenizer.model"
    return None


def load_text_encoder(
    path: PathLike,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    *,
    tokenizer_path: PathLike | None = None,
    config: dict[str, Any] | PathLike | None = None,
) -> tuple[ChatGLMModel, ChatGLMTokenizer]:
    """Loads the ChatGLM text encoder and its tokenizer (diffusers' Kolors classes).

    Args:
        path: Kolors root, ``text_encoder`` folder (safetensors or ``.bin`` shards), or a single
            ChatGLM ``.safetensors`` file (config inferred with :func:`infer_chatglm_config`).
        dtype: Weights dtype (see :func:`load_unet` for variant preference).
        device: Where to put the model.
        tokenizer_path: ``tokenizer.model`` file, its folder, or a Kolors root holding one; by
            default it is looked for next to the weights and in a sibling ``tokenizer`` folder.
        config: Config overriding the one found.

    Returns:
        (model in eval mode, tokenizer padding on the left).

    Raises:
        ModelFileError: If weights or tokenizer are not found, or the weights do not fit.
    """
    source, state, cfg = _resolve(path, ("text_encoder",), dtype, "ChatGLM text encoder", device)
    state = {k.removeprefix(_CHATGLM_PREFIX): v for k, v in state.items()}
    looked: list[Path] = []
    spm = _find_tokenizer(source, tokenizer_path, looked)
    if spm is None:
        raise ModelFileError(
            f"no ChatGLM tokenizer (tokenizer.model) found for {source}; pass tokenizer_path "
            "(a tokenizer.model file, its folder, or a Kolors folder)",
            looked,
        )
    cfg = _config_override(config) or cfg
    if cfg is None and (source.parent / "config.json").is_file():
        cfg = _read_json(source.parent / "config.json")
    if cfg is None or "num_layers" not in cfg:
        cfg = _infer(infer_chatglm_config, state, source, "ChatGLM text encoder")
    cfg = {k: v for k, v in cfg.items() if k not in ("auto_map", "torch_dtype", "dtype", "_name_or_path")}
    cfg.setdefault("original_rope", True)
    config_obj = ChatGLMConfig(**cfg)
    with torch.device("meta"):
        model = ChatGLMModel(config_obj, device="meta")
    if "rotary_pos_emb.inv_freq" not in state:
        dim = model.rotary_pos_emb.dim
        state["rotary_pos_emb.inv_freq"] = 1.0 / (
            10000 ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim)
        )
    if "output_layer.weight" not in state:  # unused by Kolors (only hidden states are read)
        state["output_layer.weight"] = torch.zeros(config_obj.padded_vocab_size, config_obj.hidden_size)
    _assign(model, state, dtype, source)
    model.config.dtype = dtype
    tokenizer = ChatGLMTokenizer(vocab_file=str(spm), padding_side="left")
    return _finish(model, device), tokenizer


def load_scheduler(path: PathLike | None = None) -> EulerDiscreteScheduler:
    """Loads the Euler scheduler, with Kolors' config when none is on disk.

    Args:
        path: A Kolors root, a ``scheduler`` folder, a ``scheduler_config.json`` file, or None.

    Returns:
        The scheduler.

    Raises:
        ModelFileError: If ``path`` is given but holds no scheduler config.
    """
    if path is None:
        return EulerDiscreteScheduler.from_config(KOLORS_SCHEDULER_CONFIG)
    p = Path(path).expanduser()
    if p.is_file():
        return EulerDiscreteScheduler.from_config(_read_json(p))
    looked = [
        (p / prefix / "scheduler" if prefix else p) / "scheduler_config.json"
        for prefix in ("",) + _ROOT_PREFIXES
    ]
    looked.insert(1, p / "scheduler" / "scheduler_config.json")
    for cand in dict.fromkeys(looked):
        if cand.is_file():
            return EulerDiscreteScheduler.from_config(_read_json(cand))
    raise ModelFileError(f"no scheduler config found at {p}", looked)
