"""SD1.5 / SDXL: tiny checkpoints in the original layout, ComfyUI's default graphs against diffusers' pipelines.

The graphs run on single-file checkpoints written under a ComfyUI models folder
(`--models-dir`); the pipelines run on the in-memory diffusers modules the files were written
from. Images are compared as saved 8-bit pixels (max abs difference ≤ 1 level).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

SEED = 156680208700286
PROMPT = "beautiful scenery nature glass bottle landscape, , purple galaxy bottle,"
NEGATIVE = "text, watermark"

#: ComfyUI's default editor graph, in API form (sizes and steps overridden per test for CI time).
SD15_GRAPH: dict[str, Any] = {
    "3": {"class_type": "KSampler", "inputs": {
        "cfg": 8, "denoise": 1, "latent_image": ["5", 0], "model": ["4", 0], "negative": ["7", 0],
        "positive": ["6", 0], "sampler_name": "euler", "scheduler": "normal", "seed": SEED, "steps": 20}},
    "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "v1-5-pruned-emaonly.safetensors"}},
    "5": {"class_type": "EmptyLatentImage", "inputs": {"batch_size": 1, "height": 512, "width": 512}},
    "6": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["4", 1], "text": PROMPT}},
    "7": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["4", 1], "text": NEGATIVE}},
    "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
    "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "ComfyUI", "images": ["8", 0]}},
}

#: ComfyUI's tests/inference/graphs/default_graph_sdxl1_0.json (base, then a refiner stage that
#: starts beyond the last step and so passes the latent through).
SDXL_GRAPH: dict[str, Any] = {
    "4": {"inputs": {"ckpt_name": "sd_xl_base_1.0.safetensors"}, "class_type": "CheckpointLoaderSimple"},
    "5": {"inputs": {"width": 1024, "height": 1024, "batch_size": 1}, "class_type": "EmptyLatentImage"},
    "6": {"inputs": {"text": "a photo of a cat", "clip": ["4", 1]}, "class_type": "CLIPTextEncode"},
    "10": {"inputs": {"add_noise": "enable", "noise_seed": 42, "steps": 20, "cfg": 7.5, "sampler_name": "euler",
                      "scheduler": "normal", "start_at_step": 0, "end_at_step": 32,
                      "return_with_leftover_noise": True, "model": ["4", 0], "positive": ["6", 0],
                      "negative": ["15", 0], "latent_image": ["5", 0]}, "class_type": "KSamplerAdvanced"},
    "12": {"inputs": {"samples": ["14", 0], "vae": ["4", 2]}, "class_type": "VAEDecode"},
    "13": {"inputs": {"filename_prefix": "test_inference", "images": ["12", 0]}, "class_type": "SaveImage"},
    "14": {"inputs": {"add_noise": "disable", "noise_seed": 42, "steps": 20, "cfg": 7.5, "sampler_name": "euler",
                      "scheduler": "normal", "start_at_step": 32, "end_at_step": 10000,
                      "return_with_leftover_noise": False, "model": ["16", 0], "positive": ["17", 0],
                      "negative": ["20", 0], "latent_image": ["10", 0]}, "class_type": "KSamplerAdvanced"},
    "15": {"inputs": {"conditioning": ["6", 0]}, "class_type": "ConditioningZeroOut"},
    "16": {"inputs": {"ckpt_name": "sd_xl_refiner_1.0.safetensors"}, "class_type": "CheckpointLoaderSimple"},
    "17": {"inputs": {"text": "a photo of a cat", "clip": ["16", 1]}, "class_type": "CLIPTextEncode"},
    "20": {"inputs": {"text": "", "clip": ["16", 1]}, "class_type": "CLIPTextEncode"},
}


@pytest.fixture(scope="session")
def sd_models(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from graphgen.testing.tiny_sd import write_tiny_sd_models

    return write_tiny_sd_models(tmp_path_factory.mktemp("sd_models"))


@pytest.fixture(scope="session")
def sd_engine(sd_models: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    from graphgen import Engine

    return Engine(output_dir=tmp_path_factory.mktemp("sd_out"), models_dir=sd_models.models)


@pytest.fixture(scope="session")
def tiny_sd15() -> Any:
    from graphgen.testing.tiny_sd import build_tiny_sd

    return build_tiny_sd("sd15")


@pytest.fixture(scope="session")
def tiny_sdxl() -> Any:
    from graphgen.testing.tiny_sd import build_tiny_sd

    return build_tiny_sd("sdxl")


def _saved_pixels(result: Any, node: str) -> np.ndarray:
    from PIL import Image

    path = result.ui[node]["images"][0]["path"]
    return np.asarray(Image.open(path)).astype(np.int16)


def _pipe_pixels(image: np.ndarray) -> np.ndarray:
    return np.round(np.clip(image, 0, 1) * 255).astype(np.int16)


def comfyui_editor_default_graph() -> dict[str, Any] | None:
    """The editor's classic default graph, read at test time from the installed comfyui-frontend-package.

    (The frontend is GPL: its graph is read from the package, never copied into this repository.)
    The TypeScript object literal in its source map is turned into JSON.
    """
    import json
    import re

    try:
        import comfyui_frontend_package as pkg
    except ImportError:
        return None
    for source_map in sorted((Path(pkg.__file__).parent / "static" / "assets").glob("*.js.map")):
        text = source_map.read_text(encoding="utf-8")
        if "testDefaultGraph" not in text:
            continue
        data = json.loads(text)
        for src, content in zip(data["sources"], data.get("sourcesContent") or [], strict=False):
            if src.endswith("defaultGraph.ts") and content and "testDefaultGraph" in content:
                body = content.split("const testDefaultGraph: ComfyWorkflowJSON = ", 1)[1]
                body = body.split("\nconst ", 1)[0].strip()
                body = re.sub(r"'((?:[^'\\]|\\.)*)'", lambda m: json.dumps(m.group(1)), body)
                body = re.sub(r'([{,\[]\s*)([A-Za-z_]\w*)\s*:', r'\1"\2":', body)
                body = re.sub(r",(\s*[}\]])", r"\1", body)
                return json.loads(body)
    return None


def test_sd15_editor_default_graph_equals_pipeline(sd_engine: Any) -> None:
    """ComfyUI's editor default graph (litegraph format, fp16 checkpoint name) runs unchanged but for size and
    steps, and equals the pipeline on the same fp16-rounded weights."""
    from graphgen.testing.tiny_sd import build_tiny_sd
    from graphgen_nodes.diffusion.comfy_samplers import make_comfy_scheduler

    graph = comfyui_editor_default_graph()
    if graph is None:
        pytest.skip("comfyui-frontend-package (dev extra) is not installed")
    assert {n["type"] for n in graph["nodes"]} >= {"CheckpointLoaderSimple", "KSampler", "CLIPTextEncode"}
    result = sd_engine.run(graph, overrides={"5.width": 64, "5.height": 64, "3.steps": 4})
    got = _saved_pixels(result, "9")

    tiny = build_tiny_sd("sd15")
    for module in (tiny.unet, tiny.vae, tiny.text_encoder):
        module.half().float()
    pipe = tiny.pipeline(make_comfy_scheduler("euler", "normal"))
    pipe.set_progress_bar_config(disable=True)
    image = pipe(PROMPT, negative_prompt=NEGATIVE, height=64, width=64, num_inference_steps=4, guidance_scale=8,
                 generator=torch.Generator("cpu").manual_seed(SEED), output_type="np").images[0]
    assert np.abs(_pipe_pixels(image) - got).max() <= 1


def test_sdxl_graph_in_editor_format_runs(sd_engine: Any) -> None:
    """The SDXL test graph converted to the editor format (graphgen's converter) gives the same image."""
    from graphgen.server.templates import workflow_to_ui
    from graphgen.workflow import load_workflow

    if "ConditioningZeroOut" not in sd_engine.registry.specs():
        pytest.skip("the core pack's ConditioningZeroOut is not installed")
    graph = copy.deepcopy(SDXL_GRAPH)
    graph["5"]["inputs"].update(width=64, height=64)
    for node in ("10", "14"):
        graph[node]["inputs"]["steps"] = 3
    api = _saved_pixels(sd_engine.run(graph), "13")
    ui = workflow_to_ui(load_workflow(graph), sd_engine.registry)
    assert "nodes" in ui and "links" in ui
    assert np.array_equal(_saved_pixels(sd_engine.run(ui, use_cache=False), "13"), api)


def test_clip_tokenizer_is_the_standard_one() -> None:
    from graphgen_nodes.diffusion.clip_tokenizer import VOCAB_SIZE, clip_tokenizer

    tok = clip_tokenizer()
    assert len(tok) == VOCAB_SIZE
    assert tok("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert clip_tokenizer(pad_token="!")("a", padding="max_length", max_length=5).input_ids[-1] == 0


@pytest.mark.parametrize("family", ["sd15", "sdxl", "sdxl_refiner"])
def test_single_file_loads_back_bit_for_bit(family: str) -> None:
    """Architecture read from shapes + diffusers' conversion give back the very modules written."""
    from graphgen.testing.tiny_sd import build_tiny_sd, checkpoint_state_dict
    from graphgen_nodes.sd import loading
    from graphgen_nodes.sd.detect import detect

    tiny = build_tiny_sd(family)
    state = checkpoint_state_dict(tiny)
    assert any(k.startswith("model.diffusion_model.input_blocks.") for k in state)
    arch = detect(state)
    assert arch.family == family
    pairs = [(loading.load_unet, tiny.unet), (loading.load_vae, tiny.vae)]
    if tiny.text_encoder is not None:
        pairs.append((loading.load_clip_l, tiny.text_encoder))
    if tiny.text_encoder_2 is not None:
        pairs.append((loading.load_clip_g, tiny.text_encoder_2))
    for load, ref in pairs:
        got = load(state, arch, torch.float32).state_dict()
        want = ref.state_dict()
        assert set(got) == set(want)
        assert all(torch.equal(got[k], want[k]) for k in want)


def test_detection_refuses_other_files_in_one_line() -> None:
    from graphgen_nodes.sd.detect import DetectionError, detect

    with pytest.raises(DetectionError, match="not an SD1.5/SDXL checkpoint"):
        detect({"foo.weight": torch.zeros(2)}, "x.safetensors")


# (sampler, scheduler) pairs checked against the pipeline with the scheduler they map to
SD15_PAIRS = [("euler", "normal"), ("euler_ancestral", "normal"), ("dpmpp_2m", "karras"), ("ddim", "simple"),
              ("uni_pc", "normal"), ("heun", "exponential"), ("dpmpp_2m_sde", "normal"), ("lcm", "sgm_uniform")]


@pytest.mark.parametrize(("sampler", "scheduler"), SD15_PAIRS)
def test_sd15_default_graph_equals_pipeline(sd_engine: Any, tiny_sd15: Any, sampler: str, scheduler: str) -> None:
    from graphgen_nodes.diffusion.comfy_samplers import make_comfy_scheduler

    graph = copy.deepcopy(SD15_GRAPH)
    graph["3"]["inputs"].update(sampler_name=sampler, scheduler=scheduler, steps=4)
    graph["5"]["inputs"].update(width=64, height=64)
    got = _saved_pixels(sd_engine.run(graph), "9")

    pipe = tiny_sd15.pipeline(make_comfy_scheduler(sampler, scheduler))
    pipe.set_progress_bar_config(disable=True)
    image = pipe(PROMPT, negative_prompt=NEGATIVE, height=64, width=64, num_inference_steps=4, guidance_scale=8,
                 generator=torch.Generator("cpu").manual_seed(SEED), output_type="np").images[0]
    ref = _pipe_pixels(image)
    assert ref.std() > 5  # a real image, not a flat one
    assert np.abs(ref - got).max() <= 1


def test_sdxl_default_graph_equals_pipeline(sd_engine: Any, tiny_sdxl: Any) -> None:
    """ComfyUI's SDXL test graph: zeroed negative, base KSamplerAdvanced, refiner stage passing through."""
    from graphgen_nodes.diffusion.comfy_samplers import make_comfy_scheduler

    if "ConditioningZeroOut" not in sd_engine.registry.specs():
        pytest.skip("the core pack's ConditioningZeroOut is not installed")
    graph = copy.deepcopy(SDXL_GRAPH)
    graph["5"]["inputs"].update(width=64, height=64)
    for node in ("10", "14"):
        graph[node]["inputs"]["steps"] = 4
    got = _saved_pixels(sd_engine.run(graph), "13")

    pipe = tiny_sdxl.pipeline(make_comfy_scheduler("euler", "normal"))
    pipe.set_progress_bar_config(disable=True)
    image = pipe("a photo of a cat", height=64, width=64, num_inference_steps=4, guidance_scale=7.5,
                 generator=torch.Generator("cpu").manual_seed(42), output_type="np").images[0]
    ref = _pipe_pixels(image)
    assert ref.std() > 5
    assert np.abs(ref - got).max() <= 1


def test_lora_loader_equals_diffusers_load_lora_weights(sd_engine: Any, sd_models: Any, tiny_sd15: Any) -> None:
    from graphgen.testing.tiny_sd import build_tiny_sd
    from graphgen_nodes.diffusion.comfy_samplers import make_comfy_scheduler

    graph = copy.deepcopy(SD15_GRAPH)
    graph["3"]["inputs"].update(steps=4)
    graph["5"]["inputs"].update(width=64, height=64)
    plain = _saved_pixels(sd_engine.run(graph), "9")
    graph["10"] = {"class_type": "LoraLoader", "inputs": {
        "model": ["4", 0], "clip": ["4", 1], "lora_name": Path(sd_models.loras["sd15"]).name,
        "strength_model": 1.0, "strength_clip": 1.0}}
    graph["3"]["inputs"]["model"] = ["10", 0]
    for node in ("6", "7"):
        graph[node]["inputs"]["clip"] = ["10", 1]
    got = _saved_pixels(sd_engine.run(graph), "9")

    pipe = build_tiny_sd("sd15").pipeline(make_comfy_scheduler("euler", "normal"))  # a copy: peft wraps layers
    pipe.set_progress_bar_config(disable=True)
    pipe.load_lora_weights(str(sd_models.loras["sd15"]))
    image = pipe(PROMPT, negative_prompt=NEGATIVE, height=64, width=64, num_inference_steps=4, guidance_scale=8,
                 generator=torch.Generator("cpu").manual_seed(SEED), output_type="np").images[0]
    ref = _pipe_pixels(image)
    assert np.abs(plain - got).max() > 10  # the LoRA changes the image
    assert np.abs(ref - got).max() <= 1


def test_unsupported_sampler_scheduler_pair_is_a_validation_error(sd_engine: Any) -> None:
    graph = copy.deepcopy(SD15_GRAPH)
    graph["3"]["inputs"].update(sampler_name="euler_ancestral", scheduler="karras")
    issues = sd_engine.validate(graph)
    assert [(i.code, i.node_id) for i in issues] == [("custom_validation_failed", "3")]
    assert "euler_ancestral + karras" in issues[0].message
    assert "normal, sgm_uniform, simple" in issues[0].message
    graph["3"]["inputs"].update(scheduler="normal")
    assert sd_engine.validate(graph) == []


def test_ksampler_advanced_start_beyond_last_step_passes_through(sd_engine: Any) -> None:
    from graphgen_nodes.sd.sampling_nodes import KSamplerAdvanced

    latent = {"samples": torch.randn(1, 4, 8, 8)}
    out = KSamplerAdvanced().run(None, "disable", 0, 20, 7.5, "euler", "normal", None, None, latent, 32, 10000, False)
    assert torch.equal(out["samples"], latent["samples"])


def _cli_run(capsys: Any, *args: str) -> list[dict[str, Any]]:
    import json

    from graphgen import cli

    code = cli.main(["run", *args, "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err + out[-2000:]
    return [json.loads(line) for line in out.splitlines()]


def _saved(events: list[dict[str, Any]]) -> list[Path]:
    return [Path(item["path"]) for e in events if e["event"] == "node_finished" and e["ui"]
            for item in e["ui"].get("images", [])]


WORKFLOWS = Path(__file__).resolve().parent.parent / "workflows"
SMALL = ["--set", "width=64", "--set", "height=64", "--set", "steps=3"]


def test_example_workflows_run_from_the_cli(sd_models: Any, tmp_path: Path, capsys: Any) -> None:
    """txt2img (SD1.5, SDXL + refiner), a two-pass hires fix (img2img on an upscaled latent) and inpainting."""
    from PIL import Image

    common = ["--models-dir", str(sd_models.models), "--output-dir", str(tmp_path / "out"),
              "--input-dir", str(tmp_path / "in")]
    sd15 = _saved(_cli_run(capsys, str(WORKFLOWS / "sd15_txt2img.json"), *common, *SMALL))
    assert Image.open(sd15[0]).size == (64, 64)
    sdxl = _saved(_cli_run(capsys, str(WORKFLOWS / "sdxl_txt2img.json"), *common, *SMALL,
                           "--set", "refiner_start=2"))
    assert Image.open(sdxl[0]).size == (64, 64)
    hires = _saved(_cli_run(capsys, str(WORKFLOWS / "sd15_hires_fix.json"), *common, *SMALL, "--set", "scale=1.5"))
    assert Image.open(hires[0]).size == (96, 96)

    (tmp_path / "in").mkdir()
    rgba = np.zeros((64, 64, 4), dtype=np.uint8)
    rgba[..., :3] = 200
    rgba[..., 3] = 255
    rgba[16:48, 16:48, 3] = 0  # transparent square: repaint it
    Image.fromarray(rgba, "RGBA").save(tmp_path / "in" / "input.png")
    inpainted = _saved(_cli_run(capsys, str(WORKFLOWS / "sd15_inpaint.json"), *common, "--set", "steps=3"))
    assert Image.open(inpainted[0]).size == (64, 64)


def test_noise_mask_resamples_only_the_masked_area(tiny_sd15: Any) -> None:
    """Inpainting: outside the mask the result is the input latent, inside it is new."""
    from graphgen_nodes.diffusion.comfy_samplers import make_comfy_scheduler
    from graphgen_nodes.diffusion.denoise import CondEntry, denoise

    embeds = torch.randn(1, 77, 64, generator=torch.Generator().manual_seed(1))
    x0 = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    mask = torch.zeros(1, 64, 64)
    mask[:, :, 32:] = 1.0  # right half of the pixels
    out = denoise(tiny_sd15.unet, make_comfy_scheduler("euler", "normal"), [CondEntry(embeds)],
                  [CondEntry(torch.zeros_like(embeds))], x0, generator=torch.Generator().manual_seed(3), steps=3,
                  cfg=5.0, denoise_strength=0.8, noise_mask=mask)
    assert torch.equal(out[..., :3], x0[..., :3])
    assert (out[..., 5:] - x0[..., 5:]).abs().max() > 0.1


def test_timestep_ranges_and_combined_entries(tiny_sd15: Any) -> None:
    """An entry limited to a timestep range counts only there; two always-on entries average."""
    from graphgen_nodes.diffusion.comfy_samplers import make_comfy_scheduler
    from graphgen_nodes.diffusion.denoise import CondEntry, denoise

    gen = torch.Generator().manual_seed(4)
    a, b = torch.randn(1, 77, 64, generator=gen), torch.randn(1, 77, 64, generator=gen)
    x0 = torch.zeros(1, 4, 8, 8)

    def run(entries: list[Any]) -> torch.Tensor:
        return denoise(tiny_sd15.unet, make_comfy_scheduler("euler", "normal"), entries, [], x0,
                       generator=torch.Generator().manual_seed(5), steps=4, cfg=1.0, noise_only=True)

    only_a = run([CondEntry(a)])
    # 4 "normal" steps sit at timesteps 999, 666, 333, 0: the range 10-20 % (timesteps 899-799)
    # holds none of them, so b never counts
    assert torch.equal(run([CondEntry(a), CondEntry(b, start=0.1, end=0.2)]), only_a)
    early = run([CondEntry(a), CondEntry(b, start=0.0, end=0.5)])  # b at 999 and 666 only
    both = run([CondEntry(a), CondEntry(b)])
    assert not torch.allclose(early, only_a) and not torch.allclose(early, both)
    assert not torch.allclose(both, only_a)


def test_kolors_model_and_conditioning_in_ksampler(tiny_models: Any, tmp_path: Path) -> None:
    from graphgen import Engine

    engine = Engine(output_dir=tmp_path, models_dir=tiny_models.comfyui_models)
    kolors = str(tiny_models.comfyui_kolors)
    graph = {
        "1": {"class_type": "KolorsModelLoader", "inputs": {"path": kolors, "precision": "fp32", "device": "cpu"}},
        "2": {"class_type": "KolorsTextEncode", "inputs": {"chatglm3_model": ["1", 1], "prompt": "a cat",
                                                          "negative_prompt": "", "num_images_per_prompt": 1}},
        "3": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "4": {"class_type": "KSampler", "inputs": {
            "model": ["1", 0], "seed": 1, "steps": 3, "cfg": 5.0, "sampler_name": "dpmpp_2m", "scheduler": "karras",
            "positive": ["2", 0], "negative": ["2", 0], "latent_image": ["3", 0], "denoise": 1.0}},
        "5": {"class_type": "VAEDecode", "inputs": {"samples": ["4", 0], "vae": ["1", 2]}},
        "6": {"class_type": "SaveImage", "inputs": {"images": ["5", 0], "filename_prefix": "k"}},
    }
    pixels = _saved_pixels(engine.run(graph), "6")
    assert pixels.shape == (64, 64, 3) and pixels.std() > 5



def test_object_info_offers_model_files_as_choices(sd_models: Any) -> None:
    from graphgen.registry import default_registry
    from graphgen.server.object_info import node_definition

    specs = default_registry().specs()
    ckpt = node_definition(specs["CheckpointLoaderSimple"], None, sd_models.models)["input"]["required"]["ckpt_name"]
    assert "sd_xl_base_1.0.safetensors" in ckpt[0] and "v1-5-pruned-emaonly.safetensors" in ckpt[0]
    lora = node_definition(specs["LoraLoader"], None, sd_models.models)["input"]["required"]["lora_name"]
    assert lora[0] == sorted(p.name for p in sd_models.loras.values())
    # without a models folder the input stays a text widget
    assert node_definition(specs["CheckpointLoaderSimple"])["input"]["required"]["ckpt_name"][0] == "STRING"


def test_checkpoint_loader_reads_a_diffusers_folder(sd_engine: Any, sd_models: Any, tiny_sd15: Any) -> None:
    """The same weights saved as a diffusers pipeline folder give the single file's image."""
    folder = Path(sd_models.models) / "checkpoints" / "tiny-sd15-diffusers"
    if not folder.exists():
        tiny_sd15.pipeline().save_pretrained(folder)
    graph = copy.deepcopy(SD15_GRAPH)
    graph["3"]["inputs"].update(steps=3)
    graph["5"]["inputs"].update(width=64, height=64)
    single = _saved_pixels(sd_engine.run(graph), "9")
    graph["4"]["inputs"]["ckpt_name"] = folder.name
    # Same weights; a reloaded copy may take another CPU kernel, and 8-bit truncation can turn a
    # 1e-7 difference into one level.
    assert np.abs(_saved_pixels(sd_engine.run(graph), "9") - single).max() <= 1


def test_vae_loader_reads_an_sd_vae_file(sd_engine: Any, sd_models: Any) -> None:
    """A VAE-only file (LDM keys, as vae-ft-mse or sdxl_vae) decodes as the checkpoint's own VAE."""
    from safetensors.torch import load_file, save_file

    vae_dir = Path(sd_models.models) / "vae"
    vae_dir.mkdir(exist_ok=True)
    state = load_file(str(sd_models.checkpoints["sd15"]))
    save_file({k.removeprefix("first_stage_model."): v for k, v in state.items()
               if k.startswith("first_stage_model.")}, str(vae_dir / "tiny-sd15-vae.safetensors"))
    graph = copy.deepcopy(SD15_GRAPH)
    graph["3"]["inputs"].update(steps=3)
    graph["5"]["inputs"].update(width=64, height=64)
    own = _saved_pixels(sd_engine.run(graph), "9")
    graph["10"] = {"class_type": "VAELoader", "inputs": {"vae_name": "tiny-sd15-vae.safetensors"}}
    graph["8"]["inputs"]["vae"] = ["10", 0]
    assert np.abs(_saved_pixels(sd_engine.run(graph), "9") - own).max() <= 1


SD_WORKFLOWS = sorted((Path(__file__).resolve().parents[1] / "workflows").glob("sd*.json"))


@pytest.mark.parametrize("path", SD_WORKFLOWS, ids=[p.name for p in SD_WORKFLOWS])
def test_shipped_sd_workflow_names_a_missing_checkpoint_at_validation(
        path: Path, sd_models: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """`graphgen validate` finds a missing checkpoint (exit 2, the input and --models-dir named) before
    anything loads; with the tiny checkpoints as --models-dir the shipped workflow is valid as it is."""
    from PIL import Image

    from graphgen import cli

    monkeypatch.chdir(tmp_path)
    assert cli.main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "(CheckpointLoaderSimple), input 'ckpt_name'" in err and "--models-dir" in err
    (tmp_path / "input").mkdir()
    Image.new("RGBA", (64, 64)).save(tmp_path / "input" / "input.png")
    if path.name.endswith("_train_lora.json"):  # and the training data at its default place
        from graphgen.testing.demo_data import write_kohya_dataset

        write_kohya_dataset(tmp_path / "data" / "lora_dataset")
    assert cli.main(["validate", str(path), "--models-dir", str(sd_models.models)]) == 0, capsys.readouterr().err
