"""`KolorsTrainLoRA`: train a Kolors LoRA inside a workflow, with the tutorial's parameters.

The dataset's VAE latents and ChatGLM embeddings are computed once and cached on disk (keyed by
dataset and model fingerprints); the text encoder and VAE are moved off the accelerator before the
UNet trains. The LoRA, a loss CSV and a loss-curve PNG are written (atomically) under the output
folder: `output_path` is relative to it and cannot leave it. A run killed at any moment resumes
from its last checkpoint; re-running with the same data and parameters reuses the existing LoRA,
also from a new process.
"""

from __future__ import annotations

import contextlib
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


def dataset_check(dataset_path: str, ctx: CheckContext) -> Problem | None:
    """Validation: the dataset folder exists, its metadata reads, and some image has a caption."""
    from .dataset import check_dataset

    problem = check_dataset(_dataset_path(ctx.settings, dataset_path))
    if problem is None:
        return None
    return Problem(problem, "point dataset_path at a folder with train/metadata.csv (file_name,text), "
                            "metadata.jsonl, or images with same-name .txt captions")


class KolorsTrainLoRA(Node):
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
        Bool("resume", default=True, description="continue from this run's checkpoint if there is one"),
        Choice("on_bad_item", ["error", "skip"], default="error",
               description="a missing/unreadable/too small image or an empty caption: stop, or skip it with a warning"),
    ]
    outputs = [Output("LORA", "lora"), Output("STRING", "lora_path")]

    @classmethod
    def fingerprint(cls, dataset_path: str, settings: EngineSettings | None = None, **_: Any) -> Hashable:
        """The dataset: its metadata and every image it lists, so that an edited dataset retrains."""
        from .dataset import dataset_fingerprint

        try:
            return dataset_fingerprint(_dataset_path(settings, dataset_path))
        except FileNotFoundError as exc:  # refused in a confined run: the node reports it
            return ("not available", str(exc))

    def run(self, model: Any, chatglm3_model: Any, vae: Any, dataset_path: str, output_path: str,
            output_name: str, on_bad_item: str, **params: Any) -> Result:
        from graphgen.files import safe_join

        from .dataset import confine_dataset
        from .lora_file import read_lora
        from .train_config import TrainConfig, TrainingCancelled, prepare_data
        from .trainer import train_lora

        out_dir = safe_join(self.ctx.output_dir, output_path or ".")
        dataset = _dataset_path(self.ctx.settings, dataset_path)
        if not dataset.exists():
            raise FileNotFoundError(f"dataset folder {dataset_path!r} not found (also looked in the input folder "
                                    f"{str(self.ctx.input_dir)!r}); give a folder with train/metadata.csv")
        confine_dataset(self.ctx.settings, dataset)
        config = TrainConfig(dataset_path=str(dataset), output_path=str(out_dir), output_name=output_name, **params)
        if model.loras:
            self.ctx.warn("the model has LoRAs stacked on it; training starts from the base UNet without them")
        self.ctx.progress(0, config.total_steps, "encoding the dataset")
        data, warnings = self._prepare(config, chatglm3_model, vae, on_bad_item, prepare_data)
        for warning in warnings:
            self.ctx.warn(warning)

        def progress(step: int, total: int, loss: float, its: float) -> None:
            self.ctx.progress(step, total, f"loss {loss:.4f} · {its:.2f} it/s")

        with model.handle.use() as unet:
            try:
                result = train_lora(config, unet, data=data, base_model_id=repr(model.handle.key),
                                    progress=progress, check_cancelled=lambda: self.ctx.cancelled)
            except TrainingCancelled:
                raise Cancelled() from None
        for warning in result.warnings:
            self.ctx.warn(warning)
        lora = read_lora(result.lora_path)
        note = (f"reused {result.lora_path.name} (same data and parameters)" if result.reused else
                f"{result.steps} steps, final loss {result.final_loss:.4f}"
                + (f", resumed from step {result.resumed_from}" if result.resumed_from else ""))
        return Result(lora, str(result.lora_path), ui={
            "lora": [{"path": str(result.lora_path)}], "loss_curve": [{"path": str(result.loss_png)}],
            "loss_log": [{"path": str(result.loss_csv)}], "text": [note]})

    def _prepare(self, config: Any, text: Any, vae: Any, on_bad_item: str, prepare_data: Any) -> Any:
        from .latent_cache import chatglm_encoder, vae_encoder

        with contextlib.ExitStack() as stack:
            opened: dict[str, Any] = {}

            def model_of(handle: Any) -> Any:  # on the device only if something must be encoded
                if handle.kind not in opened:
                    opened[handle.kind] = stack.enter_context(handle.use())
                return opened[handle.kind]

            def encode_images(batch: Any) -> Any:
                return vae_encoder(model_of(vae), device=vae.device)(batch)

            def encode_text(prompts: list[str]) -> Any:
                return chatglm_encoder(model_of(text), text.tokenizer, device=text.device)(prompts)

            cache_dir = self.ctx.output_dir / ".graphgen_cache" / "lora_latents"
            return prepare_data(config, cache_dir=cache_dir, vae_id=repr(vae.key), text_encoder_id=repr(text.key),
                                encode_images=encode_images, encode_text=encode_text, on_bad_item=on_bad_item)


NODES = [KolorsTrainLoRA]
