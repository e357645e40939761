"""ComfyUI editor (UI) workflows → graphgen: widgets, modes, virtual nodes, links v0.4/v1, subgraphs, PNGs.

Small torch-free nodes stand in for real ones, so every rule is checked on its own.
"""

from __future__ import annotations

import copy
import io
import json
import zlib

import pytest

from graphgen import Choice, Engine, Float, Input, Int, Link, Node, Output, Result, String, WorkflowError
from graphgen.comfy_ui import convert_file, is_ui_workflow, ui_to_workflow
from graphgen.png_workflow import png_text_chunks, read_png_workflow
from graphgen.registry import NodeRegistry
from graphgen.workflow import load_workflow


class Model(Node):
    inputs = [String("name", default="base")]
    outputs = [Output("MODEL", "model")]

    def run(self, name: str) -> str:
        return f"model:{name}"


class Lora(Node):
    inputs = [Link("model", "MODEL"), Float("strength", default=1.0, min=-10.0, max=10.0)]
    outputs = [Output("MODEL", "model")]

    def run(self, model: str, strength: float) -> str:
        return f"{model}+lora@{strength:g}"


class Sampler(Node):
    inputs = [Link("model", "MODEL"), Int("seed", default=0, min=0, max=2**64 - 1), Int("steps", default=20, min=1),
              Float("cfg", default=5.0), Choice("sampler", ["euler", "ddim"], default="euler"),
              Float("denoise", default=1.0, optional=True), Link("latent", "LATENT", optional=True)]
    outputs = [Output("LATENT", "latent")]

    def run(self, model: str, seed: int, steps: int, cfg: float, sampler: str, denoise: float = 1.0,
            latent: object = None) -> dict:
        return {"model": model, "seed": seed, "steps": steps, "cfg": cfg, "sampler": sampler, "denoise": denoise}


class Counter(Node):
    """An INT widget that is not a seed, followed by a text widget."""

    inputs = [Int("count", default=1), String("mode", default="")]
    outputs = [Output("STRING", "text")]

    def run(self, count: int, mode: str) -> str:
        return f"{count}:{mode}"


class Show(Node):
    output_node = True
    inputs = [Input("value", "*", force_link=True)]

    def run(self, value: object) -> Result:
        return Result(ui={"value": [value]})


def registry() -> NodeRegistry:
    reg = NodeRegistry()
    for node in (Model, Lora, Sampler, Counter, Show):
        reg.register(node, pack="test")
    return reg


REG = registry()


def node(id_, type_, widgets=None, inputs=(), outputs=(), mode=0, **extra):
    out = {"id": id_, "type": type_, "mode": mode, "pos": [0, 0], "size": [100, 50], "flags": {}, "order": 0,
           "inputs": [dict(i) for i in inputs], "outputs": [dict(o) for o in outputs], "properties": {}}
    if widgets is not None:
        out["widgets_values"] = widgets
    out.update(extra)
    return out


def inp(name, type_, link=None, widget=False):
    item = {"name": name, "type": type_, "link": link}
    if widget:
        item["widget"] = {"name": name}
    return item


def out(name, type_, links=()):
    return {"name": name, "type": type_, "links": list(links)}


def ui(nodes, links, version=0.4, **extra):
    return {"last_node_id": max(n["id"] for n in nodes), "last_link_id": max([link[0] for link in links] or [0]),
            "nodes": nodes, "links": links, "groups": [{"title": "a group", "bounding": [0, 0, 10, 10]}],
            "config": {}, "extra": {}, "version": version, **extra}


def basic(sampler_widgets=(5, "randomize", 30, 7.5, "ddim", 0.5)):
    """Model(1) → Sampler(2) → Show(3)."""
    return ui([
        node(1, "Model", ["mine"], outputs=[out("MODEL", "MODEL", [1])]),
        node(2, "Sampler", sampler_widgets if isinstance(sampler_widgets, dict) else list(sampler_widgets), inputs=[inp("model", "MODEL", 1), inp("latent", "LATENT")],
             outputs=[out("LATENT", "LATENT", [2])], title="My sampler"),
        node(3, "Show", inputs=[inp("value", "*", 2)]),
    ], [[1, 1, 0, 2, 0, "MODEL"], [2, 2, 0, 3, 0, "LATENT"]])


