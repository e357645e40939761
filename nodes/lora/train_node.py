"""`TrainLoRA` (any family, from the ordinary loaders) and `KolorsTrainLoRA` (the tutorial's node).

The dataset's VAE latents and text embeddings are computed once and cached on disk (keyed by
dataset and model fingerprints); the text encoder and VAE are moved off the accelerator before the
UNet trains. The LoRA, a loss CSV and a loss-curve PNG are written (atomically) under the output
folder: `output_path` is relative to it and cannot leave it; with a models folder set, the LoRA is
also published to its `loras/` (where `LoraLoader`/`LoraLoaderModelOnly` look). A run killed at
any moment resumes from its last checkpoint; re-running with the same data and parameters reuses
the existing LoRA, also from a new process. `TrainLoRA` adds kohya's options (folders with repeats,
caption shuffling/dropout, aspect-ratio buckets, LR schedules, noise offset, min-SNR-γ, gradient
accumulation, network dropout, 8-bit AdamW, text-encoder LoRA at `text_encoder_lr`) and sample
images while training. With `text_encoder_lr > 0` the CLIP encoders stay on the device and encode
the captions every step (the VAE still leaves it).
"""

from __future__ import annotations

import contextlib
import filecmp
import shutil
from collections.abc import Hashable
from pathlib import Path
from typing import Any

from graphgen import Bool, Choice, Float, Input, Int, Node, Output, Result, String
from graphgen.checks import CheckContext, Problem, multiple_of_step
from graphgen.context import Cancelled, EngineSettings


def _dataset_path(settings: EngineSettings | None, path: str) -> Path:
    """The dataset folder: as given, or in the input folder (in a confined run: inside the engine's folders)."""
    from graphgen.paths import locate

    def find() -> Path:
        given = Path(path).expanduser()
        if given.is_absolute() or given.exists() or settings is None:
            return given
        in_input = settings.input_dir / given
        return in_input if in_input.exists() else given

    return locate(settings, "dataset folder", path, find)


def _dataset_fingerprint(settings: EngineSettings | None, dataset_path: str) -> Hashable:
    """The dataset: its metadata and every image it lists, so that an edited dataset retrains."""
    from .dataset import dataset_fingerprint

    try:
        return dataset_fingerprint(_dataset_path(settings, dataset_path))
    except FileNotFoundError as exc:  # refused in a confined run: the node reports it
        return ("not available", str(exc))


def dataset_check(dataset_path: str, ctx: CheckContext) -> Problem | None:
    """Validation: the dataset folder exists, its metadata reads, and some image has a caption."""
    from .dataset import check_dataset

    problem = check_dataset(_dataset_path(ctx.settings, dataset_path))
    if problem is None:
        return None
    return Problem(problem, "point dataset_path at a folder with train/metadata.csv (file_name,text), "
                            "metadata.jsonl, or images with same-name .txt captions")


#: Output types of Kolors' loaders (native and kijai's): their ChatGLM3 text encoder does not train.
_KOLORS_MODEL_TYPES = ("KOLORS_UNET", "KOLORSMODEL")


def text_encoder_lr_check(value: float, ctx: CheckContext) -> Problem | None:
    """Validation: a text-encoder learning rate with a Kolors model connected is refused before anything loads."""
    from .train_config import KOLORS_TEXT_ENCODER_REFUSAL

    if value > 0 and ctx.linked_type("model") in _KOLORS_MODEL_TYPES:
        message, _, fix = KOLORS_TEXT_ENCODER_REFUSAL.rpartition(": ")
        return Problem(message, fix)
    return None


def optimizer_check(value: str, ctx: CheckContext) -> Problem | None:
    """Validation: 8-bit AdamW needs bitsandbytes and a CUDA GPU, which are known before anything loads."""
    from .optim import check_optimizer

    problem = check_optimizer(value, None)
    if problem is None:
        return None
    message, _, fix = problem.rpartition(": ")
    return Problem(message, fix)


