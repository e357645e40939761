"""`graphgen demo`: the users' first job end to end on the CPU, with tiny models built on the spot.

Builds tiny Kolors models once per demo folder (tutorial layout: the random-weight ChatGLM, a VAE
that really reconstructs images, :mod:`graphgen.testing.demo_vae`, and a UNet pretrained for
seconds on grey shapes, :mod:`graphgen.testing.demo_unet`) and a small dataset of one distinctive
subject (a red disc, :func:`~graphgen.testing.demo_data.write_demo_dataset`), then runs
`workflows/kolors_train_lora.json` with small sizes: train a LoRA with `TrainLoRA`, apply it,
render the prompt with and without it. What the LoRA learned is measured on the saved pictures:
the mean colour difference (0-255 per pixel and channel) of each rendered image to the training
images (the LoRA's must be much smaller than the base model's), and on the loss (the mean of the
last tenth of the steps must be well below the first tenth). Pixels, not latents: the pictures
are what a user judges, and a latent beyond the VAE's range clips to the same colour.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from graphgen import Engine, RunResult

MARKER = ".graphgen-demo"
#: Written into the demo's models folder when they are complete; another version rebuilds them.
MODELS_STAMP, MODELS_VERSION = "demo-models.txt", "2: tutorial layout, colour-cell VAE, UNet pretrained on grey shapes"
#: Nodes of the workflow: the trainer and the image savers (LoRA, then base).
TRAIN_NODE, SAVE_NODES = "3", ("11", "12")
WORKFLOW = Path(__file__).resolve().parents[2] / "workflows" / "kolors_train_lora.json"

#: Small sizes and kohya's transformer layers, so the LoRA learns visibly in well under a minute on
#: a 2-core CPU (140 steps of 4 images at 64x64; sample grids at steps 70 and 140). The base UNet
#: is pretrained (:mod:`graphgen.testing.demo_unet`), so the learning rate is a fine-tuning one
#: (3e-3 learns the red disc; 6e-3 overshot in trials); batches of 4 average the loss over 4 noise levels
#: per step, so its curve shows the learning rather than the draw of timesteps. Guidance 2: the
#: LoRA's prompt needs little pushing.
DEMO_OVERRIDES: dict[str, Any] = {
    "precision": "fp32", "train_precision": "32", "train_height": 64, "train_width": 64, "lora_rank": 16,
    "lora_alpha": 16.0, "network_modules": "transformer", "steps_per_epoch": 140, "learning_rate": 3e-3,
    "min_snr_gamma": 5.0, "sample_every_n_steps": 70, "width": 64, "height": 64, "steps": 8, "cfg": 2.0,
    "prompt": "二次元，红色圆形，白色背景, a red circle",
    "3.batch_size": 4,
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
        colour_lora: Mean colour difference (0-255) of the LoRA image to the training images.
        colour_base: The same for the base model's image.
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
    colour_lora: float = float("nan")
    colour_base: float = float("nan")
    loss_first: float = float("nan")
    loss_last: float = float("nan")
    samples: list[Path] = field(default_factory=list)


def _training_pixels(dataset: Path, height: int, width: int) -> Any:
    """The dataset's images as the trainer sees them: ``[n, 3, height, width]`` in [-1, 1]."""
    import torch

    from graphgen_nodes.lora.dataset import PreprocessParams, load_rgb, preprocess_image

    params = PreprocessParams(height, width)
    return torch.stack([preprocess_image(load_rgb(p), params) for p in sorted((dataset / "train").glob("*.png"))])


def colour_distance(image: Path, dataset: Path) -> float:
    """Mean colour difference of a saved image to the dataset's images, in 0-255 levels.

    The mean over the training images of the mean absolute difference per pixel and channel
    (the training images resized and cropped to the image's size, as the trainer does): about 0
    for an image like every training image, about 100 for a random colour per pixel.
    """
    import numpy as np
    import torch
    from PIL import Image

    with Image.open(image) as handle:
        rendered = torch.from_numpy(np.asarray(handle.convert("RGB"), dtype=np.float32)).permute(2, 0, 1)
    refs = (_training_pixels(dataset, rendered.shape[1], rendered.shape[2]) + 1) * 127.5
    return float((refs - rendered).abs().mean())


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


