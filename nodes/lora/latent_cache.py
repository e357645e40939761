"""On-disk cache of VAE latents and ChatGLM embeddings for LoRA training.

Every dataset item is encoded once: its image by the VAE (posterior **mean** times the VAE's
``scaling_factor``, 0.13025 for Kolors) and its caption by ChatGLM (prompt embeddings
``[256, 4096]`` and pooled ``[4096]``). Entries are safetensors files under ``cache_dir``:

* ``latents/<key>.safetensors`` (tensor ``latents``, ``[V, 4, H/8, W/8]``), keyed by the image's
  content hash, the VAE identity string, the preprocessing parameters and the crop variants;
* ``text/<key>.safetensors`` (tensors ``prompt_embeds``, ``pooled``), keyed by the caption and the
  text-encoder identity string.

So a changed image or caption re-encodes only that item, and a re-run with the same data never
needs the VAE or the text encoder (they can stay off the device, or not be loaded at all: the
encoders are plain callables the caller may build lazily).

Augmentation and caching. Random flips and random crops make an item's latents vary, and a
flipped image's latents are not the flipped latents (the VAE is not mirror-equivariant), so
each item stores ``V`` *variants*, each encoded from its own pixels:

* ``random_flip``: every crop is stored unflipped and flipped;
* ``center_crop=False`` (random crop): ``crops_per_image`` crop positions (default 4) drawn once
  per image, deterministically from ``(crop_seed, image hash)``. Training then samples among
  these crops, so random crop is approximated by a fixed set of crops, not a fresh crop per
  step; raise ``crops_per_image`` for more variety (each costs one VAE encode and
  ``4·H/8·W/8`` floats of disk).

The trainer picks a variant uniformly per sample, from its own seeded generator.

Buckets and captions. With aspect-ratio bucketing (``CacheSpec.buckets``) each image is
preprocessed at its bucket's size (:mod:`.buckets`), so items' latents differ in shape; the
trainer batches within a bucket. With caption shuffling or dropout (``CacheSpec.captions``)
every caption variant and the empty caption are encoded once (:mod:`.captions`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from graphgen.files import atomic_write_via_path

from ..diffusion.vae_ops import check_encode_fits
from ..kolors.encode import encode_prompts
from .buckets import BucketSpec, assign_bucket, bucket_report, bucket_sizes
from .captions import CaptionOptions, caption_variants
from .dataset import (
    DatasetItem,
    LoraDataset,
    PreprocessParams,
    center_crop_box,
    load_rgb,
    preprocess_image,
    random_crop_box,
)

__all__ = [
    "CACHE_VERSION",
    "CacheError",
    "CacheSpec",
    "CachedData",
    "CachedItem",
    "ImageEncoder",
    "TextEncoder",
    "Variant",
    "build_cache",
    "chatglm_encoder",
    "data_fingerprint",
    "item_variants",
    "vae_encoder",
]

CACHE_VERSION = 1

#: ``[N, 3, H, W]`` pixels in [-1, 1] → ``[N, 4, H/8, W/8]`` scaled latents.
ImageEncoder = Callable[[torch.Tensor], torch.Tensor]
#: ``N`` captions → (prompt embeddings ``[N, L, D]``, pooled ``[N, D]``).
TextEncoder = Callable[[list[str]], tuple[torch.Tensor, torch.Tensor]]


class CacheError(ValueError):
    """The cache cannot be completed (an entry is missing and no encoder was given)."""


@dataclass(frozen=True)
class CacheSpec:
    """What determines the cached tensors besides the data itself.

    Attributes:
        params: Preprocessing parameters.
        vae_id: Identity string of the VAE (e.g. a path plus file hash); a change re-encodes.
        text_encoder_id: Identity string of the text encoder and tokenizer.
        crops_per_image: Crop positions stored per image when ``params.center_crop`` is False.
        crop_seed: Seed for those crop positions (and for caption shuffles).
        buckets: Aspect-ratio bucketing; ``None`` trains every image at ``params``' size.
        captions: Caption shuffling/dropout (which caption variants are encoded).
    """

    params: PreprocessParams
    vae_id: str
    text_encoder_id: str
    crops_per_image: int = 4
    crop_seed: int = 0
    buckets: BucketSpec | None = None
    captions: CaptionOptions = CaptionOptions()

    def item_params(self, item: DatasetItem) -> PreprocessParams:
        """The preprocessing of one item: its bucket's size with bucketing, else ``params``."""
        if self.buckets is None:
            return self.params
        w, h = assign_bucket(item.size, _sizes(self.buckets))
        return PreprocessParams(h, w, self.params.center_crop, self.params.random_flip)