def run(data, engine=None):
    result = (engine or Engine(registry=REG)).run(data)
    assert result.ok, result.failed
    return result.ui["3"]["value"][0]


def test_positional_widgets_skip_the_seed_control_value_and_keep_titles():
    data = basic()
    assert is_ui_workflow(data)
    wf = ui_to_workflow(data, REG)
    assert wf.nodes["2"].inputs == {"model": ["1", 0], "seed": 5, "steps": 30, "cfg": 7.5, "sampler": "ddim",
                                    "denoise": 0.5}
    assert wf.nodes["2"].title == "My sampler" and wf.nodes["1"].title == "Model"
    assert wf.metadata["source_format"] == "comfyui-ui" and wf.metadata["comfyui_workflow"] == data
    assert run(data) == {"model": "model:mine", "seed": 5, "steps": 30, "cfg": 7.5, "sampler": "ddim", "denoise": 0.5}


@pytest.mark.parametrize("control", ["fixed", "randomize", "increment", "decrement", None])
def test_seed_control_value_is_optional_and_any_of_the_four_words(control):
    widgets = [2**63 + 5] + ([control] if control else []) + [3, 2.0, "euler"]
    inputs = ui_to_workflow(basic(widgets), REG).nodes["2"].inputs
    assert (inputs["seed"], inputs["steps"], inputs["cfg"], inputs["sampler"]) == (2**63 + 5, 3, 2.0, "euler")
    assert "denoise" not in inputs  # fewer values than widgets: the rest keep their defaults


def test_control_word_after_a_non_seed_int_is_a_value_when_the_next_widget_takes_text():
    data = ui([node(1, "Counter", [3, "fixed"], outputs=[out("STRING", "STRING", [1])]),
               node(3, "Show", inputs=[inp("value", "*", 1)])], [[1, 1, 0, 3, 0, "STRING"]])
    assert run(data) == "3:fixed"


def test_dict_widgets_values():
    data = basic({"seed": 9, "control_after_generate": "fixed", "steps": 4, "cfg": 1.5, "sampler": "euler",
                  "not_an_input": 1})
    assert run(data) == {"model": "model:mine", "seed": 9, "steps": 4, "cfg": 1.5, "sampler": "euler", "denoise": 1.0}


@pytest.mark.parametrize("layout", ["all_widgets", "linked_skipped"])
def test_primitive_node_value_goes_into_the_linked_widget_in_both_layouts(layout):
    data = basic([111, "fixed", 30, 7.5, "ddim"] if layout == "all_widgets" else [30, 7.5, "ddim"])
    sampler = data["nodes"][1]
    sampler["inputs"].insert(1, inp("seed", "INT", 3, widget=True))
    data["nodes"].append(node(4, "PrimitiveNode", [42, "increment"], outputs=[
        {"name": "INT", "type": "INT", "links": [3], "widget": {"name": "seed"}}]))
    data["links"].append([3, 4, 0, 2, 1, "INT"])
    wf = ui_to_workflow(data, REG)
    assert "4" not in wf.nodes
    assert wf.nodes["2"].inputs["seed"] == 42 and wf.nodes["2"].inputs["steps"] == 30
    assert wf.nodes["2"].inputs["sampler"] == "ddim"


