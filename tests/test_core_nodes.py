"""The core pack's data nodes: latents, images, masks, conditioning, resizing, and their ComfyUI edge rules.

Nodes are called directly (`run`) on small hand-made tensors and compared with values computed by
hand; a few tests go through the Engine to check validation and UI output.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from graphgen import Engine, WorkflowBuilder
from graphgen_nodes.core import conditioning_nodes as cn
from graphgen_nodes.core import image_nodes as imn
from graphgen_nodes.core import io_nodes as io
from graphgen_nodes.core import latent_nodes as ln
from graphgen_nodes.core import mask_nodes as mn
from graphgen_nodes.core.resize import upscale


class _Ctx:
    def __init__(self) -> None:
        self.warnings: list[str] = []

    def warn(self, message: str) -> None:
        self.warnings.append(message)


def call(cls, **inputs):
    """Run a node's `run` directly; returns (result, warnings)."""
    node = cls()
    node.ctx = _Ctx()
    return node.run(**inputs), node.ctx.warnings


def rows_latent(rows: int, size: int = 8) -> dict:
    """A latent whose row i is filled with the value i (to see which rows were picked)."""
    return {"samples": torch.arange(rows, dtype=torch.float32).view(rows, 1, 1, 1).expand(rows, 4, size, size).clone()}


# ----------------------------------------------------------------------------------- resizing


def test_upscale_methods_against_hand_computed_values():
    ramp = torch.tensor([[[[0.0, 1.0]]]])  # [1, 1, 1, 2]
    assert torch.allclose(upscale(ramp, 4, 1, "bilinear"), torch.tensor([[[[0.0, 0.25, 0.75, 1.0]]]]))
    assert torch.equal(upscale(ramp, 4, 1, "nearest-exact"), torch.tensor([[[[0.0, 0.0, 1.0, 1.0]]]]))
    blocks = torch.arange(16, dtype=torch.float32).view(1, 1, 4, 4)
    assert torch.equal(upscale(blocks, 2, 2, "area"), torch.tensor([[[[2.5, 4.5], [10.5, 12.5]]]]))
    # centre crop to a square: the middle two of four columns, then resized
    wide = torch.arange(8, dtype=torch.float32).view(1, 1, 2, 4)
    assert torch.equal(upscale(wide, 2, 2, "nearest-exact", "center"), torch.tensor([[[[1.0, 2.0], [5.0, 6.0]]]]))
    with pytest.raises(ValueError, match="unknown upscale method"):
        upscale(ramp, 2, 2, "cubic")


def test_lanczos_is_pillows_filter_without_rounding():
    rng = np.random.default_rng(0)
    planes = rng.integers(0, 256, size=(3, 12, 10)).astype(np.uint8)
    image = torch.from_numpy(planes.astype(np.float32) / 255.0)[None]
    ours = upscale(image, 7, 5, "lanczos")
    reference = np.stack([np.asarray(Image.fromarray(p).resize((7, 5), Image.Resampling.LANCZOS)) for p in planes])
    assert ours.shape == (1, 3, 5, 7)
    # Pillow's 8-bit filter works in fixed point and rounds; ours keeps the float value: within one level.
    assert np.abs(ours[0].numpy().clip(0, 1) * 255 - reference).max() <= 1.0
    assert torch.allclose(upscale(image, 10, 12, "lanczos"), image, atol=1e-6)  # same size: unchanged


def test_bislerp_keeps_vector_lengths_where_bilinear_shrinks_them():
    # unit vectors at right angles in neighbouring cells
    latent = torch.zeros(1, 2, 1, 2)
    latent[0, 0, 0, 0] = 1.0
    latent[0, 1, 0, 1] = 1.0
    slerped = upscale(latent, 4, 1, "bislerp")
    lerped = upscale(latent, 4, 1, "bilinear")
    assert torch.allclose(slerped.norm(dim=1), torch.ones(1, 1, 4), atol=1e-6)
    assert lerped.norm(dim=1).min() < 0.85
    # the halfway vector lies halfway in angle: cos 45 degrees to both ends... at t = 0.25 and 0.75 here
    assert torch.allclose(slerped[0, :, 0, 1], torch.tensor([np.cos(np.pi / 8), np.sin(np.pi / 8)], dtype=torch.float32),
                          atol=1e-6)
    assert torch.equal(upscale(torch.zeros(1, 4, 3, 3), 6, 6, "bislerp"), torch.zeros(1, 4, 6, 6))  # no NaN
    same = torch.randn(1, 4, 3, 5)
    assert torch.allclose(upscale(same, 5, 3, "bislerp"), same, atol=1e-5)


