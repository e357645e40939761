"""Kolors LoRA training settings, run identity and re-run detection.

:class:`TrainConfig` carries the tutorial's parameters (DiffSynth ``train_kolors_lora.py``);
:func:`run_key` hashes everything that determines the trained weights; :func:`find_existing`
tells whether a finished output already matches, so a re-run from a new process doesn't
retrain; :func:`prepare_data` reads the dataset and fills the latent cache.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .buckets import BucketSpec
from .captions import CaptionOptions
from .checkpoint import read_lora_metadata
from .dataset import OnBadItem, PreprocessParams, load_dataset
from .families import ATTENTION_MODULES, FAMILIES, NETWORK_MODULES
from .latent_cache import CachedData, CacheSpec, ImageEncoder, TextEncoder, build_cache
from .optim import LR_SCHEDULERS, check_optimizer

__all__ = [
    "PRECISIONS",
    "TARGET_MODULES",
    "Fingerprints",
    "TrainConfig",
    "TrainError",
    "TrainResult",
    "TrainingCancelled",
    "find_existing",
    "prepare_data",
    "run_key",
]

PRECISIONS = ("32", "16-mixed", "bf16-mixed")
#: peft target modules: every attention's query, key, value and output projections.
TARGET_MODULES = ATTENTION_MODULES


#: Why Kolors refuses ``text_encoder_lr > 0`` (one line with the fix).
KOLORS_TEXT_ENCODER_REFUSAL = ("text_encoder_lr > 0 trains the CLIP text encoders of SD1.5/SDXL, but Kolors' "
                               "ChatGLM3 text encoder does not train: set text_encoder_lr to 0")


class TrainError(RuntimeError):
    """Training cannot start or go on (bad config, mismatched data, diverged loss)."""


class TrainingCancelled(RuntimeError):
    """``check_cancelled`` returned True; a checkpoint at ``step`` was saved first."""

    def __init__(self, step: int, checkpoint: Path) -> None:
        super().__init__(f"training cancelled at step {step}; resume from {checkpoint}")
        self.step = step
        self.checkpoint = checkpoint


@dataclass
class TrainConfig:
    """Training parameters; names and meanings follow the tutorial's command line.

    Defaults are the tutorial's command (``--lora_rank 16 --lora_alpha 4.0 --max_epochs 1
    --center_crop --use_gradient_checkpointing --precision "16-mixed"``) and the trainer's
    defaults for the rest (500 steps per epoch, lr 1e-4, batch 1, 1024x1024).

    Attributes:
        lora_rank: LoRA rank (tutorial: 16).
        lora_alpha: LoRA alpha; the update is scaled by alpha / rank (tutorial: 4.0).
        dataset_path: Dataset folder (``<dataset_path>/train/metadata.csv``), for :func:`prepare_data`.
        output_path: Output folder for the LoRA, its loss log and checkpoint.
        output_name: File stem: ``<output_name>.safetensors``, ``.loss.csv``, ``.loss.png``, ``.ckpt``.
        max_epochs: Epochs.
        steps_per_epoch: Random samples (batches) per epoch, not a pass over the data.
        learning_rate: AdamW learning rate (constant).
        batch_size: Samples per step.
        height: Training height in pixels.
        width: Training width in pixels.
        center_crop: Centre crop (else random crop, see ``latent_cache``).
        random_flip: Random horizontal flips.
        use_gradient_checkpointing: Trade compute for activation memory (same math). Measured on
            an H200 (full-size Kolors UNet in fp16, 1024x1024, batch 1, rank 16, 16-mixed): peak
            5.9 GiB with, 12.7 GiB without, at roughly twice the step time (a few steps timed,
            warm-up included: about 1-1.5 s against 0.6 s per step).
        precision: ``"32"``, ``"16-mixed"`` or ``"bf16-mixed"`` (Lightning's names; see ``trainer``
            for CPUs).
        seed: Seed of all training randomness.
        save_every_n_steps: Checkpoint period in steps (0 = only on cancel).
        resume: Continue from ``<output_name>.ckpt`` when it belongs to this run.
        keep_checkpoint: Keep the checkpoint after the LoRA is written (default: delete it).
        reuse_existing: Return an existing output whose metadata matches instead of retraining.
        weight_decay: AdamW weight decay (torch's default, as the tutorial).
        family: Model family (:mod:`.families`): ``kolors``, ``sdxl``, ``sd15``.
        caption_extension: Caption file suffix in the folder layouts (kohya's ``caption_extension``).
        shuffle_caption: Shuffle comma-separated tags (:mod:`.captions`).
        keep_tokens: Leading tags kept in place when shuffling.
        caption_dropout_rate: Probability of training a sample with the empty caption.
        enable_bucket: Aspect-ratio bucketing (:mod:`.buckets`); ``height``·``width`` is the
            largest bucket area.
        min_bucket_reso: Smallest bucket side.
        max_bucket_reso: Largest bucket side.
        bucket_reso_steps: Bucket sides are multiples of this.
        lr_scheduler: ``constant``, ``constant_with_warmup``, ``linear``, ``cosine``.
        lr_warmup_steps: Warm-up optimiser steps.
        noise_offset: kohya's noise offset (0: off; 0.05-0.1 typical).
        min_snr_gamma: min-SNR-γ loss weighting (0: off; 5 typical).
        gradient_accumulation_steps: Micro-batches per optimiser step.
        network_dropout: Dropout on the LoRA path (peft's ``lora_dropout``, on the LoRA input).
        optimizer: ``AdamW`` or ``AdamW8bit`` (bitsandbytes on CUDA).
        sample_every_n_steps: Render the sample prompts every N steps and at the end (0: off).
        sample_prompts: Sample prompts, one per line.
        sample_steps: Sampling steps of the sample images.
        sample_cfg: Guidance scale of the sample images.
        sample_seed: Noise seed of the sample images (the same at every checkpoint).
        network_modules: ``"attention"`` (q/k/v/out of every attention, the tutorial's) or
            ``"transformer"`` (kohya's default: also the feed-forward and proj_in/proj_out Linears).
        save_format: ``"diffusers"`` (``load_lora_weights``' own layout) or ``"kohya"`` (the
            family's kohya naming with ``.alpha`` and ``ss_*`` metadata, for kohya-aware tools).
        text_encoder_lr: kohya's ``--text_encoder_lr``. 0 (default) trains the UNet only on the
            cached text embeddings (``--network_train_unet_only``); > 0 also trains LoRA on the CLIP
            text encoder(s) (SD1.5, SDXL; not Kolors' ChatGLM3) at this learning rate: captions are
            then encoded every step, so the text encoders stay on the device (:mod:`.train_text`),
            and the file gets kohya's ``lora_te_``/``lora_te1_``/``lora_te2_`` keys.
    """

    lora_rank: int = 16
    lora_alpha: float = 4.0
    dataset_path: str = ""
    output_path: str = "./models"
    output_name: str = "kolors_lora"
    max_epochs: int = 1
    steps_per_epoch: int = 500
    learning_rate: float = 1e-4
    batch_size: int = 1
    height: int = 1024
    width: int = 1024
    center_crop: bool = True
    random_flip: bool = False
    use_gradient_checkpointing: bool = True
    precision: str = "16-mixed"
    seed: int = 0
    save_every_n_steps: int = 100
    resume: bool = True
    keep_checkpoint: bool = False
    reuse_existing: bool = True
    weight_decay: float = 0.01
    family: str = "kolors"
    caption_extension: str = ".txt"
    shuffle_caption: bool = False
    keep_tokens: int = 0
    caption_dropout_rate: float = 0.0
    enable_bucket: bool = False
    min_bucket_reso: int = 256
    max_bucket_reso: int = 1024
    bucket_reso_steps: int = 64
    lr_scheduler: str = "constant"
    lr_warmup_steps: int = 0
    noise_offset: float = 0.0
    min_snr_gamma: float = 0.0
    gradient_accumulation_steps: int = 1
    network_dropout: float = 0.0
    optimizer: str = "AdamW"
    sample_every_n_steps: int = 0
    sample_prompts: str = ""
    sample_steps: int = 20
    sample_cfg: float = 5.0
    sample_seed: int = 0
    save_format: str = "diffusers"
    network_modules: str = "attention"
    text_encoder_lr: float = 0.0

    @property
    def total_steps(self) -> int:
        """``max_epochs * steps_per_epoch``."""
        return self.max_epochs * self.steps_per_epoch

    def preprocess(self) -> PreprocessParams:
        """The dataset preprocessing these settings ask for."""
        return PreprocessParams(self.height, self.width, self.center_crop, self.random_flip)

    def buckets(self) -> BucketSpec | None:
        """The bucket settings (``None`` without ``enable_bucket``)."""
        if not self.enable_bucket:
            return None
        resolution = int((self.height * self.width) ** 0.5) // 8 * 8
        return BucketSpec(resolution, self.min_bucket_reso, self.max_bucket_reso, self.bucket_reso_steps)

    def captions(self) -> CaptionOptions:
        """The caption augmentation settings."""
        return CaptionOptions(
            self.shuffle_caption, self.keep_tokens, caption_dropout_rate=self.caption_dropout_rate
        )

    def target_modules(self) -> list[str]:
        """peft target module names of ``network_modules``."""
        return list(NETWORK_MODULES.get(self.network_modules, ATTENTION_MODULES))

    def prompts(self) -> list[str]:
        """The sample prompts (non-empty lines of ``sample_prompts``)."""
        return [line.strip() for line in self.sample_prompts.splitlines() if line.strip()]

    def paths(self) -> dict[str, Path]:
        """Output files: ``lora``, ``csv``, ``png``, ``checkpoint``."""
        out = Path(self.output_path).expanduser()
        stem = self.output_name
        return {
            "lora": out / f"{stem}.safetensors",
            "csv": out / f"{stem}.loss.csv",
            "png": out / f"{stem}.loss.png",
            "checkpoint": out / f"{stem}.ckpt",
            "samples": out / f"{stem}.samples",
        }

    def validate(self) -> None:
        """Raises :class:`TrainError` naming the first bad setting."""
        checks = [
            (self.lora_rank >= 1, "lora_rank must be >= 1"),
            (self.lora_alpha > 0, "lora_alpha must be > 0"),
            (
                self.max_epochs >= 1 and self.steps_per_epoch >= 1,
                "max_epochs and steps_per_epoch must be >= 1",
            ),
            (self.learning_rate > 0, "learning_rate must be > 0"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.precision in PRECISIONS, f"precision must be one of {', '.join(PRECISIONS)}"),
            (self.save_every_n_steps >= 0, "save_every_n_steps must be >= 0"),
            (bool(self.output_name) and "/" not in self.output_name, "output_name must be a plain file stem"),
            (self.family in FAMILIES, f"family must be one of {', '.join(sorted(FAMILIES))}"),
            (self.lr_scheduler in LR_SCHEDULERS, f"lr_scheduler must be one of {', '.join(LR_SCHEDULERS)}"),
            (self.lr_warmup_steps >= 0, "lr_warmup_steps must be >= 0"),
            (self.noise_offset >= 0, "noise_offset must be >= 0 (0.05-0.1 typical)"),
            (self.min_snr_gamma >= 0, "min_snr_gamma must be >= 0 (0 is off, 5 typical)"),
            (self.gradient_accumulation_steps >= 1, "gradient_accumulation_steps must be >= 1"),
            (0 <= self.network_dropout < 1, "network_dropout must be in [0, 1)"),
            (self.sample_every_n_steps >= 0, "sample_every_n_steps must be >= 0"),
            (self.sample_steps >= 1, "sample_steps must be >= 1"),
            (self.save_format in ("diffusers", "kohya"), 'save_format must be "diffusers" or "kohya"'),
            (self.network_modules in NETWORK_MODULES, 'network_modules must be "attention" or "transformer"'),
            (self.text_encoder_lr >= 0, "text_encoder_lr must be >= 0 (0: train the UNet only)"),
            (self.text_encoder_lr == 0 or self.family != "kolors", KOLORS_TEXT_ENCODER_REFUSAL),
            (not self.sample_every_n_steps or bool(self.prompts()),
             "sample_every_n_steps needs sample_prompts (one prompt per line)"),
        ]
        for ok, message in checks:
            if not ok:
                raise TrainError(message)
        for problem in (check_optimizer(self.optimizer, None), self.captions().check(),
                        (b.check() if (b := self.buckets()) else None)):
            if problem:
                raise TrainError(problem)
        self.preprocess()


@dataclass(frozen=True)
class Fingerprints:
    """Identity of what a run trains on.

    Attributes:
        data: :func:`~graphgen_nodes.lora.latent_cache.data_fingerprint` (dataset contents,
            preprocessing, VAE and text-encoder identities, crop variants).
        base_model: Identity string of the base UNet.
    """

    data: str
    base_model: str


@dataclass
class TrainResult:
    """What :func:`train_lora` produced.

    Attributes:
        lora_path: The LoRA file.
        steps: Steps the LoRA was trained for.
        reused: True when an existing matching output was returned without training.
        resumed_from: Step the run resumed from (0 for a fresh start).
        final_loss: Smoothed loss at the last step (NaN when reused).
        loss_csv: The loss CSV.
        loss_png: The loss-curve PNG.
        elapsed_s: Training seconds, across resumes.
        metadata: The LoRA file's metadata.
        warnings: Non-fatal problems (checkpoint handling, a half-precision base with precision 32).
        notes: Information (the default precision's fp32 fallback on a CPU).
    """

    lora_path: Path
    steps: int
    reused: bool
    resumed_from: int
    final_loss: float
    loss_csv: Path
    loss_png: Path
    elapsed_s: float
    metadata: dict[str, str]
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


#: Settings that do not change the trained weights (sample images, file naming, caption suffix:
#: the data fingerprint covers what the captions say).
_NO_WEIGHT_EFFECT = {
    "dataset_path", "output_path", "output_name", "use_gradient_checkpointing", "save_every_n_steps",
    "resume", "keep_checkpoint", "reuse_existing", "caption_extension", "sample_every_n_steps",
    "sample_prompts", "sample_steps", "sample_cfg", "sample_seed",
}
#: Settings added after the first release: left out of the run key at their defaults, so the
#: keys of LoRAs trained before stay valid (a re-run still finds them).
_LATER = {f.name: f.default for f in dataclasses.fields(TrainConfig)
          if f.name in {"family", "shuffle_caption", "keep_tokens", "caption_dropout_rate", "enable_bucket",
                        "min_bucket_reso", "max_bucket_reso", "bucket_reso_steps", "lr_scheduler",
                        "lr_warmup_steps", "noise_offset", "min_snr_gamma", "gradient_accumulation_steps",
                        "network_dropout", "optimizer", "save_format", "network_modules", "text_encoder_lr"}}


def _result_params(config: TrainConfig, with_length: bool) -> dict[str, Any]:
    skip = set(_NO_WEIGHT_EFFECT)
    if not with_length and config.lr_scheduler not in ("linear", "cosine"):
        # the first k steps of a longer run equal a shorter run's only when the schedule does
        # not depend on the run's length
        skip |= {"max_epochs", "steps_per_epoch"}
    params = {k: v for k, v in dataclasses.asdict(config).items()
              if k not in skip and not (k in _LATER and v == _LATER[k])}
    params["target_modules"] = config.target_modules()
    if config.optimizer == "AdamW":  # the first release's wording, kept so its run keys hold
        params["optimizer"] = "AdamW(betas=(0.9,0.999),eps=1e-8),constant_lr"
    if with_length:
        params["total_steps"] = config.total_steps
    return params


def run_key(config: TrainConfig, fingerprints: Fingerprints, *, with_length: bool = True) -> str:
    """Hash of everything that determines the trained weights.

    Args:
        config: The training settings (paths, checkpointing and gradient checkpointing excluded).
        fingerprints: Data and base-model identities.
        with_length: Include the number of steps. Checkpoints use ``False``: with a constant
            learning rate and per-step randomness, the first ``k`` steps of a longer run are
            those of a shorter one, so a run can be extended from its checkpoint.

    Returns:
        A hex SHA-256 digest.
    """
    blob = {
        "params": _result_params(config, with_length),
        "data": fingerprints.data,
        "base": fingerprints.base_model,
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()


def find_existing(config: TrainConfig, fingerprints: Fingerprints) -> Path | None:
    """Returns the output LoRA if it was trained with these settings on this data and base model.

    Args:
        config: The training settings.
        fingerprints: Data and base-model identities.

    Returns:
        The path of a matching finished LoRA, or ``None``.
    """
    path = config.paths()["lora"]
    meta = read_lora_metadata(path)
    if meta and meta.get("graphgen.run_key") == run_key(config, fingerprints):
        return path
    return None


def prepare_data(
    config: TrainConfig,
    *,
    cache_dir: str | Path,
    vae_id: str,
    text_encoder_id: str,
    encode_images: ImageEncoder | None = None,
    encode_text: TextEncoder | None = None,
    on_bad_item: OnBadItem = "error",
    crops_per_image: int = 4,
) -> tuple[CachedData, list[str]]:
    """Reads ``config.dataset_path`` and loads or builds its latent/embedding cache.

    Args:
        config: Training settings (dataset path and preprocessing).
        cache_dir: The cache folder.
        vae_id: VAE identity string (part of the cache key).
        text_encoder_id: Text encoder identity string (part of the cache key).
        encode_images: VAE encoder, needed only for images missing from the cache.
        encode_text: Text encoder, needed only for captions missing from the cache.
        on_bad_item: ``"error"`` or ``"skip"`` (see :func:`~graphgen_nodes.lora.dataset.load_dataset`).
        crops_per_image: Stored crops per image when ``center_crop`` is False.

    Returns:
        ``(cached data, dataset warnings)``.
    """
    dataset = load_dataset(config.dataset_path, on_bad_item=on_bad_item, caption_extension=config.caption_extension)
    spec = CacheSpec(
        config.preprocess(), vae_id, text_encoder_id, crops_per_image=crops_per_image, crop_seed=config.seed,
        buckets=config.buckets(), captions=config.captions(),
    )
    data = build_cache(dataset, spec, cache_dir, encode_images=encode_images, encode_text=encode_text)
    return data, dataset.warnings
