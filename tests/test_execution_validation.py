"""Validation in ComfyUI's execution model: a node's own input validation, IS_CHANGED's inputs,
loose constants, undeclared inputs, partially valid workflows and run targets."""

from __future__ import annotations

import json
from typing import Any

import execution_nodes as xn
import pytest

from graphgen import Engine, WorkflowError, cli


@pytest.fixture()
def engine(tmp_path):
    xn.CALLS.clear()
    return Engine(registry=xn.make_registry(), output_dir=tmp_path / "out")


def bounded(t: dict[str, str], value: Any) -> dict[str, Any]:
    return {"b": {"class_type": t["Bounded"], "inputs": {"value": value}},
            "show": {"class_type": t["Show"], "inputs": {"value": ["b", 0]}}}


@pytest.mark.parametrize("style", ["native", "classic"])
def test_a_nodes_own_validation_runs_before_anything(engine, style):
    with pytest.raises(WorkflowError) as err:
        engine.run(bounded(xn.STYLES[style], 13))
    issue = err.value.issues[0]
    assert issue.code == "custom_validation_failed" and issue.node_id == "b" and "13 is unlucky" in issue.message
    assert xn.CALLS == []


@pytest.mark.parametrize("style", ["native", "classic"])
def test_own_validation_replaces_the_built_in_checks_of_the_inputs_it_takes(engine, style):
    # max is 10, but the node validates `value` itself (ComfyUI's rule), so 50 is its call.
    assert engine.run(bounded(xn.STYLES[style], 50)).ui["show"] == {"values": [50]}


class Typed:
    RETURN_TYPES = ("INT",)
    FUNCTION = "go"
    seen: list[dict[str, Any]] = []

    @classmethod
    def INPUT_TYPES(cls):  # noqa: N802
        return {"required": {"a": ("INT,FLOAT",), "b": ("INT",)}}

    @classmethod
    def VALIDATE_INPUTS(cls, input_types, a=None, **kwargs):  # noqa: N802
        cls.seen.append({"input_types": input_types, "a": a, **kwargs})
        return True if input_types.get("a", "INT") == "INT" else f"a must be an INT, not {input_types['a']}"

    def go(self, a, b):
        return (a + b,)


class Changed:
    RETURN_TYPES = ("INT",)
    FUNCTION = "go"
    seen: list[dict[str, Any]] = []

    @classmethod
    def INPUT_TYPES(cls):  # noqa: N802
        return {"required": {"x": ("INT",), "flag": ("MY_FLAG", {"default": False})}}

    @classmethod
    def IS_CHANGED(cls, **kwargs):  # noqa: N802
        cls.seen.append(kwargs)
        return kwargs["flag"]

    def go(self, x, flag):
        return (x,)


class Variadic:
    RETURN_TYPES = ("INT",)
    FUNCTION = "go"

    @classmethod
    def INPUT_TYPES(cls):  # noqa: N802
        return {"required": {"first": ("INT",)}}

    def go(self, first, **more):
        return (first + sum(more.values()),)


@pytest.fixture()
def classic_engine(tmp_path):
    registry = xn.make_registry()
    for cls in (Typed, Changed, Variadic):
        registry.register(cls, pack="exec")
    return Engine(registry=registry, output_dir=tmp_path)


def test_validate_inputs_gets_input_types_and_kwargs_and_replaces_the_link_type_check(classic_engine):
    Typed.seen.clear()
    wf = {"i": {"class_type": "CConst", "inputs": {"value": 2}},
          "t": {"class_type": "Typed", "inputs": {"a": ["i", 0], "b": 3}},
          "show": {"class_type": "CShow", "inputs": {"value": ["t", 0]}}}
    assert classic_engine.run(wf).ui["show"] == {"values": [5]}
    assert Typed.seen == [{"input_types": {"a": "INT"}, "a": None, "b": 3}]  # linked: None at validation


def test_is_changed_receives_constants_and_none_for_links_and_a_loose_custom_type_constant(classic_engine):
    Changed.seen.clear()
    wf = {"i": {"class_type": "CConst", "inputs": {"value": 2}},
          "c": {"class_type": "Changed", "inputs": {"x": ["i", 0], "flag": "anything goes"}},
          "show": {"class_type": "CShow", "inputs": {"value": ["c", 0]}}}
    first = classic_engine.run(wf)
    assert first.ok and Changed.seen[0] == {"x": None, "flag": "anything goes"}
    assert "c" in classic_engine.run(wf).cached


def test_undeclared_links_reach_a_kwargs_function(classic_engine):
    wf = {"i": {"class_type": "CConst", "inputs": {"value": 2}},
          "j": {"class_type": "CConst", "inputs": {"value": 40}},
          "v": {"class_type": "Variadic", "inputs": {"first": ["i", 0], "second": ["j", 0], "third": ["j", 0]}},
          "show": {"class_type": "CShow", "inputs": {"value": ["v", 0]}}}
    assert classic_engine.run(wf).ui["show"] == {"values": [82]}


def two_outputs() -> dict[str, Any]:
    return {"ok": {"class_type": "NConst", "inputs": {"value": 1}},
            "bad": {"class_type": "NAdd", "inputs": {"a": ["gone", 0]}},
            "show_ok": {"class_type": "NShow", "inputs": {"value": ["ok", 0]}},
            "show_bad": {"class_type": "NShow", "inputs": {"value": ["bad", 0]}}}


def test_a_partially_valid_workflow_runs_its_valid_outputs(engine):
    with pytest.raises(WorkflowError):
        engine.prepare(two_outputs())  # strict by default: every problem, nothing runs
    prepared = engine.prepare(two_outputs(), partial=True)
    assert prepared.output_nodes == ["show_ok"] and prepared.invalid_outputs == ["show_bad"]
    assert [i.node_id for i in prepared.issues] == ["bad"]
    result = engine.run(prepared)
    assert result.ok and set(result.executed) == {"ok", "show_ok"}


def test_cli_target_runs_only_that_output(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cli, "_engine", lambda args, **kw: Engine(registry=xn.make_registry(), **kw))
    path = tmp_path / "wf.json"
    path.write_text(json.dumps(two_outputs()))
    assert cli.main(["run", str(path), "--json", "--output-dir", str(tmp_path / "o")]) == 2
    capsys.readouterr()
    assert cli.main(["run", str(path), "--json", "--target", "show_ok", "--output-dir", str(tmp_path / "o")]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    finished = [e for e in events if e["event"] == "run_finished"][0]
    assert set(finished["executed"]) == {"ok", "show_ok"}
    assert cli.main(["run", str(path), "--json", "--target", "show_bad"]) == 2
    assert cli.main(["run", str(path), "--json", "--target", "nope"]) == 2
