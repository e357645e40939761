"""Fuzzing the loader and validator: arbitrary input raises `WorkflowError` or loads, nothing else."""

from __future__ import annotations

import json

from engine_nodes import make_registry
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from graphgen import Engine, WorkflowError, load_workflow

ENGINE = Engine(registry=make_registry())
TYPES = ["Const", "Add", "Scale", "Text", "Show", "Steps", "Nope", "", "Add "]
INPUT_NAMES = ["value", "a", "b", "c", "x", "factor", "text", "n", "steps", "number", "zzz"]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=30,
)

input_values = st.one_of(
    json_values,
    st.tuples(st.sampled_from(["0", "1", "2", "3", "9", 0, 1]), st.one_of(st.integers(-2, 3), st.text(max_size=5)))
    .map(list),
)

node = st.fixed_dictionaries(
    {"class_type": st.sampled_from(TYPES)},
    optional={"inputs": st.dictionaries(st.sampled_from(INPUT_NAMES), input_values, max_size=4),
              "_meta": st.dictionaries(st.text(max_size=5), json_values, max_size=2)},
)
workflows = st.dictionaries(st.sampled_from(["0", "1", "2", "3", "x"]), node, max_size=5)


def check(source):
    try:
        ENGINE.prepare(source)
    except WorkflowError as exc:
        assert exc.issues
        for issue in exc.issues:
            assert issue.code and issue.message
            str(issue)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_values)
def test_arbitrary_json_values(value):
    check(value)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(workflows)
def test_structured_random_workflows(data):
    check(data)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_text(text):
    try:
        load_workflow(text if text.lstrip().startswith(("{", "[")) else "{" + text)
    except WorkflowError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes(data):
    try:
        load_workflow(data)
    except WorkflowError:
        pass


@settings(max_examples=100, deadline=None)
@given(workflows)
def test_valid_results_run(data):
    """Whatever validates also runs without an engine error (node failures are results)."""
    try:
        prepared = ENGINE.prepare(json.loads(json.dumps(data)))
    except WorkflowError:
        return
    result = ENGINE.run(prepared)
    assert result.status in {"success", "failed"}
