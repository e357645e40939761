"""Per-run speed-ups (`graphgen.models.speedups`) and the UNet loaders' `compile`/`channels_last`."""

from __future__ import annotations

import torch

from graphgen import Engine, WorkflowBuilder
from graphgen.models.speedups import apply_speedups, speedup_key


def net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.SiLU(), torch.nn.Conv2d(8, 4, 3)).eval()


def test_channels_last_changes_the_layout_not_the_output():
    plain, fast = net(), apply_speedups(net(), channels_last=True)
    assert all(m.weight.is_contiguous(memory_format=torch.channels_last) for m in fast if hasattr(m, "weight"))
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(plain(x), fast(x), atol=1e-6)


def test_compile_wraps_forward_in_place_keeping_parameter_names():
    module = net()
    names = [n for n, _ in module.named_parameters()]
    assert apply_speedups(module, compile=True) is module
    assert module._compiled_call_impl is not None  # compiled on first call
    assert [n for n, _ in module.named_parameters()] == names  # LoRA keys still match


def test_speedups_are_part_of_the_store_key():
    assert speedup_key() == ()
    assert speedup_key(compile=True, channels_last=True) == ("compile", "channels_last")


def test_unet_loader_channels_last_is_a_separate_model_with_the_same_image(tiny_models, tmp_path):
    engine = Engine(output_dir=tmp_path)
    images = {}
    for layout in (False, True):
        b = WorkflowBuilder()
        unet = b.add("KolorsUNetLoader", id="unet", path=str(tiny_models.tutorial_kolors), precision="fp32",
                     device="cpu", channels_last=layout)
        text = b.add("KolorsTextEncoderLoader", path=str(tiny_models.tutorial_kolors), precision="fp32", device="cpu")
        vae = b.add("KolorsVAELoader", path=str(tiny_models.tutorial_fp16_vae), precision="fp32", device="cpu")
        embeds = b.add("KolorsTextEncode", chatglm3_model=text, prompt="a cat", negative_prompt="")
        sampled = b.add("KolorsKSampler", model=unet, kolors_embeds=embeds, seed=3, steps=2, cfg=5.0,
                        latent=b.add("EmptyLatentImage", width=64, height=64))
        b.add("PreviewImage", images=b.add("VAEDecode", id="decode", samples=sampled, vae=vae))
        result = engine.run(b.build())
        assert result.ok, result.failed
        images[layout] = result.output("decode", "image")
        conv = result.output("unet", "model").handle.model.conv_in.weight
        assert conv.is_contiguous(memory_format=torch.channels_last) == layout
    assert len([e for e in engine.models.loaded_models() if e.kind == "unet"]) == 2
    assert torch.allclose(images[False], images[True], atol=1e-4)