#: ``(step, total)`` of the one-time build of the demo's models (the base UNet's pretraining).
BuildProgress = Callable[[int, int], None]


def _write_models(models: Path, progress: BuildProgress | None = None) -> None:
    """The tiny models in the tutorial layout, stamped when complete.

    The random ChatGLM of the tests, with a VAE that reconstructs images and a UNet pretrained on
    generic shape pictures (so the LoRA has a real base model to adapt).
    """
    import shutil

    from .demo_unet import pretrain_unet
    from .demo_vae import colour_cell_vae
    from .tiny_kolors import build_tiny_components, write_tiny_models

    if models.exists():  # an older or interrupted build: our own files, made again
        shutil.rmtree(models)
    tiny = build_tiny_components()
    tiny.vae = colour_cell_vae()
    pretrain_unet(tiny, progress=progress)
    write_tiny_models(models, components=tiny, layouts=("tutorial",))
    (models / MODELS_STAMP).write_text(MODELS_VERSION + "\n", encoding="utf-8")


def models_ready(folder: str | Path) -> bool:
    """Whether `folder` already holds the demo's models of this version (nothing to build)."""
    stamp = Path(folder).resolve() / "tiny-models" / MODELS_STAMP
    return stamp.is_file() and stamp.read_text(encoding="utf-8").strip() == MODELS_VERSION


def prepare_folder(folder: Path, progress: BuildProgress | None = None) -> tuple[Path, Path, Path]:
    """Tiny models and the dataset in `folder` (made once; reused by later demo runs)."""
    from .demo_data import write_demo_dataset

    marker = folder / MARKER
    if folder.exists() and any(folder.iterdir()) and not marker.exists():
        raise DemoFolderError(f"{folder} is not empty and is not a graphgen demo folder; "
                              "give a new folder with --dir (nothing is overwritten)")
    folder.mkdir(parents=True, exist_ok=True)
    marker.write_text("graphgen demo folder\n", encoding="utf-8")
    models = folder / "tiny-models"
    if not models_ready(folder):
        _write_models(models, progress)
    dataset = folder / "data" / "red_disc"
    if not (dataset / "train" / "metadata.csv").exists():
        write_demo_dataset(dataset, count=8, size=64)
    return models / "tutorial" / "models" / "kolors" / "Kolors", models / "tutorial" / "models" / "sdxl-vae-fp16-fix", \
        dataset


def run_demo(folder: str | Path, on_event: Callable[[Any], None] | None = None,
             overrides: dict[str, Any] | None = None, on_build: BuildProgress | None = None) -> DemoResult:
    """Prepare `folder` and run the LoRA workflow in it; outputs go to `<folder>/output`.

    Runs on one torch thread (restored afterwards): the tiny models' operations are too small to
    gain from more, and on a busy 2-core machine a second thread makes training 5-20x slower.
    `on_build(step, total)` follows the one-time pretraining of the base UNet, when the folder
    has no models yet (half a minute on a 2-core CPU).
    """
    with _one_torch_thread():
        return _run_demo(Path(folder).resolve(), on_event, overrides, on_build)


def prepare_demo(folder: str | Path, on_build: BuildProgress | None = None) -> None:
    """Build the demo folder's models and dataset now (what `run_demo` does first), on one torch thread."""
    with _one_torch_thread():
        prepare_folder(Path(folder).resolve(), on_build)


@contextlib.contextmanager
def _one_torch_thread() -> Iterator[None]:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _run_demo(folder: Path, on_event: Callable[[Any], None] | None, overrides: dict[str, Any] | None,
              on_build: BuildProgress | None) -> DemoResult:
    kolors, vae, dataset = prepare_folder(folder, on_build)
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
        demo.colour_lora, demo.colour_base = (colour_distance(image, dataset) for image in images[:2])
    if demo.lora is not None:
        demo.samples = sorted(demo.lora.with_suffix(".samples").glob("step_*.png"))
    if demo.loss_log is not None:
        demo.loss_first, demo.loss_last = loss_tenths(demo.loss_log)
    return demo