def test_muted_nodes_are_dropped_and_bypassed_nodes_wired_through():
    data = basic()
    # Model(1) → Lora(5) → Sampler(2); a muted Show(6) hangs off the sampler.
    data["nodes"].append(node(5, "Lora", [0.7], inputs=[inp("model", "MODEL", 10)],
                              outputs=[out("MODEL", "MODEL", [11])]))
    data["nodes"].append(node(6, "Show", inputs=[inp("value", "*", 12)], mode=2))
    data["links"] = [[10, 1, 0, 5, 0, "MODEL"], [11, 5, 0, 2, 0, "MODEL"], [2, 2, 0, 3, 0, "LATENT"],
                     [12, 2, 0, 6, 0, "LATENT"]]
    data["nodes"][1]["inputs"][0]["link"] = 11
    assert run(copy.deepcopy(data))["model"] == "model:mine+lora@0.7"
    assert "6" not in ui_to_workflow(data, REG).nodes

    data["nodes"][3]["mode"] = 4  # bypass the LoRA: the sampler gets the base model
    wf = ui_to_workflow(data, REG)
    assert "5" not in wf.nodes and wf.nodes["2"].inputs["model"] == ["1", 0]
    assert run(data)["model"] == "model:mine"

    data["nodes"][3]["mode"] = 2  # mute it: the sampler's required model has no source
    with pytest.raises(WorkflowError) as caught:
        ui_to_workflow(data, REG)
    issue = caught.value.issues[0]
    assert issue.code == "input_from_muted_node" and issue.node_id == "2" and "muted" in issue.message

    data["nodes"][3]["mode"] = 4  # bypassed, but with nothing to pass through
    data["links"] = [link for link in data["links"] if link[0] != 10]
    data["nodes"][3]["inputs"][0]["link"] = None
    with pytest.raises(WorkflowError) as caught:
        ui_to_workflow(data, REG)
    assert caught.value.issues[0].code == "input_from_bypassed_node"
    assert "no connected input of type MODEL" in caught.value.issues[0].message


def test_bypass_prefers_the_input_of_the_same_type():
    class Mix(Node):
        inputs = [Input("text", "STRING", force_link=True), Link("model", "MODEL")]
        outputs = [Output("MODEL", "model"), Output("STRING", "text")]

        def run(self, text, model):
            return model, text

    reg = registry()
    reg.register(Mix, pack="test")
    data = basic()
    data["nodes"].append(node(5, "Mix", inputs=[inp("text", "STRING", 20), inp("model", "MODEL", 10)],
                              outputs=[out("MODEL", "MODEL", [11]), out("STRING", "STRING", [])], mode=4))
    data["nodes"].append(node(7, "Counter", [1, "x"], outputs=[out("STRING", "STRING", [20])]))
    data["links"] = [[10, 1, 0, 5, 1, "MODEL"], [11, 5, 0, 2, 0, "MODEL"], [2, 2, 0, 3, 0, "LATENT"],
                     [20, 7, 0, 5, 0, "STRING"]]
    data["nodes"][1]["inputs"][0]["link"] = 11
    assert ui_to_workflow(data, reg).nodes["2"].inputs["model"] == ["1", 0]


def test_reroutes_notes_and_groups():
    data = basic()
    data["nodes"] += [node(7, "Reroute", inputs=[inp("", "*", 1)], outputs=[out("", "MODEL", [8])]),
                      node(8, "Reroute", inputs=[inp("", "*", 8)], outputs=[out("", "MODEL", [9])]),
                      node(9, "Note", ["remember the milk"]),
                      node(10, "MarkdownNote", ["# title"])]
    data["links"] = [[1, 1, 0, 7, 0, "MODEL"], [8, 7, 0, 8, 0, "MODEL"], [9, 8, 0, 2, 0, "MODEL"],
                     [2, 2, 0, 3, 0, "LATENT"]]
    data["nodes"][1]["inputs"][0]["link"] = 9
    wf = ui_to_workflow(data, REG)
    assert sorted(wf.nodes) == ["1", "2", "3"]
    assert wf.nodes["2"].inputs["model"] == ["1", 0]
    assert wf.metadata["notes"] == ["remember the milk", "# title"]


def test_v1_links_as_objects():
    data = basic()
    data["version"] = 1
    data["links"] = [{"id": lid, "origin_id": o, "origin_slot": os_, "target_id": t, "target_slot": ts, "type": ty}
                     for lid, o, os_, t, ts, ty in data["links"]]
    del data["last_node_id"]
    assert is_ui_workflow(data)
    assert run(data)["seed"] == 5


