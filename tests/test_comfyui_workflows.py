"""The three real ComfyUI workflows (shared/comfyui-workflows, UI format v0.4) run unchanged on tiny models
laid out the ComfyUI way; LoRA, quantised ChatGLM, conversion round trip, PNG re-runs and missing models.

Only the LoRA path, the input image and the size/steps (1024 → 64, 25 → 2) are set, with overrides.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from graphgen import Engine, cli
from graphgen.comfy_ui import convert_file
from graphgen.errors import WorkflowError

WORKFLOWS = Path(__file__).resolve().parents[2] / "shared" / "comfyui-workflows"
if not WORKFLOWS.is_dir():
    WORKFLOWS = Path(os.environ.get("GRAPHGEN_SHARED", "/work/shared")) / "comfyui-workflows"
BASE = WORKFLOWS / "datawhale_kolors_example.json"
WITH_LORA = WORKFLOWS / "datawhale_kolors_with_lora_example.json"
IMG2IMG = WORKFLOWS / "kijai_kolors_img2img_example.json"
SMALL = {"14.width": 64, "14.height": 64, "14.steps": 2}
LORA_PROMPT = "二次元，长发，少女，白色背景"

pytestmark = pytest.mark.skipif(not BASE.is_file(), reason="shared/comfyui-workflows is not available")


@pytest.fixture(scope="module")
def comfy(tiny_models, tiny_components, tmp_path_factory):
    """A DiffSynth .ckpt LoRA for the tiny UNet, a small input PNG, and an Engine on the ComfyUI layout."""
    from PIL import Image

    from graphgen_nodes.lora.convert import write_lora
    from graphgen_nodes.lora.lora_file import LoraModule, LoraWeights

    root = tmp_path_factory.mktemp("comfyui")
    generator = torch.Generator().manual_seed(5)
    modules = {}
    for name, module in tiny_components.unet.named_modules():
        if name.endswith(("to_q", "to_k", "to_v", "to_out.0")) and ".attn" in name:
            modules[name] = LoraModule(down=torch.randn(4, module.in_features, generator=generator) * 0.5,
                                       up=torch.randn(module.out_features, 4, generator=generator) * 0.5)
    lora = write_lora(LoraWeights(modules=modules), root / "epoch=0-step=500.ckpt", to="diffsynth")
    image = root / "input.png"
    pixels = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype("uint8")
    Image.fromarray(pixels).save(image)
    engine = Engine(output_dir=root / "output", input_dir=root / "input", models_dir=tiny_models.comfyui_models)
    return {"root": root, "lora": lora, "image": image, "engine": engine, "models": tiny_models.comfyui_models}


def images(result, node="10") -> torch.Tensor:
    assert result.ok, {k: str(v) for k, v in result.failed.items()}
    return result.outputs[node]["image"]


def test_the_txt2img_and_lora_workflows_run_unchanged(comfy):
    engine = comfy["engine"]
    base = engine.run(BASE, overrides=SMALL)
    assert images(base).shape == (4, 64, 64, 3)  # four prompts joined by "|"
    assert len(base.ui["3"]["images"]) == 4 and all(Path(i["path"]).is_file() for i in base.ui["3"]["images"])
    assert any("runs in fp32" in w for w in base.warnings.get("6", []))  # fp16 on the CPU, said aloud

    lora = engine.run(WITH_LORA, overrides={**SMALL, "16.lora_path": str(comfy["lora"])})
    assert images(lora).shape == (1, 64, 64, 3)
    assert "16" in lora.executed


def test_the_img2img_workflow_runs_unchanged_with_quant8_chatglm(comfy):
    pytest.importorskip("optimum.quanto", reason="quant8 needs the optional optimum-quanto")
    engine = comfy["engine"]
    img2img = engine.run(IMG2IMG, overrides={**SMALL, "17.image": str(comfy["image"])})
    out = images(img2img)
    assert out.shape == (2, 64, 64, 3)  # "illustration a wolf|cinematic photograph a cyborg wolf"
    assert torch.isfinite(out).all() and not torch.equal(out[0], out[1])
    # quant8 really loaded 8-bit weights (optimum-quanto), not silently fp16
    handle = img2img.outputs["13"]["chatglm3_model"]
    assert any(type(m).__name__ == "QLinear" for m in handle.model.modules())


def test_lora_changes_the_image_and_a_bypassed_lora_gives_the_base_image(comfy):
    engine = comfy["engine"]
    same = {**SMALL, "12.prompt": LORA_PROMPT, "14.seed": 0}
    base = images(engine.run(BASE, overrides=same))
    with_lora = images(engine.run(WITH_LORA, overrides={**SMALL, "16.lora_path": str(comfy["lora"])}))
    assert base.shape == with_lora.shape
    assert (base - with_lora).abs().max() > 0.01

    data = json.loads(WITH_LORA.read_text(encoding="utf-8"))
    next(n for n in data["nodes"] if n["id"] == 16)["mode"] = 4  # bypass LoadKolorsLoRA in the editor
    bypassed = images(engine.run(data, overrides=SMALL))
    assert torch.equal(bypassed, base)

    # lora_alpha / rank is the scale: lora_alpha 0 is the base model
    zero = images(engine.run(WITH_LORA, overrides={**SMALL, "16.lora_path": str(comfy["lora"]), "16.lora_alpha": 0}))
    assert torch.allclose(zero, base, atol=1e-5)


def test_round_trip_convert_then_run_gives_the_same_image(comfy, tmp_path):
    engine = comfy["engine"]
    overrides = {**SMALL, "16.lora_path": str(comfy["lora"])}
    direct = images(engine.run(WITH_LORA, overrides=overrides))
    converted = convert_file(WITH_LORA, tmp_path / "with_lora.json", engine.registry)
    nodes = json.loads(converted.read_text(encoding="utf-8"))["nodes"]
    assert nodes["16"]["inputs"]["lora_alpha"] == 2 and nodes["14"]["inputs"]["denoise_strength"] == 1
    fresh = Engine(output_dir=tmp_path / "out", models_dir=comfy["models"])
    assert torch.equal(images(fresh.run(converted, overrides=overrides)), direct)


def test_png_saved_by_save_image_reruns_to_the_same_pixels(comfy, tmp_path):
    from PIL import Image

    data = json.loads(BASE.read_text(encoding="utf-8"))
    preview = next(n for n in data["nodes"] if n["id"] == 3)
    preview["type"], preview["widgets_values"] = "SaveImage", ["kolors"]
    first = Engine(output_dir=tmp_path / "first", models_dir=comfy["models"])
    saved = first.run(data, overrides={**SMALL, "12.prompt": "a red fox"})
    assert saved.ok, saved.failed
    png = Path(saved.ui["3"]["images"][0]["path"])
    second = Engine(output_dir=tmp_path / "second", models_dir=comfy["models"])
    rerun = second.run(png)  # the PNG carries the workflow, overrides included
    assert rerun.ok, rerun.failed
    again = Path(rerun.ui["3"]["images"][0]["path"])
    assert again != png
    assert np.array_equal(np.asarray(Image.open(png)), np.asarray(Image.open(again)))
    assert torch.equal(images(rerun), images(saved))


def test_cli_runs_a_ui_workflow_with_models_dir_and_set(comfy, tmp_path, capsys):
    code = cli.main(["run", str(WITH_LORA), "--models-dir", str(comfy["models"]), "--output-dir", str(tmp_path),
                     "--set", f"16.lora_path={comfy['lora']}", "--set", "14.width=64", "--set", "14.height=64",
                     "--set", "14.steps=1", "--json"])
    _, err = capsys.readouterr()
    assert code == 0, err


def test_missing_models_are_one_clear_error_before_anything_runs(comfy, tmp_path):
    empty = tmp_path / "models"
    (empty / "vae").mkdir(parents=True)
    with pytest.raises(WorkflowError) as caught:
        Engine(output_dir=tmp_path / "out", models_dir=empty).run(BASE, overrides=SMALL)
    issues = {(i.node_id, i.input): i for i in caught.value.issues}
    kolors = str(issues[("6", "model")])
    assert str(empty / "diffusers" / "Kolors") in kolors and "diffusers/Kolors/" in kolors
    assert "nothing is downloaded" in kolors
    vae = str(issues[("11", "vae_name")])
    assert str(empty / "vae" / "sdxl.vae.safetensors") in vae and "holds no models" in vae

    with pytest.raises(WorkflowError) as caught:  # the tutorial's /mnt/workspace path
        comfy["engine"].run(WITH_LORA, overrides=SMALL)
    (lora,) = caught.value.issues
    assert (lora.node_id, lora.input) == ("16", "lora_path")
    assert "--set 16.lora_path=FILE" in str(lora) and "/mnt/workspace/models/lightning_logs" in str(lora)


def test_img2img_with_fp16_chatglm_and_a_latent_of_another_size(comfy, tmp_path):
    data = json.loads(IMG2IMG.read_text(encoding="utf-8"))
    next(n for n in data["nodes"] if n["id"] == 13)["widgets_values"] = ["fp16"]
    result = comfy["engine"].run(data, overrides={"14.steps": 2, "17.image": str(comfy["image"])})
    assert images(result).shape == (2, 64, 64, 3)  # the 64x64 input wins over the 1024x1024 widgets
    assert any("64x64" in w for w in result.warnings["14"])


def test_quantised_chatglm_is_refused_clearly_without_optimum_quanto(comfy, tmp_path, monkeypatch):
    from graphgen_nodes.comfyui import quant

    monkeypatch.setattr(quant, "quantization_available", lambda: False)
    engine = Engine(output_dir=tmp_path, models_dir=comfy["models"])
    result = engine.run(IMG2IMG, overrides={**SMALL, "17.image": str(comfy["image"])})
    message = str(result.failed["13"])
    assert "'quant8'" in message and "optimum-quanto" in message and "fp16" in message


def kijai_first_version(legacy: bool) -> dict:
    """kijai's first Kolors example (API form): KolorsTextEncode took the whole model as `kolors_model`."""
    encode = {"prompt": "a cat | a dog", "negative_prompt": ""}
    nodes = {
        "1": {"class_type": "DownloadAndLoadKolorsModel", "inputs": {"model": "Kwai-Kolors/Kolors", "precision": "fp32"}},
        "2": {"class_type": "KolorsTextEncode", "inputs": {**encode, "kolors_model": ["1", 0]}},
        "3": {"class_type": "KolorsSampler", "inputs": {
            "kolors_model": ["1", 0], "kolors_embeds": ["2", 0], "width": 64, "height": 64, "seed": 3, "steps": 2,
            "cfg": 5.0, "scheduler": "EulerDiscreteScheduler"}},
        "4": {"class_type": "VAELoader", "inputs": {"vae_name": "sdxl.vae.safetensors"}},
        "5": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 0]}},
        "6": {"class_type": "PreviewImage", "inputs": {"images": ["5", 0]}},
    }
    if not legacy:  # today's form: the encoder from its own loader
        nodes["7"] = {"class_type": "DownloadAndLoadChatGLM3", "inputs": {"precision": "fp16"}}
        nodes["2"]["inputs"] = {**encode, "chatglm3_model": ["7", 0]}
    return nodes


def test_kijais_older_text_encode_with_kolors_model_runs(comfy):
    engine = comfy["engine"]
    legacy = engine.run(kijai_first_version(legacy=True))
    today = engine.run(kijai_first_version(legacy=False))
    assert images(legacy, "5").shape == (2, 64, 64, 3)
    assert torch.equal(images(legacy, "5"), images(today, "5"))  # the same encoder, read from the same folder


def test_a_legacy_input_name_and_its_new_name_together_are_refused(comfy):
    workflow = kijai_first_version(legacy=True)
    workflow["7"] = {"class_type": "DownloadAndLoadChatGLM3", "inputs": {"precision": "fp16"}}
    workflow["2"]["inputs"]["chatglm3_model"] = ["7", 0]
    (issue,) = comfy["engine"].validate(workflow)
    assert (issue.code, issue.node_id, issue.input) == ("duplicate_input", "2", "kolors_model")
    workflow = kijai_first_version(legacy=True)
    workflow["2"]["inputs"]["kolors_model"] = ["4", 0]  # a VAE is neither the old nor the new type
    (issue,) = comfy["engine"].validate(workflow)
    assert issue.code == "return_type_mismatch" and issue.input == "chatglm3_model"