# ----------------------------------------------------------------------------------- latents


def test_empty_latent_has_comfyuis_defaults_and_graphgens_flag():
    spec = ln.EmptyLatentImage.spec()
    assert (spec.inputs["width"].default, spec.inputs["width"].min, spec.inputs["width"].step) == (512, 16, 8)
    latent, _ = call(ln.EmptyLatentImage, width=64, height=32, batch_size=3)
    assert latent["samples"].shape == (3, 4, 4, 8) and latent["noise_only"] is True
    assert not latent["samples"].any()
    floored, warnings = call(ln.EmptyLatentImage, width=70, height=32, batch_size=1)
    assert floored["samples"].shape == (1, 4, 4, 8) and "the latent is 64x32" in warnings[0]


def test_latent_upscale_sizes_follow_comfyuis_rules():
    latent = {"samples": torch.randn(1, 4, 8, 16), "noise_mask": torch.ones(1, 1, 64, 128), "noise_only": True}
    same, _ = call(ln.LatentUpscale, samples=latent, upscale_method="nearest-exact", width=0, height=0, crop="disabled")
    assert same is latent
    keep_aspect, _ = call(ln.LatentUpscale, samples=latent, upscale_method="bilinear", width=0, height=128,
                          crop="disabled")
    assert keep_aspect["samples"].shape == (1, 4, 16, 32)  # 128 high -> 256 wide
    assert keep_aspect["noise_mask"] is latent["noise_mask"] and keep_aspect["noise_only"]
    tiny, _ = call(ln.LatentUpscale, samples=latent, upscale_method="area", width=16, height=16, crop="center")
    assert tiny["samples"].shape == (1, 4, 8, 8)  # sides are at least 64 pixels
    by, _ = call(ln.LatentUpscaleBy, samples=latent, upscale_method="bislerp", scale_by=1.5)
    assert by["samples"].shape == (1, 4, 12, 24)
    assert latent["samples"].shape == (1, 4, 8, 16)  # the input is untouched


def test_latent_from_batch_clamps_and_keeps_batch_positions():
    latent = rows_latent(4)
    latent["noise_mask"] = torch.stack([torch.full((1, 8, 8), float(i)) for i in range(2)])  # 2 masks for 4 rows
    picked, _ = call(ln.LatentFromBatch, samples=latent, batch_index=2, length=5)
    assert picked["samples"][:, 0, 0, 0].tolist() == [2.0, 3.0] and picked["batch_index"] == [2, 3]
    assert picked["noise_mask"][:, 0, 0, 0].tolist() == [0.0, 1.0]  # masks repeat cyclically over the rows
    beyond, _ = call(ln.LatentFromBatch, samples=latent, batch_index=10, length=1)
    assert beyond["samples"][:, 0, 0, 0].tolist() == [3.0] and beyond["batch_index"] == [3]
    nested, _ = call(ln.LatentFromBatch, samples={**rows_latent(4), "batch_index": [10, 11, 12, 13]},
                     batch_index=1, length=2)
    assert nested["batch_index"] == [11, 12]
    single, _ = call(ln.LatentFromBatch, samples={**rows_latent(3), "noise_mask": torch.ones(1, 1, 8, 8)},
                     batch_index=1, length=1)
    assert single["noise_mask"].shape == (1, 1, 8, 8)
    assert "batch_index" not in latent  # the input is untouched


def test_repeat_latent_batch_numbers_the_copies_on():
    latent = {**rows_latent(2), "batch_index": [5, 6], "noise_mask": torch.zeros(2, 1, 8, 8)}
    repeated, _ = call(ln.RepeatLatentBatch, samples=latent, amount=3)
    assert repeated["samples"][:, 0, 0, 0].tolist() == [0.0, 1.0] * 3
    assert repeated["batch_index"] == [5, 6, 7, 8, 9, 10]
    assert repeated["noise_mask"].shape == (6, 1, 8, 8)
    one_mask, _ = call(ln.RepeatLatentBatch, samples={**rows_latent(2), "noise_mask": torch.zeros(1, 1, 8, 8)}, amount=2)
    assert one_mask["noise_mask"].shape == (1, 1, 8, 8) and "batch_index" not in one_mask


