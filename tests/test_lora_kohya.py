"""kohya-style datasets without models: folders with repeats, caption files, encodings, buckets,
caption shuffling, and the optimiser/schedule/loss-weighting helpers."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
from PIL import Image

from graphgen_nodes.lora.buckets import BucketSpec, assign_bucket, bucket_report, bucket_sizes
from graphgen_nodes.lora.captions import CaptionOptions, caption_variants, shuffle_tags
from graphgen_nodes.lora.dataset import DatasetError, load_dataset
from graphgen_nodes.lora.optim import check_optimizer, make_lr_scheduler, min_snr_weight, offset_noise
from graphgen_nodes.lora.train_config import TrainConfig, TrainError


def _image(path: Path, size: tuple[int, int], colour: tuple[int, int, int] = (200, 30, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def test_kohya_folders_repeats_and_caption_extension(tmp_path: Path) -> None:
    _image(tmp_path / "10_cat" / "a.png", (64, 64))
    (tmp_path / "10_cat" / "a.caption").write_text("cat, red", encoding="utf-8")
    _image(tmp_path / "3_dog" / "b.png", (96, 64))
    (tmp_path / "3_dog" / "b.caption").write_text("dog", encoding="utf-8")
    _image(tmp_path / "notes" / "c.png", (64, 64))  # not a kohya folder: ignored
    ds = load_dataset(tmp_path, caption_extension=".caption")
    assert ds.layout == "kohya"
    assert [(it.file_name, it.repeats, it.caption) for it in ds.items] == [
        ("10_cat/a.png", 10, "cat, red"), ("3_dog/b.png", 3, "dog")]
    # repeats are part of what was trained on
    fp = ds.fingerprint(TrainConfig().preprocess())
    (tmp_path / "3_dog").rename(tmp_path / "4_dog")
    assert load_dataset(tmp_path, caption_extension=".caption").fingerprint(TrainConfig().preprocess()) != fp
    # .txt captions are missing: the error names the file to write
    with pytest.raises(DatasetError, match=r"a\.txt"):
        load_dataset(tmp_path, caption_extension=".txt")


def test_latin1_metadata_names_the_file_and_encoding(tmp_path: Path) -> None:
    _image(tmp_path / "train" / "a.png", (64, 64))
    (tmp_path / "train" / "metadata.csv").write_bytes("file_name,text\na.png,café crème\n".encode("latin-1"))
    with pytest.raises(DatasetError) as err:
        load_dataset(tmp_path)
    message = str(err.value)
    assert "metadata.csv" in message and "not UTF-8" in message and "latin-1" in message and "\n" not in message


def test_bucket_sizes_follow_kohya() -> None:
    sizes = bucket_sizes(BucketSpec(1024, 256, 2048, 64))
    assert (1024, 1024) in sizes and (832, 1216) in sizes and (1216, 832) in sizes
    assert all(w % 64 == 0 and h % 64 == 0 and w * h <= 1024 * 1024 for w, h in sizes)
    assert all(256 <= s <= 2048 for size in sizes for s in size)
    assert assign_bucket((3000, 2000), sizes) == (1216, 832)  # 1.5 -> nearest ratio 1.46
    assert assign_bucket((2000, 3000), sizes) == (832, 1216)
    assert assign_bucket((512, 512), sizes) == (1024, 1024)
    lines = bucket_report([((1216, 832), 10), ((1216, 832), 10), ((1024, 1024), 1)])
    assert lines[0].startswith("bucket 1216x832") and "2 images, 20 samples" in lines[0]
    assert BucketSpec(1024, 100, 2048, 64).check() and BucketSpec(4096, 256, 2048, 64).check()
    assert BucketSpec(1024, 256, 2048, 64).check() is None


def test_caption_shuffle_keeps_tokens_and_is_deterministic() -> None:
    caption = "sks person, red hat, smiling, outdoors, photo"
    shuffled = shuffle_tags(caption, 1, random.Random(3))
    assert shuffled.startswith("sks person, ") and sorted(shuffled.split(", ")) == sorted(caption.split(", "))
    opts = CaptionOptions(shuffle_caption=True, keep_tokens=1, shuffle_variants=4)
    variants = caption_variants(caption, opts, seed=0)
    assert variants[0] == caption and len(variants) > 2 and all(v.startswith("sks person") for v in variants)
    assert variants == caption_variants(caption, opts, seed=0) != caption_variants(caption, opts, seed=1)
    assert caption_variants(caption, CaptionOptions(), 0) == [caption]


def test_schedules_snr_noise_offset_and_optimizer_refusal() -> None:
    p = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.AdamW([p], lr=1.0)
    sched = make_lr_scheduler("cosine", opt, warmup_steps=2, total_steps=10)
    lrs = []
    for _ in range(10):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    assert lrs[0] == 0.0 and lrs[1] == 0.5 and lrs[2] == 1.0 and lrs[-1] < 0.05
    ab = torch.tensor([0.99, 0.5, 0.01])  # SNR 99, 1, ~0.0101
    w = min_snr_weight(ab, 5.0)
    torch.testing.assert_close(w, torch.tensor([5 / 99, 1.0, 1.0]))
    assert torch.equal(min_snr_weight(ab, 0.0), torch.ones(3))
    noise = torch.zeros(2, 4, 8, 8)
    shifted = offset_noise(noise, 0.1, torch.Generator().manual_seed(0))
    assert shifted.std(dim=(2, 3)).max() == 0 and shifted.abs().max() > 0  # constant per channel
    problem = check_optimizer("AdamW8bit", torch.device("cpu"))
    assert problem and "AdamW8bit" in problem and "use AdamW" in problem
    if not torch.cuda.is_available():  # refused up front, before any model is loaded
        with pytest.raises(TrainError, match="AdamW8bit"):
            TrainConfig(optimizer="AdamW8bit").validate()
    with pytest.raises(TrainError, match="sample_prompts"):
        TrainConfig(sample_every_n_steps=5).validate()


def test_validation_accepts_a_kohya_folder_and_names_an_empty_one(tmp_path):
    """The validation-time dataset check reads kohya's `<repeats>_<name>/` folders (it used to stop at them)."""
    from PIL import Image

    from graphgen_nodes.lora.dataset import check_dataset

    folder = tmp_path / "10_disc"
    folder.mkdir()
    Image.new("RGB", (64, 64), (200, 0, 0)).save(folder / "a.png")
    (folder / "a.txt").write_text("a red disc", encoding="utf-8")
    assert check_dataset(tmp_path) is None
    (folder / "a.txt").write_text("  ", encoding="utf-8")
    problem = check_dataset(tmp_path)
    assert problem is not None and "caption" in problem
