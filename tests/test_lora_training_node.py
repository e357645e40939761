"""Training in a workflow: kolors_lora.json end to end, reuse from a new engine, resume after a cancel,
conversions of the trained file, diffusers interop, `graphgen lora convert` and `graphgen demo`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from graphgen import Engine, cli

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / "workflows" / "kolors_lora.json"

# tiny models run faster single-threaded on a shared 2-core machine (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from graphgen.testing.demo_data import write_synthetic_dataset

    return write_synthetic_dataset(tmp_path_factory.mktemp("data") / "lora_dataset_processed", count=6, size=64)


def settings(tiny_models, dataset, **extra):
    return {"kolors": str(tiny_models.tutorial_kolors), "vae": str(tiny_models.tutorial_fp16_vae),
            "dataset": str(dataset), "precision": "fp32", "train_precision": "32", "train_height": 64,
            "train_width": 64, "lora_rank": 4, "steps_per_epoch": 12, "learning_rate": 1e-3, "width": 64,
            "height": 64, "steps": 4, "3.use_gradient_checkpointing": False, "3.save_every_n_steps": 4, **extra}


@pytest.fixture(scope="module")
def trained(tiny_models, dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("train-out")
    engine = Engine(output_dir=out)
    result = engine.run(WORKFLOW, overrides=settings(tiny_models, dataset))
    assert result.ok, result.failed
    return out, engine, result


def test_workflow_trains_applies_and_renders(trained):
    out, _, result = trained
    lora_path = Path(result.output("3", "lora_path"))
    assert lora_path == out / "models" / "kolors_lora.safetensors" and lora_path.is_file()
    from safetensors import safe_open

    with safe_open(str(lora_path), "pt") as handle:
        meta = handle.metadata()
    params = json.loads(meta["graphgen.training_params"])
    assert params["lora_rank"] == 4 and params["steps_per_epoch"] == 12 and meta["graphgen.steps"] == "12"
    assert (out / "models" / "kolors_lora.loss.csv").read_text().count("\n") == 13
    assert (out / "models" / "kolors_lora.loss.png").stat().st_size > 1000
    with_lora, base = result.output("9", "image"), result.output("10", "image")
    assert (with_lora - base).abs().max() > 1e-3  # the trained LoRA changes the image
    saved = [item["path"] for ui in result.ui.values() for item in ui.get("images", [])]
    assert len(saved) == 2 and all(Path(p).is_file() for p in saved)


def test_rerun_from_a_new_engine_does_not_retrain(trained, tiny_models, dataset):
    out, _, result = trained
    lora_path = Path(result.output("3", "lora_path"))
    before = lora_path.stat().st_mtime_ns
    again = Engine(output_dir=out).run(WORKFLOW, overrides=settings(tiny_models, dataset))
    assert again.ok and "reused" in again.ui["3"]["text"][0]
    assert lora_path.stat().st_mtime_ns == before
    assert torch.equal(again.output("9", "image"), result.output("9", "image"))


def test_cancel_then_resume_equals_uninterrupted(trained, tiny_models, dataset, tmp_path):
    from graphgen_nodes.lora.lora_file import read_lora

    _, _, reference = trained
    engine = Engine(output_dir=tmp_path)

    def cancel_at_step_6(event):
        if event.kind == "node_progress" and event.node_id == "3" and event.value == 6:
            engine.cancel()

    first = engine.run(WORKFLOW, overrides=settings(tiny_models, dataset), on_event=cancel_at_step_6)
    assert first.status == "cancelled"
    assert (tmp_path / "models" / "kolors_lora.ckpt").is_file()
    resumed = engine.run(WORKFLOW, overrides=settings(tiny_models, dataset))
    assert resumed.ok and "resumed from step" in resumed.ui["3"]["text"][0]
    ours = read_lora(resumed.output("3", "lora_path"))
    assert ours.same_weights(read_lora(reference.output("3", "lora_path")))


def test_trained_file_converts_and_round_trips(trained, tmp_path):
    from graphgen_nodes.lora.convert import convert_lora
    from graphgen_nodes.lora.lora_file import read_lora

    _, _, result = trained
    original = read_lora(result.output("3", "lora_path"))
    assert original.ranks == {4} and {m.alpha for m in original.modules.values()} == {4.0}
    for fmt in ("kohya", "diffusers", "peft"):
        converted = read_lora(convert_lora(result.output("3", "lora_path"), tmp_path / f"{fmt}.safetensors", to=fmt))
        assert converted.same_weights(original), fmt
        again = read_lora(convert_lora(tmp_path / f"{fmt}.safetensors", tmp_path / f"{fmt}2.safetensors", to=fmt))
        assert again.same_weights(original), fmt


def test_diffusers_loads_trained_and_converted_files(trained, tiny_models, tmp_path):
    """KolorsPipeline.load_lora_weights reads our file and renders what the graph rendered with it."""
    from diffusers import KolorsPipeline

    from graphgen_nodes.diffusion.schedulers import make_scheduler
    from graphgen_nodes.lora.convert import convert_lora

    _, engine, result = trained
    unet_ref, text, vae = result.output("1", "model"), result.output("1", "chatglm3_model"), result.output("2", "vae")
    converted = convert_lora(result.output("3", "lora_path"), tmp_path / "diffusers.safetensors", to="diffusers")
    overrides = json.loads(WORKFLOW.read_text())["parameters"]
    for path in (Path(result.output("3", "lora_path")), converted):
        from graphgen_nodes.kolors.loading import load_unet

        pipe = KolorsPipeline(vae=vae.model, text_encoder=text.model, tokenizer=text.tokenizer,
                              unet=load_unet(tiny_models.tutorial_kolors), scheduler=make_scheduler("euler"),
                              force_zeros_for_empty_prompt=False)
        pipe.set_progress_bar_config(disable=True)
        pipe.load_lora_weights(str(path.parent), weight_name=path.name)
        images = pipe(prompt=overrides["prompt"]["default"], negative_prompt=overrides["negative_prompt"]["default"],
                      height=64, width=64, num_inference_steps=4, guidance_scale=4.0,
                      generator=torch.Generator("cpu").manual_seed(0), output_type="np").images
        assert np.abs(images - result.output("9", "image").numpy()).max() <= 1e-3, path.name
    assert unet_ref.handle.model is not None


def test_lora_convert_command(trained, tmp_path, capsys):
    _, _, result = trained
    source = result.output("3", "lora_path")
    target = tmp_path / "kohya.safetensors"
    assert cli.main(["lora", "convert", source, str(target), "--to", "kohya"]) == 0
    assert "kohya" in capsys.readouterr().out and target.is_file()
    assert cli.main(["lora", "convert", source, str(target), "--to", "kohya"]) == 2
    assert "nothing is overwritten" in capsys.readouterr().err
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 64)
    assert cli.main(["lora", "convert", str(junk), str(tmp_path / "x.safetensors"), "--to", "peft"]) == 2
    err = capsys.readouterr().err
    assert "junk.safetensors" in err and "Traceback" not in err


def test_demo_learns_visibly_and_refuses_foreign_folders(tmp_path, capsys):
    """The demo's LoRA: its picture is much closer in colour to the training images than the base model's,
    the loss falls by a clear margin, and a second run reuses the models and the LoRA."""
    from graphgen.testing.demo import MODELS_STAMP, run_demo

    built_steps: list[tuple[int, int]] = []
    demo = run_demo(tmp_path / "demo", on_build=lambda step, total: built_steps.append((step, total)))
    assert demo.result.ok, demo.result.failed
    total = built_steps[-1][1]  # the one-time build shows each pretraining step
    assert built_steps == [(step, total) for step in range(1, total + 1)] and total > 10
    assert demo.lora and demo.lora.is_file() and demo.loss_curve and demo.loss_curve.is_file()
    assert len(demo.images) == 2 and [g.name for g in demo.samples] == ["step_000070.png", "step_000140.png"]
    assert demo.loss_last < 0.8 * demo.loss_first, (demo.loss_first, demo.loss_last)
    assert demo.colour_lora < 0.7 * demo.colour_base, (demo.colour_lora, demo.colour_base)
    assert demo.colour_base > 60, demo.colour_base  # the base model does not draw the red disc
    stamp, lora = tmp_path / "demo" / "tiny-models" / MODELS_STAMP, demo.lora.stat().st_mtime_ns
    built = stamp.stat().st_mtime_ns
    again = run_demo(tmp_path / "demo")
    assert again.result.ok and stamp.stat().st_mtime_ns == built and again.lora.stat().st_mtime_ns == lora
    assert [p.name for p in again.images] == ["lora_00002_.png", "base_00002_.png"]
    capsys.readouterr()
    assert cli.main(["demo", "--dir", str(tmp_path / "demo")]) == 0  # as users run it: nothing to build
    out = capsys.readouterr().out
    assert "building the demo's models" not in out and "distance to the training images" in out
    assert "lora_00003_.png" in out
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.txt").write_text("precious", encoding="utf-8")
    assert cli.main(["demo", "--dir", str(foreign)]) == 2
    assert "not a graphgen demo folder" in capsys.readouterr().err
    assert (foreign / "thesis.txt").read_text(encoding="utf-8") == "precious"


def test_training_other_data_never_replaces_an_earlier_lora(trained, tiny_models, dataset, tmp_path):
    """Reviewer's repro: a second run with another dataset and the default output_name."""
    from graphgen.testing.demo_data import write_synthetic_dataset

    out, _, first = trained
    first_path = Path(first.output("3", "lora_path"))
    before = first_path.read_bytes()
    other = write_synthetic_dataset(tmp_path / "other", count=4, size=64, seed=9)
    second = Engine(output_dir=out).run(WORKFLOW, overrides=settings(tiny_models, other))
    assert second.ok, second.failed
    second_path = Path(second.output("3", "lora_path"))
    assert second_path != first_path and second_path.name == "kolors_lora_00002.safetensors"
    assert first_path.read_bytes() == before
    assert (out / "models" / "kolors_lora.loss.csv").is_file() and (out / "models" / "kolors_lora_00002.loss.csv").is_file()
    again = Engine(output_dir=out).run(WORKFLOW, overrides=settings(tiny_models, other))
    assert "reused" in again.ui["3"]["text"][0] and Path(again.output("3", "lora_path")) == second_path