def test_rebatch_latents_regroups_by_size_with_masks_and_indexes():
    first, second = rows_latent(3), rows_latent(2)
    second["samples"] += 3
    second["noise_mask"] = torch.zeros(1, 1, 8, 8)  # at latent size: scaled to pixels
    third = {"samples": torch.full((1, 4, 4, 4), 9.0), "noise_only": True}
    batches, _ = call(ln.RebatchLatents, latents=[first, second, third], batch_size=[2])
    assert [b["samples"][:, 0, 0, 0].tolist() for b in batches] == [[0.0, 1.0], [2.0, 3.0], [4.0], [9.0]]
    assert [b["batch_index"] for b in batches] == [[0, 1], [2, 3], [4], [5]]
    assert "noise_mask" not in batches[0]  # all ones: no mask
    assert batches[1]["noise_mask"].shape == (2, 1, 64, 64)
    assert batches[1]["noise_mask"][:, 0, 0, 0].tolist() == [1.0, 0.0]
    assert batches[3].get("noise_only") and not batches[0].get("noise_only")
    spec = ln.RebatchLatents.spec()
    assert spec.input_is_list and spec.output_is_list == (True,)


def test_rebatched_items_flow_on_one_by_one_through_the_engine():
    """List mapping: the node gets the whole list once; each batch it returns runs downstream on its own."""
    b = WorkflowBuilder()
    latents = b.add("RebatchLatents", latents=b.add("EmptyLatentImage", width=64, height=64, batch_size=3),
                    batch_size=2)
    shown = b.add("PreviewAny", source=b.add("LatentFromBatch", samples=latents, batch_index=0, length=64))
    images = b.add("RebatchImages", images=b.add("EmptyImage", width=8, height=8, batch_size=5), batch_size=2)
    inverted = b.add("ImageInvert", image=images)
    b.add("PreviewAny", source=inverted)
    result = Engine().run(b.build())
    assert result.ok, result.failed
    texts = result.ui[shown.id]["text"]
    assert len(texts) == 2 and "shape=[2, 4, 8, 8]" in texts[0] and "shape=[1, 4, 8, 8]" in texts[1]
    assert [image.shape[0] for image in result.output(inverted.id, "image")] == [2, 2, 1]


def test_set_latent_noise_mask_reshapes_and_copies():
    latent = rows_latent(1)
    masked, _ = call(ln.SetLatentNoiseMask, samples=latent, mask=torch.ones(64, 64))
    assert masked["noise_mask"].shape == (1, 1, 64, 64) and "noise_mask" not in latent


# ----------------------------------------------------------------------------------- images and masks


def test_empty_image_colour_and_shape():
    image, _ = call(imn.EmptyImage, width=5, height=3, batch_size=2, color=0xFF8000)
    assert image.shape == (2, 3, 5, 3)
    assert torch.allclose(image[1, 2, 4], torch.tensor([1.0, 128 / 255, 0.0]))


def test_image_scale_crop_invert_and_batch():
    image = torch.rand(1, 20, 40, 3)
    scaled, _ = call(imn.ImageScale, image=image, upscale_method="bilinear", width=0, height=10, crop="disabled")
    assert scaled.shape == (1, 10, 20, 3)
    square, _ = call(imn.ImageScale, image=image, upscale_method="nearest-exact", width=20, height=20, crop="center")
    assert torch.equal(square, image[:, :, 10:30, :])  # same size after the centre crop: the middle itself
    assert call(imn.ImageScale, image=image, upscale_method="area", width=0, height=0, crop="disabled")[0] is image
    half, _ = call(imn.ImageScaleBy, image=image, upscale_method="area", scale_by=0.5)
    assert torch.allclose(half[0, 0, 0], image[0, :2, :2].mean(dim=(0, 1)))
    cropped, _ = call(imn.ImageCrop, image=image, width=8, height=100, x=36, y=5)
    assert torch.equal(cropped, image[:, 5:, 36:, :])  # cut at the edges
    corner, _ = call(imn.ImageCrop, image=image, width=4, height=4, x=500, y=500)
    assert torch.equal(corner, image[:, 19:, 39:, :])  # a corner outside moves to the last row/column
    assert torch.allclose(call(imn.ImageInvert, image=image)[0], 1 - image)
    joined, _ = call(imn.ImageBatch, image1=image, image2=torch.rand(2, 40, 40, 3))
    assert joined.shape == (3, 20, 40, 3) and torch.equal(joined[0], image[0])


