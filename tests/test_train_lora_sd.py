"""`TrainLoRA` on the tiny SD1.5 and SDXL checkpoints, from a workflow: mixed aspect ratios in
buckets, sample grids at the chosen steps, resume after a kill (a killed process) or a cancel equals
the uninterrupted weights, the LoRA loaded by `LoraLoader` in ComfyUI's default graph changes the
image, and diffusers' `load_lora_weights` reads the file and renders what the graph renders."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from graphgen import Engine

ROOT = Path(__file__).resolve().parent.parent
CKPT = {"sd15": "v1-5-pruned-emaonly.safetensors", "sdxl": "sd_xl_base_1.0.safetensors"}
PROMPT = "red, box"

# tiny models run faster single-threaded on a shared 2-core machine (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def sd_models(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from graphgen.testing.tiny_sd import write_tiny_sd_models

    return write_tiny_sd_models(tmp_path_factory.mktemp("sd_models"))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """kohya folders: a wide, a tall and a square red image."""
    root = tmp_path_factory.mktemp("sd_data")
    for folder, name, (w, h) in [("2_red", "wide.png", (128, 64)), ("2_red", "tall.png", (64, 128)),
                                 ("1_red", "square.png", (96, 96))]:
        (root / folder).mkdir(exist_ok=True)
        Image.new("RGB", (w, h), (220, 30, 30)).save(root / folder / name)
        (root / folder / name).with_suffix(".txt").write_text(PROMPT, encoding="utf-8")
    return root


def train_graph(family: str, dataset: Path, name: str, **extra: Any) -> dict[str, Any]:
    inputs = {"model": ["1", 0], "clip": ["1", 1], "vae": ["1", 2], "dataset_path": str(dataset),
              "output_name": name, "lora_rank": 4, "lora_alpha": 4.0, "steps_per_epoch": 4, "learning_rate": 1e-2,
              "height": 96, "width": 96, "min_bucket_reso": 64, "max_bucket_reso": 160, "bucket_reso_steps": 32,
              "use_gradient_checkpointing": False, "precision": "32", "save_every_n_steps": 2,
              "sample_every_n_steps": 2, "sample_prompts": PROMPT, "sample_steps": 2, **extra}
    return {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CKPT[family]}},
            "2": {"class_type": "TrainLoRA", "inputs": inputs}}


def default_graph(family: str, lora: str | None) -> dict[str, Any]:
    """ComfyUI's default graph (small), optionally with LoraLoader between the checkpoint and its users."""
    graph: dict[str, Any] = {
        "3": {"class_type": "KSampler", "inputs": {
            "cfg": 8, "denoise": 1, "latent_image": ["5", 0], "model": ["4", 0], "negative": ["7", 0],
            "positive": ["6", 0], "sampler_name": "euler", "scheduler": "normal", "seed": 5, "steps": 4}},
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ""}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"batch_size": 1, "height": 64, "width": 64}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["4", 1], "text": PROMPT}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["4", 1], "text": "text, watermark"}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "ComfyUI", "images": ["8", 0]}},
    }
    graph["4"]["inputs"]["ckpt_name"] = CKPT[family]
    if lora:
        graph["10"] = {"class_type": "LoraLoader", "inputs": {"model": ["4", 0], "clip": ["4", 1], "lora_name": lora,
                                                              "strength_model": 1.0, "strength_clip": 1.0}}
        graph["3"]["inputs"]["model"] = ["10", 0]
        for node in ("6", "7"):
            graph[node]["inputs"]["clip"] = ["10", 1]
    return graph


def _pixels(result: Any, node: str = "9") -> np.ndarray:
    return np.asarray(Image.open(result.ui[node]["images"][0]["path"])).astype(np.int16)


@pytest.fixture(scope="module", params=["sd15", "sdxl"])
def trained(request: pytest.FixtureRequest, sd_models: Any, dataset: Path,
            tmp_path_factory: pytest.TempPathFactory) -> Any:
    family = request.param
    out = tmp_path_factory.mktemp(f"train_{family}")
    engine = Engine(output_dir=out, models_dir=sd_models.models)
    events: list[Any] = []
    result = engine.run(train_graph(family, dataset, f"red_{family}"), on_event=events.append)
    assert result.ok, result.failed
    return family, result, events, out, engine


