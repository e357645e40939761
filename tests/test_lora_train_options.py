"""The trainer's kohya options on the tiny Kolors UNet: resume after a kill with every option on,
buckets of mixed shapes, options that change the weights, and the output-name edge cases."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file

from graphgen_nodes.lora import trainer
from graphgen_nodes.lora.dataset import load_dataset
from graphgen_nodes.lora.latent_cache import build_cache, chatglm_encoder, vae_encoder
from graphgen_nodes.lora.loss_log import read_loss_csv
from graphgen_nodes.lora.train_config import TrainConfig, TrainError, prepare_data

# tiny models run faster single-threaded on a shared 2-core machine (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _mixed_dataset(root: Path) -> Path:
    """kohya folders with a wide, a tall and a square image (2 and 1 repeats)."""
    rng = np.random.default_rng(0)
    for folder, name, (w, h), caption in [("2_shapes", "wide.png", (128, 64), "wide, red, box"),
                                          ("2_shapes", "tall.png", (64, 128), "tall, blue, box"),
                                          ("1_misc", "square.png", (96, 96), "square, green, box")]:
        (root / folder).mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / folder / name)
        (root / folder / name).with_suffix(".txt").write_text(caption, encoding="utf-8")
    return root


def _config(out: Path, dataset: Path, **kw: Any) -> TrainConfig:
    base: dict[str, Any] = dict(
        dataset_path=str(dataset), output_path=str(out), output_name="opt", lora_rank=4, lora_alpha=4.0,
        steps_per_epoch=6, learning_rate=1e-3, height=96, width=96, save_every_n_steps=2,
        use_gradient_checkpointing=False, precision="32", enable_bucket=True, min_bucket_reso=64,
        max_bucket_reso=160, bucket_reso_steps=32)
    base.update(kw)
    return TrainConfig(**base)


ALL_OPTIONS = dict(lr_scheduler="cosine", lr_warmup_steps=2, noise_offset=0.05, min_snr_gamma=5.0,
                   gradient_accumulation_steps=2, network_dropout=0.1, shuffle_caption=True, keep_tokens=1,
                   caption_dropout_rate=0.2, batch_size=2)


@pytest.fixture(scope="module")
def mixed(tiny_components: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return _mixed_dataset(tmp_path_factory.mktemp("mixed")), tmp_path_factory.mktemp("mixed-cache")


def _data(config: TrainConfig, tk: Any, cache: Path) -> Any:
    data, _ = prepare_data(config, cache_dir=cache, vae_id="tiny-vae", text_encoder_id="tiny-te",
                           encode_images=vae_encoder(tk.vae), encode_text=chatglm_encoder(tk.text_encoder, tk.tokenizer))
    return data


def test_buckets_keep_aspect_ratios_without_square_crop(mixed: Any, tiny_components: Any, tmp_path: Path) -> None:
    dataset, cache = mixed
    config = _config(tmp_path, dataset)
    data = _data(config, tiny_components, cache)
    shapes = {it.file_name: tuple(it.latents.shape[-2:]) for it in data.items}
    # 128x64 -> bucket 128x64 (latents 8x16), 64x128 -> 64x128, 96x96 -> 96x96: nothing cropped to square
    assert shapes == {"2_shapes/wide.png": (8, 16), "2_shapes/tall.png": (16, 8), "1_misc/square.png": (12, 12)}
    assert [it.repeats for it in data.items] == [1, 2, 2]
    assert any("bucket 128x64" in line and "1 images, 2 samples" in line for line in data.report)
    result = trainer.train_lora(config, tiny_components.unet, data=data, base_model_id="tiny")
    assert result.steps == 6 and np.isfinite(result.final_loss)
    with safe_open(str(result.lora_path), "pt") as f:
        meta = f.metadata()
    assert meta["ss_enable_bucket"] == "True" and "128x64" in meta["ss_bucket_info"]
    assert '"2_shapes": {"n_repeats": 2, "img_count": 2}' in meta["ss_dataset_dirs"]


def test_resume_with_every_option_equals_uninterrupted(mixed: Any, tiny_components: Any, tmp_path: Path) -> None:
    dataset, cache = mixed
    unet = tiny_components.unet
    full_cfg = _config(tmp_path / "a", dataset, **ALL_OPTIONS)
    data = _data(full_cfg, tiny_components, cache)
    assert data.empty_text is not None and any(it.text_variants for it in data.items)
    full = trainer.train_lora(full_cfg, unet, data=data, base_model_id="tiny")
    expected = load_file(full.lora_path)

    calls = {"n": 0}

    def kill_at_5() -> bool:
        calls["n"] += 1
        if calls["n"] == 6:  # steps 1-5 done, checkpoint at 4
            raise RuntimeError("simulated kill")
        return False

    cfg = _config(tmp_path / "b", dataset, **ALL_OPTIONS)
    with pytest.raises(RuntimeError):
        trainer.train_lora(cfg, unet, data=data, base_model_id="tiny", check_cancelled=kill_at_5)
    resumed = trainer.train_lora(cfg, unet, data=data, base_model_id="tiny")
    assert resumed.resumed_from == 4
    got = load_file(resumed.lora_path)
    assert all(torch.equal(got[k], expected[k]) for k in expected)
    # the learning rate followed the schedule across the resume (warm-up 0 -> peak, then cosine down)
    lrs = [r.lr for r in read_loss_csv(resumed.loss_csv)]
    assert lrs[0] == 0.0 and lrs[2] == pytest.approx(1e-3) and lrs[-1] < lrs[2]

    # each option changes the weights (so none is silently ignored)
    for name, value in [("noise_offset", 0.0), ("min_snr_gamma", 0.0), ("network_dropout", 0.0),
                        ("caption_dropout_rate", 0.0), ("gradient_accumulation_steps", 1)]:
        other = dataclasses.replace(full_cfg, output_path=str(tmp_path / name), **{name: value})
        other_data = data if name != "caption_dropout_rate" else _data(other, tiny_components, cache)
        changed = load_file(trainer.train_lora(other, unet, data=other_data, base_model_id="tiny").lora_path)
        assert any(not torch.equal(changed[k], expected[k]) for k in expected), name


def test_leftovers_and_unreadable_checkpoints(mixed: Any, tiny_components: Any, tmp_path: Path) -> None:
    dataset, cache = mixed
    unet = tiny_components.unet
    cfg = _config(tmp_path, dataset, steps_per_epoch=2, enable_bucket=False, height=64, width=64)
    data = _data(cfg, tiny_components, cache)
    paths = cfg.paths()
    # a run killed before its first checkpoint leaves a loss CSV: the next run keeps the name
    paths["csv"].write_text("step,loss,smoothed_loss,lr,elapsed_s\n1,0.5,0.5,0.001,0.1\n", encoding="utf-8")
    first = trainer.train_lora(cfg, unet, data=data, base_model_id="tiny")
    assert first.lora_path == paths["lora"]
    assert any(".abandoned" in w for w in first.warnings)
    assert list((tmp_path / ".abandoned").glob("*/opt.loss.csv"))  # kept, not deleted

    # a cancelled run with other settings leaves a checkpoint: the next run keeps the name too
    cfg2 = dataclasses.replace(cfg, output_name="c")
    with pytest.raises(trainer.TrainingCancelled):
        trainer.train_lora(dataclasses.replace(cfg2, learning_rate=5e-3), unet, data=data, base_model_id="tiny",
                           check_cancelled=iter([False, True]).__next__)
    second = trainer.train_lora(cfg2, unet, data=data, base_model_id="tiny")
    assert second.lora_path.name == "c.safetensors" and second.resumed_from == 0

    # an unreadable checkpoint is refused by name; resume=False starts over and keeps it aside
    cfg3 = dataclasses.replace(cfg, output_name="u")
    cfg3.paths()["checkpoint"].parent.mkdir(parents=True, exist_ok=True)
    cfg3.paths()["checkpoint"].write_bytes(b"not a checkpoint")
    with pytest.raises(TrainError) as err:
        trainer.train_lora(cfg3, unet, data=data, base_model_id="tiny")
    assert "u.ckpt" in str(err.value) and "resume=False" in str(err.value)
    fresh = trainer.train_lora(dataclasses.replace(cfg3, resume=False), unet, data=data, base_model_id="tiny")
    assert fresh.lora_path.name == "u.safetensors"
    assert list((tmp_path / ".abandoned").glob("*/u.ckpt"))


def test_caption_dropout_needs_the_empty_caption(mixed: Any, tiny_components: Any, tmp_path: Path) -> None:
    dataset, cache = mixed
    cfg = _config(tmp_path, dataset)
    data = _data(cfg, tiny_components, cache)
    spec = dataclasses.replace(data.spec)
    with pytest.raises(TrainError, match="empty caption"):
        trainer.train_lora(dataclasses.replace(cfg, caption_dropout_rate=0.1), tiny_components.unet,
                           data=build_cache(load_dataset(dataset), spec, cache), base_model_id="tiny")
