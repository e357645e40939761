"""Limits on what graphgen decodes: the largest image, in pixels.

A PNG of a few hundred kilobytes can declare 12000x12000 pixels; decoded, converted to a float
tensor and encoded by a VAE it took a 24 GB machine down (issue 10). Every image graphgen reads
from a user (LoadImage, server uploads, training datasets) is opened with `open_image`, which
reads only the header, checks the size against the limit, and refuses with one line naming the
size and the limit before any pixel is decoded.

The default, 8192x8192 = 67,108,864 pixels ("64 MP"), is the largest texture most GPUs take and
4x the 4096-pixel edge of Kolors/SDXL upscaling workflows, while a decoded image of that size
(768 MiB as a float32 RGB tensor) still fits any machine that can run Kolors. It is also below
Pillow's own bomb limit (89.5 MP warns, 179 MP fails), whose warning would otherwise be the only
sign. Set `GRAPHGEN_MAX_IMAGE_PIXELS` to change it (Pillow's hard limit of 179 MP still applies).
"""

from __future__ import annotations

import os
import warnings
from typing import IO, Any

ENV_MAX_IMAGE_PIXELS = "GRAPHGEN_MAX_IMAGE_PIXELS"
DEFAULT_MAX_IMAGE_PIXELS = 8192 * 8192


class ImageTooLargeError(ValueError):
    """An image has more pixels than the limit (the message names its size and the limit)."""


def max_image_pixels() -> int:
    """The limit: `GRAPHGEN_MAX_IMAGE_PIXELS` when set, else `DEFAULT_MAX_IMAGE_PIXELS`.

    Raises:
        ValueError: the variable is set to something other than a positive whole number.
    """
    raw = os.environ.get(ENV_MAX_IMAGE_PIXELS, "").strip().replace("_", "")
    if not raw:
        return DEFAULT_MAX_IMAGE_PIXELS
    if not raw.isdigit() or int(raw) <= 0:
        raise ValueError(f"{ENV_MAX_IMAGE_PIXELS}={os.environ[ENV_MAX_IMAGE_PIXELS]!r} is not a positive number of "
                         f"pixels; unset it or give e.g. {DEFAULT_MAX_IMAGE_PIXELS} (8192x8192)")
    return int(raw)


def _megapixels(pixels: int) -> str:
    return f"{pixels / 1_000_000:.1f} megapixels"


def check_image_pixels(width: int, height: int, what: str = "the image") -> None:
    """Refuse an image of `width` x `height` over the limit.

    Raises:
        ImageTooLargeError: `what is WxH (N megapixels), over the limit of M megapixels: ...`.
    """
    limit = max_image_pixels()
    if width * height > limit:
        raise ImageTooLargeError(
            f"{what} is {width}x{height} ({_megapixels(width * height)}), over the limit of {_megapixels(limit)} "
            f"({limit} pixels): use a smaller image, or raise the limit with {ENV_MAX_IMAGE_PIXELS}")


def open_image(source: str | os.PathLike[str] | IO[bytes], what: str = "the image") -> Any:
    """`PIL.Image.open(source)` with the size checked before anything is decoded.

    Returns:
        The opened (not yet loaded) image; close it, or use it as a context manager.

    Raises:
        ImageTooLargeError: over the limit (also for images Pillow itself refuses as too large).
        OSError, ValueError: as `PIL.Image.open` (not an image, unreadable).
    """
    from PIL import Image

    try:
        with warnings.catch_warnings():  # this module's limit decides; Pillow's warning would only repeat it
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(source)
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(f"{what} is too large to decode ({exc}): use a smaller image") from None
    try:
        check_image_pixels(image.width, image.height, what)
    except ImageTooLargeError:
        image.close()
        raise
    return image