def test_rebatch_images():
    images = [torch.full((2, 4, 4, 3), 0.0), torch.full((3, 4, 4, 3), 1.0)]
    batches, _ = call(imn.RebatchImages, images=images, batch_size=[2])
    assert [b.shape[0] for b in batches] == [2, 2, 1]
    assert batches[1][:, 0, 0, 0].tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match=r"different sizes \(4x4, 5x4\).*ImageScale"):
        call(imn.RebatchImages, images=[torch.zeros(1, 4, 4, 3), torch.zeros(1, 4, 5, 3)], batch_size=[2])


def _feather_by_hand(h, w, f, top, bottom, left, right):
    out = np.zeros((h, w), dtype=np.float32)
    for i in range(h):
        for j in range(w):
            d = min(i if top else h, h - i if bottom else h, j if left else w, w - j if right else w)
            if d < f:
                out[i, j] = ((f - d) / f) ** 2
    return out


def test_pad_for_outpaint_feathers_padded_sides_only():
    image = torch.rand(1, 20, 24, 3)
    padded, mask = call(imn.ImagePadForOutpaint, image=image, left=8, top=0, right=0, bottom=16, feathering=4)[0]
    assert padded.shape == (1, 36, 32, 3) and mask.shape == (1, 36, 32)
    assert torch.equal(padded[:, :20, 8:, :], image) and (padded[:, 20:, :, :] == 0.5).all()
    assert (mask[0, 20:] == 1).all() and (mask[0, :, :8] == 1).all()
    inner = mask[0, :20, 8:]
    assert inner[10, :5].tolist() == [1.0, 0.5625, 0.25, 0.0625, 0.0]  # ((4 - d) / 4) ** 2 from the left edge
    assert inner[0, 12] == 0.0  # the top was not padded: no fade there
    np.testing.assert_allclose(inner.numpy(), _feather_by_hand(20, 24, 4, False, True, True, False))
    _, all_sides = call(imn.ImagePadForOutpaint, image=image, left=8, top=8, right=8, bottom=8, feathering=6)[0]
    np.testing.assert_allclose(all_sides[0, 8:28, 8:32].numpy(), _feather_by_hand(20, 24, 6, True, True, True, True))
    _, too_wide = call(imn.ImagePadForOutpaint, image=image, left=8, top=0, right=0, bottom=0, feathering=10)[0]
    assert (too_wide[0, :, 8:] == 0).all()  # 2 * feathering >= the image height: no fade at all


def test_masks(tmp_path):
    solid, _ = call(mn.SolidMask, value=0.25, width=6, height=4)
    assert solid.shape == (1, 4, 6) and (solid == 0.25).all()
    assert torch.equal(call(mn.InvertMask, mask=torch.zeros(4, 6))[0], torch.ones(1, 4, 6))
    rgba = np.zeros((4, 6, 4), dtype=np.uint8)
    rgba[..., 0], rgba[..., 3] = 255, 0
    rgba[0, 0, 3] = 255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "m.png")
    Image.fromarray(rgba[..., :3], "RGB").save(tmp_path / "rgb.png")
    engine = Engine(input_dir=tmp_path, output_dir=tmp_path / "out")
    b = WorkflowBuilder()
    red = b.add("LoadImageMask", image="m.png", channel="red")
    alpha = b.add("LoadImageMask", image="m.png", channel="alpha")
    opaque = b.add("LoadImageMask", image="rgb.png", channel="alpha")
    for node in (red, alpha, opaque):
        b.add("PreviewAny", source=node)
    result = engine.run(b.build())
    assert result.ok, result.failed
    assert (result.output(red.id, "mask") == 1).all()
    alpha_mask = result.output(alpha.id, "mask")
    assert alpha_mask.shape == (1, 4, 6) and alpha_mask[0, 0, 0] == 0 and alpha_mask[0, 1, 1] == 1  # 1 = transparent
    assert (result.output(opaque.id, "mask") == 0).all()


# ----------------------------------------------------------------------------------- conditioning


def _cond(value: float, tokens: int = 3, pooled: bool = True) -> list:
    extras = {"pooled_output": torch.full((1, 4), value)} if pooled else {}
    return [[torch.full((1, tokens, 8), value), {**extras, "note": value}]]


