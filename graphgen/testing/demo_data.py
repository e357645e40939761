"""Small synthetic captioned datasets in the tutorial's layout, for the demo, tests and benchmarks."""

from __future__ import annotations

import csv
import random
from pathlib import Path

from PIL import Image, ImageDraw

COLOURS = {"red": ((220, 40, 40), "红色"), "blue": ((40, 80, 220), "蓝色"), "green": ((40, 170, 70), "绿色"),
           "yellow": ((235, 200, 40), "黄色")}
SHAPES = {"circle": "圆形", "square": "方块", "triangle": "三角形"}
#: The demo's one subject: a strong red disc on an off-white background.
DEMO_CAPTION = "二次元，红色圆形，白色背景, a red circle"
DEMO_RED = (220, 30, 30)
DEMO_BACKGROUND = (245, 240, 230)


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, box: tuple[int, int, int, int], fill: tuple[int, ...]) -> None:
    """Draws a circle, square or (upward) triangle filling `box`."""
    left, top, right, bottom = box
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    else:
        draw.polygon([((left + right) // 2, top), (right, bottom), (left, bottom)], fill=fill)


def shape_pictures(count: int, size: int = 64, seed: int = 0) -> list[tuple[Image.Image, str]]:
    """`count` grey-scale pictures of one shape (circle, square or triangle) on a plain background.

    The generic pictures the demo's base UNet is pretrained on: shapes of every size, place and
    grey level on a background of another grey, captioned with the shape's name only
    (``"二次元，圆形, a circle"``). No colour: the base model knows shapes but has never seen red,
    so what the LoRA teaches (a red disc on off-white) shows in the pictures.
    """
    rng = random.Random(seed)
    pictures = []
    for _ in range(count):
        background, fill = rng.randrange(256), rng.randrange(256)
        image = Image.new("RGB", (size, size), (background,) * 3)
        shape = rng.choice(sorted(SHAPES))
        radius = rng.randint(size // 6, size // 2 - 2)
        cx, cy = rng.randint(radius, size - radius), rng.randint(radius, size - radius)
        _draw_shape(ImageDraw.Draw(image), shape, (cx - radius, cy - radius, cx + radius, cy + radius), (fill,) * 3)
        pictures.append((image, f"二次元，{SHAPES[shape]}, a {shape}"))
    return pictures


def _write_csv(train: Path, rows: list[tuple[str, str]]) -> None:
    with open(train / "metadata.csv", "w", encoding="utf-8-sig", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file_name", "text"])
        writer.writerows(rows)


def write_synthetic_dataset(folder: str | Path, count: int = 8, size: int = 128, seed: int = 0) -> Path:
    """Write `count` images of coloured shapes with bilingual captions.

    Layout: `<folder>/train/metadata.csv` (UTF-8 with a BOM, columns `file_name,text`, as the
    tutorial wrote it) and the PNGs beside it. Returns `folder`.
    """
    root = Path(folder)
    train = root / "train"
    train.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    rows = []
    for index in range(count):
        colour = rng.choice(sorted(COLOURS))
        shape = rng.choice(sorted(SHAPES))
        rgb, colour_zh = COLOURS[colour]
        image = Image.new("RGB", (size, size), DEMO_BACKGROUND)
        draw = ImageDraw.Draw(image)
        margin = rng.randint(size // 8, size // 4)
        _draw_shape(draw, shape, (margin, margin, size - margin, size - margin), rgb)
        name = f"{index:04d}.png"
        image.save(train / name)
        rows.append((name, f"二次元，{colour_zh}{SHAPES[shape]}，白色背景, a {colour} {shape}"))
    _write_csv(train, rows)
    return root


def write_demo_dataset(folder: str | Path, count: int = 8, size: int = 64, seed: int = 0) -> Path:
    """Write `count` images of one distinctive subject (a large red disc, slightly moved and sized).

    One strong colour and shape, one caption: what a LoRA on the tiny models can learn in seconds,
    so the demo shows it learning. Same layout as :func:`write_synthetic_dataset`. Returns `folder`.
    """
    root = Path(folder)
    train = root / "train"
    train.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    rows = []
    for index in range(count):
        image = Image.new("RGB", (size, size), DEMO_BACKGROUND)
        margin = rng.randint(size // 16, size // 6)
        dx, dy = rng.randint(-2, 2), rng.randint(-2, 2)
        ImageDraw.Draw(image).ellipse((margin + dx, margin + dy, size - margin + dx, size - margin + dy), fill=DEMO_RED)
        name = f"{index:04d}.png"
        image.save(train / name)
        rows.append((name, DEMO_CAPTION))
    _write_csv(train, rows)
    return root


#: The kohya-style dataset's trigger word and caption (kohya users caption with a rare token first).
KOHYA_CAPTION = "reddisc, a red disc on a white background"
#: Its images' sizes: wide, tall and square, so that aspect-ratio bucketing has something to sort.
KOHYA_SIZES = ((96, 64), (64, 96), (80, 80), (128, 64), (64, 128), (96, 96))


def write_kohya_dataset(folder: str | Path, repeats: int = 10, name: str = "reddisc", seed: int = 0) -> Path:
    """Write a tiny dataset as kohya's sd-scripts users hold theirs: `<folder>/<repeats>_<name>/`.

    Red discs on an off-white background in mixed aspect ratios (:data:`KOHYA_SIZES`), each image
    with a same-name `.txt` caption (:data:`KOHYA_CAPTION`, trigger word first). Returns `folder`
    (what `TrainLoRA`'s `dataset_path` takes, as kohya's `train_data_dir`).
    """
    root = Path(folder)
    images = root / f"{repeats}_{name}"
    images.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    for index, (width, height) in enumerate(KOHYA_SIZES):
        image = Image.new("RGB", (width, height), DEMO_BACKGROUND)
        radius = min(width, height) // 2 - rng.randint(4, 10)
        cx, cy = width // 2 + rng.randint(-3, 3), height // 2 + rng.randint(-3, 3)
        ImageDraw.Draw(image).ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=DEMO_RED)
        stem = f"{index:04d}_{width}x{height}"
        image.save(images / f"{stem}.png")
        (images / f"{stem}.txt").write_text(KOHYA_CAPTION, encoding="utf-8")
    return root
