"""The shipped SD1.5/SDXL LoRA-training workflows, as a user runs them from the command line.

`graphgen tiny-models DIR` writes the tiny checkpoints and a kohya-style dataset and prints the
training commands; running exactly the printed SD1.5 command trains a LoRA (in the output folder
and in <models>/loras, kohya keys), writes sample grids and renders the prompt with and without
the LoRA (different images). Running it again reuses the LoRA and numbers new images;
`text_encoder_lr` adds the text-encoder keys. A confined (served) run works the same way.
"""

from __future__ import annotations

import contextlib
import io
import json
import shlex
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from safetensors import safe_open

from graphgen import Engine, cli
from graphgen.errors import WorkflowError

ROOT = Path(__file__).resolve().parent.parent
TRAIN_WORKFLOWS = {"sd15": ROOT / "workflows" / "sd15_train_lora.json",
                   "sdxl": ROOT / "workflows" / "sdxl_train_lora.json"}

# tiny models run faster single-threaded on a shared 2-core machine (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, list[str]]]:
    """`graphgen tiny-models DIR` once: the folder, and the printed `graphgen run` commands by workflow."""
    directory = tmp_path_factory.mktemp("tiny") / "models"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(["tiny-models", str(directory)]) == 0
    commands = {}
    for line in out.getvalue().splitlines():
        if line.strip().startswith("graphgen run workflows/"):
            argv = shlex.split(line.strip())
            commands[Path(argv[2]).stem] = argv
    return directory, commands


def run_printed(capsys: Any, command: list[str], out: Path, *extra: str) -> list[dict[str, Any]]:
    """Runs a printed command as `graphgen` would (from the repository, where workflows/ is), into `out`."""
    assert command[:2] == ["graphgen", "run"]
    code = cli.main([*command[1:], *extra, "--output-dir", str(out), "--json"])
    stdout, err = capsys.readouterr()
    assert code == 0, err + stdout[-2000:]
    return [json.loads(line) for line in stdout.splitlines()]


def node_ui(events: list[dict[str, Any]], node: str) -> dict[str, Any]:
    """The ui of a node's `node_finished` (or `node_cached`) event."""
    return next(e["ui"] for e in events if e.get("node_id") == node and e["event"] in ("node_finished", "node_cached"))