def test_conditioning_combine_and_concat():
    first, second = _cond(1.0), _cond(2.0, tokens=2)
    combined, _ = call(cn.ConditioningCombine, conditioning_1=first, conditioning_2=second)
    assert len(combined) == 2 and combined[0] is first[0] and combined[1] is second[0]
    joined, warnings = call(cn.ConditioningConcat, conditioning_to=first + _cond(5.0), conditioning_from=second)
    assert [entry[0].shape for entry in joined] == [(1, 5, 8), (1, 5, 8)] and not warnings
    assert joined[0][0][0, :, 0].tolist() == [1.0, 1.0, 1.0, 2.0, 2.0]
    assert joined[0][1] == first[0][1] and joined[0][1] is not first[0][1]  # extras of `to` kept, copied
    _, warnings = call(cn.ConditioningConcat, conditioning_to=first, conditioning_from=second + first)
    assert warnings and "only the first" in warnings[0]
    with pytest.raises(ValueError, match="same text encoder"):
        call(cn.ConditioningConcat, conditioning_to=first, conditioning_from=[[torch.zeros(1, 2, 16), {}]])


def test_conditioning_timestep_range_and_zero_out():
    source = _cond(3.0)
    ranged, _ = call(cn.ConditioningSetTimestepRange, conditioning=source, start=0.2, end=0.8)
    assert ranged[0][1]["start_percent"] == 0.2 and ranged[0][1]["end_percent"] == 0.8
    assert "start_percent" not in source[0][1] and ranged[0][0] is source[0][0]
    _, warnings = call(cn.ConditioningSetTimestepRange, conditioning=source, start=0.9, end=0.1)
    assert warnings and "never applies" in warnings[0]
    zeroed, _ = call(cn.ConditioningZeroOut, conditioning=source + _cond(1.0, pooled=False))
    assert not zeroed[0][0].any() and not zeroed[0][1]["pooled_output"].any() and zeroed[0][1]["note"] == 3.0
    assert zeroed[1][0].shape == (1, 3, 8) and "pooled_output" not in zeroed[1][1]
    assert source[0][0].all()  # untouched


def test_saved_pngs_use_comfyuis_truncated_levels(tmp_path):
    """ComfyUI writes `np.clip(255 * x, 0, 255).astype(uint8)`: 0.5 is 127, not 128."""
    from graphgen_nodes.diffusion.images import save_png

    values = torch.cat([torch.arange(256, dtype=torch.float32) / 255, torch.rand(1000), torch.tensor([0.5, -0.2, 1.3])])
    image = values.view(1, 1, -1, 1).expand(1, 1, values.numel(), 3)
    comfyui = np.clip(255.0 * image.numpy(), 0, 255).astype(np.uint8)
    saved = save_png(io.comfy_levels(image[0]), tmp_path, "direct")
    assert np.array_equal(np.asarray(Image.open(saved)), comfyui[0])
    assert comfyui[0, 0, -3, 0] == 127
    # the node itself: a grey made by the graph, read back from the PNG it wrote
    engine = Engine(output_dir=tmp_path / "out")
    b = WorkflowBuilder()
    grey = b.add("ImageInvert", image=b.add("EmptyImage", width=2, height=2, color=0x7F7F7F))  # 1 - 127/255
    b.add("SaveImage", images=grey, filename_prefix="grey")
    result = engine.run(b.build())
    assert result.ok, result.failed
    (png,) = (tmp_path / "out").glob("grey_*.png")
    expected = np.clip(255.0 * result.output(grey.id, "image").numpy(), 0, 255).astype(np.uint8)[0]
    assert np.array_equal(np.asarray(Image.open(png)), expected)


# ----------------------------------------------------------------------------------- preview, validation


def test_preview_any_shows_values_as_text():
    assert io.preview_text("hi") == "hi" and io.preview_text(3) == "3" and io.preview_text(None) == "None"
    assert io.preview_text(torch.ones(2, 3)) == "tensor(shape=[2, 3], dtype=float32, min=1, max=1)"
    shown = io.preview_text({"samples": torch.zeros(1, 4, 8, 8)})
    assert "shape=[1, 4, 8, 8]" in shown and "float32" in shown
    engine = Engine()
    b = WorkflowBuilder()
    preview = b.add("PreviewAny", source=b.add("EmptyLatentImage", width=64, height=64, batch_size=2))
    result = engine.run(b.build())
    assert result.ok, result.failed
    (text,) = result.ui[preview.id]["text"]
    assert json.loads(text)["noise_only"] is True and "shape=[2, 4, 8, 8]" in text


