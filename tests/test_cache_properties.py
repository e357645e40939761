"""Property tests: on random DAGs, caching never changes results and re-runs exactly what changed."""

from __future__ import annotations

from typing import Any

import execution_nodes as xn
import networkx as nx
from engine_nodes import make_registry
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from graphgen import Engine

REGISTRY = make_registry()


@st.composite
def dags(draw):
    """A random workflow of Const/Add nodes with Show outputs, plus a set of nodes to change."""
    n = draw(st.integers(min_value=1, max_value=25))
    nodes = {}
    for i in range(n):
        node_id = str(i)
        if i == 0 or draw(st.booleans()) and i < 3:
            nodes[node_id] = {"class_type": "Const", "inputs": {"value": i}}
            continue
        a = draw(st.integers(min_value=0, max_value=i - 1))
        inputs = {"a": [str(a), 0], "b": i}  # unique constants keep every node's key unique
        if draw(st.booleans()):
            inputs["c"] = [str(draw(st.integers(min_value=0, max_value=i - 1))), 0]
        nodes[node_id] = {"class_type": "Add", "inputs": inputs}
    shown = draw(st.lists(st.integers(min_value=0, max_value=n - 1), min_size=1, max_size=4, unique=True))
    for k, target in enumerate(shown):
        nodes[f"out{k}"] = {"class_type": "Show", "inputs": {"value": [str(target), 0]}}
    changed = draw(st.sets(st.integers(min_value=0, max_value=n - 1), max_size=4))
    return nodes, {str(c) for c in changed}


def change(nodes, changed):
    updated = {k: {"class_type": v["class_type"], "inputs": dict(v["inputs"])} for k, v in nodes.items()}
    for node_id in changed:
        inputs = updated[node_id]["inputs"]
        key = "value" if "value" in inputs else "b"
        inputs[key] = inputs[key] + 500  # stays unique: original constants are < 25
    return updated


def needed_and_descendants(nodes, changed):
    graph = nx.DiGraph()
    graph.add_nodes_from(nodes)
    for node_id, node in nodes.items():
        for value in node["inputs"].values():
            if isinstance(value, list):
                graph.add_edge(value[0], node_id)
    outputs = [k for k in nodes if k.startswith("out")]
    needed = set(outputs)
    for out in outputs:
        needed |= nx.ancestors(graph, out)
    affected = set()
    for node_id in changed:
        affected |= {node_id} | nx.descendants(graph, node_id)
    return needed, affected & needed


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(dags())
def test_cached_rerun_equals_fresh_run_and_reruns_exactly_changed(case):
    nodes, changed = case
    engine = Engine(registry=REGISTRY)
    first = engine.run(nodes)
    needed, affected = needed_and_descendants(nodes, changed)
    assert set(first.executed) == needed

    updated = change(nodes, changed)
    cached_run = engine.run(updated)
    fresh_run = Engine(registry=REGISTRY).run(updated, use_cache=False)

    assert cached_run.ui == fresh_run.ui
    assert {k: v for k, v in cached_run.outputs.items()} == fresh_run.outputs
    assert set(cached_run.executed) == affected
    assert set(cached_run.cached) == needed - affected


@settings(max_examples=40, deadline=None)
@given(dags(), st.integers(min_value=1, max_value=6))
def test_tiny_cache_is_still_correct(case, entries):
    """Evictions may cost re-runs but never change results."""
    nodes, changed = case
    engine = Engine(registry=REGISTRY, cache_entries=entries)
    engine.run(nodes)
    updated = change(nodes, changed)
    assert engine.run(updated).ui == Engine(registry=REGISTRY).run(updated).ui
    assert len(engine.cache) <= entries


# -- lazy inputs and expansion -------------------------------------------------------------------------

EXEC_REGISTRY = xn.make_registry()


