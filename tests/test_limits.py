"""The decoded-image pixel limit (`graphgen.limits`): LoadImage, datasets and uploads refuse an image
over it before decoding, naming its size and the limit (issue 10: a 410 KB 12000x12000 PNG took
the process to 22.5 GB)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pytest

from graphgen import Engine, WorkflowBuilder
from graphgen.errors import WorkflowError
from graphgen.limits import (
    DEFAULT_MAX_IMAGE_PIXELS,
    ENV_MAX_IMAGE_PIXELS,
    ImageTooLargeError,
    check_image_pixels,
    max_image_pixels,
    open_image,
)


def declared_png(width: int, height: int) -> bytes:
    """A small PNG file whose header declares `width` x `height` (all Pillow reads before decoding)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = zlib.compress(b"\0" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def test_the_limit_defaults_to_64_megapixels_and_is_configurable(monkeypatch):
    monkeypatch.delenv(ENV_MAX_IMAGE_PIXELS, raising=False)
    assert max_image_pixels() == DEFAULT_MAX_IMAGE_PIXELS == 8192 * 8192
    check_image_pixels(8192, 8192)
    with pytest.raises(ImageTooLargeError, match=r"photo is 8193x8192 \(67\.1 megapixels\), over the limit of 67\.1"):
        check_image_pixels(8193, 8192, "photo")
    monkeypatch.setenv(ENV_MAX_IMAGE_PIXELS, "1_000")
    assert max_image_pixels() == 1000
    with pytest.raises(ImageTooLargeError, match=ENV_MAX_IMAGE_PIXELS):
        check_image_pixels(40, 40)
    monkeypatch.setenv(ENV_MAX_IMAGE_PIXELS, "lots")
    with pytest.raises(ValueError, match="not a positive number of pixels"):
        max_image_pixels()


def test_open_image_refuses_before_decoding(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(declared_png(12000, 12000))
    assert path.stat().st_size < 1000
    with pytest.raises(ImageTooLargeError, match=r"is 12000x12000 \(144\.0 megapixels\), over the limit"):
        open_image(path, "bomb.png")
    with pytest.raises(ImageTooLargeError, match="too large to decode"):  # beyond Pillow's own limit too
        open_image(_write(tmp_path / "huge.png", declared_png(20000, 20000)))
    with open_image(_write(tmp_path / "fine.png", declared_png(8, 8))) as image:
        assert image.size == (8, 8)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_load_image_names_the_size_and_the_limit(tmp_path):
    engine = Engine(output_dir=tmp_path / "out", input_dir=tmp_path / "in")
    engine.settings.input_dir.mkdir()
    (engine.settings.input_dir / "huge.png").write_bytes(declared_png(12000, 12000))
    b = WorkflowBuilder()
    b.add("PreviewImage", images=b.add("LoadImage", id="load", image="huge.png")["image"])
    with pytest.raises(WorkflowError) as refused:  # known from the header: refused at validation
        engine.run(b.build())
    message = str(refused.value)
    assert "node load (LoadImage), input 'image'" in message
    assert "12000x12000 (144.0 megapixels), over the limit of 67.1 megapixels" in message
    assert "Traceback" not in message


def test_dataset_images_over_the_limit_are_bad_items(tmp_path, monkeypatch):
    from PIL import Image

    from graphgen_nodes.lora.dataset import DatasetError, load_dataset

    folder = tmp_path / "data"
    folder.mkdir()
    for name, size in (("small", 64), ("large", 96)):
        Image.new("RGB", (size, size), (9, 9, 9)).save(folder / f"{name}.png")
        (folder / f"{name}.txt").write_text(f"a {name} square", encoding="utf-8")
    monkeypatch.setenv(ENV_MAX_IMAGE_PIXELS, str(80 * 80))
    with pytest.raises(DatasetError, match=r"large\.png is 96x96 .* over the limit of 0\.0 megapixels \(6400 pixels\)"):
        load_dataset(folder)
    dataset = load_dataset(folder, on_bad_item="skip")
    assert [item.file_name for item in dataset.items] == ["small.png"] and "96x96" in dataset.warnings[0]