@pytest.mark.parametrize("node,inputs,code,input_name", [
    ("ImageScale", {"upscale_method": "bislerp", "width": 8, "height": 8, "crop": "disabled"},
     "value_not_in_list", "upscale_method"),
    ("LatentFromBatch", {"batch_index": 64, "length": 1}, "value_bigger_than_max", "batch_index"),
    ("ImageCrop", {"width": 0, "height": 8, "x": 0, "y": 0}, "value_smaller_than_min", "width"),
])
def test_bad_constants_are_validation_errors(node, inputs, code, input_name):
    b = WorkflowBuilder()
    source = b.add("EmptyImage", width=8, height=8) if node.startswith("Image") else \
        b.add("EmptyLatentImage", width=64, height=64)
    link = "image" if node.startswith("Image") else "samples"
    b.add("PreviewAny", source=b.add(node, **{link: source}, **inputs))
    issues = Engine().validate(b.build())
    assert len(issues) == 1
    issue = issues[0]
    assert (issue.code, issue.node_type, issue.input) == (code, node, input_name)


def test_every_core_node_is_listed_with_comfyuis_inputs_in_order():
    registry = Engine().registry
    expected = {
        "VAEDecodeTiled": ["samples", "vae", "tile_size", "overlap", "temporal_size", "temporal_overlap"],
        "VAEEncodeForInpaint": ["pixels", "vae", "mask", "grow_mask_by"],
        "LatentUpscale": ["samples", "upscale_method", "width", "height", "crop"],
        "ImagePadForOutpaint": ["image", "left", "top", "right", "bottom", "feathering"],
        "LoadImageMask": ["image", "channel", "upload"],
        "ConditioningSetTimestepRange": ["conditioning", "start", "end"],
        "EmptyImage": ["width", "height", "batch_size", "color"],
    }
    for name, inputs in expected.items():
        assert list(registry.get(name).inputs) == inputs, name
    names = {s.type_name for s in registry.specs().values() if s.pack == "core"}
    assert len(names) == 31 and {"PreviewAny", "RebatchLatents", "ConditioningZeroOut", "SolidMask"} <= names


@pytest.mark.parametrize("node,widgets,linked,expected", [
    ("LatentUpscale", ["bislerp", 1152, 896, "center"], {"samples"},
     {"upscale_method": "bislerp", "width": 1152, "height": 896, "crop": "center"}),
    ("LoadImageMask", ["m.png", "red", "image"], set(), {"image": "m.png", "channel": "red", "upload": "image"}),
    ("ImagePadForOutpaint", [0, 128, 0, 64, 40], {"image"},
     {"left": 0, "top": 128, "right": 0, "bottom": 64, "feathering": 40}),
    ("VAEEncodeTiled", [512, 64, 64, 8], {"pixels", "vae"},
     {"tile_size": 512, "overlap": 64, "temporal_size": 64, "temporal_overlap": 8}),
    ("EmptyImage", [512, 512, 1, 0], set(), {"width": 512, "height": 512, "batch_size": 1, "color": 0}),
    ("VAEDecode", [], {"samples", "vae"}, {}),
])
def test_editor_widgets_map_to_comfyuis_inputs(node, widgets, linked, expected):
    """Widget values saved by ComfyUI's editor land on the right inputs (positional, declaration order)."""
    from graphgen.comfy_ui import widget_values

    assert widget_values(Engine().registry.get(node), widgets, linked) == expected


def test_resize_targets_keep_the_aspect_ratio_and_clamp_as_comfyui():
    from graphgen_nodes.core.sizes import fit_size, scale_size

    assert fit_size(rows=30, cols=40, width=0, height=60) == (80, 60)  # width follows height
    assert fit_size(rows=30, cols=40, width=20, height=0) == (20, 15)
    assert fit_size(rows=30, cols=40, width=7, height=9) == (7, 9)  # both given: as given
    # latents: every side at least 64 pixels, the given one clamped before the other follows it
    assert fit_size(rows=8, cols=16, width=0, height=16, minimum=64) == (128, 64)
    assert fit_size(rows=8, cols=16, width=16, height=100, minimum=64) == (64, 100)
    assert fit_size(rows=1000, cols=1, width=0, height=10) == (1, 10)  # never 0 pixels
    assert scale_size(rows=3, cols=5, factor=1.5) == (8, 4)  # round(7.5) = 8, round(4.5) = 4 (to even)
    assert scale_size(rows=3, cols=5, factor=0.01) == (1, 1)
