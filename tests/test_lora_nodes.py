"""LoRA nodes in workflows: one LoRA in peft (saved by diffusers), kohya and DiffSynth layouts gives one image;
the base branch stays the base model; stacking and strengths; bad files are clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from graphgen import Engine, WorkflowBuilder

PROMPT = "a cat wearing a hat"


@pytest.fixture(scope="module")
def lora_files(tiny_models, tmp_path_factory):
    """A random peft LoRA on the tiny UNet saved by diffusers, and the same weights in other layouts."""
    from diffusers import KolorsPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    from graphgen_nodes.kolors.loading import load_unet
    from graphgen_nodes.lora.convert import convert_lora

    folder = tmp_path_factory.mktemp("loras")
    unet = load_unet(tiny_models.tutorial_kolors)
    config = LoraConfig(r=4, lora_alpha=2.0, init_lora_weights="gaussian",
                        target_modules=["to_q", "to_k", "to_v", "to_out.0"])
    unet.add_adapter(config)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, parameter in unet.named_parameters():
            if "lora_" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
    KolorsPipeline.save_lora_weights(folder, unet_lora_layers=get_peft_model_state_dict(unet),
                                     unet_lora_adapter_metadata=config.to_dict(), safe_serialization=True)
    peft_file = folder / "pytorch_lora_weights.safetensors"
    files = {"diffusers_peft": peft_file}
    for layout in ("kohya", "diffsynth"):
        suffix = ".ckpt" if layout == "diffsynth" else ".safetensors"
        files[layout] = convert_lora(peft_file, folder / f"lora_{layout}{suffix}", to=layout)
    return files


def compare_workflow(tiny_models, lora_path: str, strength: float = 1.0, lora_alpha: float = 0.0,
                     second: str | None = None):
    b = WorkflowBuilder()
    base = b.add("KolorsModelLoader", path=str(tiny_models.tutorial_kolors), precision="fp32", device="cpu")
    vae = b.add("KolorsVAELoader", path=str(tiny_models.tutorial_fp16_vae), precision="fp32", device="cpu")
    lora = b.add("LoadLoRA", lora_path=lora_path, lora_alpha=lora_alpha)
    model = b.add("KolorsApplyLoRA", id="apply", model=base["model"], lora=lora, strength=strength)
    if second:
        model = b.add("KolorsLoraLoader", id="apply2", model=model, lora_path=second, strength=0.5)
    embeds = b.add("KolorsTextEncode", chatglm3_model=base["chatglm3_model"], prompt=PROMPT)
    latent = b.add("EmptyLatentImage", width=64, height=64)
    for name, unet in (("base", base["model"]), ("lora", model)):
        sampled = b.add("KolorsKSampler", id=f"sample_{name}", model=unet, kolors_embeds=embeds, latent=latent,
                        seed=11, steps=3, cfg=4.0)
        b.add("PreviewImage", id=f"show_{name}", images=b.add("VAEDecode", id=f"decode_{name}", samples=sampled,
                                                                 vae=vae))
    return b.build()


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    return Engine(output_dir=tmp_path_factory.mktemp("lora-out"))


def images(result, name):
    return result.output(f"decode_{name}", "image").numpy()


def test_same_lora_in_three_layouts_gives_one_image(engine, tiny_models, lora_files):
    results = {layout: engine.run(compare_workflow(tiny_models, str(path))) for layout, path in lora_files.items()}
    for result in results.values():
        assert result.ok, result.failed
    reference = images(results["diffusers_peft"], "lora")
    base = images(results["diffusers_peft"], "base")
    assert np.abs(reference - base).max() > 1e-3  # the LoRA changes the image
    for layout in ("kohya", "diffsynth"):
        assert np.abs(images(results[layout], "lora") - reference).max() <= 1e-4, layout


def test_base_branch_is_untouched_and_lora_removal_restores_base(engine, tiny_models, lora_files):
    with_lora = engine.run(compare_workflow(tiny_models, str(lora_files["kohya"])))
    b = WorkflowBuilder()
    base = b.add("KolorsModelLoader", path=str(tiny_models.tutorial_kolors), precision="fp32", device="cpu")
    vae = b.add("KolorsVAELoader", path=str(tiny_models.tutorial_fp16_vae), precision="fp32", device="cpu")
    embeds = b.add("KolorsTextEncode", chatglm3_model=base["chatglm3_model"], prompt=PROMPT)
    sampled = b.add("KolorsKSampler", model=base["model"], kolors_embeds=embeds,
                    latent=b.add("EmptyLatentImage", width=64, height=64), seed=11, steps=3, cfg=4.0)
    decoded = b.add("VAEDecode", id="decode_base", samples=sampled, vae=vae)
    b.add("PreviewImage", images=decoded)
    alone = Engine(output_dir=engine.settings.output_dir).run(b.build())  # a fresh engine: never saw a LoRA
    assert np.array_equal(images(with_lora, "base"), images(alone, "base"))
    after = engine.run(b.build(), force=[sampled.id])  # same engine, after LoRA runs: still the base exactly
    assert np.array_equal(images(after, "base"), images(alone, "base"))


def test_strength_and_alpha_semantics(engine, tiny_models, lora_files):
    """kohya stores alpha 2 for rank 4: strength 1 = scale 0.5; lora_alpha 4 overrides to scale 1 = strength 2."""
    path = str(lora_files["kohya"])
    doubled = engine.run(compare_workflow(tiny_models, path, strength=2.0))
    override = engine.run(compare_workflow(tiny_models, path, strength=1.0, lora_alpha=4.0))
    assert np.abs(images(doubled, "lora") - images(override, "lora")).max() <= 1e-4
    zero = engine.run(compare_workflow(tiny_models, path, strength=0.0))
    assert np.abs(images(zero, "lora") - images(zero, "base")).max() <= 1e-5


def test_stacked_loras(engine, tiny_models, lora_files):
    stacked = engine.run(compare_workflow(tiny_models, str(lora_files["kohya"]), second=str(lora_files["diffsynth"])))
    single = engine.run(compare_workflow(tiny_models, str(lora_files["kohya"]), strength=1.5))
    assert stacked.ok and "apply2" in stacked.executed
    # kohya at 1 (alpha/rank .5) + DiffSynth at .5 (the .5 folded into its weights: .25) = .75 = kohya at 1.5
    double = engine.run(compare_workflow(tiny_models, str(lora_files["kohya"]), strength=2.0))
    assert np.abs(images(stacked, "lora") - images(single, "lora")).max() <= 1e-4
    assert np.abs(images(stacked, "lora") - images(double, "lora")).max() > 1e-4


def test_bad_lora_files_are_clear_errors(engine, tiny_models, tmp_path):
    from safetensors.torch import save_file

    from graphgen.errors import WorkflowError

    with pytest.raises(WorkflowError) as missing:  # before any model loads
        engine.run(compare_workflow(tiny_models, str(tmp_path / "nope.safetensors")))
    assert "not found" in str(missing.value) and "lora_path" in str(missing.value)
    foreign = tmp_path / "flux.safetensors"
    save_file({"transformer.single_blocks.0.attn.to_q.lora_A.weight": torch.zeros(4, 8),
               "transformer.single_blocks.0.attn.to_q.lora_B.weight": torch.zeros(8, 4)}, str(foreign))
    result = engine.run(compare_workflow(tiny_models, str(foreign)))
    assert not result.ok
    message = next(iter(result.failed.values())).message
    assert "flux.safetensors" in message
    assert "show_base" in result.ui  # the base branch still finished
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file at all")
    assert not engine.run(compare_workflow(tiny_models, str(garbage))).ok
