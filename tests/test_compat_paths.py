"""A ComfyUI pack's file input (`folder_paths.get_annotated_filepath`) is confined in served runs as
built-in nodes' are (`graphgen.paths`): `..` and absolute names that leave the folders are refused with
graphgen's one message, while command-line and Engine runs keep ComfyUI's behaviour (any path)."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

import pytest

from graphgen import Engine
from graphgen.compat import _runtime, folder_paths
from graphgen.context import EngineSettings
from graphgen.paths import PathNotAvailableError

PACKS = Path(__file__).parent / "data" / "file_nodes"
REFUSED = "is not available: this server reads files only from its input, models and output folders"


@pytest.fixture
def folders(tmp_path):
    for name in ("in", "out", "elsewhere"):
        (tmp_path / name).mkdir()
    (tmp_path / "in" / "note.txt").write_text("inside", encoding="utf-8")
    (tmp_path / "out" / "made.txt").write_text("made", encoding="utf-8")
    (tmp_path / "elsewhere" / "secret.txt").write_text("secret", encoding="utf-8")
    return tmp_path


def read_text(name: str) -> dict:
    return {"1": {"class_type": "PackReadText", "inputs": {"name": name}}}


def test_an_engine_run_reads_any_path_as_comfyui_does(folders):
    engine = Engine(output_dir=folders / "out", input_dir=folders / "in", plugins=[PACKS])
    assert not engine.settings.confine_paths
    for name, text in {"note.txt": "inside", "made.txt [output]": "made",
                       str(folders / "elsewhere" / "secret.txt"): "secret",
                       "../elsewhere/secret.txt": "secret"}.items():
        result = engine.run(read_text(name))
        assert result.ok, result.failed
        assert result.ui["1"]["text"] == [text]


def test_folder_paths_refuses_names_leaving_their_folder_only_when_confined(folders, monkeypatch):
    settings = EngineSettings(output_dir=folders / "out", input_dir=folders / "in")
    monkeypatch.setattr(_runtime, "_default_settings", settings)
    outside = str(folders / "elsewhere" / "secret.txt")
    assert folder_paths.get_annotated_filepath(outside) == outside  # ComfyUI joins as given
    assert folder_paths.exists_annotated_filepath("../elsewhere/secret.txt")
    settings.confine_paths = True
    for name in (outside, "../elsewhere/secret.txt", "../elsewhere/missing.txt", "made.txt [output]/../../x",
                 "../../../../../../etc/passwd", "../../elsewhere/secret.txt [temp]"):
        with pytest.raises(PathNotAvailableError, match=REFUSED):
            folder_paths.get_annotated_filepath(name)
        assert not folder_paths.exists_annotated_filepath(name)
    # inside the folders: the input one, an annotated one, an absolute path inside, `..` that stays inside
    assert folder_paths.exists_annotated_filepath("note.txt")
    assert folder_paths.exists_annotated_filepath("made.txt [output]")
    assert folder_paths.exists_annotated_filepath(str(folders / "in" / "note.txt"))
    assert folder_paths.exists_annotated_filepath("../out/made.txt")
    assert not folder_paths.exists_annotated_filepath("missing.txt")  # missing inside: no refusal, just absent
    assert folder_paths.get_annotated_filepath("missing.txt") == str(folders / "in" / "missing.txt")
    # a folder the pack itself chooses is one the name may use
    assert folder_paths.get_annotated_filepath("secret.txt", str(folders / "elsewhere")) == outside
    with pytest.raises(PathNotAvailableError):
        folder_paths.get_annotated_filepath("../../x", str(folders / "elsewhere"))


def test_a_link_the_administrator_put_in_the_input_folder_is_followed_when_confined(folders, monkeypatch):
    (folders / "in" / "shared").symlink_to(folders / "elsewhere", target_is_directory=True)
    settings = EngineSettings(output_dir=folders / "out", input_dir=folders / "in", confine_paths=True)
    monkeypatch.setattr(_runtime, "_default_settings", settings)
    assert folder_paths.exists_annotated_filepath("shared/secret.txt")
    with pytest.raises(PathNotAvailableError):
        folder_paths.get_annotated_filepath("shared/../../elsewhere/secret.txt")


def test_a_served_pack_node_reads_the_input_folder_and_nothing_outside(folders):
    pytest.importorskip("aiohttp")
    from graphgen.server import ServerConfig, ServerThread

    engine = Engine(output_dir=folders / "out", input_dir=folders / "in", plugins=[PACKS])
    config = ServerConfig(port=0, user_dir=folders / "user", template_dirs=[])

    def run(server: ServerThread, name: str) -> dict:
        body = json.dumps({"prompt": read_text(name), "client_id": "files"}).encode()
        with urllib.request.urlopen(urllib.request.Request(server.url + "/prompt", data=body), timeout=30) as answer:
            prompt_id = json.loads(answer.read())["prompt_id"]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with urllib.request.urlopen(f"{server.url}/history/{prompt_id}", timeout=30) as answer:
                history = json.loads(answer.read())
            if prompt_id in history and history[prompt_id]["status"]["completed"] is not None \
                    and history[prompt_id]["status"]["status_str"] in ("success", "error"):
                return history[prompt_id]
            time.sleep(0.05)
        raise AssertionError(f"no result for {name!r}")

    def error(entry: dict) -> str:
        assert entry["status"]["status_str"] == "error", entry
        (failed,) = [data for kind, data in entry["status"]["messages"] if kind == "execution_error"]
        assert failed["node_id"] == "1" and failed["node_type"] == "PackReadText"
        return str(failed["exception_message"])

    with ServerThread(engine, config) as server:
        assert engine.settings.confine_paths
        assert run(server, "note.txt")["outputs"]["1"]["text"] == ["inside"]
        assert run(server, "made.txt [output]")["outputs"]["1"]["text"] == ["made"]
        refusals = {name: error(run(server, name)) for name in (
            str(folders / "elsewhere" / "secret.txt"), "../elsewhere/secret.txt", "../elsewhere/missing.txt",
            "/etc/passwd", "../../../../../../../../etc/passwd")}
    for name, message in refusals.items():
        assert REFUSED in message and repr(name) in message, (name, message)
        assert "\n" not in message.strip() and "Traceback" not in message and "secret" not in message.replace(
            repr(name), ""), message


def test_a_pack_load_image_refuses_at_validation_when_confined_and_reads_anywhere_otherwise(folders):
    from PIL import Image

    from graphgen.errors import WorkflowError

    Image.new("RGB", (4, 4), (10, 20, 30)).save(folders / "in" / "photo.png")
    Image.new("RGB", (4, 4), (1, 1, 1)).save(folders / "elsewhere" / "secret.png")
    engine = Engine(output_dir=folders / "out", input_dir=folders / "in", plugins=[PACKS])

    def load(name: str) -> str | None:
        workflow = {"1": {"class_type": "PackLoadImage", "inputs": {"image": name}},
                    "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}}
        try:
            result = engine.run(workflow)
        except WorkflowError as exc:
            (issue,) = exc.issues
            assert (issue.node_id, issue.input) == ("1", "image")
            return issue.message
        assert result.ok, result.failed
        return None

    outside = str(folders / "elsewhere" / "secret.png")
    assert load("photo.png") is None and load(outside) is None  # an Engine run reads any path
    assert "'nothere.png' not found in the input folder" in str(load("nothere.png"))
    engine.settings.confine_paths = True
    assert load("photo.png") is None
    refusals = {name: str(load(name)) for name in (outside, "../elsewhere/secret.png", "../elsewhere/missing.png",
                                                    "nothere.png")}
    for name, message in refusals.items():  # missing or forbidden: one message, naming the input
        assert message.replace(repr(name), "NAME") == refusals["nothere.png"].replace("'nothere.png'", "NAME")
        assert REFUSED in message, name