# The inputs both training nodes end with, in this widget order.
_LAST_INPUTS = (
    Bool("resume", default=True, description="continue from this run's checkpoint if there is one"),
    Choice("on_bad_item", ["error", "skip"], default="error",
           description="a missing/unreadable/too small image or an empty caption: stop, or skip it with a warning"),
)


class _TrainingNode(Node):
    """What the training nodes share: their cache fingerprint covers the dataset's files."""

    @classmethod
    def fingerprint(cls, dataset_path: str, settings: EngineSettings | None = None, **_: Any) -> Hashable:
        """The dataset: its metadata and every file it lists, so that an edited dataset retrains."""
        return _dataset_fingerprint(settings, dataset_path)


class KolorsTrainLoRA(_TrainingNode):
    """Train a LoRA on the Kolors UNet (to_q/to_k/to_v/to_out.0 of every attention; epsilon MSE).

    An epoch is `steps_per_epoch` random samples (the tutorial's meaning), not a pass over the data.
    """

    category = "lora/training"
    inputs = [
        Input("model", "KOLORS_UNET", force_link=True),
        Input("chatglm3_model", "CHATGLM3MODEL", force_link=True),
        Input("vae", "VAE", force_link=True),
        String("dataset_path", default="data/lora_dataset_processed",
               description="folder with train/metadata.csv (file_name,text), metadata.jsonl, or images + .txt",
               checks=(dataset_check,)),
        String("output_path", default="models", description="folder for the LoRA, inside the output folder"),
        String("output_name", default="kolors_lora", description="file stem of the LoRA"),
        Int("lora_rank", default=16, min=1, max=256),
        Float("lora_alpha", default=4.0, min=0.001, max=1024.0, step=0.1),
        Int("max_epochs", default=1, min=1, max=10_000),
        Int("steps_per_epoch", default=500, min=1, max=1_000_000),
        Float("learning_rate", default=1e-4, min=1e-8, max=1.0, step=1e-5),
        Int("batch_size", default=1, min=1, max=256),
        Int("height", default=1024, min=64, max=4096, step=8, checks=(multiple_of_step,)),
        Int("width", default=1024, min=64, max=4096, step=8, checks=(multiple_of_step,)),
        Bool("center_crop", default=True),
        Bool("random_flip", default=False),
        Bool("use_gradient_checkpointing", default=True),
        Choice("precision", ["16-mixed", "bf16-mixed", "32"], default="16-mixed",
               description="16-mixed falls back to fp32 on the CPU (with a warning)"),
        Int("seed", default=0, min=0, max=2**63 - 1),
        Int("save_every_n_steps", default=100, min=0, max=1_000_000, description="checkpoint period (0: none)"),
        *_LAST_INPUTS,
    ]
    outputs = [Output("LORA", "lora"), Output("STRING", "lora_path")]

    def run(self, model: Any, chatglm3_model: Any, vae: Any, dataset_path: str, output_path: str,
            output_name: str, on_bad_item: str, **params: Any) -> Result:
        from .train_glue import KOLORS_GLUE

        return _train(self, KOLORS_GLUE, model, chatglm3_model, vae, dataset_path=dataset_path,
                      output_path=output_path, output_name=output_name, on_bad_item=on_bad_item, params=params)


#: TrainLoRA takes the MODEL of any family's loader (Kolors' under its native and kijai's types too).
MODEL_TYPES = "MODEL,KOLORS_UNET,KOLORSMODEL"
CLIP_TYPES = "CLIP,CHATGLM3MODEL"


