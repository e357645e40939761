"""graphgen.formats: one widget rule for reading and writing ComfyUI's editor format (round-trip
over random node declarations), long reroute/bypass chains, and ComfyUI's API format written by
`graphgen convert --api`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from graphgen.comfy_ui import convert_file, ui_to_workflow
from graphgen.formats import api_prompt, widget_inputs
from graphgen.registry import NodeRegistry
from graphgen.server.object_info import node_definition
from graphgen.server.templates import workflow_to_ui
from graphgen.spec import (
    BOOLEAN,
    COMBO,
    FLOAT,
    INT,
    STRING,
    ExecutionOutcome,
    InputSpec,
    NodeSpec,
    OutputSpec,
)
from graphgen.workflow import Workflow

ROOT = Path(__file__).resolve().parents[1]


def _spec(name: str, inputs: list[InputSpec], outputs: list[OutputSpec]) -> NodeSpec:
    return NodeSpec(type_name=name, inputs={i.name: i for i in inputs}, outputs=outputs,
                    execute=lambda ctx, kwargs: ExecutionOutcome(values=()))


SOURCE = _spec("Source", [], [OutputSpec("INT", "int"), OutputSpec("LATENT", "latent"), OutputSpec("STRING", "text")])

# -- random node declarations ------------------------------------------------------------------------

NAMES = st.sampled_from(["seed", "noise_seed", "steps", "cfg", "text", "mode", "flag", "latent", "strength",
                         "width", "prefix", "sampler", "denoise", "extra"])
WORDS = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)


@st.composite
def declaration(draw: Any) -> tuple[NodeSpec, dict[str, Any]]:
    """A node type with random inputs (kinds, optional or not, in any order) and values for them."""
    names = draw(st.lists(NAMES, min_size=1, max_size=8, unique=True))
    inputs: list[InputSpec] = []
    values: dict[str, Any] = {}
    for name in names:
        kind = draw(st.sampled_from([INT, FLOAT, STRING, BOOLEAN, COMBO, "LATENT"]))
        optional = draw(st.booleans())
        linked = kind in (INT, STRING, "LATENT") and draw(st.booleans()) if kind != "LATENT" else True
        if kind == INT:
            spec = InputSpec(name, INT, default=0, min=-1000, max=10**6, optional=optional)
            value: Any = draw(st.integers(-1000, 10**6))
        elif kind == FLOAT:
            spec = InputSpec(name, FLOAT, default=1.0, optional=optional)
            value = draw(st.floats(-1e6, 1e6, allow_nan=False))
        elif kind == STRING:
            spec = InputSpec(name, STRING, default="", optional=optional)
            value = draw(WORDS)
        elif kind == BOOLEAN:
            spec = InputSpec(name, BOOLEAN, default=False, optional=optional)
            value = draw(st.booleans())
        elif kind == COMBO:
            choices = draw(st.lists(st.sampled_from(["euler", "ddim", "fixed", "a b", "x"]), min_size=1,
                                    max_size=4, unique=True))
            spec = InputSpec(name, COMBO, choices=choices, default=choices[0], optional=optional)
            value = draw(st.sampled_from(choices))
        else:
            spec = InputSpec(name, "LATENT", optional=optional)
            value = None
        inputs.append(spec)
        if linked and (kind != "LATENT" or not optional or draw(st.booleans())):
            values[name] = ["1", {INT: 0, "LATENT": 1, STRING: 2}[kind]]
        elif kind != "LATENT":
            values[name] = value
    return _spec("Random", inputs, [OutputSpec("INT", "out")]), values


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(declaration())
def test_editor_format_round_trips_any_node_declaration(case):
    spec, values = case
    registry = NodeRegistry()
    registry.register(SOURCE, pack="t")
    registry.register(spec, pack="t")
    workflow = Workflow.model_validate({"nodes": {"1": {"class_type": "Source", "inputs": {}},
                                                  "2": {"class_type": "Random", "inputs": values}}})
    ui = workflow_to_ui(workflow, registry)
    back = ui_to_workflow(json.loads(json.dumps(ui)), registry)
    assert back.nodes["2"].inputs == values
    # /object_info announces the widgets in the order the editor file holds them.
    definition = node_definition(registry.get("Random"))
    announced = [name for section in ("required", "optional")
                 for name in definition["input_order"].get(section, [])]
    widgets = [i.name for i in widget_inputs(registry.get("Random"))]
    assert [name for name in announced if name in widgets] == widgets


def test_optional_before_required_keeps_its_values():
    """The case that used to swap values silently: an optional widget declared first."""
    spec = _spec("Mixed", [InputSpec("strength", FLOAT, default=1.0, optional=True),
                           InputSpec("steps", INT, default=20)], [])
    registry = NodeRegistry()
    registry.register(spec, pack="t")
    workflow = Workflow.model_validate({"nodes": {"1": {"class_type": "Mixed",
                                                        "inputs": {"strength": 0.25, "steps": 7}}}})
    ui = workflow_to_ui(workflow, registry)
    assert ui["nodes"][0]["widgets_values"] == [7, 0.25]  # required first, as the editor lays them out
    assert ui_to_workflow(ui, registry).nodes["1"].inputs == {"strength": 0.25, "steps": 7}


# -- long chains in editor files (issue 10) -----------------------------------------------------------

def _chain_ui(count: int, kind: str) -> dict[str, Any]:
    nodes = [{"id": 1, "type": "Source", "mode": 0, "inputs": [], "outputs": [
        {"name": "int", "type": "INT", "links": [1]}], "widgets_values": []}]
    links = []
    for index in range(count):
        node_id = index + 2
        links.append([index + 1, node_id - 1, 0, node_id, 0, "INT"])
        if kind == "reroute":
            nodes.append({"id": node_id, "type": "Reroute", "mode": 0, "inputs": [{"name": "", "type": "*",
                          "link": index + 1}], "outputs": [{"name": "", "type": "INT", "links": [index + 2]}]})
        else:
            nodes.append({"id": node_id, "type": "Pass", "mode": 4, "inputs": [{"name": "value", "type": "INT",
                          "link": index + 1}], "outputs": [{"name": "out", "type": "INT", "links": [index + 2]}],
                          "widgets_values": []})
    last = count + 2
    links.append([count + 1, last - 1, 0, last, 0, "INT"])
    nodes.append({"id": last, "type": "Pass", "mode": 0, "inputs": [{"name": "value", "type": "INT",
                  "link": count + 1}], "outputs": [], "widgets_values": []})
    return {"last_node_id": last, "last_link_id": count + 1, "nodes": nodes, "links": links, "version": 0.4}


def test_five_thousand_chained_reroutes_or_bypassed_nodes_convert():
    registry = NodeRegistry()
    registry.register(SOURCE, pack="t")
    registry.register(_spec("Pass", [InputSpec("value", INT, force_link=True)], [OutputSpec("INT", "out")]),
                      pack="t")
    for kind in ("reroute", "bypass"):
        workflow = ui_to_workflow(_chain_ui(5000, kind), registry)
        assert list(workflow.nodes) == ["1", "5002"]
        assert workflow.nodes["5002"].inputs == {"value": ["1", 0]}


# -- ComfyUI's API format ------------------------------------------------------------------------------

def test_api_prompt_has_index_links_every_value_and_the_parameters(tmp_path):
    registry = NodeRegistry()
    registry.register(SOURCE, pack="t")
    registry.register(_spec("Use", [InputSpec("text", STRING, default="hello"), InputSpec("n", INT, default=3),
                                    InputSpec("latent", "LATENT"), InputSpec("seed", INT, default=0)], []),
                      pack="t")
    source = {"format": "graphgen", "parameters": {"seed": {"targets": ["2.seed"], "default": 42},
                                                   "text": {"targets": ["2.text"], "default": "a cat"}},
              "nodes": {"1": {"class_type": "Source", "inputs": {}},
                        "2": {"class_type": "Use", "inputs": {"latent": ["1", "latent"]}}}}
    path = tmp_path / "wf.json"
    path.write_text(json.dumps(source))
    written = json.loads(convert_file(path, tmp_path / "api.json", registry, api=True).read_text())
    assert written["2"]["inputs"] == {"text": "a cat", "n": 3, "latent": ["1", 1], "seed": 42}
    assert api_prompt(Workflow.model_validate(source), registry) == written


def test_convert_api_on_a_shipped_workflow_keeps_its_values(tmp_path):
    from graphgen import cli

    target = tmp_path / "api.json"
    assert cli.main(["convert", str(ROOT / "workflows" / "kolors_txt2img.json"), str(target), "--api"]) == 0
    api = json.loads(target.read_text())
    assert api["5"]["inputs"]["seed"] == 66 and api["5"]["inputs"]["steps"] == 25
    assert api["3"]["inputs"]["prompt"].startswith("一张瓢虫的照片")
    assert api["7"]["inputs"]["filename_prefix"] == "kolors/txt2img"
    links = [v for node in api.values() for v in node["inputs"].values() if isinstance(v, list)]
    assert links and all(isinstance(v[0], str) and type(v[1]) is int for v in links)
