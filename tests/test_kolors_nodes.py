"""The Kolors node pack end to end on the tiny models: equals diffusers' KolorsPipeline, caches, shares models."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from graphgen import Engine, WorkflowBuilder

PROMPT = "一只可爱的猫, a cat in a hat"
NEGATIVE = "丑陋、变形、嘈杂"


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    out = tmp_path_factory.mktemp("kolors-out")
    return Engine(output_dir=out / "output", input_dir=out / "input")


def txt2img(loaders: dict, *, seed=7, steps=4, cfg=5.0, scheduler="euler", negative=NEGATIVE, size=64, batch=1,
            prompt=PROMPT):
    b = WorkflowBuilder()
    model, text, vae = loaders["model"](b), loaders["text"](b), loaders["vae"](b)
    embeds = b.add("KolorsTextEncode", chatglm3_model=text, prompt=prompt, negative_prompt=negative)
    latent = b.add("EmptyLatentImage", width=size, height=size, batch_size=batch)
    sampled = b.add("KolorsKSampler", id="sampler", model=model, kolors_embeds=embeds, latent=latent, seed=seed,
                    steps=steps, cfg=cfg, scheduler=scheduler)
    decoded = b.add("VAEDecode", id="decode", samples=sampled, vae=vae)
    b.add("SaveImage", id="save", images=decoded, filename_prefix="test/img")
    return b.build()


def layout_loaders(paths, layout: str) -> dict:
    if layout == "tutorial":
        def model(b):
            return b.add("KolorsUNetLoader", path=str(paths.tutorial_kolors), precision="fp32", device="cpu")

        def text(b):
            return b.add("KolorsTextEncoderLoader", path=str(paths.tutorial_kolors), precision="fp32", device="cpu")

        def vae(b):
            return b.add("KolorsVAELoader", path=str(paths.tutorial_fp16_vae), precision="fp32", device="cpu")
    elif layout == "diffusers":
        def model(b):
            return b.add("KolorsModelLoader", path=str(paths.diffusers_root), precision="fp32", device="cpu")["model"]

        def text(b):
            return b.add("KolorsTextEncoderLoader", path=str(paths.diffusers_root), precision="fp32", device="cpu")

        def vae(b):
            return b.add("KolorsVAELoader", path=str(paths.diffusers_root), precision="fp32", device="cpu")
    else:
        def model(b):
            return b.add("KolorsUNetLoader", path=str(paths.comfyui_unet_file), precision="fp32", device="cpu")

        def text(b):
            return b.add("KolorsTextEncoderLoader", path=str(paths.comfyui_llm_file), precision="fp32", device="cpu",
                         tokenizer_path=str(paths.comfyui_kolors))

        def vae(b):
            return b.add("KolorsVAELoader", path=str(paths.comfyui_vae_file), precision="fp32", device="cpu")
    return {"model": model, "text": text, "vae": vae}


def pipeline_images(result, steps=4, cfg=5.0, seed=7, negative=NEGATIVE, scheduler=None, size=64):
    """diffusers' KolorsPipeline over the very modules the graph loaded."""
    from diffusers import KolorsPipeline

    from graphgen_nodes.diffusion.schedulers import make_scheduler

    outputs = result.outputs
    unet = next(v["model"] for v in outputs.values() if "model" in v).handle.model
    text = next(v["chatglm3_model"] for v in outputs.values() if "chatglm3_model" in v)
    vae = next(v["vae"] for v in outputs.values() if "vae" in v).model
    pipe = KolorsPipeline(vae=vae, text_encoder=text.model, tokenizer=text.tokenizer, unet=unet,
                          scheduler=make_scheduler(scheduler or "euler"), force_zeros_for_empty_prompt=False)
    pipe.set_progress_bar_config(disable=True)
    out = pipe(prompt=PROMPT, negative_prompt=negative, height=size, width=size, num_inference_steps=steps,
               guidance_scale=cfg, generator=torch.Generator("cpu").manual_seed(seed), output_type="np")
    return out.images


@pytest.mark.parametrize("layout", ["tutorial", "diffusers", "comfyui"])
def test_graph_equals_kolors_pipeline(engine, tiny_models, layout):
    result = engine.run(txt2img(layout_loaders(tiny_models, layout)))
    assert result.ok, result.failed
    ours = result.output("decode", "image").numpy()
    reference = pipeline_images(result)
    assert ours.shape == reference.shape == (1, 64, 64, 3)
    assert np.abs(ours - reference).max() <= 1e-4
    assert ours.std() > 0.01  # not a blank image


@pytest.mark.parametrize("scheduler", ["dpmpp_2m_karras", "euler_ancestral"])
def test_other_schedulers_match_pipeline(engine, tiny_models, scheduler):
    result = engine.run(txt2img(layout_loaders(tiny_models, "diffusers"), scheduler=scheduler, negative=""))
    reference = pipeline_images(result, scheduler=scheduler, negative="")
    assert np.abs(result.output("decode", "image").numpy() - reference).max() <= 1e-4


