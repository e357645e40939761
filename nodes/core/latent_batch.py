"""Batch operations on LATENT dicts and IMAGE batches, with ComfyUI's rules for their extra keys.

A LATENT may carry `noise_mask` (`[B or 1, 1, h, w]`) and `batch_index` (the noise row each
sample uses, so that a sample cut from a batch gets the same noise as in the whole batch). These
functions keep both consistent with `samples`; the input dicts are never modified.
graphgen's `noise_only` flag (the latent is zeros by construction) survives any selection or
repetition of rows, and a concatenation only when every part had it.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 - the usual name

__all__ = ["latent_from_batch", "rebatch_images", "rebatch_latents", "repeat_latent_batch"]


def _masks_for_rows(masks: torch.Tensor, rows: int) -> torch.Tensor:
    """Repeat a shorter mask batch cyclically to `rows` rows (a single mask is left as it is)."""
    if masks.shape[0] == 1 or masks.shape[0] >= rows:
        return masks
    return masks.repeat(math.ceil(rows / masks.shape[0]), 1, 1, 1)[:rows]


def latent_from_batch(latent: dict[str, Any], batch_index: int, length: int) -> dict[str, Any]:
    """Rows `batch_index .. batch_index + length` of a latent batch.

    As in ComfyUI, an index past the end selects the last row and the length is cut to what is
    left, so this never fails on a shorter batch.
    """
    samples = latent["samples"]
    rows = int(samples.shape[0])
    start = min(rows - 1, batch_index)
    length = min(rows - start, length)
    out = dict(latent)
    out["samples"] = samples[start : start + length].clone()
    if "noise_mask" in latent:
        masks = latent["noise_mask"]
        out["noise_mask"] = masks.clone() if masks.shape[0] == 1 else \
            _masks_for_rows(masks, rows)[start : start + length].clone()
    previous = latent.get("batch_index")
    out["batch_index"] = list(range(start, start + length)) if previous is None else \
        list(previous[start : start + length])
    return out


def repeat_latent_batch(latent: dict[str, Any], amount: int) -> dict[str, Any]:
    """The batch repeated `amount` times; batch indexes continue after the original's range."""
    samples = latent["samples"]
    out = dict(latent)
    out["samples"] = samples.repeat((amount, 1, 1, 1))
    masks = latent.get("noise_mask")
    if masks is not None and masks.shape[0] > 1:  # a single mask applies to every row already
        out["noise_mask"] = _masks_for_rows(masks, int(samples.shape[0])).repeat((amount, 1, 1, 1))
    previous = latent.get("batch_index")
    if previous is not None:
        offset = max(previous) - min(previous) + 1
        out["batch_index"] = list(previous) + [i + k * offset for k in range(1, amount) for i in previous]
    return out


def _pixel_masks(latent: dict[str, Any]) -> torch.Tensor:
    """The latent's noise mask as `[B, 1, 8h, 8w]` (all ones when it has none)."""
    samples = latent["samples"]
    rows, height, width = int(samples.shape[0]), int(samples.shape[-2]) * 8, int(samples.shape[-1]) * 8
    masks = latent.get("noise_mask")
    if masks is None:
        return torch.ones((rows, 1, height, width))
    masks = masks.reshape((-1, 1, masks.shape[-2], masks.shape[-1])).to(torch.float32)
    if tuple(masks.shape[-2:]) != (height, width):
        masks = F.interpolate(masks, size=(height, width), mode="bilinear")
    if masks.shape[0] < rows:
        masks = masks.repeat(math.ceil(rows / masks.shape[0]), 1, 1, 1)[:rows]
    return masks.cpu()


def rebatch_latents(latents: list[dict[str, Any]], batch_size: int) -> list[dict[str, Any]]:
    """Regroup a list of latent batches into batches of `batch_size` rows (ComfyUI's RebatchLatents).

    Consecutive latents of the same size are joined and cut into `batch_size` rows; a change of
    size starts a new batch (the last batch of a size may be shorter). Noise masks follow their
    rows (at pixel size; rows without one get an all-ones mask, and a batch whose mask is all ones
    gets none); batch indexes follow their rows, numbered on across the list where missing.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    groups: list[list[tuple[torch.Tensor, torch.Tensor, list[int], bool]]] = []
    offset = 0
    for latent in latents:
        samples = latent["samples"]
        rows = int(samples.shape[0])
        index = latent.get("batch_index")
        index = list(index) if index is not None else list(range(offset, offset + rows))
        offset += rows
        part = (samples, _pixel_masks(latent), index, bool(latent.get("noise_only")))
        if groups and tuple(groups[-1][0][0].shape[1:]) == tuple(samples.shape[1:]):
            groups[-1].append(part)
        else:
            groups.append([part])
    out: list[dict[str, Any]] = []
    for group in groups:
        samples = torch.cat([p[0] for p in group])
        masks = torch.cat([p[1] for p in group])
        index = [i for p in group for i in p[2]]
        noise_only = [flag for p in group for flag in [p[3]] * int(p[0].shape[0])]
        for start in range(0, int(samples.shape[0]), batch_size):
            batch: dict[str, Any] = {"samples": samples[start : start + batch_size],
                                     "batch_index": index[start : start + batch_size]}
            mask = masks[start : start + batch_size]
            if not bool((mask == 1.0).all()):
                batch["noise_mask"] = mask
            if all(noise_only[start : start + batch_size]):
                batch["noise_only"] = True
            out.append(batch)
    return out


def rebatch_images(images: list[torch.Tensor], batch_size: int) -> list[torch.Tensor]:
    """Regroup a list of image batches `[B, H, W, C]` into batches of `batch_size` images.

    Raises:
        ValueError: If the images differ in size (they cannot share a batch; scale them first).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    rows = [image[i : i + 1] for image in images for i in range(int(image.shape[0]))]
    sizes = {tuple(row.shape[1:]) for row in rows}
    if len(sizes) > 1:
        shown = ", ".join(f"{s[1]}x{s[0]}" for s in sorted(sizes))
        raise ValueError(f"images of different sizes ({shown}) cannot be batched together; "
                         "scale them to one size first (ImageScale)")
    return [torch.cat(rows[i : i + batch_size]) for i in range(0, len(rows), batch_size)]
