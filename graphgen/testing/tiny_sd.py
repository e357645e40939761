"""Tiny random-weight SD1.5, SDXL and SDXL-refiner checkpoints, written as users download them.

Each family keeps its real topology and its fixed rules (SD1.5: 4 levels, 8 heads per block,
conv projections, CLIP ViT-L; SDXL: 3 levels, 64 channels per head, linear projections, CLIP ViT-L
+ OpenCLIP ViT-bigG with pooled projection, 256-wide size embeddings; the refiner: 4 levels,
bigG only, aesthetic-score embedding; 32 norm groups everywhere, 64 channels per CLIP head, the
standard 49,408-token CLIP vocabulary) at widths that run in milliseconds on a CPU. So the
loaders read them exactly as they read the real files: the architecture from tensor shapes, the
rest from the family rules.

:func:`build_tiny_sd` builds the diffusers components in memory (deterministic per seed);
:func:`checkpoint_state_dict` renames them to the original single-file layout
(``model.diffusion_model.*``, ``first_stage_model.*``, ``cond_stage_model.transformer.*`` or
``conditioner.embedders.N.*``), the inverse of diffusers' single-file conversion;
:func:`kohya_lora_state_dict` makes a small kohya LoRA (UNet and text encoders) for a model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from graphgen_nodes.diffusion.clip_tokenizer import VOCAB_SIZE, clip_tokenizer
from graphgen_nodes.diffusion.comfy_samplers import SD_SCHEDULER_CONFIG
from graphgen_nodes.diffusion.ldm_keys import LDM_RESNET_LEAVES, UnetLayout, unet_block_rows
from graphgen_nodes.lora.formats import kohya_te_name

__all__ = [
    "FAMILIES",
    "TinySD",
    "build_tiny_sd",
    "checkpoint_state_dict",
    "kohya_lora_state_dict",
    "unet_diffusers_to_ldm",
    "write_tiny_sd_models",
]

Family = Literal["sd15", "sdxl", "sdxl_refiner"]
FAMILIES: tuple[Family, ...] = ("sd15", "sdxl", "sdxl_refiner")

#: Tiny CLIP text encoders: one 64-wide head (CLIP's 64 channels per head), 3 layers so that
#: "penultimate layer" and CLIPSetLastLayer(-2) mean something.
_CLIP_L = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 3, "num_attention_heads": 1,
           "projection_dim": 64, "hidden_act": "quick_gelu"}
_CLIP_G = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 3, "num_attention_heads": 1,
           "projection_dim": 64, "hidden_act": "gelu"}

#: Tiny UNets with each family's block types and rules (real values in the comments).
_UNETS: dict[str, dict[str, Any]] = {
    "sd15": {
        "block_out_channels": [32, 32, 64, 64],  # 320, 640, 1280, 1280
        "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
        "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
        "layers_per_block": 2,
        "attention_head_dim": 8,  # SD1.5: 8 heads per block
        "cross_attention_dim": 64,  # 768
        "norm_num_groups": 32,
        "use_linear_projection": False,
    },
    "sdxl": {
        "block_out_channels": [32, 64, 128],  # 320, 640, 1280
        "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
        "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
        "layers_per_block": 2,
        "attention_head_dim": [1, 1, 2],  # 64 channels per head: 5, 10, 20
        "transformer_layers_per_block": [1, 2, 2],  # 1, 2, 10
        "cross_attention_dim": 128,  # 768 + 1280
        "norm_num_groups": 32,
        "use_linear_projection": True,
        "addition_embed_type": "text_time",
        "addition_time_embed_dim": 256,
        "projection_class_embeddings_input_dim": 6 * 256 + 64,  # 6·256 + 1280
    },
    "sdxl_refiner": {
        "block_out_channels": [32, 64, 128, 128],  # 384, 768, 1536, 1536
        "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
        "layers_per_block": 2,
        "attention_head_dim": [1, 1, 2, 2],
        "transformer_layers_per_block": [1, 2, 2, 2],  # 4 on the real refiner
        "cross_attention_dim": 64,  # 1280
        "norm_num_groups": 32,
        "use_linear_projection": True,
        "addition_embed_type": "text_time",
        "addition_time_embed_dim": 256,
        "projection_class_embeddings_input_dim": 5 * 256 + 64,  # 5·256 + 1280 (aesthetic score)
    },
}

#: The released architectures (for GPU benchmarks with random weights; nothing is downloaded).
FULL_UNETS: dict[str, dict[str, Any]] = {
    "sd15": {**_UNETS["sd15"], "block_out_channels": [320, 640, 1280, 1280], "cross_attention_dim": 768},
    "sdxl": {**_UNETS["sdxl"], "block_out_channels": [320, 640, 1280], "attention_head_dim": [5, 10, 20],
             "transformer_layers_per_block": [1, 2, 10], "cross_attention_dim": 2048,
             "projection_class_embeddings_input_dim": 2816},
}
FULL_CLIP_L = {**_CLIP_L, "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
               "num_attention_heads": 12, "projection_dim": 768}
FULL_CLIP_G = {**_CLIP_G, "hidden_size": 1280, "intermediate_size": 5120, "num_hidden_layers": 32,
               "num_attention_heads": 20, "projection_dim": 1280}
FULL_VAE = {"block_out_channels": [128, 256, 512, 512], "layers_per_block": 2}

#: Tiny 4-level VAE (latents = pixels / 8) with 32 norm groups.
_VAE = {"block_out_channels": [32, 32, 64, 64], "layers_per_block": 1, "norm_num_groups": 32,
        "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
        "latent_channels": 4, "sample_size": 64}




@dataclass
class TinySD:
    """The diffusers components of one tiny checkpoint (fp32, CPU, eval mode)."""

    family: Family
    unet: Any
    vae: Any
    text_encoder: Any | None
    text_encoder_2: Any | None
    tokenizer: Any | None
    tokenizer_2: Any | None

    def pipeline(self, scheduler: Any | None = None) -> Any:
        """The matching diffusers pipeline on these very modules (Euler unless told)."""
        import diffusers

        scheduler = scheduler or diffusers.EulerDiscreteScheduler.from_config(SD_SCHEDULER_CONFIG)
        if self.family == "sd15":
            return diffusers.StableDiffusionPipeline(
                vae=self.vae, text_encoder=self.text_encoder, tokenizer=self.tokenizer, unet=self.unet,
                scheduler=scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        if self.family == "sdxl":
            return diffusers.StableDiffusionXLPipeline(
                vae=self.vae, text_encoder=self.text_encoder, text_encoder_2=self.text_encoder_2,
                tokenizer=self.tokenizer, tokenizer_2=self.tokenizer_2, unet=self.unet, scheduler=scheduler)
        return diffusers.StableDiffusionXLImg2ImgPipeline(
            vae=self.vae, text_encoder=None, text_encoder_2=self.text_encoder_2, tokenizer=None,
            tokenizer_2=self.tokenizer_2, unet=self.unet, scheduler=scheduler, requires_aesthetics_score=True)


def _clip(config: dict[str, Any], with_projection: bool) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    cfg = CLIPTextConfig(vocab_size=VOCAB_SIZE, max_position_embeddings=77, bos_token_id=49406,
                         eos_token_id=49407, pad_token_id=1, **config)
    cls: Any = CLIPTextModelWithProjection if with_projection else CLIPTextModel
    return cls(cfg).to(torch.float32).eval()


def build_tiny_sd(family: Family, seed: int = 0, *, full: bool = False) -> TinySD:
    """Builds one tiny checkpoint's components in memory, identically for a seed.

    ``full=True`` builds the released sizes instead (SD1.5 and SDXL base; for GPU benchmarks: build
    them under ``torch.device("cuda")``). The global torch RNG is left as it was.
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel

    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; one of {', '.join(FAMILIES)}")
    scaling = 0.18215 if family == "sd15" else 0.13025
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet: Any = UNet2DConditionModel(sample_size=8, **(FULL_UNETS if full else _UNETS)[family])
        torch.manual_seed(seed + 1)
        vae: Any = AutoencoderKL(**{**_VAE, **(FULL_VAE if full else {})}, scaling_factor=scaling,
                                 force_upcast=family != "sd15")
        torch.manual_seed(seed + 2)
        te1 = _clip(FULL_CLIP_L if full else _CLIP_L, False) if family != "sdxl_refiner" else None
        torch.manual_seed(seed + 3)
        te2 = _clip(FULL_CLIP_G if full else _CLIP_G, True) if family != "sd15" else None
    unet.eval()
    vae.eval()
    tok1 = clip_tokenizer() if te1 is not None else None
    tok2 = clip_tokenizer(pad_token="!") if te2 is not None else None
    return TinySD(family, unet, vae, te1, te2, tok1, tok2)