def test_changed_seed_reuses_models_and_encodings(engine, tiny_models):
    loaders = layout_loaders(tiny_models, "tutorial")
    first = engine.run(txt2img(loaders, seed=1))
    loads = engine.resources.loads
    second = engine.run(txt2img(loaders, seed=2))
    assert engine.resources.loads == loads
    assert set(second.executed) == {"sampler", "decode", "save"}
    assert not torch.equal(first.output("decode", "image"), second.output("decode", "image"))
    again = engine.run(txt2img(loaders, seed=1))
    assert torch.equal(first.output("decode", "image"), again.output("decode", "image"))


def test_one_model_copy_across_nodes(engine, tiny_models):
    b = WorkflowBuilder()
    one = b.add("KolorsVAELoader", path=str(tiny_models.tutorial_fp16_vae), precision="fp32", device="cpu")
    two = b.add("KolorsVAELoader", path=str(tiny_models.tutorial_fp16_vae) + "/", precision="fp32", device="cpu")
    image = b.add("VAEDecode", samples=b.add("VAEEncode", pixels=b.add("VAEDecode", samples=b.add(
        "EmptyLatentImage", width=64, height=64), vae=one), vae=two), vae=one)
    b.add("PreviewImage", images=image)
    result = engine.run(b.build())
    assert result.ok, result.failed
    # Handles are light keys into the model store: both name the same loaded module.
    assert result.output(one.id, "vae").key == result.output(two.id, "vae").key
    assert result.output(one.id, "vae").model is result.output(two.id, "vae").model


def test_batches_of_prompts_and_images(engine, tiny_models):
    loaders = layout_loaders(tiny_models, "tutorial")
    result = engine.run(txt2img(loaders, prompt="a cat | a dog", batch=2))
    assert result.ok
    images = result.output("decode", "image")
    assert images.shape[0] == 4
    assert len(result.ui["save"]["images"]) == 4
    assert not torch.equal(images[0], images[2])


def test_long_prompt_warns_truncation(engine, tiny_models):
    result = engine.run(txt2img(layout_loaders(tiny_models, "tutorial"), prompt="cat " * 400))
    assert result.ok
    assert any("256" in w for warnings in result.warnings.values() for w in warnings)


def test_missing_model_is_one_clear_error_at_validation(engine, tmp_path):
    from graphgen.errors import WorkflowError

    b = WorkflowBuilder()
    vae = b.add("KolorsVAELoader", path=str(tmp_path / "nowhere"), device="cpu")
    b.add("PreviewImage", images=b.add("VAEDecode", samples=b.add("EmptyLatentImage", width=64, height=64), vae=vae))
    with pytest.raises(WorkflowError) as caught:
        engine.run(b.build())
    (issue,) = caught.value.issues
    assert (issue.node_id, issue.input, issue.code) == (vae.id, "path", "check_failed")
    assert "nowhere" in issue.message and "VAE" in issue.message and "--models-dir" in issue.hint


def test_a_kolors_folder_without_its_unet_is_refused_at_validation(engine, tiny_models, tmp_path):
    import shutil

    from graphgen.errors import WorkflowError

    partial = tmp_path / "Kolors"
    shutil.copytree(tiny_models.tutorial_kolors, partial, ignore=shutil.ignore_patterns("unet"))
    b = WorkflowBuilder()
    model = b.add("KolorsModelLoader", path=str(partial), device="cpu")
    b.add("PreviewImage", images=b.add("VAEDecode", samples=b.add("EmptyLatentImage", width=64, height=64),
                                       vae=model[2]))
    with pytest.raises(WorkflowError) as caught:
        engine.prepare(b.build())
    (issue,) = caught.value.issues
    assert issue.node_id == model.id and "no UNet weights" in issue.message and str(partial) in issue.message


def test_prompt_batches_and_choices():
    from graphgen_nodes.kolors.sampling_nodes import split_prompts

    assert split_prompts("a cat |\n a dog|") == ["a cat", "a dog"]
    picked = split_prompts("a {red|blue|green} ball | {big|small} box")
    assert picked == split_prompts("a {red|blue|green} ball | {big|small} box")  # reproducible
    assert picked[0] in {"a red ball", "a blue ball", "a green ball"} and picked[1] in {"big box", "small box"}
    assert split_prompts("") == [""]


def test_png_chunks_carry_the_comfyui_graph_when_there_is_one():
    import json

    from graphgen_nodes.core.io_nodes import png_text_chunks

    workflow = {"format": "graphgen", "metadata": {"comfyui_workflow": {"nodes": [], "links": []}, "title": "t"},
                "nodes": {"1": {"class_type": "LoadImage", "inputs": {"image": "a.png"}},
                          "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}}}}
    chunks = png_text_chunks(workflow, "2")
    assert json.loads(chunks["workflow"]) == {"nodes": [], "links": []}
    assert "comfyui_workflow" not in json.loads(chunks["graphgen_workflow"])["metadata"]
    assert json.loads(chunks["parameters"]) == {"1": {"class_type": "LoadImage", "image": "a.png"}}
    assert "workflow" not in png_text_chunks({**workflow, "metadata": {}}, "2")
