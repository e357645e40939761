"""Loading images as tensors and saving PNGs with embedded text, safely.

Conventions (ComfyUI's): an image is a float32 tensor ``[B, H, W, 3]`` in ``[0, 1]``; a mask is
``[B, H, W]`` in ``[0, 1]`` where **1 marks a transparent pixel** (``mask = 1 - alpha``, as
ComfyUI's LoadImage, so that the mask says what to inpaint).

:func:`save_png` never writes outside its output folder and never overwrites a file: the name is
claimed with a hard link from a fully written temporary file in the same folder (atomic, fails
if the name exists), so readers never see a partial PNG and concurrent writers get distinct
numbers. On file systems without hard links it falls back to ``O_CREAT | O_EXCL`` reservation
followed by ``os.replace``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError

from graphgen.files import UnsafePathError, relative_parts, safe_folder, write_new_file
from graphgen.limits import ImageTooLargeError, open_image

__all__ = ["load_image", "read_png_text", "save_png", "tensor_to_pil"]

_MAX_COUNTER = 99_999_999
_KEY_RE = re.compile(r"^[\x20-\x7e\xa1-\xff]{1,79}$")


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def load_image(path: str | os.PathLike[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Loads a PNG/JPEG/WebP (anything Pillow reads) as an image tensor and an optional mask.

    EXIF orientation is applied; for animated files the first frame is used; 16-bit images are
    scaled from 0..65535.

    Args:
        path: The file.

    Returns:
        ``(image [1, H, W, 3] float32 in [0, 1], mask [1, H, W] or None)``. The mask is
        ``1 - alpha`` when the file has an alpha channel or a transparent palette colour.

    Raises:
        ValueError: If the file is missing, not an image or corrupt (one line naming the file).
        graphgen.limits.ImageTooLargeError: If it has more pixels than the limit (checked before decoding).
    """
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"cannot load image {str(p)!r}: file not found")
    try:
        with open_image(p, f"image {str(p)!r}") as opened:
            opened.seek(0)
            opened.load()
            img = ImageOps.exif_transpose(opened)
            img.load()
    except ImageTooLargeError:
        raise
    except (OSError, SyntaxError, ValueError, UnidentifiedImageError, Image.DecompressionBombError) as exc:
        raise ValueError(f"cannot load image {str(p)!r}: {_one_line(exc)}") from None

    has_alpha = "A" in img.getbands() or (img.mode == "P" and "transparency" in img.info)
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        scale = 65535.0 if img.mode.startswith("I;16") or np.asarray(img).max() > 255 else 255.0
        gray = np.asarray(img, dtype=np.float32) / scale
        rgb = np.repeat(np.clip(gray, 0.0, 1.0)[..., None], 3, axis=-1)
        alpha = None
    else:
        rgba = img.convert("RGBA") if has_alpha else img.convert("RGB")
        arr = np.asarray(rgba, dtype=np.float32) / 255.0
        rgb = arr[..., :3]
        alpha = arr[..., 3] if has_alpha else None
    image = torch.from_numpy(np.ascontiguousarray(rgb))[None]
    mask = None if alpha is None else (1.0 - torch.from_numpy(np.ascontiguousarray(alpha)))[None]
    return image, mask


def tensor_to_pil(image: torch.Tensor) -> Image.Image:
    """Converts ``[H, W, 3]`` (or ``[1, H, W, 3]``) floats in ``[0, 1]`` to an 8-bit RGB image.

    Values are clamped, scaled by 255 and rounded (as diffusers' ``numpy_to_pil``).

    Raises:
        ValueError: If the shape is not ``[H, W, 3]``.
    """
    if image.ndim == 4 and image.shape[0] == 1:
        image = image[0]
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"image must be [H, W, 3], got {tuple(image.shape)}")
    arr = (image.detach().to(torch.float32).clamp(0, 1) * 255.0).round().to(torch.uint8).cpu().numpy()
    return Image.fromarray(arr)


def _safe_parts(prefix: str) -> tuple[list[str], str]:
    """Splits a file-name prefix into sub-folders and a base name, refusing anything that escapes."""
    try:
        parts = relative_parts(prefix)
    except UnsafePathError as exc:
        raise ValueError(f"invalid file name prefix {prefix!r}: {exc}") from None
    if not parts:
        raise ValueError(f"invalid file name prefix {prefix!r}")
    return parts[:-1], parts[-1]


def save_png(
    image: torch.Tensor,
    out_dir: str | os.PathLike[str],
    prefix: str,
    text_chunks: dict[str, str] | None = None,
    *,
    compress_level: int = 4,
) -> Path:
    """Saves an image as ``<out_dir>/<prefix>_NNNNN_.png`` with text chunks, never overwriting.

    Args:
        image: ``[H, W, 3]`` floats in ``[0, 1]`` (``[1, H, W, 3]`` accepted).
        out_dir: The output folder (created if missing). Nothing is written outside it.
        prefix: File name prefix; may contain sub-folders (``"kolors/run1/img"``) but may not be
            absolute, contain ``..``, or lead through a symlink out of ``out_dir``.
        text_chunks: Keys and values stored as PNG text (``tEXt``, or ``iTXt`` UTF-8 when the
            value is not Latin-1, e.g. Chinese prompts), such as ``workflow``, ``prompt``,
            ``parameters``.
        compress_level: zlib level 0-9.

    Returns:
        The path of the new file.

    Raises:
        ValueError: On a bad prefix, a path escaping ``out_dir``, a bad key, or a bad image shape.
    """
    sub, base = _safe_parts(prefix)
    pil = tensor_to_pil(image)
    info = PngImagePlugin.PngInfo()
    for key, value in (text_chunks or {}).items():
        if not _KEY_RE.match(key):
            raise ValueError(f"invalid PNG text key {key!r} (1-79 printable Latin-1 characters)")
        info.add_text(key, str(value))

    try:
        folder = safe_folder(out_dir, sub)
    except UnsafePathError as exc:
        raise ValueError(f"file name prefix {prefix!r}: {exc}") from None
    return write_new_file(folder, base, ".png",
                          lambda handle: pil.save(handle, format="PNG", pnginfo=info, compress_level=compress_level))


def read_png_text(path: str | os.PathLike[str]) -> dict[str, str]:
    """Reads a PNG's text chunks (``tEXt``, ``zTXt``, ``iTXt``) as plain strings.

    Args:
        path: The PNG file.

    Returns:
        Key → value.

    Raises:
        ValueError: If the file is missing or not a readable PNG.
    """
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"cannot read PNG text from {str(p)!r}: file not found")
    try:
        with open_image(p, f"PNG {str(p)!r}") as img:
            if img.format != "PNG":
                raise ValueError(f"not a PNG file but {img.format}")
            img.load()
            text = getattr(img, "text", {})
            return {str(k): str(v) for k, v in text.items()}
    except (OSError, SyntaxError, ValueError, UnidentifiedImageError) as exc:
        raise ValueError(f"cannot read PNG text from {str(p)!r}: {_one_line(exc)}") from None
