"""The demo's tiny models: a VAE that reconstructs images, and writing chosen components and layouts."""

from __future__ import annotations

import pytest
import torch
from PIL import Image, ImageDraw


def _pixels(image: Image.Image) -> torch.Tensor:
    import numpy as np

    return torch.from_numpy(np.asarray(image, dtype=np.float32)).permute(2, 0, 1)[None] / 127.5 - 1.0


@pytest.fixture(scope="module")
def vae():
    from graphgen.testing.demo_vae import colour_cell_vae

    return colour_cell_vae()


def test_colour_cell_vae_reconstructs_flat_colours_and_a_disc(vae):
    """Flat colours come back within half a level; a red disc within the 8x8 cells' blur, far below noise."""
    flat = torch.tensor([0.3, -0.5, 0.9]).view(1, 3, 1, 1).expand(1, 3, 64, 64)
    disc = Image.new("RGB", (64, 64), (245, 240, 230))
    ImageDraw.Draw(disc).ellipse((8, 8, 56, 56), fill=(220, 30, 30))
    with torch.no_grad():
        posterior = vae.encode(torch.cat([flat, _pixels(disc)])).latent_dist
        decoded = vae.decode(posterior.mean).sample
    assert posterior.mean.shape == (2, 4, 8, 8)
    assert float((decoded[0] - flat[0]).abs().max()) * 127.5 < 0.5
    error = float((decoded[1] - _pixels(disc)[0]).abs().mean()) * 127.5
    assert error < 15.0, error  # only the cells on the disc's edge mix red and white
    # Scaled latents are the colours: the unit scale the noise schedule expects.
    scaled = posterior.mean[0, :3, 0, 0] * vae.config.scaling_factor
    assert torch.allclose(scaled, torch.tensor([0.3, -0.5, 0.9]), atol=1e-3)
    assert float(posterior.std.max()) < 0.01


def test_colour_cell_vae_is_deterministic_and_refuses_configs_it_cannot_carry():
    from graphgen.testing.demo_vae import colour_cell_vae
    from graphgen.testing.tiny_kolors import TINY_VAE_CONFIG

    a, b = colour_cell_vae(seed=3), colour_cell_vae(seed=3)
    assert all(torch.equal(a.state_dict()[k], v) for k, v in b.state_dict().items())
    with pytest.raises(ValueError, match="per norm group"):
        colour_cell_vae(TINY_VAE_CONFIG)  # 32 groups of one channel: a GroupNorm loses the colour


def test_write_tiny_models_writes_given_components_in_chosen_layouts(tmp_path, vae):
    from graphgen.testing.tiny_kolors import build_tiny_components, write_tiny_models
    from graphgen_nodes.kolors.loading import load_vae

    tiny = build_tiny_components()
    tiny.vae = vae
    with pytest.raises(ValueError, match="32 norm groups"):
        write_tiny_models(tmp_path / "comfy", components=tiny)
    paths = write_tiny_models(tmp_path / "t", components=tiny, layouts=("tutorial",))
    assert paths.tutorial_kolors.is_dir() and not paths.diffusers_root.exists() and not paths.comfyui_models.exists()
    loaded = load_vae(paths.tutorial_fp16_vae)
    assert loaded.config.norm_num_groups == 8
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in vae.state_dict().items())
    with pytest.raises(ValueError, match="unknown layouts"):
        write_tiny_models(tmp_path / "x", layouts=("kohya",))


def test_shape_pictures_are_grey_captioned_and_deterministic():
    """The base model's pretraining pictures: grey only (it never sees red), the shape named in the caption."""
    import numpy as np

    from graphgen.testing.demo_data import SHAPES, shape_pictures

    pictures = shape_pictures(12, size=32, seed=5)
    assert [c for _, c in pictures] == [c for _, c in shape_pictures(12, size=32, seed=5)]
    for image, caption in pictures:
        pixels = np.asarray(image)
        assert pixels.shape == (32, 32, 3) and (pixels[..., 0] == pixels[..., 2]).all()
        assert any(f"a {shape}" in caption and zh in caption for shape, zh in SHAPES.items())
        assert len(np.unique(pixels[..., 0])) in (1, 2)  # a background and (unless equal) a shape


def test_pretrain_unet_learns_to_denoise_deterministically(vae):
    """A few steps already lower the noise-prediction loss; the same seed gives the same weights."""
    from graphgen.testing.demo_unet import pretrain_unet
    from graphgen.testing.tiny_kolors import build_tiny_components

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        runs = []
        for _ in range(2):
            tiny = build_tiny_components()
            tiny.vae = vae
            runs.append((pretrain_unet(tiny, size=32, steps=16), tiny.unet.state_dict()))
    finally:
        torch.set_num_threads(threads)
    (losses, weights), (losses_again, weights_again) = runs
    assert losses == losses_again and all(torch.equal(weights[k], v) for k, v in weights_again.items())
    assert sum(losses[-4:]) < 0.8 * sum(losses[:4]), losses
