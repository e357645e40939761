"""Overrides from the command line and from Python."""

from __future__ import annotations

import pytest
from engine_nodes import make_registry

from graphgen import WorkflowError, load_workflow
from graphgen.overrides import apply_overrides, parse_set_arguments

REGISTRY = make_registry()
WF = load_workflow({
    "format": "graphgen",
    "parameters": {"n": {"targets": ["1.value", "2.b"], "default": 1}},
    "nodes": {"1": {"class_type": "Const"}, "2": {"class_type": "Add", "inputs": {"a": ["1", 0]}},
              "3": {"class_type": "Text", "inputs": {"text": "x"}}, "4": {"class_type": "Show", "inputs": {"value": ["2", 0]}}},
})


def test_cli_values_are_converted_by_input_type():
    updated = apply_overrides(WF, parse_set_arguments(["1.value=5", "3.text=12", "n=3"]), REGISTRY)
    # parameters are applied first, so an explicit NODE.INPUT override wins
    assert updated.nodes["1"].inputs["value"] == 5
    assert updated.nodes["2"].inputs["b"] == 3
    assert updated.nodes["3"].inputs["text"] == "12"


def test_parameter_default_applies_and_original_unchanged():
    updated = apply_overrides(WF, {}, REGISTRY)
    assert updated.nodes["2"].inputs["b"] == 1 and "b" not in WF.nodes["2"].inputs


def test_override_replaces_a_link_with_a_constant():
    updated = apply_overrides(WF, {"2.a": 9}, REGISTRY)
    assert updated.nodes["2"].inputs["a"] == 9


def test_lists_become_constant_lists():
    updated = apply_overrides(WF, parse_set_arguments(["3.text=[1,2]"]), REGISTRY)
    assert updated.nodes["3"].inputs["text"] == "[1,2]"


def test_bad_overrides_listed_together():
    with pytest.raises(WorkflowError) as info:
        apply_overrides(WF, {"9.value": 1, "1.nope": 2, "missing": 3}, REGISTRY)
    assert len(info.value.issues) == 3
    assert all(i.code == "bad_override" for i in info.value.issues)
    with pytest.raises(WorkflowError, match="KEY=VALUE"):
        parse_set_arguments(["novalue"])


def test_applied_values_are_recorded_in_parameters():
    """The workflow saved with results (PNG chunks) must re-run with the values actually used."""
    updated = apply_overrides(WF, parse_set_arguments(["n=4"]), REGISTRY)
    assert updated.parameters["n"].default == 4
    again = apply_overrides(updated, {}, REGISTRY)
    assert again.nodes["2"].inputs["b"] == 4


def test_choice_that_looks_like_a_number_stays_text():
    from graphgen import Choice, Node, Output

    class Pick(Node):
        inputs = [Choice("precision", ["16-mixed", "32"]), Choice("n", [1, 2])]
        outputs = [Output("STRING")]

        def run(self, precision, n):
            return precision

    registry = make_registry()
    registry.register(Pick, pack="t")
    wf = load_workflow({"1": {"class_type": "Pick"}, "2": {"class_type": "Show", "inputs": {"text": ["1", 0]}}})
    updated = apply_overrides(wf, parse_set_arguments(["1.precision=32", "1.n=2"]), registry)
    assert updated.nodes["1"].inputs == {"precision": "32", "n": 2}


def test_explicit_input_override_leaves_the_parameter():
    """Reviewer's repro: `--set 5.seed=5` with a `seed` parameter; the PNG re-run must keep 5."""
    updated = apply_overrides(WF, parse_set_arguments(["1.value=7"]), REGISTRY)
    assert updated.nodes["1"].inputs["value"] == 7 and updated.nodes["2"].inputs["b"] == 1
    assert updated.parameters["n"].targets == ["2.b"]
    again = apply_overrides(updated, {}, REGISTRY)  # what re-running the saved workflow does
    assert again.nodes["1"].inputs["value"] == 7
    both = apply_overrides(WF, {"1.value": 3, "2.b": 4}, REGISTRY)
    assert "n" not in both.parameters
    assert apply_overrides(both, {}, REGISTRY).nodes["2"].inputs["b"] == 4