def test_unknown_node_types_are_listed_at_once_with_close_names():
    data = basic()
    data["nodes"][1]["type"] = "Sampller"
    data["nodes"][0]["type"] = "FancyLoader"
    data["nodes"][0]["properties"] = {"cnr_id": "comfyui-fancy"}
    data["nodes"].append(node(9, "AlsoUnknown", mode=2))  # muted: never needed, not reported
    with pytest.raises(WorkflowError) as caught:
        ui_to_workflow(data, REG)
    issues = {i.node_id: i for i in caught.value.issues}
    assert sorted(issues) == ["1", "2"]
    assert all(i.code == "unknown_node_type" for i in issues.values())
    assert "'Sampler'" in issues["2"].hint
    assert "comfyui-fancy" in issues["1"].hint


def subgraph_workflow():
    """Model(1) → [subgraph instance 20: Lora(1) with a promoted strength] → Sampler(2) → Show(3)."""
    sub_id = "a1b2c3d4-0000-4000-8000-000000000001"
    definition = {
        "id": sub_id, "name": "LoRA block",
        "inputs": [{"id": "i0", "name": "model", "type": "MODEL", "linkIds": [1]},
                   {"id": "i1", "name": "strength", "type": "FLOAT", "linkIds": [2]}],
        "outputs": [{"id": "o0", "name": "MODEL", "type": "MODEL", "linkIds": [3]}],
        "nodes": [node(1, "Lora", [0.1], inputs=[inp("model", "MODEL", 1), inp("strength", "FLOAT", 2, widget=True)],
                       outputs=[out("MODEL", "MODEL", [3])])],
        "links": [{"id": 1, "origin_id": -10, "origin_slot": 0, "target_id": 1, "target_slot": 0, "type": "MODEL"},
                  {"id": 2, "origin_id": -10, "origin_slot": 1, "target_id": 1, "target_slot": 1, "type": "FLOAT"},
                  {"id": 3, "origin_id": 1, "origin_slot": 0, "target_id": -20, "target_slot": 0, "type": "MODEL"}],
    }
    data = basic()
    data["version"] = 1
    data["definitions"] = {"subgraphs": [definition]}
    data["nodes"].append(node(20, sub_id, [0.25], inputs=[inp("model", "MODEL", 30), inp("strength", "FLOAT", None,
                                                                                          widget=True)],
                              outputs=[out("MODEL", "MODEL", [31])]))
    data["links"] = [[30, 1, 0, 20, 0, "MODEL"], [31, 20, 0, 2, 0, "MODEL"], [2, 2, 0, 3, 0, "LATENT"]]
    data["nodes"][1]["inputs"][0]["link"] = 31
    return data


def test_subgraphs_are_expanded_with_their_inputs_outputs_and_promoted_widgets():
    data = subgraph_workflow()
    wf = ui_to_workflow(data, REG)
    assert sorted(wf.nodes) == ["1", "2", "20:1", "3"]
    assert wf.nodes["20:1"].inputs == {"model": ["1", 0], "strength": 0.25}
    assert wf.nodes["2"].inputs["model"] == ["20:1", 0]
    assert run(data)["model"] == "model:mine+lora@0.25"

    data["nodes"][-1]["mode"] = 4  # a bypassed instance is wired through like any bypassed node
    assert run(data)["model"] == "model:mine"


def test_load_workflow_needs_a_registry_for_ui_and_the_engine_converts(tmp_path):
    path = tmp_path / "ui.json"
    path.write_text(json.dumps(basic()))
    with pytest.raises(WorkflowError, match="UI"):
        load_workflow(path)
    assert load_workflow(path, REG).nodes["2"].inputs["steps"] == 30
    engine = Engine(registry=REG)
    assert engine.validate(path) == []
    assert run(str(path), engine)["steps"] == 30