_SIZES: dict[BucketSpec, list[tuple[int, int]]] = {}


def _sizes(spec: BucketSpec) -> list[tuple[int, int]]:
    if spec not in _SIZES:
        _SIZES[spec] = bucket_sizes(spec)
    return _SIZES[spec]


@dataclass(frozen=True)
class Variant:
    """One stored augmentation of an image: crop ``(top, left)`` in resized pixels and flip."""

    top: int
    left: int
    flip: bool


@dataclass
class CachedItem:
    """The cached tensors of one dataset item (CPU).

    Attributes:
        latents: ``[V, 4, H/8, W/8]``, one row per variant.
        prompt_embeds: ``[L, D]``.
        pooled: ``[D]``.
        caption: The caption.
        file_name: The item's file name in the dataset.
        original_size: The image's size ``(height, width)`` before preprocessing.
        crops: Per variant, the crop ``(top, left)`` in resized pixels.
        repeats: Sampling weight (kohya repeats).
        text_variants: Extra ``(prompt_embeds, pooled)`` of shuffled captions (may be empty).
        variant_captions: The shuffled captions of ``text_variants``, in the same order.
    """

    latents: torch.Tensor
    prompt_embeds: torch.Tensor
    pooled: torch.Tensor
    caption: str
    file_name: str
    original_size: tuple[int, int] = (0, 0)
    crops: list[tuple[int, int]] = dataclasses.field(default_factory=list)
    repeats: int = 1
    text_variants: list[tuple[torch.Tensor, torch.Tensor]] = dataclasses.field(default_factory=list)
    variant_captions: list[str] = dataclasses.field(default_factory=list)

    @property
    def target_size(self) -> tuple[int, int]:
        """The training size ``(height, width)`` in pixels (the bucket's, with bucketing)."""
        return int(self.latents.shape[-2]) * 8, int(self.latents.shape[-1]) * 8


@dataclass
class CachedData:
    """Everything the trainer needs: no VAE, no text encoder.

    Attributes:
        items: One entry per dataset item, in dataset order.
        fingerprint: :func:`data_fingerprint` of the dataset and spec.
        dataset_fingerprint: :meth:`LoraDataset.fingerprint` of the dataset alone.
        spec: The spec used.
        images_encoded: VAE batches run by this build (0 on a full hit).
        captions_encoded: Captions encoded by this build (0 on a full hit).
        empty_text: ``(prompt_embeds, pooled)`` of the empty caption, for caption dropout.
        report: Bucket report lines (empty without bucketing).
    """

    items: list[CachedItem]
    fingerprint: str
    dataset_fingerprint: str
    spec: CacheSpec
    images_encoded: int = 0
    captions_encoded: int = 0
    empty_text: tuple[torch.Tensor, torch.Tensor] | None = None
    report: list[str] = dataclasses.field(default_factory=list)


