"""`TrainLoRA` on the tiny SD1.5 and SDXL checkpoints, from a workflow: mixed aspect ratios in
buckets, sample grids at the chosen steps, resume after a kill (a killed process) or a cancel equals
the uninterrupted weights, the LoRA loaded by `LoraLoader` in ComfyUI's default graph changes the
image, and diffusers' `load_lora_weights` reads the file and renders what the graph renders.

With `text_encoder_lr` the text encoders learn: the file's kohya `lora_te*` keys are applied by
`LoraLoader`'s `strength_clip` and by diffusers' `load_lora_weights` alike (the same prompt
embeddings), sample images are encoded with the current text-encoder LoRA, resume after a cancel
equals the uninterrupted run, and the UNet's first step is the cached path's."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file

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


def cancel_at_3_then_resume(engine: Engine, graph: dict[str, Any]) -> Any:
    """Runs the training graph, cancelling it at step 3, then again: the second run resumes from step 3."""

    def cancel_at_3(event: Any) -> None:
        if event.kind == "node_progress" and event.node_id == "2" and event.value == 3:
            engine.cancel()

    assert engine.run(graph, on_event=cancel_at_3).status == "cancelled"
    resumed = engine.run(graph)
    assert resumed.ok and "resumed from step 3" in resumed.ui["2"]["text"][0]
    return resumed


def test_cancel_then_resume_equals_uninterrupted(trained: Any, sd_models: Any, dataset: Path, tmp_path: Path) -> None:
    from graphgen_nodes.lora.lora_file import read_lora

    family, result, _, _, _ = trained
    engine = Engine(output_dir=tmp_path, models_dir=sd_models.models)
    graph = train_graph(family, dataset, f"cancelled_{family}", sample_every_n_steps=0)
    resumed = cancel_at_3_then_resume(engine, graph)
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


# ---------------------------------------------------------------- text-encoder LoRA (text_encoder_lr)

PREFIXES = {"sd15": ["lora_te_"], "sdxl": ["lora_te1_", "lora_te2_"]}
#: the text encoders train; shuffled tags, dropped captions and network dropout: all the caption
#: randomness a step draws ("red, box" shuffles to "box, red")
TE_OPTIONS = {"text_encoder_lr": 1e-2, "batch_size": 2, "shuffle_caption": True, "caption_dropout_rate": 0.25,
              "network_dropout": 0.1}


def encode_graph(family: str, lora: str | None, strength_clip: float = 1.0) -> dict[str, Any]:
    """CLIPTextEncode of PROMPT, through LoraLoader when a LoRA is named."""
    graph: dict[str, Any] = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CKPT[family]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": PROMPT}},
        "4": {"class_type": "PreviewAny", "inputs": {"source": ["3", 0]}},
    }
    if lora:
        graph["2"] = {"class_type": "LoraLoader", "inputs": {"model": ["1", 0], "clip": ["1", 1], "lora_name": lora,
                                                             "strength_model": 1.0, "strength_clip": strength_clip}}
        graph["3"]["inputs"]["clip"] = ["2", 1]
    return graph


def conditioning(engine: Engine, graph: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    result = engine.run(graph)
    assert result.ok, result.failed
    [[embeds, extra]] = next(iter(result.outputs["3"].values()))
    return embeds, extra["pooled_output"]


@pytest.fixture(scope="module", params=["sd15", "sdxl"])
def te_trained(request: pytest.FixtureRequest, sd_models: Any, dataset: Path,
               tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A TE-trained LoRA (sample grids every 2 steps, recording what the sampler encodes)."""
    from graphgen_nodes.lora import train_node

    family = request.param
    engine = Engine(output_dir=tmp_path_factory.mktemp(f"te_{family}"), models_dir=sd_models.models)
    sampled: list[tuple[torch.Tensor, torch.Tensor]] = []
    real = train_node._sampler

    def recording(glue: Any, config: Any, vae: Any, prompts: Any) -> Any:
        sample = real(glue, config, vae, prompts)

        def record(unet: Any, encode: Any = None) -> Any:
            assert encode is not None  # the trainer hands over its text encoders
            sampled.append(tuple(t.detach().cpu() for t in encode(config.prompts())))
            return sample(unet, encode)

        return record

    events: list[Any] = []
    graph = train_graph(family, dataset, f"te_{family}", **TE_OPTIONS)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(train_node, "_sampler", recording)
        result = engine.run(graph, on_event=events.append)
    assert result.ok, result.failed
    return family, Path(result.output("2", "lora_path")), engine, sampled, events