class TrainLoRA(_TrainingNode):
    """Train a LoRA on any family's UNet (Kolors; SD1.5/SDXL where their loaders are installed), kohya-style.

    Datasets: train/metadata.csv, metadata.jsonl, kohya folders (`10_name/` = 10 repeats, same-name
    caption files) or images with captions. `enable_bucket` trains mixed shapes at their own aspect
    ratio; sample images are rendered every `sample_every_n_steps` and shown while training.
    The LoRA is written in kohya's format with `ss_*` metadata, under the output folder and in the
    models folder's `loras/`.
    """

    category = "lora/training"
    output_node = True  # it writes the LoRA and sample grids: a workflow may end with it
    inputs = [
        Input("model", MODEL_TYPES, force_link=True),
        Input("clip", CLIP_TYPES, force_link=True, description="the text encoder(s) of the same checkpoint"),
        Input("vae", "VAE", force_link=True),
        String("dataset_path", default="data/lora_dataset",
               description="train/metadata.csv, metadata.jsonl, kohya folders 10_name/, or images + captions",
               checks=(dataset_check,)),
        String("output_path", default="loras", description="folder for the LoRA, inside the output folder"),
        String("output_name", default="lora", description="file stem of the LoRA"),
        Int("lora_rank", default=16, min=1, max=256, description="network_dim"),
        Choice("network_modules", ["transformer", "attention"], default="transformer",
               description="transformer: every Linear of the transformer blocks (kohya's); attention: q/k/v/out only"),
        Float("lora_alpha", default=8.0, min=0.001, max=1024.0, step=0.1, description="network_alpha"),
        Int("max_epochs", default=1, min=1, max=10_000),
        Int("steps_per_epoch", default=500, min=1, max=1_000_000, description="optimiser steps per epoch"),
        Float("learning_rate", default=1e-4, min=1e-8, max=1.0, step=1e-5, description="unet_lr"),
        Choice("lr_scheduler", ["constant", "constant_with_warmup", "linear", "cosine"], default="constant"),
        Int("lr_warmup_steps", default=0, min=0, max=1_000_000),
        Choice("optimizer", ["AdamW", "AdamW8bit"], default="AdamW", description="AdamW8bit: bitsandbytes on CUDA",
               checks=(optimizer_check,)),
        Int("batch_size", default=1, min=1, max=256),
        Int("gradient_accumulation_steps", default=1, min=1, max=1024),
        Int("height", default=1024, min=64, max=4096, step=8, description="resolution (the largest bucket area)"),
        Int("width", default=1024, min=64, max=4096, step=8),
        Bool("enable_bucket", default=True, description="train mixed shapes at their own aspect ratio"),
        Int("min_bucket_reso", default=256, min=64, max=4096, step=64),
        Int("max_bucket_reso", default=2048, min=64, max=8192, step=64),
        Int("bucket_reso_steps", default=64, min=8, max=256, step=8),
        Bool("center_crop", default=True, description="crop the small bucket excess at the centre (else at random)"),
        Bool("random_flip", default=False),
        String("caption_extension", default=".txt"),
        Bool("shuffle_caption", default=False),
        Int("keep_tokens", default=0, min=0, max=255, description="leading tags never shuffled"),
        Float("caption_dropout_rate", default=0.0, min=0.0, max=0.99, step=0.01),
        Float("noise_offset", default=0.0, min=0.0, max=1.0, step=0.01),
        Float("min_snr_gamma", default=0.0, min=0.0, max=100.0, step=0.5, description="0: off; 5 is common"),
        Float("network_dropout", default=0.0, min=0.0, max=0.99, step=0.01),
        Bool("use_gradient_checkpointing", default=True),
        Choice("precision", ["16-mixed", "bf16-mixed", "32"], default="16-mixed",
               description="16-mixed falls back to fp32 on the CPU (with a warning)"),
        Int("seed", default=0, min=0, max=2**63 - 1),
        Int("save_every_n_steps", default=100, min=0, max=1_000_000, description="checkpoint period (0: none)"),
        Int("sample_every_n_steps", default=0, min=0, max=1_000_000,
            description="render the sample prompts every N steps and at the end (0: off)"),
        String("sample_prompts", default="", multiline=True, description="one prompt per line"),
        Int("sample_steps", default=20, min=1, max=200),
        Float("sample_cfg", default=5.0, min=1.0, max=30.0, step=0.5),
        Int("sample_seed", default=0, min=0, max=2**63 - 1),
        *_LAST_INPUTS,
        # after the shared last inputs: saved workflows list widget values by position
        Float("text_encoder_lr", default=0.0, min=0.0, max=1.0, step=1e-5, checks=(text_encoder_lr_check,),
              description="0: train the UNet only (cached text embeddings); > 0: also LoRA on the CLIP "
                          "text encoder(s) at this learning rate (SD1.5/SDXL), encoding captions every step"),
    ]
    outputs = [Output("LORA", "lora"), Output("STRING", "lora_path")]

    def run(self, model: Any, clip: Any, vae: Any, dataset_path: str, output_path: str,
            output_name: str, on_bad_item: str, **params: Any) -> Result:
        from .train_glue import glue_for

        glue = glue_for(model)
        return _train(self, glue, model, clip, vae, dataset_path=dataset_path, output_path=output_path,
                      output_name=output_name, on_bad_item=on_bad_item,
                      params={**params, "family": glue.family.name, "save_format": "kohya"})


