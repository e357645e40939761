"""Confined runs (`graphgen.paths`, what the server uses): node file inputs stay inside the input, models
and output folders, and a refusal never tells a missing file from a forbidden one (issue 10)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from graphgen import Engine, WorkflowBuilder
from graphgen.errors import WorkflowError
from graphgen.paths import inside_roots

REFUSED = "is not available: this server reads files only from its input, models and output folders"


@pytest.fixture
def folders(tmp_path):
    for name in ("in", "out", "models", "elsewhere"):
        (tmp_path / name).mkdir()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(tmp_path / "in" / "photo.png")
    Image.new("RGB", (8, 8), (9, 9, 9)).save(tmp_path / "elsewhere" / "secret.png")
    return tmp_path


def engine_for(folders: Path, confined: bool, models: Path | None = None) -> Engine:
    engine = Engine(output_dir=folders / "out", input_dir=folders / "in", models_dir=models or folders / "models")
    engine.settings.confine_paths = confined
    return engine


def load_image(engine: Engine, name: str) -> str | None:
    """None if LoadImage reads `name`; else the message of its refusal, which LoadImage's declared check
    (`image_file_check`) gives at validation, before anything runs."""
    b = WorkflowBuilder()
    b.add("PreviewImage", images=b.add("LoadImage", id="load", image=name)["image"])
    try:
        result = engine.run(b.build())
    except WorkflowError as exc:
        (issue,) = exc.issues
        assert (issue.node_id, issue.input) == ("load", "image")
        return issue.message
    return None if result.ok else str(result.failed["load"].message)


def same_refusal(messages: dict[str, str | None]) -> None:
    """Every message is the refusal, and they differ only by the name they quote."""
    shapes = set()
    for name, message in messages.items():
        assert message is not None and REFUSED in message, (name, message)
        shapes.add(message.replace(repr(name), "NAME"))
    assert len(shapes) == 1, shapes


def test_load_image_reads_only_inside_the_folders_and_never_says_what_exists(folders):
    engine = engine_for(folders, confined=True)
    assert load_image(engine, "photo.png") is None
    (folders / "out" / "render.png").write_bytes((folders / "in" / "photo.png").read_bytes())
    assert load_image(engine, str(folders / "out" / "render.png")) is None  # the output folder is readable
    same_refusal({name: load_image(engine, name) for name in [
        str(folders / "elsewhere" / "secret.png"), str(folders / "elsewhere" / "missing.png"),
        "../elsewhere/secret.png", "../elsewhere/missing.png", "in/../../elsewhere/secret.png", "nothere.png",
        "/etc/hostname", "/etc/no-such-file"]})
    # command-line runs read any path, as before
    assert load_image(engine_for(folders, confined=False), str(folders / "elsewhere" / "secret.png")) is None


def test_a_link_the_administrator_put_inside_a_folder_is_followed(folders):
    (folders / "in" / "shared").symlink_to(folders / "elsewhere", target_is_directory=True)
    engine = engine_for(folders, confined=True)
    assert load_image(engine, "shared/secret.png") is None
    assert inside_roots(engine.settings, folders / "in" / "shared" / "secret.png")
    assert not inside_roots(engine.settings, folders / "in" / ".." / "elsewhere" / "secret.png")


def test_model_lora_and_vae_inputs_are_confined(folders, tiny_models):
    engine = engine_for(folders, confined=True, models=tiny_models.comfyui_models)
    outside_lora = folders / "elsewhere" / "style.safetensors"
    outside_lora.write_bytes(b"not read")
    nodes = {"lora_there": ("LoadLoRA", {"lora_path": str(outside_lora)}),
             "lora_missing": ("LoadLoRA", {"lora_path": str(folders / "elsewhere" / "gone.safetensors")}),
             "unet_there": ("KolorsUNetLoader", {"path": str(tiny_models.tutorial_kolors)}),
             "unet_inside": ("KolorsUNetLoader", {"path": "unet/kolors_unet.safetensors"}),
             "vae_there": ("VAELoader", {"vae_name": str(tiny_models.tutorial_fp16_vae /
                                                          "diffusion_pytorch_model.safetensors")}),
             "vae_missing": ("VAELoader", {"vae_name": "/nowhere/vae.safetensors"}),
             "vae_escape": ("VAELoader", {"vae_name": "../../../../../../etc/hostname"})}
    failed: dict[str, str] = {}
    for node, (type_name, inputs) in nodes.items():
        b = WorkflowBuilder()
        extra = {"precision": "fp32", "device": "cpu"} if type_name == "KolorsUNetLoader" else {}
        b.add(type_name, id=node, **inputs, **extra)
        b.add("PreviewImage", images=b.add("LoadImage", image="photo.png")["image"])
        try:  # a node's declared checks refuse at validation, its own path resolution at run time
            result = engine.run(b.build(), outputs=[node])
        except WorkflowError as exc:
            (issue,) = exc.issues
            failed[node] = issue.message
            continue
        if node in result.failed:
            failed[node] = str(result.failed[node].message)
        else:
            assert node in result.executed
    assert set(failed) == set(nodes) - {"unet_inside"}, failed  # inside the models folder: loads
    for node, message in failed.items():
        assert REFUSED in message, (node, message)
    assert failed["lora_there"].replace("style", "gone") == failed["lora_missing"]
    assert failed["vae_missing"].replace("/nowhere/vae.safetensors", "X") == \
        failed["vae_escape"].replace("../../../../../../etc/hostname", "X")


def test_a_dataset_outside_the_folders_or_listing_images_outside_them_is_refused(folders, tiny_models):
    from graphgen.testing.demo_data import write_synthetic_dataset

    data = write_synthetic_dataset(folders / "in" / "data", count=2, size=64)
    metadata = data / "train" / "metadata.csv"
    metadata.write_text(metadata.read_text(encoding="utf-8-sig").replace("0001.png", "../../../elsewhere/secret.png"),
                        encoding="utf-8-sig")
    outside = write_synthetic_dataset(folders / "elsewhere" / "data", count=2, size=64)
    engine = engine_for(folders, confined=True, models=tiny_models.tutorial_models.parent)

    def workflow(datasets: dict[str, str]) -> WorkflowBuilder:
        b = WorkflowBuilder()
        kolors = b.add("KolorsModelLoader", path="models/kolors/Kolors", precision="fp32", device="cpu")
        for node, path in datasets.items():
            b.add("KolorsTrainLoRA", id=node, model=kolors["model"], chatglm3_model=kolors["chatglm3_model"],
                  vae=kolors["vae"], dataset_path=path, steps_per_epoch=1, height=64, width=64, precision="32")
        b.add("PreviewImage", images=b.add("LoadImage", image="photo.png")["image"])
        return b

    # a dataset folder outside the folders, or missing: refused alike by the node's declared check
    issues = engine.validate(workflow({"there": str(outside), "missing": str(folders / "elsewhere" / "nope")}).build())
    refused = {issue.node_id: issue.message for issue in issues}
    assert set(refused) == {"there", "missing"}, refused
    assert refused["there"].replace(str(outside), "X") == refused["missing"].replace(str(folders / "elsewhere" / "nope"), "X")
    assert REFUSED in refused["there"]
    # a dataset inside whose metadata lists an image outside: refused when the node reads it
    result = engine.run(workflow({"listing": "data"}).build(), outputs=["listing"])
    assert "dataset image '../../../elsewhere/secret.png' " + REFUSED in str(result.failed["listing"].message)


def test_the_server_confines_load_image_and_answers_alike_for_missing_and_forbidden(folders):
    pytest.importorskip("aiohttp")
    import urllib.error
    import urllib.request

    from graphgen.server import ServerConfig, ServerThread

    engine = Engine(output_dir=folders / "out", input_dir=folders / "in")
    config = ServerConfig(port=0, user_dir=folders / "user", template_dirs=[])

    def prompt(image: str) -> dict:
        return {"1": {"class_type": "LoadImage", "inputs": {"image": image}},
                "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "leak"}}}

    def errors(server: ServerThread, names: list[str]) -> dict[str, str]:
        found = {}
        for name in names:  # refused at validation (LoadImage's declared check): a 400 naming node 1
            body = json.dumps({"prompt": prompt(name), "client_id": "probe"}).encode()
            request = urllib.request.Request(server.url + "/prompt", data=body)
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(request, timeout=30)
            assert refused.value.code == 400
            (error,) = json.loads(refused.value.read())["node_errors"]["1"]["errors"]
            found[name] = error["message"]
        return found

    with ServerThread(engine, config) as server:
        assert engine.settings.confine_paths
        names = [str(folders / "elsewhere" / "secret.png"), str(folders / "elsewhere" / "missing.png"),
                 "../elsewhere/secret.png", "../elsewhere/missing.png"]
        same_refusal(errors(server, names))
    assert not list((folders / "out").rglob("leak*"))