def test_file_has_te_keys_and_loraloader_strength_clip_applies_them(te_trained: Any) -> None:
    family, path, engine, _, events = te_trained
    state = load_file(path)
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    assert meta["ss_text_encoder_lr"] == "0.01" and meta["ss_network_train_unet_only"] == "False"
    for prefix in PREFIXES[family]:
        names = {k.split(".")[0] for k in state if k.startswith(prefix)}
        # kohya's targets: every Linear of each layer's attention and MLP (3 layers in the tiny CLIPs)
        assert len(names) == 3 * 6, prefix
        assert all(f"{n}.alpha" in state and float(state[f"{n}.alpha"]) == 4.0 for n in names)
        assert any(torch.count_nonzero(state[f"{n}.lora_up.weight"]) for n in names), prefix  # it learned
    assert {k.split("_")[1] for k in state} <= {"unet", *(p.split("_")[1] for p in PREFIXES[family])}
    assert any("text encoder(s) stay on the device" in getattr(e, "message", "") for e in events)

    plain = conditioning(engine, encode_graph(family, None))
    off = conditioning(engine, encode_graph(family, path.name, strength_clip=0.0))
    on = conditioning(engine, encode_graph(family, path.name, strength_clip=1.0))
    assert all(torch.equal(a, b) for a, b in zip(plain, off, strict=True))
    assert (on[0] - plain[0]).abs().max() > 1e-3
    if family == "sdxl":  # both encoders learned: ViT-L's half and bigG's half of the embeddings, and pooled
        width = on[0].shape[-1] // 2
        assert (on[0][..., :width] - plain[0][..., :width]).abs().max() > 1e-3
        assert (on[0][..., width:] - plain[0][..., width:]).abs().max() > 1e-3
        assert (on[1] - plain[1]).abs().max() > 1e-3


def test_samples_are_encoded_with_the_current_text_encoder_lora(te_trained: Any) -> None:
    family, path, engine, sampled, _ = te_trained
    assert len(sampled) == 2  # steps 2 and 4
    on = conditioning(engine, encode_graph(family, path.name))
    plain = conditioning(engine, encode_graph(family, None))
    last_embeds, last_pooled = sampled[-1]
    # the last grid's prompt is what CLIPTextEncode gives with the trained LoRA (merged there, unmerged here)
    assert torch.allclose(last_embeds, on[0], atol=1e-5) and not torch.allclose(last_embeds, plain[0], atol=1e-3)
    if family == "sdxl":
        assert torch.allclose(last_pooled, on[1], atol=1e-5)
    assert not torch.allclose(sampled[0][0], last_embeds, atol=1e-4)  # step 2's LoRA is not step 4's