def _sha(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()


def item_variants(item: DatasetItem, spec: CacheSpec) -> list[Variant]:
    """The augmentations stored for one item (see the module docstring).

    Args:
        item: The dataset item.
        spec: The cache spec.

    Returns:
        The variants, deterministic in ``(spec, item.digest, item.size)``.
    """
    p = spec.item_params(item)
    if p.center_crop:
        crops = [center_crop_box(item.size, p)]
    else:
        rng = random.Random(f"{spec.crop_seed}:{item.digest}")
        crops = [random_crop_box(item.size, p, rng) for _ in range(max(1, spec.crops_per_image))]
    flips = (False, True) if p.random_flip else (False,)
    return [Variant(top, left, flip) for top, left in crops for flip in flips]


def data_fingerprint(dataset: LoraDataset, spec: CacheSpec) -> str:
    """Identity of the training data: dataset fingerprint, model identities, preprocessing, crops.

    Computable without loading any model, so a caller can decide to skip work early.

    Args:
        dataset: The dataset.
        spec: The cache spec.

    Returns:
        A hex SHA-256 digest.
    """
    crops = spec.crops_per_image if not spec.params.center_crop else 0
    blob: dict[str, Any] = {
        "version": CACHE_VERSION,
        "dataset": dataset.fingerprint(spec.params),
        "vae": spec.vae_id,
        "text_encoder": spec.text_encoder_id,
        "crops": crops,
        "crop_seed": spec.crop_seed if crops else 0,
    }
    # Only present when used, so fingerprints of runs without them stay what they were.
    if spec.buckets is not None:
        blob["buckets"] = asdict(spec.buckets)
    if spec.captions != CaptionOptions():
        blob["captions"] = asdict(spec.captions)
    return _sha(blob)


def _atomic_save(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    cpu = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    atomic_write_via_path(path, lambda tmp: save_file(cpu, str(tmp), metadata=metadata), overwrite=True)


def _try_load(path: Path) -> dict[str, torch.Tensor] | None:
    if not path.is_file():
        return None
    try:
        return load_file(str(path))
    except Exception:  # a truncated or foreign file: re-encode and overwrite it
        return None


def build_cache(
    dataset: LoraDataset,
    spec: CacheSpec,
    cache_dir: str | Path,
    *,
    encode_images: ImageEncoder | None = None,
    encode_text: TextEncoder | None = None,
    batch_size: int = 4,
) -> CachedData:
    """Loads every item's latents and embeddings from the cache, encoding the missing ones.

    Args:
        dataset: The validated dataset.
        spec: Preprocessing, model identities and crop variants.
        cache_dir: Cache folder (created if needed); safe to share between datasets and runs.
        encode_images: VAE encoder (see :func:`vae_encoder`); called only for missing entries.
        encode_text: Text encoder (see :func:`chatglm_encoder`); called only for missing entries.
        batch_size: Images or captions per encoder call.

    Returns:
        The cached data, tensors on the CPU.

    Raises:
        CacheError: If an entry is missing and the matching encoder is ``None``.
    """
    root = Path(cache_dir)
    # ---- text: one entry per distinct caption (and shuffled variant, and the empty caption)
    per_item = {item.caption: caption_variants(item.caption, spec.captions, spec.crop_seed) for item in dataset.items}
    wanted = [c for variants in per_item.values() for c in variants]
    if spec.captions.caption_dropout_rate > 0:
        wanted.append("")
    captions = list(dict.fromkeys(wanted))
    text_key = {c: _sha(["text", CACHE_VERSION, spec.text_encoder_id, c]) for c in captions}
    text: dict[str, dict[str, torch.Tensor]] = {}
    missing = []
    for c in captions:
        loaded = _try_load(root / "text" / f"{text_key[c]}.safetensors")
        if loaded is not None and {"prompt_embeds", "pooled"} <= loaded.keys():
            text[c] = loaded
        else:
            missing.append(c)
    if missing and encode_text is None:
        raise CacheError(f"{len(missing)} captions are not in the cache {root}: pass a text encoder")
    for start in range(0, len(missing), batch_size):
        chunk = missing[start : start + batch_size]
        with torch.no_grad():
            embeds, pooled = encode_text(chunk)  # type: ignore[misc]
        for i, c in enumerate(chunk):
            entry = {"prompt_embeds": embeds[i].detach().cpu(), "pooled": pooled[i].detach().cpu()}
            _atomic_save(entry, root / "text" / f"{text_key[c]}.safetensors", {"caption": c})
            text[c] = entry
    # ---- latents: one entry per image (all its variants)
    latents: list[torch.Tensor] = []
    all_variants: list[list[Variant]] = []
    images_encoded = 0
    for item in dataset.items:
        p = spec.item_params(item)
        variants = item_variants(item, spec)
        all_variants.append(variants)
        key = _sha(
            ["latents", CACHE_VERSION, spec.vae_id, item.digest, asdict(p), [asdict(v) for v in variants]]
        )
        path = root / "latents" / f"{key}.safetensors"
        loaded = _try_load(path)
        if (
            loaded is not None
            and loaded.get("latents") is not None
            and len(loaded["latents"]) == len(variants)
        ):
            latents.append(loaded["latents"])
            continue
        if encode_images is None:
            raise CacheError(f"latents of {item.file_name} are not in the cache {root}: pass a VAE")
        img = load_rgb(item.image_path)
        pixels = [preprocess_image(img, p, crop=(v.top, v.left), flip=v.flip) for v in variants]
        parts = []
        for start in range(0, len(pixels), batch_size):
            with torch.no_grad():
                parts.append(encode_images(torch.stack(pixels[start : start + batch_size])).detach().cpu())
            images_encoded += 1
        lat = torch.cat(parts)
        _atomic_save({"latents": lat}, path, {"file_name": item.file_name})
        latents.append(lat)
    items = [
        CachedItem(
            latents=lat,
            prompt_embeds=text[item.caption]["prompt_embeds"],
            pooled=text[item.caption]["pooled"],
            caption=item.caption,
            file_name=item.file_name,
            original_size=(item.size[1], item.size[0]),
            crops=[(v.top, v.left) for v in variants],
            repeats=item.repeats,
            text_variants=[(text[c]["prompt_embeds"], text[c]["pooled"]) for c in per_item[item.caption][1:]],
            variant_captions=per_item[item.caption][1:],
        )
        for item, lat, variants in zip(dataset.items, latents, all_variants, strict=True)
    ]
    empty = text.get("") if spec.captions.caption_dropout_rate > 0 else None
    report = []
    if spec.buckets is not None:
        report = bucket_report(
            ((spec.item_params(item).width, spec.item_params(item).height), item.repeats) for item in dataset.items
        )
    return CachedData(
        items=items,
        fingerprint=data_fingerprint(dataset, spec),
        dataset_fingerprint=dataset.fingerprint(spec.params),
        spec=spec,
        images_encoded=images_encoded,
        captions_encoded=len(missing),
        empty_text=(empty["prompt_embeds"], empty["pooled"]) if empty is not None else None,
        report=report,
    )


def vae_encoder(
    vae: Any, *, device: torch.device | str | None = None, scaling_factor: float | None = None
) -> ImageEncoder:
    """Wraps a diffusers ``AutoencoderKL`` as an :data:`ImageEncoder`: posterior mean × scale.

    Runs in the VAE's own dtype; if an fp16 VAE overflows (NaN/inf, the original SDXL VAE
    does), that batch is re-encoded by an fp32 copy of the VAE (the caller's VAE is not changed).

    Args:
        vae: The VAE.
        device: Where to run it (default: where its weights are).
        scaling_factor: Latent scale (default: ``vae.config.scaling_factor``, 0.13025 for Kolors).

    Returns:
        The encoder function.
    """
    scale = float(scaling_factor if scaling_factor is not None else vae.config.scaling_factor)
    first = next(vae.parameters())
    dev = torch.device(device) if device is not None else first.device
    fp32_copy: list[Any] = []

    def encode(pixels: torch.Tensor) -> torch.Tensor:
        check_encode_fits(vae, int(pixels.shape[0]), int(pixels.shape[-2]), int(pixels.shape[-1]))
        x = pixels.to(dev, first.dtype)
        mean = vae.encode(x).latent_dist.mean
        if not torch.isfinite(mean).all() and first.dtype != torch.float32:
            if not fp32_copy:
                import copy

                fp32_copy.append(copy.deepcopy(vae).float())
            mean = fp32_copy[0].encode(pixels.to(dev, torch.float32)).latent_dist.mean
        return (mean.float() * scale).cpu()

    return encode


def chatglm_encoder(
    text_encoder: Any, tokenizer: Any, *, device: torch.device | str | None = None
) -> TextEncoder:
    """Wraps Kolors' ChatGLM text encoder as a :data:`TextEncoder`.

    Uses :func:`graphgen_nodes.kolors.encode.encode_prompts`, so training sees the same
    embeddings as inference (penultimate hidden state, pooled = last position of the last
    layer before the final norm, 256 tokens, left padding).

    Args:
        text_encoder: diffusers' ``ChatGLMModel``.
        tokenizer: ``ChatGLMTokenizer``.
        device: Where to run it (default: where its weights are).

    Returns:
        The encoder function.
    """
    dev = torch.device(device) if device is not None else next(text_encoder.parameters()).device

    def encode(prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        cond = encode_prompts(text_encoder, tokenizer, list(prompts), device=dev)
        return cond.embeds.cpu(), cond.pooled.cpu()

    return encode