def test_an_edited_dataset_retrains_in_the_same_engine(tiny_models, tmp_path):
    """Issue 10: the trainer's cache fingerprint covers the metadata and every image it lists."""
    import io
    import os
    import time

    from PIL import Image

    from graphgen.testing.demo_data import write_synthetic_dataset

    def png(colour: tuple[int, int, int]) -> bytes:
        buffer = io.BytesIO()
        Image.new("RGB", (64, 64), colour).save(buffer, format="PNG", compress_level=0)  # size: 64x64 only
        return buffer.getvalue()

    data = write_synthetic_dataset(tmp_path / "data", count=2, size=64)
    image = data / "train" / "0000.png"
    image.write_bytes(png((200, 10, 10)))
    engine = Engine(output_dir=tmp_path / "out")
    overrides = settings(tiny_models, data, steps_per_epoch=2, **{"3.save_every_n_steps": 0})

    def train() -> tuple[bool, str]:
        result = engine.run(WORKFLOW, overrides=overrides, outputs=["3"])
        assert result.ok, result.failed
        return "3" in result.executed, result.output("3", "lora_path")

    ran, first = train()
    assert ran
    assert train() == (False, first)  # untouched: from the cache

    metadata = data / "train" / "metadata.csv"
    metadata.write_text(metadata.read_text(encoding="utf-8-sig").replace("a ", "one "), encoding="utf-8-sig")
    ran, second = train()
    assert ran and second != first  # new captions: trained again, under a new name

    before = os.stat(image)
    time.sleep(0.02)
    image.write_bytes(png((10, 10, 200)))  # same size, its mtime put back: `cp -p`-like
    os.utime(image, ns=(before.st_atime_ns, before.st_mtime_ns))
    ran, third = train()
    assert ran and third not in (first, second)
    assert train()[0] is False