def test_diffusers_load_lora_weights_gives_the_same_prompt_embeds(te_trained: Any) -> None:
    from graphgen.testing.tiny_sd import build_tiny_sd
    from graphgen_nodes.diffusion.comfy_samplers import make_comfy_scheduler

    family, path, engine, _, _ = te_trained
    pipe = build_tiny_sd(family).pipeline(make_comfy_scheduler("euler", "normal"))
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append  # type: ignore[method-assign]
    loggers = [logging.getLogger(name) for name in ("diffusers", "peft", "transformers")]  # transformers: load report
    for logger in loggers:
        logger.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            pipe.load_lora_weights(str(path))
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
    messages = [r.getMessage() for r in records] + [str(w.message) for w in caught]
    assert not [m for m in messages if "unexpected" in m.lower() or "not found" in m.lower()], messages
    ours, pooled = conditioning(engine, encode_graph(family, path.name))
    if family == "sd15":
        embeds, _ = pipe.encode_prompt(PROMPT, "cpu", 1, False)
    else:
        embeds, _, theirs_pooled, _ = pipe.encode_prompt(PROMPT, device="cpu", do_classifier_free_guidance=False)
        assert torch.allclose(theirs_pooled.float(), pooled, atol=1e-5)
    assert embeds.shape == ours.shape
    assert torch.allclose(embeds.float(), ours, atol=1e-5)
    plain = conditioning(engine, encode_graph(family, None))[0]
    assert not torch.allclose(embeds.float(), plain, atol=1e-3)  # diffusers did apply the text-encoder part


def test_te_cancel_then_resume_equals_uninterrupted(te_trained: Any, sd_models: Any, dataset: Path, tmp_path: Path) -> None:
    family, path, _, _, _ = te_trained
    engine = Engine(output_dir=tmp_path, models_dir=sd_models.models)
    graph = train_graph(family, dataset, f"te_cancelled_{family}", **{**TE_OPTIONS, "sample_every_n_steps": 0})
    resumed = cancel_at_3_then_resume(engine, graph)
    got, expected = load_file(resumed.output("2", "lora_path")), load_file(path)
    assert got.keys() == expected.keys() and any(k.startswith("lora_te") for k in got)
    assert all(torch.equal(got[k], expected[k]) for k in expected)  # bit for bit, text encoders included


def test_first_step_equals_the_cached_path_and_lr_0_trains_the_unet_only(
        sd_models: Any, dataset: Path, tmp_path: Path) -> None:
    """One step with the text encoders live (their LoRA starts at zero) conditions the UNet exactly as the
    cached embeddings do: the UNet LoRA is bit-identical to a UNet-only run's; the text encoders moved."""
    engine = Engine(output_dir=tmp_path, models_dir=sd_models.models)
    one = {"steps_per_epoch": 1, "batch_size": 1, "caption_dropout_rate": 0.5, "sample_every_n_steps": 0}
    for family in ("sd15", "sdxl"):
        unet_only = engine.run(train_graph(family, dataset, f"u_{family}", text_encoder_lr=0.0, **one))
        with_te = engine.run(train_graph(family, dataset, f"t_{family}", text_encoder_lr=1e-2, **one))
        assert unet_only.ok and with_te.ok
        a, b = load_file(unet_only.output("2", "lora_path")), load_file(with_te.output("2", "lora_path"))
        assert not any(k.startswith("lora_te") for k in a)
        with safe_open(unet_only.output("2", "lora_path"), "pt") as f, \
                safe_open(with_te.output("2", "lora_path"), "pt") as g:
            meta, te_meta = f.metadata(), g.metadata()
        assert meta["ss_text_encoder_lr"] == "0" and meta["ss_network_train_unet_only"] == "True"
        assert meta["graphgen.run_key"] != te_meta["graphgen.run_key"]  # a re-run never mistakes one for the other
        unet_keys = [k for k in b if k.startswith("lora_unet_")]
        assert sorted(unet_keys) == sorted(a)
        assert all(torch.equal(a[k], b[k]) for k in unet_keys)
        assert any(torch.count_nonzero(b[k]) for k in b if k.startswith("lora_te") and k.endswith("lora_up.weight"))


def test_text_encoder_lr_is_the_last_widget() -> None:
    """Saved editor workflows list widget values by position: the new input comes after the old ones."""
    from graphgen.formats import widget_inputs
    from graphgen_nodes.lora.train_node import TrainLoRA

    names = [i.name for i in widget_inputs(TrainLoRA.spec())]
    assert names[-3:] == ["resume", "on_bad_item", "text_encoder_lr"]