def _train(node: Node, glue: Any, model: Any, text: Any, vae: Any, *, dataset_path: str, output_path: str,
           output_name: str, on_bad_item: str, params: dict[str, Any]) -> Result:
    """The training nodes' shared body: config, cache, train, publish, report."""
    from graphgen.files import safe_join

    from .dataset import confine_dataset
    from .lora_file import read_lora
    from .train_config import TrainConfig, TrainingCancelled
    from .trainer import train_lora

    ctx = node.ctx
    out_dir = safe_join(ctx.output_dir, output_path or ".")
    dataset = _dataset_path(ctx.settings, dataset_path)
    if not dataset.exists():
        raise FileNotFoundError(f"dataset folder {dataset_path!r} not found (also looked in the input folder "
                                f"{str(ctx.input_dir)!r}); give a folder with train/metadata.csv")
    confine_dataset(ctx.settings, dataset)
    config = TrainConfig(dataset_path=str(dataset), output_path=str(out_dir), output_name=output_name, **params)
    config.validate()  # before anything is encoded (e.g. text_encoder_lr with Kolors linked as a plain MODEL)
    handle, loras = glue.unet_handle(model)
    if loras:
        ctx.warn("the model has LoRAs stacked on it; training starts from the base UNet without them")
    ctx.progress(0, config.total_steps, "encoding the dataset")
    data, warnings, prompts = _prepare(node, glue, config, text, vae, on_bad_item)
    for warning in warnings:
        ctx.warn(warning)
    for line in data.report:
        ctx.info(line)

    def progress(step: int, total: int, loss: float, its: float) -> None:
        # a cancel is honoured by the trainer before the next step, which saves a checkpoint first
        with contextlib.suppress(Cancelled):
            ctx.progress(step, total, f"loss {loss:.4f} · {its:.2f} it/s")

    def on_sample(step: int, path: Path) -> None:
        ctx.preview(path, f"samples at step {step}")

    sampler = _sampler(glue, config, vae, prompts) if prompts is not None else None
    with contextlib.ExitStack() as stack:
        unet = stack.enter_context(handle.use())
        text_encoders = None
        if config.text_encoder_lr > 0 and glue.text_modules is not None:
            ctx.info("text_encoder_lr > 0: the text encoder(s) stay on the device while training "
                     "(captions are encoded every step, with their LoRA)")
            text_encoders = glue.text_modules(text, lambda _key, h: stack.enter_context(h.use()))
        try:
            result = train_lora(config, unet, data=data, base_model_id=repr(handle.key), family=glue.family,
                                progress=progress, check_cancelled=lambda: ctx.cancelled,
                                sampler=sampler, on_sample=on_sample, text_encoders=text_encoders)
        except TrainingCancelled:
            raise Cancelled() from None
    for warning in result.warnings:
        ctx.warn(warning)
    for line in result.notes:
        ctx.info(line)
    published = _publish(ctx, result.lora_path)
    lora = read_lora(result.lora_path)
    note = (f"reused {result.lora_path.name} (same data and parameters)" if result.reused else
            f"{result.steps} steps, final loss {result.final_loss:.4f}"
            + (f", resumed from step {result.resumed_from}" if result.resumed_from else ""))
    ui: dict[str, Any] = {
        "lora": [{"path": str(result.lora_path)}], "loss_curve": [{"path": str(result.loss_png)}],
        "loss_log": [{"path": str(result.loss_csv)}], "text": [note]}
    if published is not None:
        ui["lora_in_models"] = [{"path": str(published)}]
    grids = sorted(config.paths()["samples"].glob("step_*.png")) if prompts is not None else []
    if grids:
        ui["samples"] = [{"path": str(grids[-1])}]
    return Result(lora, str(result.lora_path), ui=ui)


