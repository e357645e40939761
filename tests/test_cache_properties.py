"""Property tests: on random DAGs, caching never changes results and re-runs exactly what changed."""

from __future__ import annotations

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
