"""The example workflows in workflows/ validate, and run from the command line on the tiny models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from graphgen import cli

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = sorted((ROOT / "workflows").glob("*.json"))
# The Kolors workflows name their model folders; their loaders' declared checks find a missing one.
# (The SD workflows pick checkpoint files by name and run in tests/test_sd.py.)
KOLORS_WORKFLOWS = sorted((ROOT / "workflows").glob("kolors_*.json"))


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.name for p in WORKFLOWS])
def test_workflow_documents_itself(path):
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["metadata"]["title"] and data["metadata"]["description"]
    assert data["parameters"], "example workflows expose their paths and settings as parameters"


@pytest.mark.parametrize("path", KOLORS_WORKFLOWS, ids=[p.name for p in KOLORS_WORKFLOWS])
def test_workflow_validates_with_the_tiny_models(path, capsys, tiny_models, tmp_path, monkeypatch):
    from graphgen.testing.demo_data import write_synthetic_dataset

    monkeypatch.chdir(tmp_path)  # no models/ here: the missing models are named before anything runs
    assert cli.main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "input 'path'" in err and "models/kolors/Kolors" in err and "--models-dir" in err

    # The folder `graphgen tiny-models` prints for the tutorial layout makes it valid as shipped,
    # given the files a workflow reads (the input image, the dataset, the LoRA to compare).
    Image.new("RGB", (64, 64)).save(tmp_path / "input.png")
    write_synthetic_dataset(tmp_path / "data" / "lora_dataset_processed", count=2, size=64)
    write_synthetic_dataset(tmp_path / "data" / "lora_dataset", count=2, size=64)  # TrainLoRA's default
    lora = tmp_path / "lora.ckpt"
    lora.write_bytes(b"")
    extra = {"kolors_img2img.json": ["--set", "image=input.png"], "kolors_lora_compare.json": ["--set", f"lora={lora}"]}
    code = cli.main(["validate", str(path), "--models-dir", str(tiny_models.tutorial_models),
                     *extra.get(path.name, [])])
    assert code == 0, capsys.readouterr().err


def random_diffsynth_lora(unet, path: Path) -> Path:
    from graphgen_nodes.lora.convert import write_lora
    from graphgen_nodes.lora.lora_file import LoraModule, LoraWeights

    generator = torch.Generator().manual_seed(5)
    modules = {}
    for name, module in unet.named_modules():
        if name.endswith(("attn1.to_q", "attn1.to_v", "attn2.to_k")) and isinstance(module, torch.nn.Linear):
            modules[name] = LoraModule(down=torch.randn(4, module.in_features, generator=generator) * 0.3,
                                       up=torch.randn(module.out_features, 4, generator=generator) * 0.3, alpha=None)
    return write_lora(LoraWeights(modules=modules), path, to="diffsynth")


def run(capsys, *args: str) -> list[dict]:
    code = cli.main(["run", *args, "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err + out[-2000:]
    return [json.loads(line) for line in out.splitlines()]


def saved_images(events: list[dict]) -> list[Path]:
    return [Path(item["path"]) for e in events if e["event"] == "node_finished" and e["ui"]
            for item in e["ui"].get("images", [])]


SMALL = ["--set", "width=64", "--set", "height=64", "--set", "steps=3", "--set", "precision=fp32"]


def test_txt2img_img2img_and_lora_compare_from_the_cli(tiny_models, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tiny_models.tutorial_models.parent)  # the workflows' default paths: models/...
    out = ["--output-dir", str(tmp_path / "out"), "--input-dir", str(tmp_path / "in")]
    txt = saved_images(run(capsys, str(ROOT / "workflows" / "kolors_txt2img.json"), *out, *SMALL))
    assert len(txt) == 1 and Image.open(txt[0]).size == (64, 64)

    (tmp_path / "in").mkdir()
    Image.open(txt[0]).save(tmp_path / "in" / "start.png")
    img = saved_images(run(capsys, str(ROOT / "workflows" / "kolors_img2img.json"), *out,
                           "--set", "image=start.png", "--set", "denoise=0.5", "--set", "steps=4",
                           "--set", "precision=fp32"))
    assert len(img) == 1 and Image.open(img[0]).size == (64, 64)

    from graphgen_nodes.kolors.loading import load_unet

    lora = random_diffsynth_lora(load_unet(tiny_models.tutorial_kolors), tmp_path / "epoch=0-step=500.ckpt")
    events = run(capsys, str(ROOT / "workflows" / "kolors_lora_compare.json"), *out, *SMALL, "--set", f"lora={lora}")
    base, with_lora = sorted(saved_images(events))
    assert "base" in base.name and "lora" in with_lora.name
    assert Image.open(base).tobytes() != Image.open(with_lora).tobytes()
    notes = [e for e in events if e["event"] == "node_finished" and e["node_id"] == "4"][0]["ui"]["lora"][0]
    assert "modules at strength 1" in notes
