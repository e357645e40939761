"""The `graphgen` command: exit codes, readable errors, no tracebacks, plugins from folders."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from graphgen import cli

DATA = Path(__file__).parent / "data"
PLUGINS = str(DATA / "plugins")
BROKEN = sorted((DATA / "broken").glob("*.json"))
ROOT = Path(__file__).resolve().parent.parent


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_corpus_is_big_enough():
    assert len(BROKEN) >= 25


@pytest.mark.parametrize("path", BROKEN, ids=[p.name for p in BROKEN])
def test_validate_broken_workflow_exits_2_with_readable_error(capsys, path):
    code, out, err = run_cli(capsys, "validate", str(path), "--plugins", PLUGINS)
    assert code == 2
    assert "Traceback" not in out + err
    lines = [line for line in err.splitlines() if line.strip().startswith("✗")]
    assert lines, err
    assert all(len(line) < 2000 for line in lines)


@pytest.mark.parametrize("path", BROKEN[:8], ids=[p.name for p in BROKEN[:8]])
def test_validate_json_output_is_structured(capsys, path):
    code, out, _ = run_cli(capsys, "validate", str(path), "--plugins", PLUGINS, "--json")
    assert code == 2
    report = json.loads(out)
    assert report["valid"] is False
    for issue in report["issues"]:
        assert set(issue) == {"code", "message", "node_id", "node_type", "input", "hint"}


def test_many_errors_reported_at_once(capsys):
    code, out, _ = run_cli(capsys, "validate", str(DATA / "broken" / "many_errors.json"), "--plugins", PLUGINS, "--json")
    codes = sorted(i["code"] for i in json.loads(out)["issues"])
    assert codes == ["invalid_constant_type", "link_to_missing_node", "unknown_input", "unknown_node_type",
                     "value_not_in_list"]


def write(tmp_path: Path, data: dict) -> str:
    path = tmp_path / "wf.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return str(path)


CLASSIC = {
    "1": {"class_type": "StringRepeat", "inputs": {"text": "ab", "times": 3, "mode": "upper"}},
    "2": {"class_type": "SaveText", "inputs": {"text": ["1", 0]}},
}


def test_run_classic_plugin_from_cli_with_json_events(capsys, tmp_path):
    code, out, err = run_cli(capsys, "run", write(tmp_path, CLASSIC), "--plugins", PLUGINS, "--json",
                             "--output-dir", str(tmp_path / "out"))
    assert code == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    assert events[0]["event"] == "run_started" and events[-1]["event"] == "run_finished"
    finished = [e for e in events if e["event"] == "node_finished" and e["node_id"] == "2"]
    assert finished[0]["ui"] == {"text": ["ABABAB"], "node": ["2"], "prompt_nodes": [["1", "2"]]}


def test_run_with_set_override_and_rich_view(capsys, tmp_path):
    code, out, _ = run_cli(capsys, "run", write(tmp_path, CLASSIC), "--plugins", PLUGINS, "--set", "1.times=1",
                           "--set", "1.text=123")
    assert code == 0
    assert "success" in out and "2 executed" in out


def test_set_text_input_keeps_text(capsys, tmp_path):
    code, out, _ = run_cli(capsys, "run", write(tmp_path, CLASSIC), "--plugins", PLUGINS, "--json",
                           "--set", "1.text=007", "--set", "1.mode=plain", "--set", "1.times=1")
    ui = [json.loads(line) for line in out.splitlines() if '"node_finished"' in line][-1]["ui"]
    assert ui["text"] == ["007"]


def test_bad_set_is_usage_error(capsys, tmp_path):
    code, _, err = run_cli(capsys, "run", write(tmp_path, CLASSIC), "--plugins", PLUGINS, "--set", "nothing")
    assert code == 2 and "KEY=VALUE" in err
    code, _, err = run_cli(capsys, "run", write(tmp_path, CLASSIC), "--plugins", PLUGINS, "--set", "1.nope=3")
    assert code == 2 and "has no input 'nope'" in err


def test_node_failure_exits_1_without_traceback(capsys, tmp_path):
    wf = {"1": {"class_type": "StringRepeat", "inputs": {"text": "ab", "times": 3, "mode": "plain"}},
          "2": {"class_type": "Combine", "inputs": {"a": ["1", 1], "b": 0, "op": "mul"}},
          "3": {"class_type": "PrintNumber", "inputs": {"value": ["2", 0]}}}
    plugin = tmp_path / "plugins"
    plugin.mkdir()
    (plugin / "broken_node.py").write_text(
        "class Explode:\n"
        "    @classmethod\n"
        "    def INPUT_TYPES(cls):\n"
        "        return {'required': {'x': ('INT', {'default': 0})}}\n"
        "    RETURN_TYPES = ()\n    FUNCTION = 'go'\n    OUTPUT_NODE = True\n"
        "    def go(self, x):\n        raise ValueError('cannot explode ' + str(x))\n"
        "NODE_CLASS_MAPPINGS = {'Explode': Explode}\n", encoding="utf-8")
    wf["4"] = {"class_type": "Explode", "inputs": {"x": 3}}
    code, out, err = run_cli(capsys, "run", write(tmp_path, wf), "--plugins", PLUGINS, "--plugins", str(plugin))
    assert code == 1
    assert "cannot explode 3" in out and "Traceback" not in out + err
    assert "1 failed" in out and "3 executed" in out


def test_collision_between_packs_is_reported(capsys, tmp_path):
    other = tmp_path / "other"
    (other / "dup_pack").mkdir(parents=True)
    (other / "dup_pack" / "__init__.py").write_text(
        "from graphgen import Node, Int, Output\n"
        "class Number(Node):\n    inputs=[Int('value', default=5)]\n    outputs=[Output('INT','value')]\n"
        "    def run(self, value):\n        return value * 100\n"
        "NODES=[Number]\n", encoding="utf-8")
    wf = {"1": {"class_type": "Number", "inputs": {}}, "2": {"class_type": "PrintNumber", "inputs": {"value": ["1", 0]}}}
    code, out, err = run_cli(capsys, "validate", write(tmp_path, wf), "--plugins", PLUGINS, "--plugins", str(other))
    assert code == 2
    assert "'math_pack'" in err and "'dup_pack'" in err and "neither overwrites" in err
    assert "ambiguous" in err or "several packs" in err
    wf["1"]["class_type"] = "dup_pack/Number"
    code, out, err = run_cli(capsys, "run", write(tmp_path, wf), "--plugins", PLUGINS, "--plugins", str(other), "--json")
    assert code == 0
    ui = [json.loads(line) for line in out.splitlines() if '"node_finished"' in line][-1]["ui"]
    assert ui == {"text": ["500"]}


def test_nodes_lists_and_describes(capsys):
    code, out, _ = run_cli(capsys, "nodes", "--plugins", PLUGINS, "--json")
    names = {n["type"] for n in json.loads(out)}
    assert {"StringRepeat", "SaveText", "Number", "Combine"} <= names
    code, out, _ = run_cli(capsys, "nodes", "Combine", "--plugins", PLUGINS, "--json")
    info = json.loads(out)
    assert [i["name"] for i in info["inputs"]] == ["a", "b", "op", "gain"]
    assert info["inputs"][3]["max"] == 4.0 and info["inputs"][2]["choices"] == ["add", "mul"]
    code, out, _ = run_cli(capsys, "nodes", "Combine", "--plugins", PLUGINS)
    assert code == 0 and "gain" in out
    code, out, _ = run_cli(capsys, "nodes", "--plugins", PLUGINS)  # piped: tab-separated lines for grep/cut
    lines = out.splitlines()
    assert code == 0 and lines[0].split("\t") == ["type", "category", "pack", "inputs", "outputs"]
    combine = next(line.split("\t") for line in lines if line.startswith("Combine\t"))
    assert combine[3] == "a, b, op, gain" and all(len(line) < 400 for line in lines[:3])
    code, _, err = run_cli(capsys, "nodes", "Combin", "--plugins", PLUGINS)
    assert code == 2 and "did you mean Combine" in err


def test_schema_is_json_schema(capsys):
    code, out, _ = run_cli(capsys, "schema")
    schema = json.loads(out)
    assert code == 0 and "nodes" in schema["properties"] and schema["title"] == "graphgen workflow"


def test_missing_workflow_and_missing_plugin_dir(capsys, tmp_path):
    code, _, err = run_cli(capsys, "run", str(tmp_path / "nope.json"))
    assert code == 2 and "does not exist" in err
    code, _, err = run_cli(capsys, "run", str(tmp_path / "nope.json"), "--plugins", str(tmp_path / "none"))
    assert code == 2 and "no such folder" in err


def test_console_script_subprocess_exit_codes(tmp_path):
    """The installed command, as a user runs it: exit code 2 and no traceback."""
    env = dict(os.environ, GRAPHGEN_PLUGIN_PATH=PLUGINS)
    broken = subprocess.run([sys.executable, str(ROOT / "cli.py"), "validate", str(DATA / "broken" / "cycle.json")],
                            capture_output=True, text=True, env=env, timeout=120)
    assert broken.returncode == 2 and "cycle" in broken.stderr and "Traceback" not in broken.stderr
    good = subprocess.run([sys.executable, str(ROOT / "cli.py"), "run", write(tmp_path, CLASSIC), "--json"],
                          capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)
    assert good.returncode == 0, good.stderr


def test_ctrl_c_stops_cleanly_at_the_next_step(tmp_path):
    import signal
    import time

    wf = {"1": {"class_type": "SlowCount", "inputs": {"steps": 2000, "ms": 10}},
          "2": {"class_type": "ShowCount", "inputs": {"count": ["1", 0]}}}
    env = dict(os.environ, GRAPHGEN_PLUGIN_PATH=PLUGINS, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, str(ROOT / "cli.py"), "run", write(tmp_path, wf), "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    assert proc.stdout is not None
    deadline = time.time() + 60
    for line in proc.stdout:  # wait until the node is really stepping
        if '"node_progress"' in line or time.time() > deadline:
            break
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "cancelling" in err
    last = json.loads(out.strip().splitlines()[-1])
    assert last["event"] == "run_finished" and last["status"] == "cancelled"


def test_tiny_models_prints_commands_that_run_the_shipped_workflows(capsys, tmp_path, monkeypatch):
    import shlex

    code, out, _ = run_cli(capsys, "tiny-models", str(tmp_path / "tiny"))
    assert code == 0
    printed = [shlex.split(line.strip()) for line in out.splitlines()
               if line.strip().startswith("graphgen run workflows/kolors_")]
    assert len(printed) == 3  # one per Kolors layout (the SD ones: tests/test_train_lora_workflows.py)
    assert any("--models-dir" in c and c[c.index("--models-dir") + 1].endswith("tutorial/models") for c in printed)
    monkeypatch.chdir(ROOT)  # the commands name workflows/... as in the README
    for index, command in enumerate(printed):
        argv = command[1:] + ["--output-dir", str(tmp_path / "out"), "--json"]
        if index:  # one full run is enough; the others must at least pass validation
            argv = ["validate", *[a for a in argv[1:] if a not in ("--output-dir", str(tmp_path / "out"))]]
        code, out, err = run_cli(capsys, *argv)
        assert code == 0, err + out[-1500:]
    assert sorted((tmp_path / "out").rglob("*.png"))


@pytest.mark.parametrize("suffix", [".png", ".ckpt", ".safetensors"])
def test_lora_convert_of_a_photo_is_a_clear_error_without_pytorchs_advice(capsys, tmp_path, suffix):
    from PIL import Image

    photo = tmp_path / f"photo{suffix}"
    Image.new("RGB", (8, 8)).save(photo, format="PNG")
    code, out, err = run_cli(capsys, "lora", "convert", str(photo), str(tmp_path / "x.safetensors"), "--to", "kohya")
    assert code == 2 and "Traceback" not in err
    assert "weights_only" not in err.replace("weights_only=True", "") and "Re-running" not in err
    assert len(err.strip().splitlines()) == 1
    if suffix != ".safetensors":
        assert "is a PNG image, not a weights file" in err


def test_nodes_json_into_a_pipe_that_closes_early_exits_quietly():
    import subprocess

    process = subprocess.Popen([sys.executable, "-c", "import sys; from graphgen import cli; sys.exit(cli.main(['nodes', '--json']))"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    process.stdout.close()  # `| head -1` that already went away: every write fails with EPIPE
    err = process.stderr.read().decode()
    assert process.wait(timeout=120) == 0, err
    assert err == ""


def test_piped_output_is_not_wrapped(capsys, tmp_path):
    from graphgen.console import make_console

    console = make_console()  # capsys: stdout is not a terminal
    long_path = str(tmp_path / ("a-very-long-folder-name-" * 12) / "image.png")
    console.print(f"saved {long_path}")
    assert f"saved {long_path}\n" == capsys.readouterr().out


def test_a_plugin_defining_a_builtin_name_does_not_take_it(capsys, tmp_path, tiny_models):
    plugins = tmp_path / "plugins"
    (plugins / "mypack").mkdir(parents=True)
    (plugins / "mypack" / "__init__.py").write_text(
        "from graphgen import Node, Input, Result\n"
        "class SaveImage(Node):\n"
        "    '''The plugin's own saver.'''\n"
        "    output_node = True\n"
        "    inputs = [Input('images', 'IMAGE', force_link=True)]\n"
        "    def run(self, images):\n"
        "        return Result(ui={'text': ['saved by mypack']})\n"
        "NODES = [SaveImage]\n", encoding="utf-8")
    code, out, err = run_cli(capsys, "nodes", "--plugins", str(plugins), "--json")
    assert code == 0
    listed = {n["type"]: n for n in json.loads(out)}
    assert listed["SaveImage"]["pack"] == "core" and listed["mypack/SaveImage"]["pack"] == "mypack"
    assert "'mypack/SaveImage'" in err and "built-in" in err

    code, out, err = run_cli(capsys, "nodes", "SaveImage", "--plugins", str(plugins))
    assert code == 0 and "pack core" in out
    code, out, err = run_cli(capsys, "nodes", "mypack/SaveImage", "--plugins", str(plugins))
    assert code == 0 and "The plugin's own saver" in out

    shipped = str(ROOT / "workflows" / "kolors_txt2img.json")
    code, out, err = run_cli(capsys, "validate", shipped, "--plugins", str(plugins),
                             "--models-dir", str(tiny_models.tutorial_models))
    assert code == 0, err
    data = json.loads((ROOT / "workflows" / "kolors_txt2img.json").read_text(encoding="utf-8"))
    data["nodes"]["7"]["class_type"] = "mypack/SaveImage"
    del data["parameters"]["prefix"]  # the plugin's saver takes no prefix
    code, out, err = run_cli(capsys, "validate", write(tmp_path, data), "--plugins", str(plugins),
                             "--models-dir", str(tiny_models.tutorial_models))
    assert code == 0, err


def test_readme_node_example_shows_its_result(capsys, tmp_path):
    import re

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Writing nodes"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    workflow = re.search(r"`(\{\"1\": \{\"class_type\": \"Repeat\".*?)`", section).group(1)
    (tmp_path / "plugins" / "mypack").mkdir(parents=True)
    (tmp_path / "plugins" / "mypack" / "__init__.py").write_text(code, encoding="utf-8")
    (tmp_path / "hello.json").write_text(workflow, encoding="utf-8")
    base = ["run", str(tmp_path / "hello.json"), "--plugins", str(tmp_path / "plugins"),
            "--output-dir", str(tmp_path / "out")]
    status, out, err = run_cli(capsys, *base)
    assert status == 0, err
    assert "text: hi hi hi" in out
    assert "9 characters" in out  # the example's ctx.info line
    status, out, err = run_cli(capsys, *base, "--json")
    finished = [json.loads(line) for line in out.splitlines() if '"node_finished"' in line]
    assert [e["ui"] for e in finished if e["node_id"] == "2"] == [{"text": ["hi hi hi "]}]


def test_text_of_a_cached_output_node_is_shown_again(tmp_path):
    import io

    from rich.console import Console

    from graphgen import Engine, Input, Node, Result
    from graphgen.console import RunView
    from graphgen.registry import NodeRegistry

    class Say(Node):
        output_node = True
        inputs = [Input("text", "STRING")]

        def run(self, text: str) -> Result:
            return Result(ui={"text": [text.upper()]})

    registry = NodeRegistry()
    registry.register(Say)
    engine = Engine(registry=registry, output_dir=tmp_path)
    workflow = {"1": {"class_type": "Say", "inputs": {"text": "hello"}}}
    shown = []
    for _ in range(2):
        stream = io.StringIO()
        events = []
        with RunView(Console(file=stream, width=200)) as view:
            engine.run(workflow, on_event=lambda e, view=view, events=events: (events.append(e.to_dict()), view(e)))
        shown.append(stream.getvalue())
        assert [e["ui"] for e in events if e["event"] in ("node_finished", "node_cached")] == [{"text": ["HELLO"]}]
    assert "cached" in shown[1]
    assert all("text: HELLO" in text for text in shown)


def test_overall_eta_follows_a_long_node(tmp_path):
    import io

    from rich.console import Console

    from graphgen.console import EtaColumn, RunView
    from graphgen.events import NodeFinished, NodeProgress, NodeStarted, RunStarted

    now = [0.0]
    view = RunView(Console(file=io.StringIO(), width=200), clock=lambda: now[0])
    with view:
        view(RunStarted(run_id="r", nodes=["1", "2", "3", "4"], node_types={"1": "Load", "2": "Load", "3": "Train",
                                                                             "4": "Save"}))
        for node in ("1", "2"):  # two quick loaders
            view(NodeStarted(run_id="r", node_id=node))
            now[0] += 0.5
            view(NodeFinished(run_id="r", node_id=node, seconds=0.5))
        view(NodeStarted(run_id="r", node_id="3"))
        now[0] += 20.0
        view(NodeProgress(run_id="r", node_id="3", value=10, total=100))  # 20 s for 10 % of the training
        overall = view.progress.tasks[0]
        assert overall.fields["eta"] == pytest.approx(180.0 + 0.5)  # 90 % of the node left, then one quick node
        assert str(EtaColumn().render(overall)) == "0:03:01"
        now[0] += 160.0
        view(NodeProgress(run_id="r", node_id="3", value=90, total=100))
        assert view.progress.tasks[0].fields["eta"] == pytest.approx(20.0 + 0.5)


def test_the_command_is_installed_from_inside_graphgen():
    import subprocess

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert project["project"]["scripts"]["graphgen"] == "graphgen.cli:main"
    assert "cli" not in project["tool"]["setuptools"].get("py-modules", [])
    for argv in ([sys.executable, "-m", "graphgen", "--version"], [sys.executable, str(ROOT / "cli.py"), "--version"]):
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=ROOT / "tests")
        assert done.returncode == 0 and done.stdout.startswith("graphgen "), done.stderr


def test_nodes_names_the_packs_of_an_ambiguous_type(capsys, tmp_path):
    for pack in ("one", "two"):
        (tmp_path / pack).mkdir()
        (tmp_path / pack / "__init__.py").write_text(
            "from graphgen import Node, Output\n"
            "class Shared(Node):\n    outputs = [Output('INT')]\n    def run(self):\n        return 1\n"
            "NODES = [Shared]\n", encoding="utf-8")
    code, out, err = run_cli(capsys, "nodes", "Shared", "--plugins", str(tmp_path))
    assert code == 2 and "one/Shared or two/Shared" in err and "did you mean" not in err
    code, out, err = run_cli(capsys, "nodes", "--plugins", str(tmp_path), "--json")
    assert {"one/Shared", "two/Shared"} <= {n["type"] for n in json.loads(out)}


def test_info_lines_are_shown_apart_from_warnings(tmp_path):
    import io

    from rich.console import Console

    from graphgen import Engine, Node, Result
    from graphgen.console import RunView
    from graphgen.registry import NodeRegistry

    class Report(Node):
        output_node = True

        def run(self) -> Result:
            self.ctx.info("bucket 128x64: 3 images")
            self.ctx.warn("2 images skipped")
            return Result()

    registry = NodeRegistry()
    registry.register(Report)
    stream, events = io.StringIO(), []
    with RunView(Console(file=stream, width=200)) as view:
        result = Engine(registry=registry, output_dir=tmp_path).run(
            {"1": {"class_type": "Report", "inputs": {}}}, on_event=lambda e: (events.append(e.to_dict()), view(e)))
    kinds = {e["message"]: e["event"] for e in events if "message" in e and e["event"] in ("node_info", "node_warning")}
    assert kinds == {"bucket 128x64: 3 images": "node_info", "2 images skipped": "node_warning"}
    assert result.warnings == {"1": ["2 images skipped"]}
    assert "bucket 128x64" not in str(result.warnings)
    shown = stream.getvalue()
    assert "i " in shown and "bucket 128x64: 3 images" in shown and "! " in shown


def test_a_shipped_workflow_named_from_another_folder_is_found(capsys, tmp_path, monkeypatch):
    """`graphgen run workflows/NAME.json` as the README and tiny-models print it, from a scratch folder."""
    monkeypatch.chdir(tmp_path)
    status, out, err = run_cli(capsys, "validate", "workflows/sd15_txt2img.json", "--json")
    assert "using the shipped" in err and str(ROOT / "workflows" / "sd15_txt2img.json") in err
    assert json.loads(out)["valid"] is False  # found and checked: only its checkpoint is missing here
    assert "v1-5-pruned-emaonly" in out
    (tmp_path / "workflows").mkdir()
    (tmp_path / "workflows" / "sd15_txt2img.json").write_text("{}", encoding="utf-8")  # the user's own file wins
    status, out, err = run_cli(capsys, "validate", "workflows/sd15_txt2img.json", "--json")
    assert "using the shipped" not in err
    status, _, err = run_cli(capsys, "validate", "workflows/no_such_workflow.json")
    assert status == 2 and "does not exist" in err
