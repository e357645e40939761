"""LoRA training datasets: the three layouts, each error kind, preprocessing, fingerprints."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from graphgen_nodes.lora.dataset import (
    DatasetError,
    PreprocessParams,
    center_crop_box,
    load_dataset,
    load_rgb,
    preprocess_image,
    random_crop_box,
)

CAPTIONS = ["一只可爱的小猫坐在木桌上", "a red car, 雨夜, neon lights"]


def _image(path: Path, size: tuple[int, int] = (80, 64), seed: int = 0) -> Path:
    arr = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def _csv_dataset(root: Path, *, bom: bool = True, rows: list[tuple[str, str]] | None = None) -> Path:
    train = root / "train"
    train.mkdir(parents=True, exist_ok=True)
    rows = rows if rows is not None else [(f"{i}.png", c) for i, c in enumerate(CAPTIONS)]
    for i, (name, _) in enumerate(rows):
        if name.endswith(".png") and not name.startswith("missing"):
            _image(train / name, seed=i)
    lines = ["file_name,text", *[f'{n},"{c}"' for n, c in rows]]
    (train / "metadata.csv").write_text("\n".join(lines) + "\n", encoding="utf-8-sig" if bom else "utf-8")
    return root


@pytest.mark.parametrize("bom", [True, False])
def test_csv_layout_bom_and_chinese(tmp_path: Path, bom: bool) -> None:
    raw = (_csv_dataset(tmp_path, bom=bom) / "train" / "metadata.csv").read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf") == bom
    ds = load_dataset(tmp_path)
    assert ds.layout == "csv"
    assert ds.root == (tmp_path / "train").resolve()
    assert [it.caption for it in ds.items] == CAPTIONS
    assert [it.file_name for it in ds.items] == ["0.png", "1.png"]
    assert ds.items[0].size == (80, 64)
    assert ds.warnings == []


@pytest.mark.parametrize("where", ["", "train"])
def test_jsonl_layout(tmp_path: Path, where: str) -> None:
    folder = tmp_path / where
    _image(folder / "a.png")
    _image(folder / "sub" / "b.png", seed=1)
    lines = [json.dumps({"file_name": "a.png", "text": CAPTIONS[0]}, ensure_ascii=False), "",
             json.dumps({"file_name": "sub/b.png", "text": CAPTIONS[1]})]  # fmt: skip
    (folder / "metadata.jsonl").write_text("\n".join(lines), encoding="utf-8")
    ds = load_dataset(tmp_path)
    assert ds.layout == "jsonl"
    assert [it.caption for it in ds.items] == CAPTIONS
    assert ds.items[1].image_path == (folder / "sub" / "b.png").resolve()


def test_image_folder_layout(tmp_path: Path) -> None:
    for i, c in enumerate(CAPTIONS):
        _image(tmp_path / f"img{i}.jpg", seed=i)
        (tmp_path / f"img{i}.txt").write_text(f"  {c}\n", encoding="utf-8")
    (tmp_path / "notes.txt").write_text("not a caption")
    ds = load_dataset(tmp_path)
    assert ds.layout == "folder"
    assert [it.file_name for it in ds.items] == ["img0.jpg", "img1.jpg"]
    assert [it.caption for it in ds.items] == CAPTIONS  # stripped


@pytest.mark.parametrize(
    ("kind", "needle"),
    [
        ("no_folder", "does not exist"),
        ("no_metadata", "no metadata"),
        ("bad_header", "file_name,text"),
        ("missing_image", "missing.png"),
        ("empty_caption", "empty caption for 0.png"),
        ("unreadable", "cannot be read"),
        ("too_small", "below the 64px minimum"),
    ],
)
def test_errors_are_one_line_and_name_the_file(tmp_path: Path, kind: str, needle: str) -> None:
    root = tmp_path / "ds"
    if kind == "no_folder":
        pass
    elif kind == "no_metadata":
        _image(root / "train" / "0.png")
    elif kind == "bad_header":
        _csv_dataset(root)
        (root / "train" / "metadata.csv").write_text("image,caption\n0.png,x\n")
    elif kind == "missing_image":
        _csv_dataset(root, rows=[("missing.png", "a cat")])
    elif kind == "empty_caption":
        _csv_dataset(root, rows=[("0.png", "  ")])
    elif kind == "unreadable":
        _csv_dataset(root, rows=[("0.png", "a cat")])
        (root / "train" / "0.png").write_bytes(b"not a png at all")
    elif kind == "too_small":
        _csv_dataset(root, rows=[("0.png", "a cat")])
        _image(root / "train" / "0.png", size=(100, 40))
    with pytest.raises(DatasetError) as err:
        load_dataset(root)
    message = str(err.value)
    assert needle in message
    assert "\n" not in message
    assert ":" in message  # "<what>: <fix>"
    if kind not in ("no_folder", "no_metadata"):
        assert "metadata.csv" in message


def test_skip_vs_error(tmp_path: Path) -> None:
    rows = [("0.png", "good"), ("missing.png", "x"), ("2.png", ""), ("3.png", "also good")]
    _csv_dataset(tmp_path, rows=rows)
    with pytest.raises(DatasetError, match="missing.png"):
        load_dataset(tmp_path, on_bad_item="error")
    ds = load_dataset(tmp_path, on_bad_item="skip")
    assert [it.file_name for it in ds.items] == ["0.png", "3.png"]
    assert len(ds.warnings) == 2
    assert "missing.png" in ds.warnings[0] and "2.png" in ds.warnings[1]
    (tmp_path / "train" / "0.png").unlink()
    (tmp_path / "train" / "3.png").unlink()
    with pytest.raises(DatasetError, match="no usable items"):
        load_dataset(tmp_path, on_bad_item="skip")


def test_preprocess_resize_crop_flip_normalise(tmp_path: Path) -> None:
    # 128x64 (w x h), left half black, right half white: no resize needed, the centre crop keeps
    # columns 32..95, i.e. 32 black then 32 white columns.
    arr = np.zeros((64, 128, 3), dtype=np.uint8)
    arr[:, 64:] = 255  # right half white
    img = Image.fromarray(arr)
    p = PreprocessParams(64, 64)
    x = preprocess_image(img, p)
    assert x.shape == (3, 64, 64) and x.dtype == torch.float32
    assert float(x.min()) == -1.0 and float(x.max()) == 1.0
    assert center_crop_box(img.size, p) == (0, 32)
    assert torch.all(x[:, :, :32] == -1.0) and torch.all(x[:, :, 32:] == 1.0)
    flipped = preprocess_image(img, p, flip=True)
    assert torch.equal(flipped, x.flip(-1))
    left = preprocess_image(img, p, crop=(0, 0))
    assert torch.all(left == -1.0)
    # shorter side to the target: 200x100 -> 128x64 before the crop
    big = Image.fromarray(np.full((100, 200, 3), 127, dtype=np.uint8))
    assert preprocess_image(big, p).shape == (3, 64, 64)
    assert center_crop_box(big.size, p) == (0, 32)
    rng = random.Random(0)
    boxes = {random_crop_box(big.size, p, rng) for _ in range(50)}
    assert all(top == 0 and 0 <= left <= 64 for top, left in boxes) and len(boxes) > 10
    with pytest.raises(DatasetError, match="multiples of 8"):
        PreprocessParams(60, 64)


def test_fingerprint_tracks_content_captions_params_not_mtime(tmp_path: Path) -> None:
    _csv_dataset(tmp_path)
    p = PreprocessParams(64, 64)
    fp = load_dataset(tmp_path).fingerprint(p)
    assert load_dataset(tmp_path).fingerprint(p) == fp
    img = tmp_path / "train" / "0.png"
    os.utime(img, (1_000_000_000, 1_000_000_000))  # touched, same bytes
    assert load_dataset(tmp_path).fingerprint(p) == fp
    assert load_dataset(tmp_path).fingerprint(PreprocessParams(64, 64, random_flip=True)) != fp
    _image(img, seed=99)  # new pixels
    fp_img = load_dataset(tmp_path).fingerprint(p)
    assert fp_img != fp
    meta = tmp_path / "train" / "metadata.csv"
    meta.write_text(meta.read_text(encoding="utf-8-sig").replace("小猫", "小狗"), encoding="utf-8-sig")
    assert load_dataset(tmp_path).fingerprint(p) not in (fp, fp_img)


def test_load_rgb_converts_modes(tmp_path: Path) -> None:
    path = tmp_path / "gray.png"
    Image.new("LA", (70, 70), (128, 255)).save(path)
    img = load_rgb(path)
    assert img.mode == "RGB" and img.getpixel((0, 0)) == (128, 128, 128)
