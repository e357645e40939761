"""Image loading (EXIF, alpha, errors) and safe PNG saving (numbering, containment, text chunks)."""

from __future__ import annotations

import json
import os
import struct
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from graphgen_nodes.diffusion.images import load_image, read_png_text, save_png, tensor_to_pil


def _pattern(h: int = 4, w: int = 6) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def _png_chunk_types(path: Path) -> list[tuple[bytes, bytes]]:
    """(type, first bytes of data) of each chunk, read straight from the file."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, out = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        ctype = data[pos + 4 : pos + 8]
        out.append((ctype, data[pos + 8 : pos + 8 + min(length, 20)]))
        pos += 12 + length
    return out


# ------------------------------------------------------------------------------------ load


@pytest.mark.parametrize("fmt,ext", [("PNG", "png"), ("WEBP", "webp")])
def test_load_lossless_rgb(tmp_path, fmt, ext):
    arr = _pattern()
    path = tmp_path / f"x.{ext}"
    Image.fromarray(arr).save(path, format=fmt, **({"lossless": True} if fmt == "WEBP" else {}))
    image, mask = load_image(path)
    assert image.shape == (1, 4, 6, 3) and image.dtype == torch.float32 and mask is None
    assert torch.equal(image[0], torch.from_numpy(arr).float() / 255)


def test_load_applies_exif_orientation(tmp_path):
    arr = _pattern(4, 6)
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = tmp_path / "rotated.jpg"
    img.save(path, format="JPEG", quality=100, exif=exif.tobytes())
    image, _ = load_image(path)
    assert image.shape == (1, 6, 4, 3)  # width and height swapped
    stored = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255
    expected = np.rot90(stored, k=-1)  # 90 degrees clockwise
    assert np.allclose(image[0].numpy(), expected)


def test_alpha_becomes_mask(tmp_path):
    rgba = np.zeros((3, 5, 4), dtype=np.uint8)
    rgba[..., :3] = 200
    rgba[..., 3] = 255
    rgba[1, 2, 3] = 0  # one transparent pixel
    rgba[0, 0, 3] = 51  # one 80%-transparent pixel
    path = tmp_path / "a.png"
    Image.fromarray(rgba, "RGBA").save(path)
    image, mask = load_image(path)
    assert image.shape == (1, 3, 5, 3) and mask is not None and mask.shape == (1, 3, 5)
    assert mask[0, 1, 2] == 1.0 and mask[0, 2, 2] == 0.0  # mask = 1 - alpha (ComfyUI)
    assert abs(mask[0, 0, 0].item() - 0.8) < 1e-6


def test_palette_transparency_becomes_mask(tmp_path):
    pal = Image.new("P", (4, 4), 1)
    pal.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    pal.putpixel((0, 0), 0)
    path = tmp_path / "p.png"
    pal.save(path, transparency=0)
    image, mask = load_image(path)
    assert mask is not None and mask[0, 0, 0] == 1.0 and mask[0, 3, 3] == 0.0
    assert image[0, 3, 3].tolist() == [1.0, 0.0, 0.0]


def test_load_errors_name_the_file(tmp_path):
    bad = tmp_path / "broken.png"
    good = tmp_path / "good.png"
    Image.fromarray(_pattern(32, 32)).save(good)
    bad.write_bytes(good.read_bytes()[:60])  # truncated
    for path in (bad, tmp_path / "missing.jpg"):
        with pytest.raises(ValueError) as info:
            load_image(path)
        message = str(info.value)
        assert path.name in message and "\n" not in message
    (tmp_path / "text.webp").write_text("not an image")
    with pytest.raises(ValueError, match="text.webp"):
        load_image(tmp_path / "text.webp")


# ------------------------------------------------------------------------------------ save


def _img(seed: int = 0, h: int = 8, w: int = 8) -> torch.Tensor:
    return torch.rand(h, w, 3, generator=torch.Generator().manual_seed(seed))


def test_save_numbers_and_never_overwrites(tmp_path):
    first = save_png(_img(0), tmp_path, "kolors")
    assert first.name == "kolors_00001_.png" and first.parent == tmp_path.resolve()
    second = save_png(_img(1), tmp_path, "kolors")
    assert second.name == "kolors_00002_.png"
    # A file the counter scan cannot predict (created by someone else) is not overwritten.
    (tmp_path / "kolors_00004_.png").write_bytes(b"precious")
    third = save_png(_img(2), tmp_path, "kolors")
    assert third.name == "kolors_00005_.png"
    assert (tmp_path / "kolors_00004_.png").read_bytes() == b"precious"
    assert first.read_bytes() != second.read_bytes()
    # No temporary files are left behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "kolors_00001_.png", "kolors_00002_.png", "kolors_00004_.png", "kolors_00005_.png",
    ]  # fmt: skip


def test_save_claims_are_race_free(tmp_path):
    paths: list[Path] = []
    lock = threading.Lock()

    def worker(seed: int) -> None:
        for k in range(3):
            p = save_png(_img(seed * 10 + k, 4, 4), tmp_path, "race")
            with lock:
                paths.append(p)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(paths) == 18 and len(set(paths)) == 18
    assert len(list(tmp_path.glob("race_*_.png"))) == 18


def test_save_pixels_and_text_chunks_round_trip(tmp_path):
    image = _img(3, 5, 7)
    workflow = json.dumps({"nodes": [{"id": 1, "type": "KolorsSampler"}]})
    chunks = {"workflow": workflow, "prompt": "一只可爱的小猫, 4k", "parameters": "Steps: 25, CFG scale: 5"}
    path = save_png(image[None], tmp_path, "sub/dir/out", chunks)
    assert path.parent == (tmp_path / "sub" / "dir").resolve()
    assert read_png_text(path) == chunks
    types = dict(_png_chunk_types(path))
    assert b"iTXt" in types and b"tEXt" in types  # Chinese goes to UTF-8 iTXt
    loaded, mask = load_image(path)
    assert mask is None
    assert torch.equal(loaded[0], (image * 255).round() / 255)
    assert tensor_to_pil(image).size == (7, 5)


@pytest.mark.parametrize("prefix", ["/etc/x", "../x", "a/../../x", "a/..", "..\\x", "C:\\x", "", "a/\x00"])
def test_prefix_escaping_is_refused(tmp_path, prefix):
    out = tmp_path / "out"
    with pytest.raises(ValueError):
        save_png(_img(), out, prefix)
    assert not any(p.suffix == ".png" for p in tmp_path.rglob("*"))


def test_symlink_escape_is_refused(tmp_path):
    out, outside = tmp_path / "out", tmp_path / "outside"
    out.mkdir()
    outside.mkdir()
    os.symlink(outside, out / "link")
    with pytest.raises(ValueError, match="outside"):
        save_png(_img(), out, "link/new/img")
    with pytest.raises(ValueError, match="outside"):
        save_png(_img(), out, "link/img")
    assert list(outside.iterdir()) == []  # nothing created through the link
    # A symlink that stays inside the output folder is fine.
    (out / "real").mkdir()
    os.symlink(out / "real", out / "alias")
    assert save_png(_img(), out, "alias/img").parent == (out / "real").resolve()


def test_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="text key"):
        save_png(_img(), tmp_path, "x", {"": "v"})
    with pytest.raises(ValueError, match=r"\[H, W, 3\]"):
        save_png(torch.rand(3, 8, 8), tmp_path, "x")
    with pytest.raises(ValueError, match="missing.png"):
        read_png_text(tmp_path / "missing.png")
    jpg = tmp_path / "x.jpg"
    Image.fromarray(_pattern()).save(jpg)
    with pytest.raises(ValueError, match="not a PNG"):
        read_png_text(jpg)


def test_previews_do_not_pile_up_in_the_temp_folder(tmp_path):
    from graphgen import Engine
    from graphgen_nodes.core.io_nodes import PREVIEWS_KEPT

    temp = tmp_path / "out" / ".temp"
    temp.mkdir(parents=True)
    for index in range(PREVIEWS_KEPT + 20):  # a long session's worth of old previews
        old = temp / f"preview_{index:08x}_00001_.png"
        old.write_bytes(b"png")
        os.utime(old, ns=(10**18 + index * 10**9, 10**18 + index * 10**9))
    (temp / "notes.txt").write_text("not a preview")
    (temp / "mine.png").write_bytes(b"not a preview either")
    Image.new("RGB", (8, 8)).save(tmp_path / "in.png")
    engine = Engine(output_dir=tmp_path / "out")
    workflow = {"1": {"class_type": "LoadImage", "inputs": {"image": str(tmp_path / "in.png")}},
                "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}}
    for _ in range(3):
        (new,) = engine.run(workflow).ui["2"]["images"]
        assert Path(new["path"]).is_file()
    previews = sorted(temp.glob("preview_*.png"))
    assert len(previews) == PREVIEWS_KEPT
    assert not (temp / "preview_00000000_00001_.png").exists()  # the oldest went first
    assert (temp / f"preview_{PREVIEWS_KEPT + 19:08x}_00001_.png").exists()
    assert (temp / "notes.txt").exists() and (temp / "mine.png").exists()
