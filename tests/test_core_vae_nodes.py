"""The core pack's VAE nodes on the tiny VAE: centred crops, tiling, inpainting, and graphs that chain them."""

from __future__ import annotations

from contextlib import nullcontext
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from graphgen import Engine, WorkflowBuilder
from graphgen_nodes.core.vae_nodes import VAEDecodeTiled, VAEEncode
from graphgen_nodes.core.vae_tiling import encode_tiled, grow_mask
from graphgen_nodes.diffusion.vae_ops import decode, encode


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    root = tmp_path_factory.mktemp("core-vae")
    return Engine(output_dir=root / "output", input_dir=root / "input")


def vae_loader(b: WorkflowBuilder, tiny_models):
    return b.add("KolorsVAELoader", path=str(tiny_models.tutorial_fp16_vae), precision="fp32", device="cpu")


def run(engine, b: WorkflowBuilder):
    result = engine.run(b.build())
    assert result.ok, result.failed
    return result


class _Handle:
    """A VAE handle over an in-memory VAE (what loaders return: `use()` and `device`)."""

    device = torch.device("cpu")

    def __init__(self, vae):
        self.vae = vae

    def use(self):
        return nullcontext(self.vae)


def _run_node(cls, **inputs):
    node = cls()
    node.ctx = SimpleNamespace(warn=lambda message: None)
    return node.run(**inputs)


def test_encode_crops_to_whole_cells_centred(tiny_components):
    vae = tiny_components.vae
    pixels = torch.rand(1, 70, 67, 3)
    latent = _run_node(VAEEncode, pixels=pixels, vae=_Handle(vae))["samples"]
    # 70 -> 64 rows from row 3, 67 -> 64 columns from column 1
    expected = encode(vae, pixels[:, 3:67, 1:65, :]) / vae.config.scaling_factor
    assert latent.shape == (1, 4, 8, 8)
    assert torch.allclose(latent, expected, atol=1e-6)


def test_tiled_decode_node_equals_the_shared_op(tiny_components):
    vae = tiny_components.vae
    latents = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    images = _run_node(VAEDecodeTiled, samples={"samples": latents}, vae=_Handle(vae), tile_size=64, overlap=32)
    # overlap 32 is over a quarter of the 64-pixel tile: reduced to 16, as ComfyUI does
    expected = decode(vae, latents * vae.config.scaling_factor, tiled=True, tile_size=64, tile_overlap=16).images
    assert images.shape == (1, 128, 128, 3) and torch.allclose(images, expected, atol=1e-6)


def test_tiled_encode_blends_tiles(tiny_components):
    vae = tiny_components.vae
    images = decode(vae, torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0))).images
    whole = encode(vae, images)
    assert torch.allclose(encode_tiled(vae, images, tile_size=512, overlap=64), whole, atol=1e-6)  # one tile
    tiles = encode_tiled(vae, images, tile_size=64, overlap=32)
    assert tiles.shape == whole.shape and torch.isfinite(tiles).all()
    # the first tile's corner (no neighbour overlaps it) is that tile's own encoding
    corner = encode(vae, images[:, :64, :64, :])
    assert torch.allclose(tiles[..., :4, :4], corner[..., :4, :4], atol=1e-5)


def test_encode_tiled_node_runs_and_warns_once(engine, tiny_models):
    b = WorkflowBuilder()
    image = b.add("EmptyImage", width=96, height=64, color=0x336699)
    tiled = b.add("VAEEncodeTiled", pixels=image, vae=vae_loader(b, tiny_models), tile_size=64, overlap=32)
    b.add("PreviewAny", source=tiled)
    result = run(engine, b)
    assert result.output(tiled.id, "latent")["samples"].shape == (1, 4, 8, 12)


def test_grow_mask_is_a_square_dilation():
    mask = torch.zeros(1, 1, 24, 24)
    mask[0, 0, 10, 10] = 0.6  # rounds to 1
    grown = grow_mask(mask, 6)
    rows = grown[0, 0, :, 10].nonzero().flatten().tolist()
    assert rows == [8, 9, 10, 11, 12, 13] and grown.sum() == 36  # a 6 x 6 window: 3 before, 2 after
    assert torch.equal(grow_mask(mask, 0), mask.round())
    assert grow_mask(mask, 3)[0, 0, 9:12, 9:12].all() and grow_mask(mask, 3).sum() == 9