# --------------------------------------------------------------------------- original key layout

def _unet_layout(unet: Any) -> UnetLayout:
    cfg = unet.config
    attention = [i for i, t in enumerate(cfg.down_block_types) if "CrossAttn" in t]
    return UnetLayout(len(cfg.block_out_channels), cfg.layers_per_block, attention)


def unet_diffusers_to_ldm(state: dict[str, torch.Tensor], layout: UnetLayout) -> dict[str, torch.Tensor]:
    """Renames diffusers UNet weights to LDM names (``input_blocks.4.1.…``), the tensors unchanged."""
    rows = sorted(unet_block_rows(layout), key=lambda r: -len(r[1]))
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        for ldm, diff in rows:
            if key.startswith(diff + "."):
                rest = key[len(diff) + 1 :]
                if ".resnets." in diff + "." or diff.startswith("mid_block.resnets"):
                    for d_leaf, l_leaf in LDM_RESNET_LEAVES:
                        if rest.startswith(d_leaf + "."):
                            rest = l_leaf + rest[len(d_leaf) :]
                            break
                out[f"{ldm}.{rest}"] = value
                break
        else:
            raise KeyError(f"no LDM name for UNet weight {key}")
    return out


def _openclip_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """HF ``CLIPTextModelWithProjection`` weights → OpenCLIP names (packed q/k/v, transposed projection)."""
    out: dict[str, torch.Tensor] = {}
    packed: dict[str, dict[str, dict[str, torch.Tensor]]] = {}
    for key, value in state.items():
        if key.endswith("position_ids"):
            continue
        if key == "text_projection.weight":
            out["text_projection"] = value.T.contiguous()
            continue
        if key == "text_model.embeddings.token_embedding.weight":
            out["token_embedding.weight"] = value
            continue
        if key == "text_model.embeddings.position_embedding.weight":
            out["positional_embedding"] = value
            continue
        if key.startswith("text_model.final_layer_norm."):
            out["ln_final." + key.rsplit(".", 1)[1]] = value
            continue
        layer, rest = key.removeprefix("text_model.encoder.layers.").split(".", 1)
        base = f"transformer.resblocks.{layer}."
        if rest.startswith("self_attn.") and rest.split(".")[1] in ("q_proj", "k_proj", "v_proj"):
            proj, kind = rest.split(".")[1:]
            packed.setdefault(base + "attn.in_proj_", {}).setdefault(kind, {})[proj[0]] = value
            continue
        rest = (rest.replace("self_attn.out_proj", "attn.out_proj").replace("layer_norm1", "ln_1")
                .replace("layer_norm2", "ln_2").replace("mlp.fc1", "mlp.c_fc").replace("mlp.fc2", "mlp.c_proj"))
        out[base + rest] = value
    for prefix, kinds in packed.items():
        for kind, parts in kinds.items():
            out[prefix + kind] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    return out