def test_trains_mixed_shapes_in_buckets_with_sample_grids(trained: Any, sd_models: Any) -> None:
    family, result, events, out, _ = trained
    lora = Path(result.output("2", "lora_path"))
    assert lora == out / "loras" / f"red_{family}.safetensors"
    assert (sd_models.models / "loras" / lora.name).read_bytes() == lora.read_bytes()
    grids = sorted((out / "loras" / f"red_{family}.samples").glob("*.png"))
    assert [g.name for g in grids] == ["step_000002.png", "step_000004.png"]
    assert [e.ui["images"][0]["filename"] for e in events if e.kind == "node_preview"] == [g.name for g in grids]
    reports = [e.message for e in events if e.kind == "node_info" and e.message.startswith("bucket ")]
    assert {r.split(" ")[1] for r in reports} == {"128x64", "64x128", "96x96"}  # no square crop
    from safetensors import safe_open

    with safe_open(str(lora), "pt") as f:
        meta = f.metadata()
    assert meta["graphgen.family"] == family
    assert meta["ss_base_model_version"] == {"sd15": "sd_v1", "sdxl": "sdxl_base_v1-0"}[family]


def test_cancel_then_resume_equals_uninterrupted(trained: Any, sd_models: Any, dataset: Path, tmp_path: Path) -> None:
    from graphgen_nodes.lora.lora_file import read_lora

    family, result, _, _, _ = trained
    engine = Engine(output_dir=tmp_path, models_dir=sd_models.models)
    graph = train_graph(family, dataset, f"cancelled_{family}", sample_every_n_steps=0)

    def cancel_at_3(event: Any) -> None:
        if event.kind == "node_progress" and event.node_id == "2" and event.value == 3:
            engine.cancel()

    assert engine.run(graph, on_event=cancel_at_3).status == "cancelled"
    resumed = engine.run(graph)
    assert resumed.ok and "resumed from step 3" in resumed.ui["2"]["text"][0]
    assert read_lora(resumed.output("2", "lora_path")).same_weights(read_lora(result.output("2", "lora_path")))


def test_lora_loader_in_default_graph_and_diffusers(trained: Any, sd_models: Any) -> None:
    from graphgen.testing.tiny_sd import build_tiny_sd
    from graphgen_nodes.diffusion.comfy_samplers import make_comfy_scheduler

    family, result, _, _, engine = trained
    name = Path(result.output("2", "lora_path")).name
    plain = _pixels(engine.run(default_graph(family, None)))
    with_lora = _pixels(engine.run(default_graph(family, name)))
    assert np.abs(plain - with_lora).max() > 3  # the trained LoRA changes the image

    pipe = build_tiny_sd(family).pipeline(make_comfy_scheduler("euler", "normal"))
    pipe.set_progress_bar_config(disable=True)
    pipe.load_lora_weights(str(sd_models.models / "loras" / name))
    image = pipe(PROMPT, negative_prompt="text, watermark", height=64, width=64, num_inference_steps=4,
                 guidance_scale=8, generator=torch.Generator("cpu").manual_seed(5), output_type="np").images[0]
    ref = np.round(np.clip(image, 0, 1) * 255).astype(np.int16)
    assert np.abs(ref - with_lora).max() <= 1


def test_resume_after_killing_the_process_equals_uninterrupted(
        trained: Any, sd_models: Any, dataset: Path, tmp_path: Path) -> None:
    from graphgen_nodes.lora.lora_file import read_lora

    family, result, _, _, _ = trained
    if family != "sd15":
        pytest.skip("one family is enough for the process kill (the cancel test covers SDXL)")
    graph = train_graph(family, dataset, "killed", sample_every_n_steps=0, steps_per_epoch=30, save_every_n_steps=2)
    workflow = tmp_path / "train.json"
    workflow.write_text(json.dumps(graph), encoding="utf-8")
    out = tmp_path / "out"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(ROOT / "cli.py"), "run", str(workflow), "--output-dir", str(out),
                             "--models-dir", str(sd_models.models), "--json"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    ckpt = out / "loras" / "killed.ckpt"
    deadline = time.time() + 240
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert ckpt.exists() and not (out / "loras" / "killed.safetensors").exists()
    resumed = Engine(output_dir=out, models_dir=sd_models.models).run(graph)
    assert resumed.ok and "resumed from step" in resumed.ui["2"]["text"][0]
    assert resumed.output("2", "lora_path").endswith("killed.safetensors")  # the configured name, not _00002
    reference = Engine(output_dir=tmp_path / "ref", models_dir=sd_models.models).run(graph)
    assert read_lora(resumed.output("2", "lora_path")).same_weights(read_lora(reference.output("2", "lora_path")))