def test_encode_for_inpaint_greys_the_hole_and_sets_the_noise_mask(engine, tiny_models, tiny_components):
    (engine.settings.input_dir).mkdir(parents=True, exist_ok=True)
    rgba = np.random.default_rng(1).integers(0, 256, size=(36, 32, 4)).astype(np.uint8)
    rgba[..., 3] = 255
    rgba[8:16, 8:16, 3] = 0  # a transparent hole: LoadImage's mask is 1 there
    Image.fromarray(rgba, "RGBA").save(engine.settings.input_dir / "hole.png")
    b = WorkflowBuilder()
    loaded = b.add("LoadImage", image="hole.png")
    latent = b.add("VAEEncodeForInpaint", pixels=loaded["image"], vae=vae_loader(b, tiny_models), mask=loaded["mask"],
                   grow_mask_by=0)
    b.add("PreviewAny", source=latent)
    result = run(engine, b)
    out = result.output(latent.id, "latent")
    assert out["samples"].shape == (1, 4, 4, 4)
    # 36 rows crop to 32, centred: rows 2..33, so the hole (rows 8..15) lands on rows 6..13
    expected_mask = torch.zeros(1, 1, 32, 32)
    expected_mask[..., 6:14, 8:16] = 1
    assert torch.equal(out["noise_mask"], expected_mask)
    pixels = result.output(loaded.id, "image")[:, 2:34]
    greyed = pixels.clone()
    greyed[:, 6:14, 8:16, :] = 0.5
    expected = encode(tiny_components.vae, greyed) / tiny_components.vae.config.scaling_factor
    assert torch.allclose(out["samples"], expected, atol=1e-5)


def test_outpaint_and_batch_graph_end_to_end(engine, tiny_models):
    """Pad for outpainting, encode for inpainting, upscale, pick and repeat latents, decode, save."""
    b = WorkflowBuilder()
    vae = vae_loader(b, tiny_models)
    padded = b.add("ImagePadForOutpaint", image=b.add("EmptyImage", width=32, height=32, batch_size=2, color=0xFF0000),
                   left=16, top=0, right=0, bottom=0, feathering=8)
    latent = b.add("VAEEncodeForInpaint", pixels=padded["image"], vae=vae, mask=padded["mask"])
    bigger = b.add("LatentUpscaleBy", samples=latent, upscale_method="bislerp", scale_by=2.0)
    second = b.add("LatentFromBatch", samples=bigger, batch_index=1, length=1)
    three = b.add("RepeatLatentBatch", samples=second, amount=3)
    images = b.add("VAEDecode", samples=three, vae=vae)
    scaled = b.add("ImageScale", image=images, upscale_method="lanczos", width=0, height=32, crop="disabled")
    b.add("SaveImage", id="save", images=scaled, filename_prefix="core/outpaint")
    result = run(engine, b)
    assert result.output(latent.id, "latent")["noise_mask"].shape == (1, 1, 32, 48)
    repeated = result.output(three.id, "latent")
    assert repeated["samples"].shape == (3, 4, 8, 12) and repeated["batch_index"] == [1, 2, 3]
    assert result.output(scaled.id, "image").shape == (3, 32, 48, 3)
    assert len(result.ui["save"]["images"]) == 3


def test_comfyui_api_workflow_of_core_nodes_runs_from_the_cli(tmp_path, tiny_models, capsys):
    """Outpainting preparation in ComfyUI's API format, the VAE found by name under --models-dir."""
    import json

    from graphgen import cli

    (tmp_path / "input").mkdir()
    Image.fromarray(np.full((40, 48, 3), 200, dtype=np.uint8)).save(tmp_path / "input" / "photo.png")
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "photo.png", "upload": "image"}},
        "2": {"class_type": "ImageScale", "inputs": {"image": ["1", 0], "upscale_method": "lanczos", "width": 0,
                                                     "height": 32, "crop": "disabled"}},
        "3": {"class_type": "ImagePadForOutpaint", "inputs": {"image": ["2", 0], "left": 0, "top": 0, "right": 16,
                                                              "bottom": 8, "feathering": 8}},
        "4": {"class_type": "VAELoader", "inputs": {"vae_name": tiny_models.comfyui_vae_file.name}},
        "5": {"class_type": "VAEEncodeForInpaint", "inputs": {"pixels": ["3", 0], "vae": ["4", 0], "mask": ["3", 1],
                                                              "grow_mask_by": 6}},
        "6": {"class_type": "VAEDecodeTiled", "inputs": {"samples": ["5", 0], "vae": ["4", 0], "tile_size": 512,
                                                         "overlap": 64, "temporal_size": 64, "temporal_overlap": 8}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": "outpaint"}},
    }
    path = tmp_path / "outpaint_api.json"
    path.write_text(json.dumps(prompt))
    code = cli.main(["run", str(path), "--models-dir", str(tiny_models.comfyui_models), "--input-dir",
                     str(tmp_path / "input"), "--output-dir", str(tmp_path / "out"), "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    saved = sorted((tmp_path / "out").glob("outpaint_*.png"))
    # 48x40 scaled to 38x32, padded to 54x40, encoded in whole 8-pixel cells: 48x40
    assert len(saved) == 1 and Image.open(saved[0]).size == (48, 40)
