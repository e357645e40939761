"""Sample images while training: one grid PNG per checkpoint, so progress can be seen.

The trainer calls a :data:`SampleFn` (built by the node for the model family: render the sample
prompts with the LoRA being trained, decode with the VAE) every ``sample_every_n_steps`` steps and
at the end, and writes the images side by side with the step written under them, atomically, as
``<output_name>.samples/step_000100.png``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from graphgen.files import atomic_write_via_path

__all__ = ["SampleFn", "grid_path", "write_grid"]

#: ``(UNet with the LoRA, text encode or None) -> one image per sample prompt``. The encode function
#: (``prompts -> (prompt_embeds, pooled)`` through the text encoders being trained) is given when the
#: text encoders train, so the prompts are encoded with their current LoRA; ``None`` otherwise.
SampleFn = Callable[[object, Callable[[list[str]], tuple[Any, Any]] | None], list[Image.Image]]


def grid_path(folder: Path, step: int) -> Path:
    """The grid file of ``step`` in ``folder``."""
    return folder / f"step_{step:06d}.png"


def write_grid(images: Sequence[Image.Image], path: Path, label: str) -> Path:
    """Writes ``images`` in one row with ``label`` under them (atomic, replacing a stale grid).

    Args:
        images: The sample images (any sizes; each cell is as large as the largest).
        path: The PNG file.
        label: Text under the row (e.g. ``"step 100/500"``).

    Returns:
        ``path``.
    """
    cell_w = max(im.width for im in images)
    cell_h = max(im.height for im in images)
    band = 16
    grid = Image.new("RGB", (cell_w * len(images), cell_h + band), "white")
    for i, im in enumerate(images):
        grid.paste(im.convert("RGB"), (i * cell_w, 0))
    ImageDraw.Draw(grid).text((2, cell_h + 2), label, fill=(0, 0, 0), font=ImageFont.load_default())
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_via_path(path, lambda tmp: grid.save(tmp, format="PNG"), overwrite=True)
    return path