def _publish(ctx: Any, lora_path: Path) -> Path | None:
    """Copies the LoRA to `<models folder>/loras/` (never replacing a different file there)."""
    models = ctx.settings.models_dir
    if models is None:
        return None
    target = Path(models) / "loras" / lora_path.name
    if target.exists():
        if filecmp.cmp(target, lora_path, shallow=False):
            return target
        ctx.warn(f"not copied to {target}: a different file has that name there; the LoRA is at {lora_path}")
        return None
    from graphgen.files import atomic_write_via_path

    atomic_write_via_path(target, lambda tmp: shutil.copyfile(lora_path, tmp))
    return target


def _prepare(node: Node, glue: Any, config: Any, text: Any, vae: Any, on_bad_item: str) -> Any:
    """Reads the dataset and fills the cache, opening each encoder only if something is missing.

    Returns:
        ``(cached data, dataset warnings, encoded sample prompts or None)``.
    """
    from .train_config import prepare_data

    with contextlib.ExitStack() as stack:
        opened: dict[str, Any] = {}

        def open_(key: str, handle: Any) -> Any:  # on the device only if something must be encoded
            if key not in opened:
                opened[key] = stack.enter_context(handle.use())
            return opened[key]

        def encode_images(batch: Any) -> Any:
            return glue.image_encoder(vae, open_)(batch)

        def encode_text(prompts: list[str]) -> Any:
            return glue.text_encoder(text, open_)(prompts)

        cache_dir = node.ctx.output_dir / ".graphgen_cache" / "lora_latents"
        data, warnings = prepare_data(config, cache_dir=cache_dir, vae_id=repr(vae.key),
                                      text_encoder_id=glue.text_id(text), encode_images=encode_images,
                                      encode_text=encode_text, on_bad_item=on_bad_item)
        prompts = None
        if config.sample_every_n_steps and config.prompts():
            positive = encode_text(config.prompts())
            negative = encode_text([""])
            prompts = (positive, negative)
        return data, warnings, prompts


def _sampler(glue: Any, config: Any, vae: Any, prompts: Any) -> Any:
    """The trainer's sample function: render the prompts with the training copy, decode.

    The prompts encoded before training are used, or, when the text encoders train, the prompts
    encoded now through them (``encode``), so the grid shows the text-encoder LoRA too.
    """
    import torch

    def sample(unet: Any, encode: Any = None) -> list[Any]:
        device = next(unet.parameters()).device
        positive, negative = prompts if encode is None else (encode(config.prompts()), encode([""]))
        pos = tuple(t.to(device) for t in positive)
        neg = tuple(t.to(device) for t in negative)
        latents = glue.family.render(unet, pos, neg, width=config.width, height=config.height,
                                     seed=config.sample_seed, steps=config.sample_steps, cfg=config.sample_cfg)
        with vae.use() as opened, torch.no_grad():
            return glue.decode(opened, latents)

    return sample


NODES = [KolorsTrainLoRA, TrainLoRA]
