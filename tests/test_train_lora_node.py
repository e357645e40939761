"""`TrainLoRA` in a workflow on the tiny Kolors models: MODEL/CLIP/VAE from the ordinary loader,
kohya folders of mixed shapes in buckets, sample grids shown while training, the kohya file with
ss_* metadata published to the models folder's loras/, read by LoraLoaderModelOnly and diffusers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

from graphgen import Engine
from graphgen.events import NodePreview


def _dataset(root: Path) -> Path:
    for folder, name, (w, h), colour in [("3_red", "wide.png", (96, 64), (220, 30, 30)),
                                         ("3_red", "tall.png", (64, 96), (200, 40, 40)),
                                         ("1_red", "square.png", (64, 64), (230, 20, 20))]:
        (root / folder).mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (w, h), colour).save(root / folder / name)
        (root / folder / name).with_suffix(".txt").write_text("red, box", encoding="utf-8")
    return root


def workflow(tiny_models: Any, dataset: Path, **train: Any) -> dict[str, Any]:
    inputs = {"model": ["1", "model"], "clip": ["1", "chatglm3_model"], "vae": ["2", "vae"],
              "dataset_path": str(dataset), "output_name": "red", "lora_rank": 4, "lora_alpha": 4.0,
              "steps_per_epoch": 4, "learning_rate": 1e-3, "height": 96, "width": 96, "min_bucket_reso": 64,
              "max_bucket_reso": 128, "bucket_reso_steps": 32, "use_gradient_checkpointing": False,
              "precision": "32", "save_every_n_steps": 2, "sample_every_n_steps": 2,
              "sample_prompts": "red, box\nblue, circle", "sample_steps": 2, **train}
    return {"format": "graphgen", "version": 1, "nodes": {
        "1": {"class_type": "KolorsModelLoader", "inputs": {"path": str(tiny_models.tutorial_kolors),
                                                            "precision": "fp32", "device": "cpu"}},
        "2": {"class_type": "KolorsVAELoader", "inputs": {"path": str(tiny_models.tutorial_fp16_vae),
                                                          "precision": "fp32", "device": "cpu"}},
        "3": {"class_type": "TrainLoRA", "inputs": inputs},  # an output node: it writes the LoRA
    }}

# tiny models run faster single-threaded on a shared 2-core machine (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def trained(tiny_models: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    dataset = _dataset(tmp_path_factory.mktemp("red"))
    out, models = tmp_path_factory.mktemp("out"), tmp_path_factory.mktemp("models")
    events: list[Any] = []
    engine = Engine(output_dir=out, models_dir=models)
    result = engine.run(workflow(tiny_models, dataset), on_event=events.append)
    assert result.ok, result.failed
    return result, events, out, models, dataset


def test_trains_in_buckets_and_shows_sample_grids(trained: Any) -> None:
    result, events, out, _, _ = trained
    lora_path = Path(result.output("3", "lora_path"))
    assert lora_path.parent == out / "loras" and lora_path.name == "red.safetensors"
    grids = sorted((out / "loras" / "red.samples").glob("*.png"))
    assert [g.name for g in grids] == ["step_000002.png", "step_000004.png"]
    with Image.open(grids[0]) as grid:
        assert grid.width == 2 * 96 and grid.height >= 96  # one cell per sample prompt
    previews = [e for e in events if isinstance(e, NodePreview)]
    assert [Path(e.ui["images"][0]["path"]).name for e in previews] == ["step_000002.png", "step_000004.png"]
    assert previews[0].ui["images"][0]["subfolder"] == "loras/red.samples"
    infos = [getattr(e, "message", "") for e in events if e.kind == "node_info"]
    assert any(i.startswith("bucket 128x64") for i in infos) and any(i.startswith("bucket 64x128") for i in infos)
    # the bucket report is information, not a problem
    assert not any(getattr(e, "message", "").startswith("bucket ") for e in events if e.kind == "node_warning")


def test_kohya_file_with_ss_metadata_published_to_models_loras(trained: Any) -> None:
    result, _, _, models, _ = trained
    lora_path = Path(result.output("3", "lora_path"))
    with safe_open(str(lora_path), "pt") as f:
        keys, meta = list(f.keys()), f.metadata()
    assert keys and all(k.startswith("lora_unet_") for k in keys)
    assert any(k.endswith(".alpha") for k in keys)
    assert meta["ss_network_dim"] == "4" and meta["ss_network_alpha"] == "4"
    assert meta["ss_base_model_version"] == "kolors" and meta["ss_enable_bucket"] == "True"
    assert meta["graphgen.family"] == "kolors"
    published = models / "loras" / "red.safetensors"
    assert published.read_bytes() == lora_path.read_bytes()


def test_lora_loader_model_only_finds_it_and_diffusers_loads_it(trained: Any, tiny_models: Any) -> None:
    from diffusers import KolorsPipeline

    from graphgen_nodes.diffusion.schedulers import make_scheduler
    from graphgen_nodes.kolors.loading import load_unet

    result, _, out, models, _ = trained
    engine = Engine(output_dir=out, models_dir=models)
    render = {"format": "graphgen", "version": 1, "nodes": {
        "1": {"class_type": "KolorsModelLoader", "inputs": {"path": str(tiny_models.tutorial_kolors),
                                                            "precision": "fp32", "device": "cpu"}},
        "2": {"class_type": "KolorsVAELoader", "inputs": {"path": str(tiny_models.tutorial_fp16_vae),
                                                          "precision": "fp32", "device": "cpu"}},
        "3": {"class_type": "LoraLoaderModelOnly", "inputs": {"model": ["1", "model"],
                                                             "lora_name": "red.safetensors", "strength_model": 1.0}},
        "5": {"class_type": "KolorsTextEncode", "inputs": {"chatglm3_model": ["1", "chatglm3_model"],
                                                          "prompt": "red, box", "negative_prompt": ""}},
        "6": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "7": {"class_type": "KolorsKSampler", "inputs": {"model": ["3", "MODEL"], "kolors_embeds": ["5", "kolors_embeds"],
                                                         "latent": ["6", "latent"], "seed": 0, "steps": 2, "cfg": 4.0}},
        "8": {"class_type": "KolorsKSampler", "inputs": {"model": ["1", "model"], "kolors_embeds": ["5", "kolors_embeds"],
                                                         "latent": ["6", "latent"], "seed": 0, "steps": 2, "cfg": 4.0}},
        "9": {"class_type": "VAEDecode", "inputs": {"samples": ["7", "latent"], "vae": ["2", "vae"]}},
        "10": {"class_type": "VAEDecode", "inputs": {"samples": ["8", "latent"], "vae": ["2", "vae"]}},
        "11": {"class_type": "PreviewImage", "inputs": {"images": ["9", "image"]}},
        "12": {"class_type": "PreviewImage", "inputs": {"images": ["10", "image"]}},
    }}
    rendered = engine.run(render)
    assert rendered.ok, rendered.failed
    with_lora, base = rendered.output("9", "image").numpy(), rendered.output("10", "image").numpy()
    assert np.abs(with_lora - base).max() > 1e-3  # the trained LoRA changes the image

    text, vae = result.output("1", "chatglm3_model"), result.output("2", "vae")
    pipe = KolorsPipeline(vae=vae.model, text_encoder=text.model, tokenizer=text.tokenizer,
                          unet=load_unet(tiny_models.tutorial_kolors), scheduler=make_scheduler("euler"),
                          force_zeros_for_empty_prompt=False)
    pipe.set_progress_bar_config(disable=True)
    lora_path = Path(result.output("3", "lora_path"))
    pipe.load_lora_weights(str(lora_path.parent), weight_name=lora_path.name)
    images = pipe(prompt="red, box", negative_prompt="", height=64, width=64, num_inference_steps=2,
                  guidance_scale=4.0, generator=torch.Generator("cpu").manual_seed(0), output_type="np").images
    assert np.abs(images - with_lora).max() <= 1e-3  # diffusers applies the kohya file as graphgen does


def test_kolors_refuses_text_encoder_lr_in_one_line(tiny_models: Any, tmp_path: Path, capsys: Any) -> None:
    """ChatGLM3 does not train: refused at validation (the Kolors loader's type is linked), exit 2, nothing loads."""
    from graphgen import cli

    graph = workflow(tiny_models, _dataset(tmp_path / "data"), text_encoder_lr=1e-4)
    path = tmp_path / "kolors_te.json"
    path.write_text(json.dumps(graph), encoding="utf-8")
    code = cli.main(["run", str(path), "--output-dir", str(tmp_path / "out")])
    out, err = capsys.readouterr()
    assert code == 2, err + out
    lines = [line for line in (out + err).splitlines() if "text_encoder_lr" in line]
    assert len(lines) >= 1 and "node 3 (TrainLoRA)" in lines[0] and "Kolors" in lines[0], out + err
    assert "set text_encoder_lr to 0" in out + err and "Traceback" not in out + err
    assert not (tmp_path / "out" / "loras").exists()  # nothing ran
    graph["nodes"]["3"]["inputs"]["text_encoder_lr"] = 0.0
    path.write_text(json.dumps(graph), encoding="utf-8")
    assert cli.main(["validate", str(path)]) == 0


def test_adamw8bit_without_bitsandbytes_or_cuda_is_refused_at_validation(tiny_models: Any, tmp_path: Path,
                                                                          capsys: Any) -> None:
    from graphgen import cli
    from graphgen_nodes.lora.optim import check_optimizer

    graph = workflow(tiny_models, _dataset(tmp_path / "data"), optimizer="AdamW8bit")
    path = tmp_path / "adam8.json"
    path.write_text(json.dumps(graph), encoding="utf-8")
    code = cli.main(["validate", str(path)])
    out, err = capsys.readouterr()
    if check_optimizer("AdamW8bit", None) is None:  # a CUDA machine with bitsandbytes: it validates
        assert code == 0, out + err
        return
    assert code == 2, out + err
    assert "node 3 (TrainLoRA), input 'optimizer'" in out + err and "use AdamW" in out + err


def test_kolors_text_encoder_lr_is_refused_by_the_config_before_anything_is_encoded() -> None:
    """The run-time guard (a Kolors UNet reaching TrainLoRA through a plain MODEL link): the config says it."""
    from graphgen_nodes.lora.train_config import TrainConfig, TrainError

    with pytest.raises(TrainError, match="Kolors' ChatGLM3 text encoder does not train: set text_encoder_lr to 0"):
        TrainConfig(family="kolors", text_encoder_lr=1e-4).validate()
    TrainConfig(family="sd15", text_encoder_lr=1e-4).validate()