def pixels(path: str | Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB")).astype(np.int16)


def kohya_keys(path: Path) -> list[str]:
    with safe_open(str(path), "pt") as handle:
        return list(handle.keys())


def test_tiny_models_prints_runnable_sd_commands(tiny: Any, tmp_path: Path, capsys: Any,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    directory, commands = tiny
    monkeypatch.chdir(ROOT)
    for name in ("sd15_txt2img", "sdxl_txt2img"):
        events = run_printed(capsys, commands[name], tmp_path / "out")
        saved = [item["path"] for e in events if e["event"] == "node_finished" and e["ui"]
                 for item in e["ui"].get("images", [])]
        assert len(saved) == 1 and Image.open(saved[0]).size == (64, 64)
    assert {"sd15_txt2img", "sdxl_txt2img", "sd15_train_lora", "sdxl_train_lora"} <= set(commands)
    models = directory / "comfyui" / "models"
    for name in ("sd15_txt2img", "sdxl_txt2img", "sd15_train_lora", "sdxl_train_lora"):
        argv = commands[name]
        assert argv[argv.index("--models-dir") + 1] == str(models)
    for family in ("sd15", "sdxl"):
        ckpt = json.loads(TRAIN_WORKFLOWS[family].read_text(encoding="utf-8"))["parameters"]["ckpt"]["default"]
        assert (models / "checkpoints" / ckpt).is_file()  # the workflow's default checkpoint name
    # kohya's folder convention, mixed aspect ratios, a same-name caption per image
    folder = directory / "dataset" / "10_reddisc"
    images = sorted(folder.glob("*.png"))
    assert len(images) >= 4 and all(p.with_suffix(".txt").read_text(encoding="utf-8").strip() for p in images)
    ratios = {round(Image.open(p).width / Image.open(p).height, 2) for p in images}
    assert min(ratios) < 1 < max(ratios)
    assert f"dataset={directory / 'dataset'}" in commands["sd15_train_lora"]


def test_printed_sd15_training_command_trains_applies_and_reuses(tiny: Any, tmp_path: Path, capsys: Any,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    directory, commands = tiny
    monkeypatch.chdir(ROOT)  # the printed commands name workflows/... as the README does
    out = tmp_path / "out"
    events = run_printed(capsys, commands["sd15_train_lora"], out)

    train = node_ui(events, "10")
    lora = Path(train["lora"][0]["path"])
    published = directory / "comfyui" / "models" / "loras" / lora.name
    assert lora == out / "loras" / "sd15_lora.safetensors"
    assert Path(train["lora_in_models"][0]["path"]) == published and published.read_bytes() == lora.read_bytes()
    keys = kohya_keys(lora)
    assert any(k.startswith("lora_unet_") and k.endswith(".lora_down.weight") for k in keys)
    assert not any(k.startswith("lora_te") for k in keys)  # text_encoder_lr defaults to 0
    assert [p.name for p in sorted((out / "loras" / "sd15_lora.samples").glob("*.png"))] == [
        "step_000004.png", "step_000008.png"]
    buckets = {e["message"].split(" ")[1] for e in events if e["event"] == "node_info" and e["node_id"] == "10"
               and e["message"].startswith("bucket ")}
    assert len(buckets) == 3  # wide, tall and square buckets: no forced square crop

    with_lora = pixels(node_ui(events, "9")["images"][0]["path"])
    base = pixels(node_ui(events, "16")["images"][0]["path"])
    assert with_lora.shape == base.shape == (64, 64, 3)
    assert np.abs(with_lora - base).mean() > 1.0  # the trained LoRA changes the image (same seed)

    again = run_printed(capsys, commands["sd15_train_lora"], out)
    assert "reused sd15_lora.safetensors" in node_ui(again, "10")["text"][0]
    assert Path(node_ui(again, "9")["images"][0]["path"]).name == "lora_00002_.png"
    assert Path(node_ui(again, "16")["images"][0]["path"]).name == "base_00002_.png"
    assert np.array_equal(pixels(node_ui(again, "9")["images"][0]["path"]), with_lora)


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_printed_training_command_with_text_encoder_lr_writes_te_keys(
        family: str, tiny: Any, tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    _, commands = tiny
    monkeypatch.chdir(ROOT)
    events = run_printed(capsys, commands[f"{family}_train_lora"], tmp_path / "out",
                         "--set", "text_encoder_lr=1e-4", "--set", f"output_name={family}_te",
                         "--set", "sample_every_n_steps=0")
    keys = kohya_keys(Path(node_ui(events, "10")["lora"][0]["path"]))
    prefixes = {"sd15": ("lora_te_",), "sdxl": ("lora_te1_", "lora_te2_")}[family]
    for prefix in prefixes:
        assert any(k.startswith(prefix) for k in keys), prefix
    assert any(k.startswith("lora_unet_") for k in keys)
    assert node_ui(events, "9")["images"] and node_ui(events, "16")["images"]


def test_confined_run_reads_the_trained_lora_from_the_output_folder(tiny: Any, tmp_path: Path) -> None:
    """As `graphgen serve` runs it: files only inside the input, models and output folders."""
    import shutil

    directory, _ = tiny
    models = directory / "comfyui" / "models"
    shutil.copytree(directory / "dataset", tmp_path / "in" / "dataset")
    engine = Engine(output_dir=tmp_path / "out", input_dir=tmp_path / "in", models_dir=models)
    engine.settings.confine_paths = True
    small = {"dataset": "dataset", "output_name": "served", "train_height": 96, "train_width": 96,
             "min_bucket_reso": 64, "bucket_reso_steps": 32, "steps_per_epoch": 4, "sample_every_n_steps": 0,
             "learning_rate": 1e-3, "width": 64, "height": 64, "steps": 3}
    result = engine.run(engine.prepare(TRAIN_WORKFLOWS["sd15"], small))
    assert result.ok, result.failed
    assert result.output("10", "lora_path") == str(tmp_path / "out" / "loras" / "served.safetensors")
    assert (models / "loras" / "served.safetensors").is_file()
    assert result.ui["9"]["images"] and result.ui["16"]["images"]

    # outside the folders, the dataset is refused at validation, before anything loads
    with pytest.raises(WorkflowError, match=r"node 10 \(TrainLoRA\), input 'dataset_path'.*not available"):
        engine.prepare(TRAIN_WORKFLOWS["sd15"], {**small, "dataset": str(directory / "dataset")})


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_train_workflow_defaults_are_kohya_like(family: str, tiny: Any, capsys: Any) -> None:
    data = json.loads(TRAIN_WORKFLOWS[family].read_text(encoding="utf-8"))
    nodes, params = data["nodes"], data["parameters"]
    defaults = {name: p["default"] for name, p in params.items()}
    size = {"sd15": 512, "sdxl": 1024}[family]
    assert defaults["train_height"] == defaults["train_width"] == defaults["width"] == size
    assert (defaults["lora_rank"], defaults["lora_alpha"], defaults["network_modules"]) == (16, 8.0, "transformer")
    assert defaults["min_snr_gamma"] == 5.0 and defaults["text_encoder_lr"] == 0.0
    assert defaults["sample_every_n_steps"] > 0 and "10.sample_prompts" in params["prompt"]["targets"]
    # the trained LoRA is what LoraLoader applies; both images share the seed
    assert nodes["11"]["class_type"] == "LoraLoader" and nodes["11"]["inputs"]["lora_name"] == ["10", 1]
    assert {"3.seed", "14.seed"} <= set(params["seed"]["targets"])
    assert nodes["3"]["inputs"]["model"] == ["11", 0] and nodes["14"]["inputs"]["model"] == ["4", 0]
    assert {nodes[n]["inputs"]["filename_prefix"].rsplit("/", 1)[1] for n in ("9", "16")} == {"lora", "base"}

    # valid on the tiny models with the dataset; without one, the dataset input is named before anything loads
    directory, _ = tiny
    models = ["--models-dir", str(directory / "comfyui" / "models")]
    assert cli.main(["validate", str(TRAIN_WORKFLOWS[family]), *models,
                     "--set", f"dataset={directory / 'dataset'}"]) == 0, capsys.readouterr().err
    capsys.readouterr()
    assert cli.main(["validate", str(TRAIN_WORKFLOWS[family]), *models,
                     "--set", f"dataset={directory / 'nowhere'}"]) == 2
    err = capsys.readouterr().err
    assert "node 10 (TrainLoRA), input 'dataset_path'" in err and "nowhere" in err
