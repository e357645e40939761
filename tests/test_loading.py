"""Tests for graphgen_nodes.kolors.loading and .devices on the tiny models in every file layout."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from graphgen.testing import tiny_kolors as tiny  # noqa: E402
from graphgen_nodes.kolors import loading  # noqa: E402
from graphgen_nodes.kolors.devices import resolve_device, resolve_dtype  # noqa: E402
from graphgen_nodes.kolors.loading import ModelFileError  # noqa: E402

F32, F16 = torch.float32, torch.float16
PROMPTS = ["一只可爱的小猫坐在木桌上", ""]


# --------------------------------------------------------------------------- model outputs


def unet_out(unet) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    hidden = unet.config.encoder_hid_dim
    latents = torch.randn(1, 4, 8, 8, generator=gen)
    cond = torch.randn(1, 256, hidden, generator=gen)
    added = {
        "text_embeds": torch.randn(1, hidden, generator=gen),
        "time_ids": torch.tensor([[64.0, 64, 0, 0, 64, 64]]),
    }
    dt = unet.dtype
    with torch.no_grad():
        out = unet(
            latents.to(dt),
            400,
            encoder_hidden_states=cond.to(dt),
            added_cond_kwargs={k: v.to(dt) for k, v in added.items()},
        ).sample
    return out.float()


def vae_out(vae) -> torch.Tensor:
    image = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        latents = vae.encode(image.to(vae.dtype)).latent_dist.mean
        return torch.cat([latents.flatten(), vae.decode(latents).sample.flatten()]).float()


def te_out(text_encoder, tokenizer) -> torch.Tensor:
    enc = tokenizer(PROMPTS, padding="max_length", max_length=256, truncation=True, return_tensors="pt")
    with torch.no_grad():
        out = text_encoder(
            input_ids=enc["input_ids"],
            attention_mask=enc["attention_mask"],
            position_ids=enc["position_ids"],
            output_hidden_states=True,
        )
    return torch.cat([out.hidden_states[-2].flatten(), out.hidden_states[-1][-1].flatten()]).float()


@pytest.fixture(scope="module")
def reference(tiny_components):
    c = tiny_components
    return {"unet": unet_out(c.unet), "vae": vae_out(c.vae), "te": te_out(c.text_encoder, c.tokenizer)}


def check(actual: torch.Tensor, expected: torch.Tensor, exact: bool) -> None:
    assert torch.isfinite(actual).all()
    if exact:
        # Same weights, same inputs: equal up to kernel choice (oneDNN may pick another
        # algorithm for a differently laid-out copy of the same tensors).
        err = (actual - expected).abs().max().item()
        assert err <= 1e-5 * max(1.0, expected.abs().max().item()), err
    else:
        err = (actual - expected).abs().max().item()
        assert err <= 0.02 * expected.abs().max().item(), err


def tensors_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k].to(sa[k].dtype)) for k in sa)


# --------------------------------------------------------------------------- every layout

FOLDER_CASES = {
    "tutorial-models": ("tutorial_models", F32, True),
    "tutorial-kolors": ("tutorial_kolors", F32, True),
    "diffusers-fp32": ("diffusers_root", F32, True),
    "diffusers-fp16-variant": ("diffusers_root", F16, False),
    "comfyui-models": ("comfyui_models", F32, True),
}


@pytest.mark.parametrize("case", list(FOLDER_CASES))
def test_folder_layouts_match_in_memory_models(case, tiny_models, tiny_components, reference):
    attr, dtype, exact = FOLDER_CASES[case]
    root = getattr(tiny_models, attr)
    unet = loading.load_unet(root, dtype, "cpu")
    vae = loading.load_vae(root, dtype, "cpu")
    te, tok = loading.load_text_encoder(root, dtype, "cpu")
    for model in (unet, vae, te):
        assert model.dtype == dtype and not model.training
    if exact:  # the weights themselves are bit-identical to the in-memory models
        assert tensors_equal(unet, tiny_components.unet) and tensors_equal(vae, tiny_components.vae)
    check(unet_out(unet), reference["unet"], exact)
    check(vae_out(vae), reference["vae"], exact)
    check(te_out(te, tok), reference["te"], exact)
    enc = tok(PROMPTS, padding="max_length", max_length=256, return_tensors="pt")
    ref = tiny_components.tokenizer(PROMPTS, padding="max_length", max_length=256, return_tensors="pt")
    assert torch.equal(enc["input_ids"], ref["input_ids"])
    sched = loading.load_scheduler(root)
    assert sched.config.num_train_timesteps == 1100 and sched.config.beta_end == 0.014


def test_component_folders(tiny_models, reference):
    kolors = tiny_models.tutorial_kolors
    check(unet_out(loading.load_unet(kolors / "unet")), reference["unet"], True)
    check(vae_out(loading.load_vae(tiny_models.tutorial_fp16_vae)), reference["vae"], True)
    te, tok = loading.load_text_encoder(kolors / "text_encoder")  # .bin shards + tokenizer inside
    check(te_out(te, tok), reference["te"], True)
    te, tok = loading.load_text_encoder(
        tiny_models.diffusers_root / "text_encoder"
    )  # tokenizer in ../tokenizer
    check(te_out(te, tok), reference["te"], True)


def test_comfyui_single_files(tiny_models, tiny_components, reference, monkeypatch):
    import socket

    def no_network(*args, **kwargs):
        raise AssertionError("a loader tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    vae = loading.load_vae(tiny_models.comfyui_vae_file, F32)  # LDM key names, config inferred
    check(vae_out(vae), reference["vae"], True)
    assert vae.config.scaling_factor == 0.13025
    assert list(vae.config.block_out_channels) == list(tiny.TINY_VAE_CONFIG["block_out_channels"])

    unet = loading.load_unet(tiny_models.comfyui_unet_file, F32)  # fp16 file, bare UNet
    check(unet_out(unet), reference["unet"], False)

    # tokenizer found beside the file in models/diffusers/Kolors, or passed explicitly
    for kwargs in ({}, {"tokenizer_path": tiny_models.diffusers_root}):
        te, tok = loading.load_text_encoder(tiny_models.comfyui_llm_file, F32, **kwargs)
        check(te_out(te, tok), reference["te"], False)
    cfg = te.config
    for key in (
        "num_layers",
        "hidden_size",
        "num_attention_heads",
        "kv_channels",
        "multi_query_group_num",
        "ffn_hidden_size",
        "padded_vocab_size",
        "add_qkv_bias",
    ):
        assert getattr(cfg, key) == tiny.TINY_CHATGLM_CONFIG[key], key
    te16, _ = loading.load_text_encoder(tiny_models.comfyui_llm_file, F16)
    assert te16.dtype == F16
    check(te_out(te16, tok), reference["te"], False)


# --------------------------------------------------------------------------- variants


def _component_copy(src: Path, dst: Path, files: list[str]) -> Path:
    dst.mkdir(parents=True)
    for name in ["config.json", *files]:
        shutil.copy(src / name, dst / name)
    return dst


def test_variant_preference_and_fallback(tiny_models, tiny_components, tmp_path):
    from safetensors.torch import save_file

    # A VAE folder whose fp16 variant holds *different* weights (halved), so we can tell which was read.
    folder = _component_copy(
        tiny_models.diffusers_root / "vae", tmp_path / "vae", ["diffusion_pytorch_model.safetensors"]
    )
    plain = loading.load_state_dict_file(folder / "diffusion_pytorch_model.safetensors")
    variant = {k: (v * 0.5).half() for k, v in plain.items()}
    save_file(variant, str(folder / "diffusion_pytorch_model.fp16.safetensors"))

    def same(model, state):
        return all(torch.equal(v, state[k].to(v.dtype)) for k, v in model.state_dict().items())

    assert same(loading.load_vae(folder, F32), plain)  # fp32 prefers the plain file
    assert same(loading.load_vae(folder, torch.bfloat16), plain)  # so does bf16
    assert same(loading.load_vae(folder, F16), variant)  # fp16 prefers the variant
    (folder / "diffusion_pytorch_model.safetensors").unlink()
    fallback = loading.load_vae(folder, F32)  # only the variant: fp32 falls back to it
    assert fallback.dtype == F32 and same(fallback, variant)
    (folder / "diffusion_pytorch_model.fp16.safetensors").rename(
        folder / "diffusion_pytorch_model.safetensors"
    )
    assert same(loading.load_vae(folder, F16), variant)  # only a plain file: fp16 falls back to it

    # the diffusers text encoder's fp16 variant is sharded with an index; fp16 reads those shards
    te_dir = tiny_models.diffusers_root / "text_encoder"
    te16, _ = loading.load_text_encoder(tiny_models.diffusers_root, F16)
    shard_state: dict[str, torch.Tensor] = {}
    for shard in sorted(te_dir.glob("model.fp16-*-of-00002.safetensors")):
        shard_state.update(loading.load_state_dict_file(shard))
    assert len(shard_state) == len(te16.state_dict()) and same(te16, shard_state)
    assert tensors_equal(loading.load_text_encoder(te_dir, F32)[0], tiny_components.text_encoder)


# --------------------------------------------------------------------------- safety and errors


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_pickles_are_loaded_weights_only(tmp_path):
    marker = tmp_path / "pwned"
    bad = tmp_path / "pytorch_model.bin"
    torch.save({"weight": torch.zeros(2), "payload": _Evil(marker)}, bad)
    with pytest.raises(ModelFileError, match="weights_only=True") as info:
        loading.load_state_dict_file(bad)
    assert str(bad) in str(info.value)
    assert not marker.exists()
    good = tmp_path / "good.bin"
    torch.save({"weight": torch.ones(2)}, good)
    assert torch.equal(loading.load_state_dict_file(good)["weight"], torch.ones(2))


def test_evil_shard_in_text_encoder_folder_is_refused(tiny_models, tmp_path):
    folder = tmp_path / "text_encoder"
    shutil.copytree(tiny_models.tutorial_kolors / "text_encoder", folder)
    shard = sorted(folder.glob("pytorch_model-*.bin"))[0]
    state = torch.load(shard, weights_only=True)
    state["extra"] = _Evil(tmp_path / "pwned")
    torch.save(state, shard)
    with pytest.raises(ModelFileError, match="weights_only"):
        loading.load_text_encoder(folder)
    assert not (tmp_path / "pwned").exists()


def test_missing_files_list_every_path_looked_at(tmp_path):
    with pytest.raises(ModelFileError) as info:
        loading.load_unet(tmp_path)
    msg = str(info.value)
    assert isinstance(info.value, ValueError)
    for rel in (
        "config.json",
        "unet/config.json",
        "kolors/Kolors/unet/config.json",
        "diffusers/Kolors/unet/config.json",
    ):
        assert str(tmp_path / rel) in msg, rel
    assert "accepted layouts" in msg and "tutorial" in msg and "ComfyUI" in msg

    (tmp_path / "vae").mkdir()
    (tmp_path / "vae" / "config.json").write_text("{}")
    with pytest.raises(ModelFileError) as info:
        loading.load_vae(tmp_path)
    msg = str(info.value)
    for name in (
        "diffusion_pytorch_model.safetensors",
        "diffusion_pytorch_model.fp16.safetensors",
        "diffusion_pytorch_model.bin",
        "diffusion_pytorch_model.safetensors.index.json",
    ):
        assert str(tmp_path / "vae" / name) in msg, name

    with pytest.raises(ModelFileError, match="no scheduler config") as info:
        loading.load_scheduler(tmp_path)
    assert str(tmp_path / "scheduler" / "scheduler_config.json") in str(info.value)

    with pytest.raises(ModelFileError, match="not found"):
        loading.load_state_dict_file(tmp_path / "nope.safetensors")


def test_text_encoder_without_tokenizer(tiny_models, tmp_path):
    lone = tmp_path / "LLM" / "chatglm.safetensors"
    lone.parent.mkdir()
    shutil.copy(tiny_models.comfyui_llm_file, lone)
    with pytest.raises(ModelFileError, match="tokenizer_path") as info:
        loading.load_text_encoder(lone)
    assert str(lone.parent / "tokenizer.model") in str(info.value)
    te, tok = loading.load_text_encoder(
        lone, tokenizer_path=tiny_models.tutorial_kolors / "text_encoder" / "tokenizer.model"
    )
    assert tok.padding_side == "left"


def test_wrong_component_is_a_clear_error(tiny_models, tmp_path):
    with pytest.raises(ModelFileError, match="does not look like a VAE"):
        loading.load_vae(tiny_models.comfyui_unet_file)
    with pytest.raises(ModelFileError, match="ChatGLM"):
        loading.load_text_encoder(tiny_models.comfyui_vae_file, tokenizer_path=tiny_models.diffusers_root)
    with pytest.raises(ModelFileError, match="do not fit"):
        loading.load_unet(tiny_models.comfyui_unet_file, config=tiny.KOLORS_UNET_CONFIG)
    with pytest.raises(ModelFileError, match="not a weights file"):
        loading.load_unet(tiny_models.diffusers_root / "unet" / "config.json")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file")
    with pytest.raises(ModelFileError, match="cannot read"):
        loading.load_vae(garbage)


# --------------------------------------------------------------------------- config inference on real shapes


def test_config_inference_recovers_real_kolors_configs():
    """Builds the full-size models on the meta device (no memory) and infers their configs."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.pipelines.kolors import ChatGLMModel
    from diffusers.pipelines.kolors.text_encoder import ChatGLMConfig

    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(tiny.KOLORS_UNET_CONFIG)
        vae = AutoencoderKL.from_config(tiny.SDXL_VAE_CONFIG)
        glm = ChatGLMModel(ChatGLMConfig(**tiny.KOLORS_CHATGLM_CONFIG), device="meta")
    assert loading.infer_unet_config(unet.state_dict()) == {**tiny.KOLORS_UNET_CONFIG}
    inferred = loading.infer_vae_config(vae.state_dict())
    assert {k: inferred[k] for k in tiny.SDXL_VAE_CONFIG} == tiny.SDXL_VAE_CONFIG
    got = loading.infer_chatglm_config(glm.state_dict())
    assert {k: got[k] for k in tiny.KOLORS_CHATGLM_CONFIG} == tiny.KOLORS_CHATGLM_CONFIG
    tiny_unet = loading.infer_unet_config(
        UNet2DConditionModel.from_config(tiny.TINY_UNET_CONFIG).state_dict()
    )
    for key in (
        "block_out_channels",
        "layers_per_block",
        "transformer_layers_per_block",
        "cross_attention_dim",
        "encoder_hid_dim",
        "addition_time_embed_dim",
        "down_block_types",
        "up_block_types",
    ):
        assert tiny_unet[key] == tiny.TINY_UNET_CONFIG[key], key


# --------------------------------------------------------------------------- devices


def test_resolve_device_and_dtype():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    assert resolve_dtype("auto", torch.device("cpu")) == F32
    assert resolve_dtype("auto", "cuda") == F16
    assert resolve_dtype("fp16", "cpu") == F16 and resolve_dtype("bf16", "cpu") == torch.bfloat16
    assert resolve_dtype("float32") == F32 and resolve_dtype(torch.float16) == F16
    with pytest.raises(ValueError, match="auto, cuda, mps, cpu"):
        resolve_device("gpu")
    with pytest.raises(ValueError, match="auto, fp32, fp16, bf16"):
        resolve_dtype("int8")
    with pytest.raises(ValueError, match="auto, fp32, fp16, bf16"):
        resolve_dtype(torch.int8)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


def test_scheduler_default_is_kolors():
    s = loading.load_scheduler(None).config
    assert (s.num_train_timesteps, s.beta_end, s.timestep_spacing, s.steps_offset) == (
        1100,
        0.014,
        "leading",
        1,
    )
