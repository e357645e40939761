"""Safe file writing: atomic, never clobbering, never leaving the output folder."""

from __future__ import annotations

import io
import os
import time

import pytest

from graphgen.files import UnsafePathError, atomic_write_bytes, file_identity, safe_join, write_new_file


def test_safe_join_refuses_escapes(tmp_path):
    root = tmp_path / "out"
    root.mkdir()
    assert safe_join(root, "a/b.png") == root.resolve() / "a" / "b.png"
    for bad in ["../x", "a/../../x", "/etc/passwd", "", "a\x00b", "..\\x"]:
        with pytest.raises(UnsafePathError):
            safe_join(root, bad)
    os.symlink(tmp_path, root / "link")
    with pytest.raises(UnsafePathError, match="outside"):
        safe_join(root, "link/evil.png")


def test_atomic_write_never_clobbers(tmp_path):
    path = tmp_path / "f.bin"
    atomic_write_bytes(path, b"one")
    with pytest.raises(FileExistsError):
        atomic_write_bytes(path, b"two")
    assert path.read_bytes() == b"one"
    atomic_write_bytes(path, b"three", overwrite=True)
    assert path.read_bytes() == b"three"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]  # no temp files left behind


def test_failed_write_leaves_nothing(tmp_path):
    def explode(handle):
        handle.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_new_file(tmp_path, "img", ".png", explode)
    assert list(tmp_path.iterdir()) == []


def test_numbered_names_skip_taken(tmp_path):
    first = write_new_file(tmp_path, "img", ".png", lambda h: h.write(b"1"))
    second = write_new_file(tmp_path, "img", ".png", lambda h: h.write(b"2"))
    assert first.name == "img_00001_.png" and second.name == "img_00002_.png"
    (tmp_path / "img_00007_.png").write_bytes(b"user file")
    third = write_new_file(tmp_path, "img", ".png", lambda h: h.write(b"3"))
    assert third.name == "img_00008_.png" and (tmp_path / "img_00007_.png").read_bytes() == b"user file"


def test_files_get_normal_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        path = atomic_write_bytes(tmp_path / "a.bin", b"x")
        numbered = write_new_file(tmp_path, "img", ".png", lambda h: h.write(b"1"))
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644
    assert numbered.stat().st_mode & 0o777 == 0o644


# -- file identity: a replaced file is noticed, even a same-size copy with its mtime kept -------------------

def _replace_keeping_size_and_mtime(path, data: bytes) -> None:
    """What `cp -p`, `rsync -t` or unpacking an archive do: new bytes, same size, the old mtime."""
    before = os.stat(path)
    assert len(data) == before.st_size
    time.sleep(0.02)  # ctime ticks with the kernel's coarse clock
    with open(path, "r+b") as handle:  # in place: the same inode
        handle.write(data)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(path)
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)


def test_file_identity_sees_same_size_same_mtime_replacements(tmp_path):
    path = tmp_path / "weights.safetensors"
    path.write_bytes(b"a" * 100)
    first = file_identity(path)
    assert file_identity(path) == first  # reading changes nothing
    _replace_keeping_size_and_mtime(path, b"b" * 100)
    assert file_identity(path) != first
    # a new file (another inode) copied over with its metadata, as `cp -p` from elsewhere does
    other = tmp_path / "other"
    other.write_bytes(b"c" * 100)
    second = file_identity(path)
    os.utime(other, ns=(os.stat(path).st_atime_ns, os.stat(path).st_mtime_ns))
    os.replace(other, path)
    assert file_identity(path) != second


def test_file_identity_of_folders_covers_the_files_loaders_read(tmp_path):
    folder = tmp_path / "Kolors"
    (folder / "unet").mkdir(parents=True)
    (folder / "unet" / "diffusion_pytorch_model.fp16.safetensors").write_bytes(b"w" * 64)
    (folder / "unet" / "config.json").write_text("{}")
    (folder / "README.md").write_text("not read by any loader")
    first = file_identity(folder)
    (folder / "README.md").write_text("edited")
    assert file_identity(folder) == first
    _replace_keeping_size_and_mtime(folder / "unet" / "diffusion_pytorch_model.fp16.safetensors", b"v" * 64)
    assert file_identity(folder) != first
    missing = file_identity(tmp_path / "nothing")
    assert missing[1] == "missing" and file_identity(tmp_path / "bad\x00name")[1] == "unreadable"


def _identity_engine(tmp_path):
    from graphgen import Engine

    return Engine(output_dir=tmp_path / "out", input_dir=tmp_path / "in")


def _png_bytes(colour: tuple[int, int, int]) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(buffer, format="PNG", compress_level=0)  # size depends on 8x8 only
    return buffer.getvalue()


