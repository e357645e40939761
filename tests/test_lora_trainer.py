"""Kolors LoRA trainer: latent cache, overfitting, resume, base-model safety, outputs, re-run skip.

All on the tiny random-weight Kolors components (64x64 images, rank 4, a few steps each).
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file

from graphgen_nodes.kolors.encode import encode_prompts
from graphgen_nodes.lora import trainer
from graphgen_nodes.lora.dataset import PreprocessParams, load_dataset, preprocess_image
from graphgen_nodes.lora.latent_cache import (
    CacheError,
    CacheSpec,
    build_cache,
    chatglm_encoder,
    data_fingerprint,
    vae_encoder,
)
from graphgen_nodes.lora.lora_file import read_lora
from graphgen_nodes.lora.train_config import (
    Fingerprints,
    TrainConfig,
    TrainError,
    TrainingCancelled,
    find_existing,
    prepare_data,
)

CAPTIONS = ["一只可爱的小猫坐在木桌上", "a red car on a rainy street"]
FLIP = PreprocessParams(64, 64, center_crop=True, random_flip=True)

# tiny models run faster single-threaded on a shared 2-core machine (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _write_dataset(root: Path) -> Path:
    train = root / "train"
    train.mkdir(parents=True)
    for i in range(2):
        arr = np.random.default_rng(i).integers(0, 256, (64, 80, 3), dtype=np.uint8)
        Image.fromarray(arr).save(train / f"{i}.png")
    lines = ["file_name,text"] + [f"{i}.png,{c}" for i, c in enumerate(CAPTIONS)]
    (train / "metadata.csv").write_text("\n".join(lines) + "\n", encoding="utf-8-sig")
    return root


class Counting:
    """Wraps an encoder function and counts calls and encoded rows."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn, self.calls, self.rows = fn, 0, 0

    def __call__(self, batch: Any) -> Any:
        self.calls += 1
        self.rows += len(batch)
        return self.fn(batch)


