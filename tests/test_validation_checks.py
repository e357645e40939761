"""What would fail minutes into a run is caught by `validate` and at the start of `run` (exit 2).

Each case names the node, the input and the fix; nothing is loaded or run.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from graphgen import Engine, Input, Int, Node, Output, cli
from graphgen.checks import CheckContext, Problem, multiple_of_step, text_problem
from graphgen.errors import WorkflowError
from graphgen.registry import NodeRegistry

ROOT = Path(__file__).resolve().parent.parent
TXT2IMG = str(ROOT / "workflows" / "kolors_txt2img.json")
IMG2IMG = str(ROOT / "workflows" / "kolors_img2img.json")
LORA = str(ROOT / "workflows" / "kolors_lora.json")


def cli_issues(capsys, *argv: str) -> tuple[int, list[dict]]:
    code = cli.main([*argv, "--json"])
    out = capsys.readouterr().out
    lines = [json.loads(line) for line in out.splitlines() if line.strip()]
    report = next((line for line in lines if "issues" in line), {"issues": []})
    if argv[0] == "run":
        assert not any(line.get("event") == "run_started" for line in lines), "nothing may run"
    return code, report["issues"]


@pytest.fixture
def models(tiny_models, monkeypatch, tmp_path) -> list[str]:
    monkeypatch.chdir(tmp_path)
    return ["--models-dir", str(tiny_models.tutorial_models), "--output-dir", str(tmp_path / "out"),
            "--input-dir", str(tmp_path / "in")]


@pytest.mark.parametrize("command", ["validate", "run"])
def test_training_width_off_the_step_is_refused(capsys, models, command, tmp_path):
    from graphgen.testing.demo_data import write_synthetic_dataset

    write_synthetic_dataset(tmp_path / "data" / "lora_dataset_processed", count=2, size=64)
    args = models if command == "run" else models[:2]
    code, issues = cli_issues(capsys, command, LORA, *args, "--set", "train_width=100")
    assert code == 2
    (issue,) = issues
    assert (issue["node_id"], issue["input"]) == ("3", "width")
    assert "not a multiple of 8" in issue["message"] and "96 or 104" in issue["hint"]


def test_empty_latent_width_off_the_step_validates(capsys, models):
    """EmptyLatentImage rounds such a side down at run time with a warning, as ComfyUI: not a validation error."""
    assert cli_issues(capsys, "validate", TXT2IMG, *models[:2], "--set", "width=100") == (0, [])


@pytest.mark.parametrize("command", ["validate", "run"])
def test_missing_input_image_is_refused(capsys, models, command):
    args = models if command == "run" else models[:2]
    code, issues = cli_issues(capsys, command, IMG2IMG, *args, "--set", "image=nothere.png")
    assert code == 2
    (issue,) = issues
    assert issue["input"] == "image" and "'nothere.png' not found" in issue["message"]


def test_a_file_that_is_not_an_image_is_refused(capsys, models, tmp_path):
    (tmp_path / "notes.png").write_text("hello")
    code, issues = cli_issues(capsys, "validate", IMG2IMG, *models[:2], "--set", f"image={tmp_path / 'notes.png'}")
    assert code == 2 and "not an image" in issues[0]["message"]


def test_missing_model_folder_names_models_dir(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, issues = cli_issues(capsys, "validate", TXT2IMG, "--models-dir", str(tmp_path / "empty"))
    assert code == 2
    assert {(i["node_id"], i["input"]) for i in issues} == {("1", "path"), ("2", "path")}
    assert all("--models-dir" in i["hint"] and str(tmp_path / "empty") in i["hint"] for i in issues)


@pytest.mark.parametrize("captions", ["empty", "no_text_column", "images_without_txt", "not_utf8"])
def test_dataset_without_captions_is_refused(capsys, models, tmp_path, captions):
    train = tmp_path / "data" / "lora_dataset_processed" / "train"
    train.mkdir(parents=True)
    Image.new("RGB", (64, 64)).save(train / "a.png")
    if captions == "empty":
        (train / "metadata.csv").write_text("file_name,text\na.png,\n", encoding="utf-8")
    elif captions == "no_text_column":
        (train / "metadata.csv").write_text("file_name\na.png\n", encoding="utf-8")
    elif captions == "not_utf8":
        (train / "metadata.csv").write_bytes("file_name,text\na.png,café\n".encode("latin-1"))
    code, issues = cli_issues(capsys, "validate", LORA, *models[:2])
    assert code == 2
    (issue,) = issues
    assert (issue["node_id"], issue["input"]) == ("3", "dataset_path")
    assert "metadata.csv" in issue["hint"]


def test_captioned_dataset_passes(capsys, models, tmp_path):
    from graphgen.testing.demo_data import write_synthetic_dataset

    write_synthetic_dataset(tmp_path / "data" / "lora_dataset_processed", count=2, size=64)
    assert cli_issues(capsys, "validate", LORA, *models[:2]) == (0, [])


@pytest.mark.parametrize("value", ["\udcff\udcfe", "ok \ud800 not"])
@pytest.mark.parametrize("param", ["prompt", "prefix"])
def test_text_that_is_not_unicode_is_refused(capsys, models, value, param):
    code, issues = cli_issues(capsys, "validate", TXT2IMG, *models[:2], "--set", f"{param}={value}")
    assert code == 2
    (issue,) = issues
    assert issue["input"] == {"prompt": "prompt", "prefix": "filename_prefix"}[param]
    assert "not valid Unicode" in issue["message"]
    json.dumps(issue, ensure_ascii=False).encode("utf-8")  # the report itself is printable


def test_lone_surrogate_from_a_json_escape(tmp_path):
    assert text_problem("a\ud83d") is not None and text_problem("貓 🐱") is None
    workflow = '{"1": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "x\\ud800"}},' \
               ' "2": {"class_type": "LoadImage", "inputs": {"image": "%s"}}}' % (tmp_path / "i.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "i.png")
    with pytest.raises(WorkflowError) as caught:
        Engine(output_dir=tmp_path).prepare(workflow)
    assert [(i.node_id, i.input) for i in caught.value.issues] == [("1", "filename_prefix")]


def test_duplicate_keys_in_workflow_json_are_an_error(capsys, tmp_path):
    path = tmp_path / "dup.json"
    path.write_text('{"1": {"class_type": "KolorsKSampler", "inputs": {"seed": 1, "seed": 2}},'
                    ' "1": {"class_type": "SaveImage", "inputs": {}}}', encoding="utf-8")
    code, issues = cli_issues(capsys, "validate", str(path))
    assert code == 2
    assert [i["code"] for i in issues] == ["duplicate_key", "duplicate_key"]
    assert "'seed' appears twice" in issues[0]["message"] and "1 and 2" in issues[0]["message"]
    assert "'1' appears twice" in issues[1]["message"]


class Sized(Node):
    """A node declaring its own checks."""

    inputs = [Int("size", default=64, step=16, checks=(multiple_of_step,)),
              Input("name", "STRING", default="a", checks=(
                  lambda value, ctx: None if value.startswith("a") else Problem("must start with a", "rename it"),
                  lambda value, ctx: f"{ctx.node_type}.{ctx.input.name} is too long" if len(value) > 3 else None))]
    outputs = [Output("INT")]
    output_node = True

    def run(self, size: int, name: str) -> int:
        return size


def test_node_declared_checks_run_in_order_one_problem_per_input(tmp_path):
    registry = NodeRegistry()
    registry.register(Sized)
    engine = Engine(registry=registry, output_dir=tmp_path)
    assert engine.validate({"1": {"class_type": "Sized", "inputs": {"size": 32, "name": "ab"}}}) == []
    issues = engine.validate({"1": {"class_type": "Sized", "inputs": {"size": 40, "name": "bbbb"}}})
    assert [(i.input, i.message, i.hint) for i in issues] == [
        ("size", "40 is not a multiple of 16", "use a multiple of 16, e.g. 32 or 48"),
        ("name", "must start with a", "rename it")]
    issues = engine.validate({"1": {"class_type": "Sized", "inputs": {"name": "abcd"}}})
    assert [i.message for i in issues] == ["Sized.name is too long"]


def test_a_check_that_crashes_is_reported_not_raised(tmp_path):
    def broken(value: int, ctx: CheckContext) -> None:
        raise RuntimeError("boom")

    class Broken(Sized):
        type_name = "Broken"
        inputs = [Int("size", default=64, checks=(broken,))]

    def refused(value: int, ctx: CheckContext) -> None:
        raise FileNotFoundError("image 'x.png' is not available here")

    class Refused(Sized):
        type_name = "Refused"
        inputs = [Int("size", default=64, checks=(refused,))]

    registry = NodeRegistry()
    registry.register(Broken)
    registry.register(Refused)
    engine = Engine(registry=registry, output_dir=tmp_path)
    (issue,) = engine.validate({"1": {"class_type": "Broken", "inputs": {}}})
    assert issue.input == "size" and "RuntimeError: boom" in issue.message
    (issue,) = engine.validate({"1": {"class_type": "Refused", "inputs": {}}})
    assert issue.message == "image 'x.png' is not available here"  # a path resolver's refusal, as it is


def test_a_check_sees_the_types_linked_into_its_node(tmp_path):
    class Source(Node):
        type_name = "Source"
        outputs = [Output("INT", "n"), Output("TEXT_THING", "text")]

        def run(self) -> tuple[int, str]:
            return 1, "x"

    seen: list[tuple[str | None, str | None, str | None]] = []

    def looks(value: int, ctx: CheckContext) -> Problem | None:
        seen.append((ctx.linked_type("thing"), ctx.linked_type("size"), ctx.linked_type("nothing")))
        return Problem("not with a TEXT_THING", "link an INT") if ctx.linked_type("thing") == "TEXT_THING" else None

    class Takes(Sized):
        type_name = "Takes"
        inputs = [Input("thing", "*"), Int("size", default=64, checks=(looks,))]

    registry = NodeRegistry()
    for node in (Source, Takes):
        registry.register(node)
    engine = Engine(registry=registry, output_dir=tmp_path)
    workflow = {"1": {"class_type": "Source", "inputs": {}},
                "2": {"class_type": "Takes", "inputs": {"thing": ["1", 1], "size": 8}}}
    (issue,) = engine.validate(workflow)
    assert (issue.node_id, issue.input, issue.message) == ("2", "size", "not with a TEXT_THING")
    workflow["2"]["inputs"]["thing"] = ["1", 0]
    assert engine.validate(workflow) == []
    assert seen == [("TEXT_THING", None, None), ("INT", None, None)]  # a constant input has no linked type


def test_vae_encode_of_a_1x1_image_is_graphgens_message(tiny_models, tmp_path):
    Image.new("RGB", (1, 1)).save(tmp_path / "dot.png")
    result = Engine(output_dir=tmp_path / "out", models_dir=tiny_models.tutorial_models).run(
        IMG2IMG, overrides={"image": str(tmp_path / "dot.png"), "steps": 1, "precision": "fp32"})
    error = result.failed["4"]
    assert error.node_type == "VAEEncode" and "1×1" in error.message and "at least 8×8" in error.message
    assert error.error_type == "ValueError"
