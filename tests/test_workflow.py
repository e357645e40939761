"""Workflow formats: ComfyUI API as-is, wrapped API, graphgen format, links by name, schema."""

from __future__ import annotations

import json

import pytest
from engine_nodes import make_registry

from graphgen import Engine, WorkflowError, load_workflow
from graphgen.workflow import Link, detect_format, json_schema, parse_input

API = {
    "1": {"class_type": "Const", "inputs": {"value": 4}, "_meta": {"title": "four"}},
    "2": {"class_type": "Show", "inputs": {"value": ["1", 0]}},
}


def test_api_format_loads_as_is():
    wf = load_workflow(API)
    assert wf.nodes["1"].title == "four" and wf.nodes["2"].inputs["value"] == ["1", 0]
    assert detect_format(API) == "api"
    assert Engine(registry=make_registry()).run(wf).ui["2"] == {"values": [{"value": 4}]}


def test_wrapped_prompt_body_and_text_and_bytes():
    body = {"prompt": API, "client_id": "abc"}
    assert detect_format(body) == "api-wrapped"
    assert load_workflow(body).nodes.keys() == {"1", "2"}
    assert load_workflow(json.dumps(API)).nodes.keys() == {"1", "2"}
    assert load_workflow(("\ufeff" + json.dumps(API)).encode("utf-8")).nodes.keys() == {"1", "2"}


def test_graphgen_format_with_parameters_and_named_outputs(tmp_path):
    data = {
        "format": "graphgen", "version": 1, "metadata": {"title": "t"},
        "parameters": {"start": {"targets": ["1.value"], "default": 2, "description": "first number"}},
        "nodes": {"1": {"class_type": "Const"}, "2": {"class_type": "Add", "inputs": {"a": ["1", "value"], "b": 3}},
                  "3": {"class_type": "Show", "inputs": {"value": ["2", "sum"]}}},
    }
    path = tmp_path / "wf.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    engine = Engine(registry=make_registry())
    assert engine.run(path).ui["3"] == {"values": [{"value": 5}]}
    assert engine.run(path, overrides={"start": 10}).ui["3"] == {"values": [{"value": 13}]}


def test_constant_lists_are_wrapped():
    assert parse_input({"__value__": [1, 2]}) == [1, 2]
    assert parse_input(["3", 1]) == Link(node="3", output=1)
    assert parse_input([3, "latent"]) == Link(node="3", output="latent")
    with pytest.raises(ValueError, match="__value__"):
        parse_input([1, 2, 3])


def test_save_and_reload_round_trip(tmp_path):
    wf = load_workflow(API)
    path = wf.save(tmp_path / "sub" / "copy.json")
    assert load_workflow(path) == wf


def test_errors_are_workflow_errors(tmp_path):
    with pytest.raises(WorkflowError, match="not valid JSON"):
        load_workflow("{nope")
    with pytest.raises(WorkflowError, match="does not exist"):
        load_workflow(tmp_path / "missing.json")
    with pytest.raises(WorkflowError, match="folder"):
        load_workflow(tmp_path)
    png = tmp_path / "image.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    with pytest.raises(WorkflowError, match="PNG"):
        load_workflow(png)


def test_schema_describes_format():
    schema = json_schema()
    assert schema["properties"]["format"]["const"] == "graphgen" or "graphgen" in json.dumps(schema["properties"]["format"])
    assert "NodeEntry" in json.dumps(schema)
    assert "_meta" in json.dumps(schema)


def test_names_with_nul_are_workflow_errors():
    """Found by the fuzzer: os.stat raises ValueError, not OSError, for a NUL in a path."""
    from engine_nodes import make_registry

    from graphgen import Engine

    with pytest.raises(WorkflowError, match="NUL"):
        load_workflow("\x00")
    with pytest.raises(WorkflowError):
        Engine(registry=make_registry()).prepare("wf\x00.json")