def test_convert_file_writes_graphgen_or_api_json_and_never_overwrites(tmp_path):
    src = tmp_path / "ui.json"
    src.write_text(json.dumps(basic()))
    dst = convert_file(src, tmp_path / "out.json", REG)
    written = json.loads(dst.read_text())
    assert written["format"] == "graphgen" and written["metadata"]["title"] == "ui"
    assert "comfyui_workflow" not in written["metadata"]
    assert written["nodes"]["2"]["inputs"]["seed"] == 5 and written["nodes"]["2"]["_meta"]["title"] == "My sampler"
    assert run(dst) == run(basic())
    with pytest.raises(WorkflowError, match="already exists"):
        convert_file(src, dst, REG)
    api = json.loads(convert_file(src, tmp_path / "api.json", REG, api=True).read_text())
    assert api["2"]["class_type"] == "Sampler" and api["2"]["inputs"]["model"] == ["1", 0]
    assert run(tmp_path / "api.json") == run(basic())


# -- PNGs -----------------------------------------------------------------------------------

def png_with(chunks: dict[str, str], compressed: bool = False) -> bytes:
    from PIL import Image, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    for key, value in chunks.items():
        if compressed:
            info.add_itxt(key, value, zip=True)
        else:
            info.add_text(key, value)
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), (10, 20, 30)).save(buffer, "PNG", pnginfo=info)
    return buffer.getvalue()


def test_png_workflow_prefers_graphgen_then_api_prompt_then_ui(tmp_path):
    ui_data = basic()
    ui_data["nodes"][0]["widgets_values"] = ["中文模型"]
    api = {"1": {"class_type": "Model", "inputs": {"name": "api"}},
           "2": {"class_type": "Sampler", "inputs": {"model": ["1", 0], "seed": 1}},
           "3": {"class_type": "Show", "inputs": {"value": ["2", 0]}}}
    graphgen = {"format": "graphgen", "nodes": {**api, "1": {"class_type": "Model", "inputs": {"name": "graphgen"}}}}
    cases = [({"workflow": json.dumps(ui_data, ensure_ascii=False)}, "model:中文模型", True),
             ({"workflow": json.dumps(ui_data), "prompt": json.dumps(api)}, "model:api", False),
             ({"prompt": json.dumps(api), "graphgen_workflow": json.dumps(graphgen)}, "model:graphgen", False)]
    for index, (chunks, expected, compressed) in enumerate(cases):
        path = tmp_path / f"image{index}.png"
        path.write_bytes(png_with(chunks, compressed))
        assert set(png_text_chunks(path.read_bytes())) == set(chunks)
        assert run(path)["model"] == expected
    assert read_png_workflow(tmp_path / "image0.png") == json.loads(json.dumps(ui_data, ensure_ascii=False))


def test_png_without_workflow_or_corrupt_is_a_clear_error(tmp_path):
    plain = tmp_path / "plain.png"
    plain.write_bytes(png_with({"Software": "paint"}))
    with pytest.raises(WorkflowError, match="without an embedded workflow") as caught:
        load_workflow(plain)
    assert "Software" in str(caught.value)
    raw = bytearray(png_with({"prompt": json.dumps({"1": {"class_type": "Model", "inputs": {}}})}))
    raw[40] ^= 0xFF  # damage a chunk
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(bytes(raw))
    with pytest.raises(WorkflowError, match="corrupt PNG"):
        Engine(registry=REG).prepare(corrupt)
    bad_json = tmp_path / "bad.png"
    bad_json.write_bytes(png_with({"prompt": "{nope"}))
    with pytest.raises(WorkflowError, match="not valid JSON"):
        load_workflow(bad_json)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(png_with({"prompt": "{}"})[:30])
    with pytest.raises(WorkflowError, match="PNG"):
        load_workflow(truncated)
    assert zlib.crc32(b"IEND") == 0xAE426082  # sanity of the checksum the reader uses


@pytest.mark.parametrize("broken", [
    {"nodes": [{"id": 1, "type": "SaveImage", "inputs": 5}], "links": []},
    {"nodes": [{"id": 1, "type": "SaveImage", "outputs": 5}], "links": []},
    {"nodes": [{"id": 1, "type": "SaveImage"}], "links": [], "definitions": {"subgraphs": 5}},
])
def test_damaged_ui_workflows_are_workflow_errors(broken):
    """Reviewer's repro: these raised TypeError (exit 1) instead of a workflow issue (exit 2)."""
    from graphgen import Engine, WorkflowError

    with pytest.raises(WorkflowError):
        Engine().prepare(broken)
