"""VAE decode/encode: conventions, the fp16 overflow retry, tiling, and encode's mean/sample."""

from __future__ import annotations

import copy

import pytest
import torch

from graphgen_nodes.diffusion.vae_ops import decode, encode, vae_scale_factor


@pytest.fixture(scope="module")
def latents():
    return torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def full(tiny_components, latents):
    return decode(tiny_components.vae, latents).images


def test_decode_convention_matches_diffusers(tiny_components, latents, full):
    vae = tiny_components.vae
    assert vae_scale_factor(vae) == 8
    assert full.shape == (1, 128, 128, 3) and full.dtype == torch.float32 and full.device.type == "cpu"
    assert 0.0 <= full.min() and full.max() <= 1.0 and full.std() > 0.01
    with torch.no_grad():
        ref = vae.decode(latents / vae.config.scaling_factor, return_dict=False)[0]
    assert torch.equal(full, (ref / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1))


def _overflowing_fp16_vae(vae):
    """A copy whose first decoder conv produces values beyond fp16's range (65504)."""
    bad = copy.deepcopy(vae).to(torch.float16)
    with torch.no_grad():
        bad.decoder.conv_in.weight.fill_(1000.0)
    return bad


def test_fp16_overflow_is_redone_in_fp32(tiny_components, latents):
    latents = latents[:, :, :8, :8]
    vae16 = _overflowing_fp16_vae(tiny_components.vae)
    with torch.no_grad():
        raw = vae16.decode((latents / 0.13025).half(), return_dict=False)[0]
    assert not torch.isfinite(raw).all()  # the simulated overflow is real
    result = decode(vae16, latents)
    assert len(result.warnings) == 1 and "float16" in result.warnings[0] and "float32" in result.warnings[0]
    assert torch.isfinite(result.images).all()
    expected = decode(copy.deepcopy(vae16).float(), latents).images
    assert torch.equal(result.images, expected)
    assert next(vae16.parameters()).dtype == torch.float16  # the shared model is untouched
    with pytest.raises(AssertionError):
        assert torch.isfinite(decode(vae16, latents, fp32_fallback=False).images).all()


def test_healthy_fp16_decode_has_no_warning(tiny_components, latents, full):
    result = decode(copy.deepcopy(tiny_components.vae).half(), latents)
    assert result.warnings == []
    assert (result.images - full).abs().max() < 0.02


def test_tiled_decode_is_close_to_untiled(tiny_components, latents, full):
    vae = tiny_components.vae
    tiled = decode(vae, latents, tiled=True, tile_size=64, tile_overlap=32).images
    assert tiled.shape == full.shape
    # Tiles see their own group-norm statistics, so this is close, not equal (diffusers' own
    # tiled_decode at the same tile size is further off on this model: mean 0.052, corr 0.92).
    assert (tiled - full).abs().mean() < 0.05
    corr = torch.corrcoef(torch.stack([tiled.flatten(), full.flatten()]))[0, 1]
    assert corr > 0.93
    # A tile covering the whole image is the untiled decode.
    assert torch.equal(decode(vae, latents, tiled=True, tile_size=128).images, full)


def test_auto_tiling_threshold(tiny_components, latents, full):
    vae = tiny_components.vae
    assert torch.equal(decode(vae, latents, tiled="auto").images, full)
    auto = decode(vae, latents, tiled="auto", auto_max_pixels=64 * 64, tile_size=64, tile_overlap=32)
    assert torch.equal(auto.images, decode(vae, latents, tiled=True, tile_size=64, tile_overlap=32).images)
    with pytest.raises(ValueError):
        decode(vae, latents, tiled="yes")  # type: ignore[arg-type]