@st.composite
def lazy_dags(draw):
    """Random workflows of NConst/NAdd, lazy NSwitch and expanding NCountdown nodes, plus changes."""
    n = draw(st.integers(min_value=2, max_value=18))
    nodes: dict[str, Any] = {"0": {"class_type": "NConst", "inputs": {"value": 0}}}
    for i in range(1, n):
        def pick(i: int = i) -> list[Any]:
            return [str(draw(st.integers(min_value=0, max_value=i - 1))), 0]
        kind = draw(st.sampled_from(["const", "add", "switch", "countdown"]))
        if kind == "const":
            nodes[str(i)] = {"class_type": "NConst", "inputs": {"value": i}}
        elif kind == "add":
            nodes[str(i)] = {"class_type": "NAdd", "inputs": {"a": pick(), "b": i}}
        elif kind == "switch":
            nodes[str(i)] = {"class_type": "NSwitch", "inputs": {"use_first": draw(st.booleans()), "first": pick(),
                                                                 "second": pick(), "tag": i}}
        else:
            nodes[str(i)] = {"class_type": "NCountdown", "inputs": {"value": pick(), "times": draw(
                st.integers(min_value=0, max_value=3)), "step": i}}
    shown = draw(st.lists(st.integers(min_value=0, max_value=n - 1), min_size=1, max_size=3, unique=True))
    for k, target in enumerate(shown):
        nodes[f"out{k}"] = {"class_type": "NShow", "inputs": {"value": [str(target), 0]}}
    changed = draw(st.sets(st.integers(min_value=0, max_value=n - 1), max_size=3))
    return nodes, {str(c) for c in changed}


def change_lazy(nodes: dict[str, Any], changed: set[str]) -> dict[str, Any]:
    updated = {k: {"class_type": v["class_type"], "inputs": dict(v["inputs"])} for k, v in nodes.items()}
    for node_id in changed:
        inputs = updated[node_id]["inputs"]
        if "use_first" in inputs:
            inputs["use_first"] = not inputs["use_first"]  # flips which branch is needed
        else:
            key = {"NConst": "value", "NAdd": "b", "NCountdown": "step"}[updated[node_id]["class_type"]]
            inputs[key] += 500
    return updated


def lazily_needed(nodes: dict[str, Any]) -> set[str]:
    """The workflow nodes a run needs: a switch needs only the branch it picks."""
    needed: set[str] = set()
    stack = [k for k in nodes if k.startswith("out")]
    while stack:
        node_id = stack.pop()
        if node_id in needed:
            continue
        needed.add(node_id)
        inputs = nodes[node_id]["inputs"]
        if nodes[node_id]["class_type"] == "NSwitch":
            links = [inputs["first" if inputs["use_first"] else "second"]]
        else:
            links = [v for v in inputs.values() if isinstance(v, list)]
        stack.extend(link[0] for link in links)
    return needed


def static(ids: Any) -> set[str]:
    return {i for i in ids if "." not in i}  # expanded nodes have prefixed ids


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lazy_dags())
def test_lazy_and_expanding_graphs_cache_correctly_and_rerun_exactly_what_changed(case):
    nodes, changed = case
    engine = Engine(registry=EXEC_REGISTRY)
    first = engine.run(nodes)
    assert first.ok and static(first.executed) == lazily_needed(nodes)
    updated = change_lazy(nodes, changed)
    cached_run = engine.run(updated)
    fresh_run = Engine(registry=EXEC_REGISTRY).run(updated, use_cache=False)
    assert cached_run.ui == fresh_run.ui
    # (a cached expanding node does not expand again, so only the needed workflow nodes are compared)
    needed = lazily_needed(updated)
    assert {k: v for k, v in cached_run.outputs.items() if k in needed} == \
        {k: v for k, v in fresh_run.outputs.items() if k in needed}

    # A node's key covers all its links, lazy ones included (as ComfyUI's signatures do).
    _, affected = needed_and_descendants(updated, changed)
    graph = nx.DiGraph()
    for node_id, node in updated.items():
        graph.add_node(node_id)
        for value in node["inputs"].values():
            if isinstance(value, list):
                graph.add_edge(value[0], node_id)
    affected = set().union(*({c} | nx.descendants(graph, c) for c in changed)) if changed else set()
    reusable = static(first.executed) - affected
    assert static(cached_run.executed) == needed - reusable
    closure = set().union(*(nx.ancestors(graph, o) | {o} for o in updated if o.startswith("out")))
    assert static(cached_run.cached) == closure & reusable
