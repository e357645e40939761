"""A small synthetic captioned dataset in the tutorial's layout, for the demo, tests and benchmarks."""

from __future__ import annotations

import csv
import random
from pathlib import Path

from PIL import Image, ImageDraw

COLOURS = {"red": ((220, 40, 40), "红色"), "blue": ((40, 80, 220), "蓝色"), "green": ((40, 170, 70), "绿色"),
           "yellow": ((235, 200, 40), "黄色")}
SHAPES = {"circle": "圆形", "square": "方块", "triangle": "三角形"}


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
        image = Image.new("RGB", (size, size), (245, 240, 230))
        draw = ImageDraw.Draw(image)
        margin = rng.randint(size // 8, size // 4)
        box = (margin, margin, size - margin, size - margin)
        if shape == "circle":
            draw.ellipse(box, fill=rgb)
        elif shape == "square":
            draw.rectangle(box, fill=rgb)
        else:
            draw.polygon([(size // 2, margin), (size - margin, size - margin), (margin, size - margin)], fill=rgb)
        name = f"{index:04d}.png"
        image.save(train / name)
        rows.append((name, f"二次元，{colour_zh}{SHAPES[shape]}，白色背景, a {colour} {shape}"))
    with open(train / "metadata.csv", "w", encoding="utf-8-sig", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file_name", "text"])
        writer.writerows(rows)
    return root