@pytest.fixture(scope="module")
def flip_data(tiny_components: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Cached data of the 2-image dataset with random flips (2 variants per image)."""
    root = _write_dataset(tmp_path_factory.mktemp("lora-ds"))
    tk = tiny_components
    spec = CacheSpec(FLIP, "tiny-vae-0", "tiny-te-0")
    return build_cache(
        load_dataset(root),
        spec,
        tmp_path_factory.mktemp("lora-cache"),
        encode_images=vae_encoder(tk.vae),
        encode_text=chatglm_encoder(tk.text_encoder, tk.tokenizer),
    )


def _config(out: Path, **kw: Any) -> TrainConfig:
    base = dict(
        lora_rank=4,
        lora_alpha=4.0,
        output_path=str(out),
        steps_per_epoch=8,
        learning_rate=1e-3,
        height=64,
        width=64,
        random_flip=True,
        save_every_n_steps=3,
        use_gradient_checkpointing=False,
        precision="32",
    )
    base.update(kw)
    return TrainConfig(**base)


def _unet_out(unet: torch.nn.Module) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    x, e, p = (
        torch.randn(1, 4, 8, 8, generator=g),
        torch.randn(1, 256, 32, generator=g),
        torch.randn(1, 32, generator=g),
    )
    ids = torch.tensor([[64.0, 64, 0, 0, 64, 64]])
    with torch.no_grad():
        return unet(
            x,
            torch.tensor([500]),
            encoder_hidden_states=e,
            added_cond_kwargs={"text_embeds": p, "time_ids": ids},
        ).sample


# ------------------------------------------------------------------------------------ cache


def test_cache_hit_skips_encoders_and_changes_invalidate(tiny_components: Any, tmp_path: Path) -> None:
    tk = tiny_components
    root = _write_dataset(tmp_path / "ds")
    spec = CacheSpec(PreprocessParams(64, 64), "vae-a", "te-a")
    cache = tmp_path / "cache"

    def build(s: CacheSpec = spec) -> tuple[Any, Counting, Counting]:
        img, txt = Counting(vae_encoder(tk.vae)), Counting(chatglm_encoder(tk.text_encoder, tk.tokenizer))
        return build_cache(load_dataset(root), s, cache, encode_images=img, encode_text=txt), img, txt

    first, img, txt = build()
    assert (img.rows, txt.rows) == (2, 2) and (first.images_encoded, first.captions_encoded) == (2, 2)
    # the entries are the VAE posterior mean x 0.13025 and the shared prompt encoder's output
    pixels = preprocess_image(Image.open(root / "train" / "0.png").convert("RGB"), spec.params)
    with torch.no_grad():
        mean = tk.vae.encode(pixels[None]).latent_dist.mean
    assert tk.vae.config.scaling_factor == 0.13025
    torch.testing.assert_close(first.items[0].latents, mean * 0.13025, rtol=0, atol=1e-6)
    cond = encode_prompts(tk.text_encoder, tk.tokenizer, [CAPTIONS[0]])
    torch.testing.assert_close(first.items[0].prompt_embeds, cond.embeds[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(first.items[0].pooled, cond.pooled[0], rtol=0, atol=1e-6)

    again, img, txt = build()
    assert (img.calls, txt.calls) == (0, 0)
    assert again.fingerprint == first.fingerprint
    assert all(torch.equal(a.latents, b.latents) for a, b in zip(first.items, again.items, strict=True))
    # the encoders may be absent (off the device, not loaded) on a full hit
    assert build_cache(load_dataset(root), spec, cache).fingerprint == first.fingerprint

    meta = root / "train" / "metadata.csv"
    meta.write_text(meta.read_text(encoding="utf-8-sig").replace("red car", "blue car"), encoding="utf-8-sig")
    changed, img, txt = build()
    assert (img.calls, txt.rows) == (0, 1) and changed.fingerprint != first.fingerprint
    assert changed.items[1].caption == "a blue car on a rainy street"

    Image.fromarray(np.zeros((64, 64, 3), dtype=np.uint8)).save(root / "train" / "0.png")
    changed2, img, txt = build()
    assert (img.rows, txt.calls) == (1, 0) and changed2.fingerprint != changed.fingerprint
    assert not torch.equal(changed2.items[0].latents, first.items[0].latents)

    other_vae = dataclasses.replace(spec, vae_id="vae-b")
    _, img, txt = build(other_vae)
    assert (img.rows, txt.calls) == (2, 0)
    Image.fromarray(np.full((64, 64, 3), 9, dtype=np.uint8)).save(root / "train" / "1.png")
    with pytest.raises(CacheError, match="pass a VAE"):
        build_cache(load_dataset(root), spec, cache)


def test_cache_variants_for_flip_and_random_crop(
    flip_data: Any, tiny_components: Any, tmp_path: Path
) -> None:
    lat = flip_data.items[0].latents
    assert lat.shape == (2, 4, 8, 8)  # unflipped + flipped
    # the flipped variant is the latents of the flipped image, not flipped latents
    assert not torch.allclose(lat[1], lat[0].flip(-1), atol=1e-4)
    root = _write_dataset(tmp_path / "ds")
    ds = load_dataset(root)
    crop = CacheSpec(
        PreprocessParams(64, 64, center_crop=False, random_flip=True), "v", "t", crops_per_image=3
    )
    img = Counting(vae_encoder(tiny_components.vae))
    enc = chatglm_encoder(tiny_components.text_encoder, tiny_components.tokenizer)
    data = build_cache(ds, crop, tmp_path / "c", encode_images=img, encode_text=enc)
    assert data.items[0].latents.shape == (6, 4, 8, 8) and img.rows == 12
    assert len({tuple(v.flatten()[:4].tolist()) for v in data.items[0].latents[::2]}) == 3  # distinct crops
    assert data_fingerprint(ds, crop) != data_fingerprint(ds, dataclasses.replace(crop, crops_per_image=2))
    again = build_cache(ds, crop, tmp_path / "c")  # deterministic crop positions: a full hit
    assert torch.equal(again.items[1].latents, data.items[1].latents)


# ------------------------------------------------------------------------------------ training


def test_overfits_a_fixed_batch(
    flip_data: Any, tiny_components: Any, tmp_path: Path, monkeypatch: Any
) -> None:
    """Loss at least halves within 50 steps on one fixed batch.

    Fixed batch: every step draws the same sample, flip, timestep and noise (the per-step
    generator is pinned). The random tiny UNet ends in GroupNorm -> conv_out with an output std
    of ~0.3, which cannot reach a unit-variance noise target in a few steps, so a copy with
    conv_out scaled x3 is trained (the LoRA layers are untouched by that).
    """
    derived = trainer._derived_generator
    monkeypatch.setattr(
        trainer, "_derived_generator", lambda seed, tag: derived(seed, "init" if tag == "init" else 0)
    )
    unet = copy.deepcopy(tiny_components.unet)
    with torch.no_grad():
        unet.conv_out.weight.mul_(3.0)
    cfg = _config(tmp_path, steps_per_epoch=50, learning_rate=1e-2, save_every_n_steps=0)
    seen: list[tuple[int, int, float, float]] = []
    result = trainer.train_lora(
        cfg, unet, data=flip_data, base_model_id="tiny", progress=lambda *a: seen.append(a)
    )
    with result.loss_csv.open(encoding="utf-8") as f:
        losses = [float(r["loss"]) for r in csv.DictReader(f)]
    assert len(losses) == 50 and [s[0] for s in seen] == list(range(1, 51))
    assert all(s[1] == 50 and s[3] > 0 for s in seen)
    assert np.mean(losses[-5:]) <= 0.5 * losses[0], losses
    assert seen[-1][2] < seen[9][2]  # smoothed loss keeps falling


def test_resume_after_kill_or_cancel_equals_uninterrupted(
    flip_data: Any, tiny_components: Any, tmp_path: Path
) -> None:
    unet = tiny_components.unet
    full = trainer.train_lora(_config(tmp_path / "a"), unet, data=flip_data, base_model_id="tiny")
    expected = load_file(full.lora_path)

    calls = {"n": 0}

    def kill_at_7() -> bool:
        calls["n"] += 1
        if calls["n"] == 8:  # before step 8: steps 1-7 done, last checkpoint at step 6
            raise RuntimeError("simulated kill")
        return False

    cfg_b = _config(tmp_path / "b")
    with pytest.raises(RuntimeError, match="simulated kill"):
        trainer.train_lora(cfg_b, unet, data=flip_data, base_model_id="tiny", check_cancelled=kill_at_7)
    ckpt = torch.load(cfg_b.paths()["checkpoint"], weights_only=True)
    assert ckpt["step"] == 6 and set(ckpt) >= {"lora", "optimizer", "rng", "loss_state", "run_key"}
    assert not cfg_b.paths()["lora"].exists()
    resumed = trainer.train_lora(cfg_b, unet, data=flip_data, base_model_id="tiny")
    assert resumed.resumed_from == 6
    got = load_file(resumed.lora_path)
    assert got.keys() == expected.keys()
    assert all(torch.equal(got[k], expected[k]) for k in expected)  # bit-exact
    assert not cfg_b.paths()["checkpoint"].exists()  # removed after success

    def rows(path: Path) -> list[tuple[str, str, str]]:
        with path.open(encoding="utf-8") as f:
            return [(r["step"], r["loss"], r["smoothed_loss"]) for r in csv.DictReader(f)]

    assert rows(resumed.loss_csv) == rows(full.loss_csv)  # killed step 7 logged once

    cfg_c = _config(tmp_path / "c", save_every_n_steps=0)
    flag = iter([False] * 4 + [True])
    with pytest.raises(TrainingCancelled) as cancelled:
        trainer.train_lora(
            cfg_c, unet, data=flip_data, base_model_id="tiny", check_cancelled=lambda: next(flag)
        )
    assert cancelled.value.step == 4
    resumed_c = trainer.train_lora(cfg_c, unet, data=flip_data, base_model_id="tiny")
    assert resumed_c.resumed_from == 4
    got_c = load_file(resumed_c.lora_path)
    assert all(torch.equal(got_c[k], expected[k]) for k in expected)

    # a kept final checkpoint extends a finished run: 4 steps, then 8, equals 8 in one go; the
    # 4-step LoRA is kept, the 8-step one gets the next free name
    cfg_d = _config(tmp_path / "d", steps_per_epoch=4, keep_checkpoint=True)
    short = trainer.train_lora(cfg_d, unet, data=flip_data, base_model_id="tiny")
    short_bytes = short.lora_path.read_bytes()
    extended = trainer.train_lora(
        dataclasses.replace(cfg_d, steps_per_epoch=8), unet, data=flip_data, base_model_id="tiny"
    )
    assert extended.resumed_from == 4
    assert extended.lora_path != short.lora_path and short.lora_path.read_bytes() == short_bytes
    got_d = load_file(extended.lora_path)
    assert all(torch.equal(got_d[k], expected[k]) for k in expected)

    # a different run's checkpoint is not resumed
    other = dataclasses.replace(cfg_c, learning_rate=2e-3)
    with pytest.raises(TrainingCancelled):
        trainer.train_lora(
            other, unet, data=flip_data, base_model_id="tiny", check_cancelled=iter([False, True]).__next__
        )
    changed = trainer.train_lora(
        dataclasses.replace(other, learning_rate=3e-3), unet, data=flip_data, base_model_id="tiny"
    )
    # the other run's checkpoint is neither resumed nor replaced: the new run takes a new name
    assert changed.resumed_from == 0
    assert len({changed.lora_path, resumed_c.lora_path}) == 2 and resumed_c.lora_path.is_file()
    assert len(list(changed.lora_path.parent.glob("*.ckpt"))) == 1  # the cancelled run's, kept


def test_base_unet_untouched_and_lora_loads_in_diffusers(
    flip_data: Any, tiny_components: Any, tmp_path: Path
) -> None:
    unet = tiny_components.unet
    before_out = _unet_out(unet)
    before_sd = {k: v.clone() for k, v in unet.state_dict().items()}
    before_types = [type(m) for m in unet.modules()]
    flags = [p.requires_grad for p in unet.parameters()]
    cfg = _config(tmp_path, steps_per_epoch=3, learning_rate=1e-2, use_gradient_checkpointing=True)
    result = trainer.train_lora(cfg, unet, data=flip_data, base_model_id="tiny")
    assert torch.equal(_unet_out(unet), before_out)
    after_sd = unet.state_dict()
    assert after_sd.keys() == before_sd.keys() and all(
        torch.equal(after_sd[k], v) for k, v in before_sd.items()
    )
    assert [type(m) for m in unet.modules()] == before_types
    assert [p.requires_grad for p in unet.parameters()] == flags and not unet.training
    assert not getattr(unet, "_hf_peft_config_loaded", False)
    # gradient checkpointing recomputes the same math: bit-identical weights on CPU
    no_gc = trainer.train_lora(
        dataclasses.replace(cfg, use_gradient_checkpointing=False, output_path=str(tmp_path / "no_gc")),
        unet,
        data=flip_data,
        base_model_id="tiny",
    )
    lora = load_file(result.lora_path)
    assert all(torch.equal(t, load_file(no_gc.lora_path)[k]) for k, t in lora.items())

    # diffusers reads the file (keys + alpha metadata) and gives W + alpha/r * B @ A
    loaded = copy.deepcopy(unet)
    loaded.load_lora_adapter(str(result.lora_path), prefix="unet", adapter_name="t")
    merged = copy.deepcopy(unet)
    with torch.no_grad():
        for name, module in merged.named_modules():
            key = f"unet.{name}.lora_A.weight"
            if key in lora:
                module.weight += (4.0 / 4) * lora[key.replace("lora_A", "lora_B")] @ lora[key]
    out = _unet_out(loaded)
    torch.testing.assert_close(out, _unet_out(merged), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(out, before_out, atol=1e-6)  # the LoRA does something


def test_metadata_outputs_and_find_existing(flip_data: Any, tiny_components: Any, tmp_path: Path) -> None:
    cfg = _config(tmp_path, steps_per_epoch=2, max_epochs=2)
    fps = Fingerprints(flip_data.fingerprint, "tiny")
    assert find_existing(cfg, fps) is None
    result = trainer.train_lora(cfg, tiny_components.unet, data=flip_data, base_model_id="tiny")
    assert (
        result.steps == 4 and not result.reused and result.lora_path == tmp_path / "kolors_lora.safetensors"
    )
    with safe_open(str(result.lora_path), "pt") as f:
        meta, keys = f.metadata(), list(f.keys())
    n_attn = sum(1 for n, _ in tiny_components.unet.named_modules() if n.endswith((".attn1", ".attn2")))
    assert len(keys) == n_attn * 4 * 2
    assert "unet.mid_block.attentions.0.transformer_blocks.0.attn2.to_out.0.lora_B.weight" in keys
    assert meta["graphgen.base_model"] == "tiny" and meta["graphgen.steps"] == "4"
    assert (meta["graphgen.rank"], meta["graphgen.alpha"]) == ("4", "4.0")
    assert json.loads(meta["graphgen.target_modules"]) == ["to_q", "to_k", "to_v", "to_out.0"]
    assert meta["graphgen.dataset_fingerprint"] == flip_data.dataset_fingerprint
    assert meta["graphgen.data_fingerprint"] == flip_data.fingerprint
    assert json.loads(meta["graphgen.training_params"]) == dataclasses.asdict(cfg)
    adapter = json.loads(meta["lora_adapter_metadata"])
    assert (adapter["unet.r"], adapter["unet.lora_alpha"]) == (4, 4.0)
    canonical = read_lora(result.lora_path)  # the LoRA-file reader sees a diffusers file, alpha 4
    assert canonical.format == "diffusers" and not canonical.unmatched
    assert len(canonical.modules) == n_attn * 4 and {m.alpha for m in canonical.modules.values()} == {4.0}
    with result.loss_csv.open(encoding="utf-8") as f:
        assert [r["step"] for r in csv.DictReader(f)] == ["1", "2", "3", "4"]
    png = Image.open(result.loss_png)
    assert png.size == (800, 450) and len(png.convert("L").getcolors(maxcolors=100000) or []) > 2

    assert find_existing(cfg, fps) == result.lora_path
    assert find_existing(dataclasses.replace(cfg, save_every_n_steps=1, use_gradient_checkpointing=True), fps)
    for miss in (
        find_existing(dataclasses.replace(cfg, learning_rate=2e-3), fps),
        find_existing(dataclasses.replace(cfg, steps_per_epoch=3), fps),
        find_existing(dataclasses.replace(cfg, seed=1), fps),
        find_existing(cfg, Fingerprints("other-data", "tiny")),
        find_existing(cfg, Fingerprints(flip_data.fingerprint, "other-base")),
    ):
        assert miss is None
    progress: list[Any] = []
    again = trainer.train_lora(
        cfg, tiny_components.unet, data=flip_data, base_model_id="tiny", progress=progress.append
    )
    assert again.reused and again.lora_path == result.lora_path and progress == []


def test_precision_and_config_checks(flip_data: Any, tiny_components: Any, tmp_path: Path) -> None:
    unet = tiny_components.unet
    fp16 = trainer.train_lora(
        _config(tmp_path / "16", steps_per_epoch=1, precision="16-mixed"),
        unet,
        data=flip_data,
        base_model_id="t",
    )
    assert any("fp32" in n for n in fp16.notes) and not any("fp32" in w for w in fp16.warnings)  # information
    assert json.loads(fp16.metadata["graphgen.run_info"])["effective_precision"] == "float32"
    bf16 = trainer.train_lora(
        _config(tmp_path / "bf", steps_per_epoch=2, precision="bf16-mixed"),
        unet,
        data=flip_data,
        base_model_id="t",
    )
    assert np.isfinite(bf16.final_loss)
    assert json.loads(bf16.metadata["graphgen.run_info"])["effective_precision"] == "bfloat16"
    with pytest.raises(TrainError, match="precision"):
        trainer.train_lora(_config(tmp_path, precision="fp8"), unet, data=flip_data, base_model_id="t")
    with pytest.raises(TrainError, match="rebuild the cache"):
        trainer.train_lora(_config(tmp_path, height=128), unet, data=flip_data, base_model_id="t")


def test_prepare_data_reads_config(tiny_components: Any, tmp_path: Path) -> None:
    root = _write_dataset(tmp_path / "ds")
    cfg = _config(tmp_path / "out", dataset_path=str(root))
    enc = Counting(vae_encoder(tiny_components.vae))
    data, warnings = prepare_data(
        cfg,
        cache_dir=tmp_path / "cache",
        vae_id="v",
        text_encoder_id="t",
        encode_images=enc,
        encode_text=chatglm_encoder(tiny_components.text_encoder, tiny_components.tokenizer),
    )
    assert warnings == [] and len(data.items) == 2 and data.spec.params == FLIP and enc.rows == 4
