"""List mapping (INPUT_IS_LIST / OUTPUT_IS_LIST) and ExecutionBlocker, in both node styles."""

from __future__ import annotations

from typing import Any

import execution_nodes as xn
import pytest

from graphgen import Engine


@pytest.fixture()
def engine(tmp_path):
    xn.CALLS.clear()
    return Engine(registry=xn.make_registry(), output_dir=tmp_path / "out")


def lists(t: dict[str, str], second: dict[str, Any]) -> dict[str, Any]:
    return {"l3": {"class_type": t["MakeList"], "inputs": {"a": 1, "b": 2, "c": 3}},
            "other": {"class_type": t["MakeList"], "inputs": second},
            "add": {"class_type": t["Add"], "inputs": {"a": ["l3", 0], "b": ["other", 0]}},
            "sum": {"class_type": t["Sum"], "inputs": {"items": ["add", 0]}},
            "show_items": {"class_type": t["Show"], "inputs": {"value": ["add", 0]}},
            "show_sum": {"class_type": t["Show"], "inputs": {"value": ["sum", 0]}}}


@pytest.mark.parametrize("style", ["native", "classic"])
def test_a_node_fed_a_list_runs_once_per_item_and_its_outputs_are_gathered(engine, style):
    t = xn.STYLES[style]
    result = engine.run(lists(t, {"a": 10, "b": 20, "c": 30}))
    assert result.ok
    assert result.output("add") == [11, 22, 33]
    assert xn.CALLS.count("add") == 3 and xn.CALLS.count("sum") == 1
    assert result.ui["show_items"] == {"values": [11, 22, 33]}  # UI lists concatenated call by call
    assert result.ui["show_sum"] == {"values": [66]}


@pytest.mark.parametrize("style", ["native", "classic"])
def test_unequal_lengths_repeat_the_last_item_of_the_shorter_list(engine, style):
    t = xn.STYLES[style]
    result = engine.run(lists(t, {"a": 10, "b": 20}))
    assert result.output("add") == [11, 22, 23]


@pytest.mark.parametrize("style", ["native", "classic"])
def test_a_silent_blocker_stops_only_the_blocked_items(engine, style):
    t = xn.STYLES[style]
    wf = {"l3": {"class_type": t["MakeList"], "inputs": {"a": 1, "b": 2, "c": 3}},
          "eq": {"class_type": t["Eq"], "inputs": {"a": ["l3", 0], "b": 2}},
          "block": {"class_type": t["Block"], "inputs": {"value": ["l3", 0], "block": ["eq", 0]}},
          "add": {"class_type": t["Add"], "inputs": {"a": ["block", 0], "b": 10}},
          "show": {"class_type": t["Show"], "inputs": {"value": ["add", 0]}}}
    result = engine.run(wf)
    assert result.ok and not result.failed
    assert result.ui["show"] == {"values": [11, 13]}
    assert xn.CALLS.count("add") == 2  # the blocked item never reached the node


@pytest.mark.parametrize("style", ["native", "classic"])
def test_a_blocker_with_a_message_is_an_error_where_it_lands(engine, style):
    t = xn.STYLES[style]
    wf = {"c": {"class_type": t["Const"], "inputs": {"value": 4}},
          "block": {"class_type": t["Block"], "inputs": {"value": ["c", 0], "block": True, "message": "no fours"}},
          "add": {"class_type": t["Add"], "inputs": {"a": ["block", 0], "b": 1}},
          "show": {"class_type": t["Show"], "inputs": {"value": ["add", 0]}}}
    result = engine.run(wf)
    assert result.status == "failed"
    assert set(result.failed) == {"add"} and "no fours" in result.failed["add"].message
    assert "add" not in xn.CALLS and "show" not in xn.CALLS  # downstream is blocked silently
    assert "show" not in result.ui


def test_a_whole_list_blocked_for_a_list_taking_node(engine):
    t = xn.NATIVE
    wf = {"l3": {"class_type": t["MakeList"], "inputs": {"a": 1, "b": 2, "c": 3}},
          "eq": {"class_type": t["Eq"], "inputs": {"a": ["l3", 0], "b": 2}},
          "block": {"class_type": t["Block"], "inputs": {"value": ["l3", 0], "block": ["eq", 0]}},
          "sum": {"class_type": t["Sum"], "inputs": {"items": ["block", 0]}},
          "show": {"class_type": t["Show"], "inputs": {"value": ["sum", 0]}}}
    result = engine.run(wf)
    assert "sum" not in xn.CALLS and "show" not in result.ui
