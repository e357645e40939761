"""`graphgen demo`: the users' first job end to end on the CPU, with tiny models built on the spot.

Builds tiny random-weight Kolors models (tutorial layout) and a small dataset of one distinctive
subject (a red disc, :func:`~graphgen.testing.demo_data.write_demo_dataset`), then runs
`workflows/kolors_train_lora.json` with small sizes: train a LoRA with `TrainLoRA`, apply it,
render the prompt with and without it. The tiny VAE has random weights, so every decoded image
is noise-like, however good its latents; the demo therefore measures what the LoRA learned where
the UNet works: the mean distance of each rendered latent to the training images' latents (the
LoRA's must be closer than the base model's), and the loss (the mean of the last tenth of the
steps must be below the first tenth).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from graphgen import Engine, RunResult

MARKER = ".graphgen-demo"
#: Nodes of the workflow: the trainer, the VAE loader, the samplers and the savers (LoRA, then base).
TRAIN_NODE, VAE_NODE, SAMPLER_NODES, SAVE_NODES = "3", "2", ("7", "8"), ("11", "12")
WORKFLOW = Path(__file__).resolve().parents[2] / "workflows" / "kolors_train_lora.json"

#: Small sizes, a high learning rate and kohya's transformer layers, so the LoRA learns visibly in
#: well under a minute on a 2-core CPU (150 steps at 64x64; sample grids at steps 75 and 150).
DEMO_OVERRIDES: dict[str, Any] = {
    "precision": "fp32", "train_precision": "32", "train_height": 64, "train_width": 64, "lora_rank": 16,
    "lora_alpha": 16.0, "network_modules": "transformer", "steps_per_epoch": 150, "learning_rate": 3e-2,
    "min_snr_gamma": 5.0, "sample_every_n_steps": 75, "width": 64, "height": 64, "steps": 8, "cfg": 4.0,
    "prompt": "二次元，红色圆形，白色背景, a red circle",
    "3.enable_bucket": False,  # the dataset is square; buckets start at 256 px
    "3.use_gradient_checkpointing": False,  # tiny models need no memory saving; it would double the time
}


@dataclass
class DemoResult:
    """What the demo made and measured.

    Attributes:
        folder: The demo folder.
        result: The workflow run.
        lora: The trained LoRA.
        loss_curve: Its loss-curve PNG.
        loss_log: Its loss CSV.
        images: The rendered images (with the LoRA, then the base model).
        distance_lora: Mean absolute difference of the LoRA image's latents to the training
            images' latents (posterior means of the same VAE).
        distance_base: The same for the base model's image.
        samples: The sample grids written while training.
        loss_first: Mean loss of the first tenth of the steps.
        loss_last: Mean loss of the last tenth of the steps.
    """

    folder: Path
    result: RunResult
    lora: Path | None
    loss_curve: Path | None
    loss_log: Path | None
    images: list[Path]
    distance_lora: float = float("nan")
    distance_base: float = float("nan")
    loss_first: float = float("nan")
    loss_last: float = float("nan")
    samples: list[Path] = field(default_factory=list)


def latent_distance(samples: Any, vae: Any, dataset: Path) -> float:
    """Mean absolute difference of `samples` ``[1, 4, h, w]`` to the VAE latents of the dataset's images.

    Args:
        samples: A sampler's LATENT samples (unscaled, as the samplers return them).
        vae: The VAE (``AutoencoderKL``); posterior means, unscaled.
        dataset: The demo dataset folder.
    """
    import torch

    from graphgen_nodes.lora.dataset import PreprocessParams, load_rgb, preprocess_image

    height, width = int(samples.shape[-2]) * 8, int(samples.shape[-1]) * 8
    params = PreprocessParams(height, width)
    pixels = torch.stack([preprocess_image(load_rgb(p), params) for p in sorted((dataset / "train").glob("*.png"))])
    weight = next(vae.parameters())
    with torch.no_grad():
        refs = vae.encode(pixels.to(weight.device, weight.dtype)).latent_dist.mean.float().cpu()
    return float((samples[:1].float().cpu() - refs).abs().mean())


def loss_tenths(csv_path: Path) -> tuple[float, float]:
    """Mean loss of the first and of the last tenth of the steps in a loss CSV."""
    from graphgen_nodes.lora.loss_log import read_loss_csv

    losses = [row.loss for row in read_loss_csv(csv_path)]
    if not losses:
        return float("nan"), float("nan")
    k = max(1, len(losses) // 10)
    return sum(losses[:k]) / k, sum(losses[-k:]) / k


class DemoFolderError(ValueError):
    """The demo folder holds someone else's files."""


def prepare_folder(folder: Path) -> tuple[Path, Path, Path]:
    """Tiny models and the dataset in `folder` (made once; reused by later demo runs)."""
    from graphgen.testing.tiny_kolors import write_tiny_models

    from .demo_data import write_demo_dataset

    marker = folder / MARKER
    if folder.exists() and any(folder.iterdir()) and not marker.exists():
        raise DemoFolderError(f"{folder} is not empty and is not a graphgen demo folder; "
                              "give a new folder with --dir (nothing is overwritten)")
    folder.mkdir(parents=True, exist_ok=True)
    models = folder / "tiny-models"
    if not (models / "tutorial").exists():
        write_tiny_models(models)
    dataset = folder / "data" / "red_disc"
    if not (dataset / "train" / "metadata.csv").exists():
        write_demo_dataset(dataset, count=8, size=64)
    marker.write_text("graphgen demo folder\n", encoding="utf-8")
    return models / "tutorial" / "models" / "kolors" / "Kolors", models / "tutorial" / "models" / "sdxl-vae-fp16-fix", \
        dataset


def run_demo(folder: str | Path, on_event: Callable[[Any], None] | None = None,
             overrides: dict[str, Any] | None = None) -> DemoResult:
    """Prepare `folder` and run the LoRA workflow in it; outputs go to `<folder>/output`."""
    folder = Path(folder).resolve()
    kolors, vae, dataset = prepare_folder(folder)
    engine = Engine(output_dir=folder / "output", input_dir=folder / "input")
    settings = {**DEMO_OVERRIDES, "kolors": str(kolors), "vae": str(vae), "dataset": str(dataset),
                **(overrides or {})}
    result = engine.run(WORKFLOW, overrides=settings, on_event=on_event)
    paths: dict[str, Path] = {}
    for kind, items in result.ui.get(TRAIN_NODE, {}).items():
        for item in items:
            if isinstance(item, dict) and "path" in item:
                paths[kind] = Path(item["path"])
    images = [Path(item["path"]) for node in SAVE_NODES for item in result.ui.get(node, {}).get("images", [])
              if isinstance(item, dict) and "path" in item]
    demo = DemoResult(folder, result, paths.get("lora"), paths.get("loss_curve"), paths.get("loss_log"), images)
    if result.ok:
        vae = result.output(VAE_NODE, "vae").model
        demo.distance_lora, demo.distance_base = (
            latent_distance(result.output(node, "latent")["samples"], vae, dataset) for node in SAMPLER_NODES)
    if demo.lora is not None:
        demo.samples = sorted(demo.lora.with_suffix(".samples").glob("step_*.png"))
    if demo.loss_log is not None:
        demo.loss_first, demo.loss_last = loss_tenths(demo.loss_log)
    return demo