def test_a_replaced_input_image_is_loaded_again_in_the_same_engine(tmp_path):
    from graphgen import WorkflowBuilder

    engine = _identity_engine(tmp_path)
    engine.settings.input_dir.mkdir(parents=True)
    image = engine.settings.input_dir / "photo.png"
    image.write_bytes(_png_bytes((255, 0, 0)))
    b = WorkflowBuilder()
    b.add("PreviewImage", id="show", images=b.add("LoadImage", id="load", image="photo.png")["image"])
    workflow = b.build()
    first = engine.run(workflow)
    assert first.ok, first.failed
    assert "load" in engine.run(workflow).cached  # untouched: from the cache (previews always run)
    _replace_keeping_size_and_mtime(image, _png_bytes((0, 0, 255)))
    again = engine.run(workflow)
    assert "load" in again.executed
    assert again.output("load", "image")[0, 0, 0].tolist() == [0.0, 0.0, 1.0]


def test_a_replaced_lora_and_unet_file_are_read_again_in_the_same_engine(tmp_path, tiny_models):
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    from graphgen import WorkflowBuilder
    from graphgen_nodes.lora.convert import write_lora
    from graphgen_nodes.lora.lora_file import LoraModule, LoraWeights

    def lora(value: float) -> LoraWeights:
        module = LoraModule(down=torch.full((2, 8), value), up=torch.full((8, 2), value), alpha=None)
        return LoraWeights(modules={"down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q": module})

    lora_path = write_lora(lora(0.5), tmp_path / "style.safetensors", to="kohya")
    changed = write_lora(lora(0.25), tmp_path / "changed.safetensors", to="kohya").read_bytes()
    unet_path = tmp_path / "unet.safetensors"
    shutil.copy(tiny_models.comfyui_unet_file, unet_path)
    state = load_file(unet_path)
    name = next(iter(state))
    state[name] = state[name] + 1
    save_file(state, tmp_path / "unet2.safetensors", metadata=_safetensors_metadata(unet_path))

    engine = _identity_engine(tmp_path)
    engine.settings.input_dir.mkdir(parents=True)
    (engine.settings.input_dir / "x.png").write_bytes(_png_bytes((1, 2, 3)))
    b = WorkflowBuilder()
    unet = b.add("KolorsUNetLoader", id="unet", path=str(unet_path), precision="fp32", device="cpu")
    b.add("LoadLoRA", id="lora", lora_path=str(lora_path))
    b.add("PreviewImage", id="show", images=b.add("LoadImage", image="x.png")["image"])
    assert unet is not None
    workflow = b.build()
    first = engine.run(workflow, outputs=["unet", "lora"])
    assert first.ok, first.failed
    assert set(engine.run(workflow, outputs=["unet", "lora"]).cached) == {"unet", "lora"}

    _replace_keeping_size_and_mtime(lora_path, changed)
    _replace_keeping_size_and_mtime(unet_path, (tmp_path / "unet2.safetensors").read_bytes())
    again = engine.run(workflow, outputs=["unet", "lora"])
    assert set(again.executed) == {"unet", "lora"}
    module = next(iter(again.output("lora", "lora").modules.values()))
    assert torch.all(module.up == 0.25)
    weights = dict(again.output("unet", "model").handle.model.state_dict())
    assert torch.equal(weights[name], state[name].float())


def _safetensors_metadata(path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return handle.metadata() or {}


def test_a_replaced_tokenizer_beside_a_single_file_text_encoder_is_read_again(tmp_path, tiny_models):
    """A single-file ChatGLM takes its tokenizer from a folder beside it, outside the file's own identity."""
    import shutil

    from graphgen import WorkflowBuilder

    llm = tmp_path / "models" / "LLM" / "chatglm3.safetensors"
    llm.parent.mkdir(parents=True)
    shutil.copy(tiny_models.comfyui_llm_file, llm)
    tokenizer = tmp_path / "models" / "diffusers" / "Kolors" / "tokenizer"
    shutil.copytree(tiny_models.comfyui_kolors / "tokenizer", tokenizer)
    engine = _identity_engine(tmp_path)
    engine.settings.input_dir.mkdir(parents=True)
    (engine.settings.input_dir / "x.png").write_bytes(_png_bytes((1, 2, 3)))
    b = WorkflowBuilder()
    b.add("KolorsTextEncoderLoader", id="text", path=str(llm), precision="fp32", device="cpu")
    b.add("PreviewImage", images=b.add("LoadImage", image="x.png")["image"])
    workflow = b.build()
    first = engine.run(workflow, outputs=["text"])
    assert first.ok, first.failed
    assert engine.run(workflow, outputs=["text"]).cached == ["text"]
    spm = tokenizer / "tokenizer.model"
    _replace_keeping_size_and_mtime(spm, spm.read_bytes())  # rewritten (e.g. restored from a backup)
    again = engine.run(workflow, outputs=["text"])
    assert again.executed == ["text"]
    assert again.output("text", "chatglm3_model") is not first.output("text", "chatglm3_model")  # loaded anew