def test_encode_mean_and_sample(tiny_components):
    from diffusers.image_processor import VaeImageProcessor

    vae = tiny_components.vae
    images = torch.rand(2, 64, 48, 3, generator=torch.Generator().manual_seed(1))
    z = encode(vae, images)
    assert z.shape == (2, 4, 8, 6) and z.dtype == torch.float32
    assert torch.equal(z, encode(vae, images))  # the mean is deterministic
    # Same preprocessing as diffusers' pipelines ([0, 1] -> [-1, 1]), times scaling_factor.
    pixels = VaeImageProcessor(vae_scale_factor=8).preprocess(images.permute(0, 3, 1, 2))
    with torch.no_grad():
        dist = vae.encode(pixels).latent_dist
    torch.testing.assert_close(z, dist.mean * 0.13025, rtol=0, atol=1e-6)
    # sample=True reproduces diffusers' retrieve_latents(generator=...).
    sampled = encode(vae, images, sample=True, generator=torch.Generator().manual_seed(3))
    ref = dist.sample(torch.Generator().manual_seed(3)) * 0.13025
    torch.testing.assert_close(sampled, ref, rtol=0, atol=1e-6)
    assert not torch.equal(sampled, z)


def test_encode_rejects_bad_sizes(tiny_components):
    vae = tiny_components.vae
    with pytest.raises(ValueError, match="70x64 is not a multiple of 8"):
        encode(vae, torch.rand(1, 64, 70, 3))
    with pytest.raises(ValueError, match=r"\[B, H, W, 3\]"):
        encode(vae, torch.rand(1, 3, 64, 64))


def test_encode_fp16_overflow_retry(tiny_components):
    bad = copy.deepcopy(tiny_components.vae).half()
    with torch.no_grad():
        bad.encoder.conv_in.weight.fill_(10000.0)
    notes: list[str] = []
    z = encode(bad, torch.rand(1, 32, 32, 3, generator=torch.Generator().manual_seed(0)), warnings=notes)
    assert torch.isfinite(z).all() and len(notes) == 1 and "encoded again in float32" in notes[0]


class _SDXLShapedVAE(torch.nn.Module):
    """Only what the memory estimate reads: the SDXL/Kolors VAE's channels, in fp32."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.config = type("Config", (), {"block_out_channels": [128, 256, 512, 512]})()


def test_encode_memory_is_estimated_before_any_work(monkeypatch):
    """Issue 10: img2img on a 12000x12000 image took the process to 22.5 GB before the kernel killed it."""
    from graphgen.models import devices
    from graphgen_nodes.diffusion.vae_ops import VAEMemoryError, check_encode_fits, encode_memory_bytes

    vae = _SDXLShapedVAE()
    gib = 1024 ** 3
    assert encode_memory_bytes(vae, 1, 1024, 1024) == 1.5 * gib
    assert encode_memory_bytes(vae, 1, 12000, 12000) > 200 * gib
    monkeypatch.setattr(devices, "free_memory_bytes", lambda device: 20 * gib)
    check_encode_fits(vae, 1, 1024, 1024)
    with pytest.raises(VAEMemoryError, match=r"a 12000x12000 image needs at least 206\.0 GiB on cpu, but only "
                                             r"20\.0 GiB is free: scale the image down"):
        check_encode_fits(vae, 1, 12000, 12000)
    monkeypatch.setattr(devices, "free_memory_bytes", lambda device: None)
    check_encode_fits(vae, 1, 12000, 12000)  # unknown free memory: nothing refused
    monkeypatch.undo()
    assert devices.free_memory_bytes("cpu") > 0  # the real answer on this machine


def test_vae_encode_node_refuses_an_image_that_cannot_fit(tiny_models, tmp_path, monkeypatch):
    from PIL import Image

    from graphgen import Engine, WorkflowBuilder
    from graphgen.models import devices

    engine = Engine(output_dir=tmp_path / "out", input_dir=tmp_path / "in")
    engine.settings.input_dir.mkdir()
    Image.new("RGB", (64, 48), (10, 200, 30)).save(engine.settings.input_dir / "photo.png")
    b = WorkflowBuilder()
    vae = b.add("KolorsVAELoader", path=str(tiny_models.tutorial_fp16_vae), precision="fp32", device="cpu")
    b.add("VAEEncode", id="encode", pixels=b.add("LoadImage", image="photo.png")["image"], vae=vae)
    b.add("PreviewImage", images=b.add("LoadImage", image="photo.png")["image"])
    workflow = b.build()
    assert engine.run(workflow, outputs=["encode"]).ok
    monkeypatch.setattr(devices, "free_memory_bytes", lambda device: 1000)
    result = engine.run(workflow, outputs=["encode"], force=["encode"])
    assert "a 64x48 image needs at least" in str(result.failed["encode"]) and "GiB is free" in str(result.failed["encode"])
