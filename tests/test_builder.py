"""Authoring workflows in Python and saving them as JSON."""

from __future__ import annotations

import json

import pytest
from engine_nodes import make_registry

from graphgen import Engine, WorkflowBuilder, load_workflow


def test_builder_round_trip_and_run(tmp_path):
    b = WorkflowBuilder(title="sum", description="adds")
    one = b.add("Const", value=1, title="one")
    add = b.add("Add", a=one["value"], b=2)
    b.add("Show", value=add)
    b.parameter("base", one.input("value"), default=5, description="the first number")
    path = b.save(tmp_path / "wf.json")
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["format"] == "graphgen" and data["metadata"]["title"] == "sum"
    assert data["nodes"]["2"]["inputs"]["a"] == ["1", "value"]
    assert data["nodes"]["1"]["_meta"] == {"title": "one"}
    assert data["parameters"]["base"]["targets"] == ["1.value"]
    result = Engine(registry=make_registry()).run(load_workflow(path))
    assert result.ui["3"] == {"values": [{"value": 7}]}


def test_builder_ids_and_errors():
    b = WorkflowBuilder()
    b.add("Const", id=7)
    assert b.add("Const").id == "1"
    with pytest.raises(ValueError, match="already used"):
        b.add("Const", id="7")
    with pytest.raises(ValueError, match="must not contain"):
        b.parameter("a.b", "7.value")
    node = b.add("Text", text="x").set(text="y")
    assert b.build().nodes[node.id].inputs["text"] == "y"
