"""Tests for the tiny random-weight Kolors models (graphgen.testing.tiny_kolors)."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from graphgen.testing import tiny_kolors as tiny  # noqa: E402


def _state_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_same_seed_gives_identical_weights_and_leaves_global_rng(tiny_components):
    rng_before = torch.get_rng_state()
    again = tiny.build_tiny_components(0)
    assert torch.equal(rng_before, torch.get_rng_state())
    for name in ("unet", "vae", "text_encoder"):
        assert _state_equal(getattr(tiny_components, name), getattr(again, name)), name
    assert tiny_components.tokenizer_model.read_bytes() == again.tokenizer_model.read_bytes()


def test_different_seed_gives_different_weights(tiny_components):
    other = tiny.build_tiny_components(1)
    for name in ("unet", "vae", "text_encoder"):
        assert not _state_equal(getattr(tiny_components, name), getattr(other, name)), name


def test_text_encoder_is_fully_initialised_fp32_eval(tiny_components):
    te = tiny_components.text_encoder
    assert not te.training
    for name, p in te.named_parameters():
        assert p.dtype == torch.float32, name
        assert torch.isfinite(p).all(), name
        assert p.abs().max() < 10, name  # no uninitialised garbage (stack.md gotcha 3)
    assert te.config.original_rope is True


def test_configs_follow_kolors():
    s = tiny.build_tiny_components(0).scheduler.config
    assert (s.num_train_timesteps, s.beta_end, s.beta_start) == (1100, 0.014, 0.00085)
    assert (s.beta_schedule, s.timestep_spacing, s.steps_offset) == ("scaled_linear", "leading", 1)
    assert s.prediction_type == "epsilon"
    u = tiny.TINY_UNET_CONFIG
    assert u["encoder_hid_dim_type"] == "text_proj" and u["addition_embed_type"] == "text_time"
    assert u["encoder_hid_dim"] == tiny.TINY_CHATGLM_CONFIG["hidden_size"]
    assert (
        u["projection_class_embeddings_input_dim"] == 6 * u["addition_time_embed_dim"] + u["encoder_hid_dim"]
    )
    assert tiny.TINY_VAE_CONFIG["scaling_factor"] == 0.13025 and tiny.TINY_VAE_CONFIG["latent_channels"] == 4
    assert len(tiny.TINY_VAE_CONFIG["block_out_channels"]) == 4
    k = tiny.KOLORS_UNET_CONFIG
    assert (
        k["projection_class_embeddings_input_dim"]
        == 6 * k["addition_time_embed_dim"] + k["encoder_hid_dim"]
        == 5632
    )


@pytest.mark.parametrize(("height", "width"), [(32, 32), (32, 48)])
def test_latents_are_one_eighth_of_pixels(tiny_components, height, width):
    vae = tiny_components.vae
    image = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        latents = vae.encode(image).latent_dist.mean
        decoded = vae.decode(latents).sample
    assert latents.shape == (1, 4, height // 8, width // 8)
    assert decoded.shape == image.shape


def test_unet_takes_kolors_conditioning(tiny_components):
    hidden = tiny.TINY_CHATGLM_CONFIG["hidden_size"]
    gen = torch.Generator().manual_seed(0)
    latents = torch.randn(2, 4, 8, 12, generator=gen)
    cond = torch.randn(2, 256, hidden, generator=gen)
    added = {
        "text_embeds": torch.randn(2, hidden, generator=gen),
        "time_ids": torch.tensor([[64.0, 96, 0, 0, 64, 96]] * 2),
    }
    with torch.no_grad():
        out = tiny_components.unet(latents, 500, encoder_hidden_states=cond, added_cond_kwargs=added).sample
    assert out.shape == latents.shape and torch.isfinite(out).all()


def test_tokenizer_left_pads_to_256_with_prefix_and_handles_chinese(tiny_components):
    tok = tiny_components.tokenizer
    prompts = ["一只可爱的小猫坐在木桌上", "a red car, 霓虹灯 龘", ""]
    enc = tok(prompts, padding="max_length", max_length=256, truncation=True, return_tensors="pt")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    assert ids.shape == mask.shape == (3, 256)
    gmask, sop = tok.get_command("[gMASK]"), tok.get_command("sop")
    for row in range(3):
        n = int(mask[row].sum())
        assert mask[row, : 256 - n].eq(0).all() and mask[row, 256 - n :].eq(1).all()  # left padding
        assert ids[row, : 256 - n].eq(tok.pad_token_id).all()
        assert ids[row, 256 - n : 256 - n + 2].tolist() == [gmask, sop]
        assert enc["position_ids"][row, -1] == n - 1
    assert int(mask[2].sum()) == 2  # the empty prompt is just the prefix
    assert ids.max() < tiny.TINY_CHATGLM_CONFIG["padded_vocab_size"]
    for text in prompts[:2]:  # byte fallback: even unseen characters (龘) round-trip
        assert tok.decode(tok.encode(text, add_special_tokens=False)) == text
    # Chinese seen in training gets multi-byte pieces, not only byte fallback
    assert len(tok.encode(prompts[0], add_special_tokens=False)) < len(prompts[0].encode("utf-8"))


def test_text_encoder_gives_kolors_embeddings(tiny_components):
    tok, te = tiny_components.tokenizer, tiny_components.text_encoder
    enc = tok(["一只猫", "a dog"], padding="max_length", max_length=256, return_tensors="pt")
    with torch.no_grad():
        out = te(
            input_ids=enc["input_ids"],
            attention_mask=enc["attention_mask"],
            position_ids=enc["position_ids"],
            output_hidden_states=True,
        )
    prompt = out.hidden_states[-2].permute(1, 0, 2)
    pooled = out.hidden_states[-1][-1]
    hidden = tiny.TINY_CHATGLM_CONFIG["hidden_size"]
    assert prompt.shape == (2, 256, hidden) and pooled.shape == (2, hidden)
    assert torch.isfinite(prompt).all() and not torch.equal(prompt[0], prompt[1])


def test_tokenizer_training_is_deterministic():
    assert tiny._train_sentencepiece(3) == tiny._train_sentencepiece(3)
    assert tiny.tiny_tokenizer_model(0).read_bytes() == tiny._train_sentencepiece(0)


def test_written_layouts(tiny_models):
    from safetensors import safe_open

    kolors = tiny_models.tutorial_kolors
    assert kolors == tiny_models.tutorial_models / "kolors" / "Kolors"
    for rel in (
        "unet/diffusion_pytorch_model.safetensors",
        "unet/config.json",
        "vae/diffusion_pytorch_model.safetensors",
        "scheduler/scheduler_config.json",
        "text_encoder/config.json",
        "text_encoder/tokenizer.model",
        "text_encoder/tokenizer_config.json",
        "text_encoder/vocab.txt",
    ):
        assert (kolors / rel).is_file(), rel
    index = json.loads((kolors / "text_encoder" / "pytorch_model.bin.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) >= 2 and all((kolors / "text_encoder" / s).is_file() for s in shards)
    assert all(
        s.startswith("pytorch_model-0000") and s.endswith(f"-of-{len(shards):05d}.bin") for s in shards
    )
    assert all(k.startswith("transformer.") for k in index["weight_map"])
    assert (tiny_models.tutorial_fp16_vae / "diffusion_pytorch_model.safetensors").is_file()

    d = tiny_models.diffusers_root
    assert json.loads((d / "model_index.json").read_text())["_class_name"] == "KolorsPipeline"
    for comp in ("unet", "vae"):
        assert (d / comp / "diffusion_pytorch_model.safetensors").is_file()
        with safe_open(str(d / comp / "diffusion_pytorch_model.fp16.safetensors"), "pt") as f:
            assert f.get_tensor(next(iter(f.keys()))).dtype == torch.float16
    assert (d / "text_encoder" / "model.safetensors.index.fp16.json").is_file()
    assert (d / "tokenizer" / "tokenizer.model").is_file()

    c = tiny_models.comfyui_models
    assert (tiny_models.comfyui_kolors / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert not (tiny_models.comfyui_kolors / "unet" / "diffusion_pytorch_model.fp16.safetensors").exists()
    with safe_open(str(tiny_models.comfyui_vae_file), "pt") as f:
        assert "encoder.down.0.block.0.conv1.weight" in f.keys()
        assert f.get_tensor("encoder.mid.attn_1.q.weight").ndim == 4
        assert not any("down_blocks" in k for k in f.keys())
    with safe_open(str(tiny_models.comfyui_llm_file), "pt") as f:
        key = "transformer.encoder.layers.1.self_attention.query_key_value.weight"
        assert key in f.keys() and f.get_tensor(key).dtype == torch.float16
    assert tiny_models.comfyui_unet_file.is_file() and tiny_models.comfyui_unet_file.parent == c / "unet"
    assert tiny_models.comfyui_loras.is_dir() and not any(tiny_models.comfyui_loras.iterdir())


def test_ldm_vae_names_round_trip_through_diffusers_converter(tiny_components):
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    state = tiny_components.vae.state_dict()
    back = convert_ldm_vae_checkpoint(tiny.vae_diffusers_to_ldm(state), dict(tiny_components.vae.config))
    assert back.keys() == state.keys()
    assert all(torch.equal(back[k], state[k]) for k in state)
