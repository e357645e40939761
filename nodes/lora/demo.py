"""`graphgen demo`: the users' first job end to end on the CPU, with tiny models built on the spot.

Builds tiny random-weight Kolors models (tutorial layout) and a small synthetic captioned dataset,
then runs `workflows/kolors_lora.json` with small sizes: train a LoRA, apply it, render the prompt
with and without it. Images from random weights are noise-like; the point is the whole pipeline.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from graphgen import Engine, RunResult

MARKER = ".graphgen-demo"
WORKFLOW = Path(__file__).resolve().parents[2] / "workflows" / "kolors_lora.json"

#: Small sizes so the demo trains and renders in well under two minutes on a laptop CPU.
DEMO_OVERRIDES: dict[str, Any] = {
    "precision": "fp32", "train_precision": "32", "train_height": 64, "train_width": 64, "lora_rank": 4,
    "lora_alpha": 4.0, "steps_per_epoch": 60, "learning_rate": 1e-3, "width": 64, "height": 64, "steps": 8,
    "cfg": 4.0, "prompt": "二次元，红色圆形，白色背景, a red circle",
    "3.use_gradient_checkpointing": False,  # tiny models need no memory saving; it would double the time
}


@dataclass
class DemoResult:
    folder: Path
    result: RunResult
    lora: Path | None
    loss_curve: Path | None
    loss_log: Path | None
    images: list[Path]


class DemoFolderError(ValueError):
    """The demo folder holds someone else's files."""


def prepare_folder(folder: Path) -> tuple[Path, Path, Path]:
    """Tiny models and the dataset in `folder` (made once; reused by later demo runs)."""
    from graphgen.testing.tiny_kolors import write_tiny_models

    from .demo_data import write_synthetic_dataset

    marker = folder / MARKER
    if folder.exists() and any(folder.iterdir()) and not marker.exists():
        raise DemoFolderError(f"{folder} is not empty and is not a graphgen demo folder; "
                              "give a new folder with --dir (nothing is overwritten)")
    folder.mkdir(parents=True, exist_ok=True)
    models = folder / "tiny-models"
    if not (models / "tutorial").exists():
        write_tiny_models(models)
    dataset = folder / "data" / "lora_dataset_processed"
    if not (dataset / "train" / "metadata.csv").exists():
        write_synthetic_dataset(dataset, count=8, size=64)
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
    images: list[Path] = []
    for ui in result.ui.values():
        for kind, items in ui.items():
            for item in items:
                if isinstance(item, dict) and "path" in item:
                    if kind == "images":
                        images.append(Path(item["path"]))
                    else:
                        paths[kind] = Path(item["path"])
    return DemoResult(folder, result, paths.get("lora"), paths.get("loss_curve"), paths.get("loss_log"), images)