def _hf_clip_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CLIP ViT-L weights under the ``text_model.`` names the released files use.

    (transformers 5's ``CLIPTextModel`` drops that prefix from its own state dict.)
    """
    return {(k if k.startswith(("text_model.", "text_projection")) else "text_model." + k): v
            for k, v in state.items()}


def checkpoint_state_dict(tiny: TinySD) -> dict[str, torch.Tensor]:
    """The single-file checkpoint of ``tiny`` in the original LDM/SGM key layout."""
    from graphgen.testing.tiny_kolors import vae_diffusers_to_ldm

    sd: dict[str, torch.Tensor] = {}
    te1: Any = tiny.text_encoder
    te2: Any = tiny.text_encoder_2
    unet = unet_diffusers_to_ldm(tiny.unet.state_dict(), _unet_layout(tiny.unet))
    sd.update({"model.diffusion_model." + k: v for k, v in unet.items()})
    sd.update({"first_stage_model." + k: v for k, v in vae_diffusers_to_ldm(tiny.vae.state_dict()).items()})
    if tiny.family == "sd15":
        te = _hf_clip_names(te1.state_dict())
        sd.update({"cond_stage_model.transformer." + k: v for k, v in te.items()})
        # real SD1.5 files carry the position ids buffer and DDPM schedule buffers
        sd["cond_stage_model.transformer.text_model.embeddings.position_ids"] = torch.arange(77)[None]
        sd["alphas_cumprod"] = _alphas_cumprod()
    elif tiny.family == "sdxl":
        te = _hf_clip_names(te1.state_dict())
        sd.update({"conditioner.embedders.0.transformer." + k: v for k, v in te.items()})
        g = _openclip_names(te2.state_dict())
        sd.update({"conditioner.embedders.1.model." + k: v for k, v in g.items()})
        sd["conditioner.embedders.1.model.logit_scale"] = torch.tensor(4.6052)
    else:
        g = _openclip_names(te2.state_dict())
        sd.update({"conditioner.embedders.0.model." + k: v for k, v in g.items()})
    return {k: v.detach().contiguous() for k, v in sd.items()}


def _alphas_cumprod() -> torch.Tensor:
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, 0).to(torch.float32)


# --------------------------------------------------------------------------- kohya LoRA

def kohya_lora_state_dict(tiny: TinySD, rank: int = 4, alpha: float = 2.0, seed: int = 0) -> dict[str, torch.Tensor]:
    """A kohya sd-scripts LoRA on every attention projection of the UNet and the text encoders.

    Names as sd-scripts writes them: diffusers module paths for SD1.5 UNets
    (``lora_unet_down_blocks_0_attentions_0_…``), LDM names for SDXL
    (``lora_unet_input_blocks_4_1_…``); ``lora_te_`` (SD1.5) or ``lora_te1_``/``lora_te2_`` (SDXL)
    for the CLIP encoders; ``.alpha`` per module. ``up`` is not zero, so the LoRA changes images.
    """
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    ldm = dict((d, lname) for lname, d in unet_block_rows(_unet_layout(tiny.unet)))

    def add(name: str, module: torch.nn.Linear) -> None:
        out[f"{name}.lora_down.weight"] = torch.randn(rank, module.in_features, generator=gen) * 0.3
        out[f"{name}.lora_up.weight"] = torch.randn(module.out_features, rank, generator=gen) * 0.3
        out[f"{name}.alpha"] = torch.tensor(float(alpha))

    for path, module in tiny.unet.named_modules():
        leaf = path.split(".")[-1]
        if not isinstance(module, torch.nn.Linear) or not (leaf in ("to_q", "to_k", "to_v") or path.endswith("to_out.0")):
            continue
        if tiny.family != "sd15":
            block = next(d for d in sorted(ldm, key=len, reverse=True) if path.startswith(d + "."))
            path = ldm[block] + path[len(block):]
        out_name = "lora_unet_" + path.replace(".", "_")
        add(out_name, module)
    encoders = [("lora_te", tiny.text_encoder)] if tiny.family == "sd15" else \
        [("lora_te1", tiny.text_encoder), ("lora_te2", tiny.text_encoder_2)]
    for prefix, encoder in encoders:
        if encoder is None:
            continue
        for path, module in encoder.named_modules():
            if isinstance(module, torch.nn.Linear) and "self_attn" in path:
                add(f"{prefix}_{kohya_te_name(path)}", module)
    return out


# --------------------------------------------------------------------------- writing

@dataclass
class TinySDPaths:
    """Where :func:`write_tiny_sd_models` put the files (a ComfyUI models folder)."""

    models: Path
    checkpoints: dict[str, Path]
    loras: dict[str, Path]


CHECKPOINT_NAMES = {"sd15": "v1-5-pruned-emaonly.safetensors", "sdxl": "sd_xl_base_1.0.safetensors",
                    "sdxl_refiner": "sd_xl_refiner_1.0.safetensors"}
SD15_FP16_NAME = "v1-5-pruned-emaonly-fp16.safetensors"
LORA_NAMES = {"sd15": "tiny_sd15_lora.safetensors", "sdxl": "tiny_sdxl_lora.safetensors"}


def write_tiny_sd_models(models: Path, seed: int = 0) -> TinySDPaths:
    """Writes the tiny checkpoints and LoRAs into a ComfyUI models folder (``checkpoints/``, ``loras/``).

    The checkpoints carry the names of the real releases, so ComfyUI's default graphs run on them
    unchanged (SD1.5 also as ``v1-5-pruned-emaonly-fp16.safetensors``, fp16, the name the editor's
    default graph asks for). Existing files are replaced only by identical content.
    """
    from safetensors.torch import save_file

    models = Path(models)
    (models / "checkpoints").mkdir(parents=True, exist_ok=True)
    (models / "loras").mkdir(parents=True, exist_ok=True)
    checkpoints: dict[str, Path] = {}
    loras: dict[str, Path] = {}
    for family in FAMILIES:
        tiny = build_tiny_sd(family, seed)
        path = models / "checkpoints" / CHECKPOINT_NAMES[family]
        state = checkpoint_state_dict(tiny)
        save_file(state, str(path))
        checkpoints[family] = path
        if family == "sd15":  # the name ComfyUI's default editor graph asks for, in fp16 as released
            half = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
            save_file(half, str(models / "checkpoints" / SD15_FP16_NAME))
        if family in LORA_NAMES:
            lpath = models / "loras" / LORA_NAMES[family]
            save_file(kohya_lora_state_dict(tiny, seed=seed), str(lpath))
            loras[family] = lpath
    return TinySDPaths(models, checkpoints, loras)
