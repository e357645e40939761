"""Execution: ordering, caching across runs, failures, cancellation, forcing, fingerprints."""

from __future__ import annotations

import threading

import engine_nodes
import pytest
from engine_nodes import CALLS, make_registry

from graphgen import Engine, WorkflowBuilder
from graphgen.events import NodeCached, NodeFailed, NodeProgress, NodeSkipped, RunFinished


@pytest.fixture()
def engine(tmp_path):
    CALLS.clear()
    return Engine(registry=make_registry(), output_dir=tmp_path / "out")


def chain():
    b = WorkflowBuilder()
    c = b.add("Const", value=2)
    a = b.add("Add", a=c["value"], b=3)
    s = b.add("Scale", x=a["sum"], factor=2.0)
    b.add("Show", number=s["y"])
    return b


def test_runs_in_dependency_order_and_returns_outputs(engine):
    result = engine.run(chain().build())
    assert result.status == "success"
    assert result.executed == ["1", "2", "3", "4"]
    assert result.output("3", "y") == 10.0
    assert result.ui["4"] == {"values": [{"number": 10.0}]}
    assert set(result.timings) == {"1", "2", "3", "4"}


def test_only_ancestors_of_outputs_run(engine):
    b = chain()
    b.add("Const", value=9)  # dangling, leads to no output
    result = engine.run(b.build())
    assert "5" not in result.executed and "5" not in CALLS


def test_cache_across_runs_and_changed_input_reruns_only_descendants(engine):
    wf = chain().build()
    engine.run(wf)
    CALLS.clear()
    again = engine.run(wf)
    assert again.executed == [] and again.cached == ["1", "2", "3", "4"]
    assert CALLS == []
    changed = engine.run(wf, overrides={"2.b": 4})
    assert changed.executed == ["2", "3", "4"] and changed.cached == ["1"]
    assert changed.output("3", "y") == 12.0


def test_identical_nodes_run_once_per_run(engine):
    b = WorkflowBuilder()
    x = b.add("Const", value=5)
    y = b.add("Const", value=5)
    b.add("Show", value=b.add("Add", a=x[0], b=1)[0])
    b.add("Show", value=b.add("Add", a=y[0], b=1)[0])
    result = engine.run(b.build())
    assert CALLS.count("1") + CALLS.count("2") == 1
    assert len(result.executed) + len(result.cached) == 6


def test_failure_stops_dependents_but_not_independent_branches(engine):
    b = WorkflowBuilder()
    f = b.add("Fail", x=7)
    bad = b.add("Add", a=f["x"])
    b.add("Show", value=bad[0])
    good = b.add("Const", value=1)
    b.add("Show", value=good[0])
    events = []
    result = engine.run(b.build(), on_event=events.append)
    assert result.status == "failed"
    assert set(result.failed) == {"1"} and "boom 7" in result.failed["1"].message
    assert set(result.skipped) == {"2", "3"} and "node 1 (Fail) failed" in result.skipped["2"]
    assert "5" in result.ui
    assert any(isinstance(e, NodeFailed) and e.node_id == "1" for e in events)
    assert any(isinstance(e, NodeSkipped) and e.node_id == "3" for e in events)
    assert events[-1].status == "failed"


def test_failed_node_is_not_cached(engine):
    b = WorkflowBuilder()
    b.add("Show", value=b.add("Fail")[0])
    engine.run(b.build())
    CALLS.clear()
    engine.run(b.build())
    assert CALLS == ["1"]


def test_nondeterministic_node_never_cached_and_dependents_rerun(engine):
    b = WorkflowBuilder()
    n = b.add("Noise", x=1)
    b.add("Show", value=b.add("Add", a=n[0])[0])
    first = engine.run(b.build())
    second = engine.run(b.build())
    assert second.executed == ["1", "2", "3"]
    assert first.output("1") != second.output("1")


def test_force_reruns_a_node_and_its_dependents(engine):
    wf = chain().build()
    engine.run(wf)
    forced = engine.run(wf, force=["2"])
    assert forced.executed == ["2", "3", "4"] and forced.cached == ["1"]
    assert engine.run(wf).executed == []


def test_fingerprint_tracks_outside_state(engine, tmp_path):
    path = tmp_path / "in.txt"
    path.write_text("hi", encoding="utf-8")
    b = WorkflowBuilder()
    b.add("Show", text=b.add("ReadFile", path=str(path))[0])
    wf = b.build()
    assert engine.run(wf).output("1") == "hi"
    assert engine.run(wf).executed == []
    path.write_text("hello", encoding="utf-8")
    result = engine.run(wf)
    assert result.executed == ["1", "2"] and result.output("1") == "hello"


def test_fingerprint_of_a_linked_file_name_reruns_instead_of_failing(engine, tmp_path):
    """A file name linked from another node (TrainLoRA's lora_path into LoraLoader) is known only
    while running: the node runs, and runs again next time, since its file may have changed."""
    path = tmp_path / "in.txt"
    path.write_text("hi", encoding="utf-8")
    b = WorkflowBuilder()
    name = b.add("Text", text=str(path))
    b.add("Show", text=b.add("ReadFile", path=name[0])[0])
    wf = b.build()
    first = engine.run(wf)
    assert first.ok and first.output("2") == "hi"
    path.write_text("hello", encoding="utf-8")
    second = engine.run(wf)
    assert second.executed == ["2", "3"] and second.cached == ["1"] and second.output("2") == "hello"


def test_fingerprint_error_is_a_node_failure(engine, tmp_path):
    b = WorkflowBuilder()
    b.add("Show", text=b.add("ReadFile", path=str(tmp_path / "missing.txt"))[0])
    result = engine.run(b.build())
    assert result.status == "failed" and "fingerprint failed" in result.failed["1"].message


def test_progress_events_and_cancel_mid_node(engine):
    b = WorkflowBuilder()
    s = b.add("Steps", steps=50)
    b.add("Show", value=b.add("Add", a=s[0])[0])
    events = []
    engine_nodes.Steps.on_step = lambda i: engine.cancel() if i == 3 else None
    try:
        result = engine.run(b.build(), on_event=events.append)
    finally:
        engine_nodes.Steps.on_step = None
    progress = [e for e in events if isinstance(e, NodeProgress)]
    assert [p.value for p in progress] == [1, 2, 3, 4]
    assert result.status == "cancelled"
    assert "2" not in CALLS and set(result.skipped) >= {"1", "2", "3"}
    assert isinstance(events[-1], RunFinished) and events[-1].status == "cancelled"
    # the engine is usable again, and the cancelled node was not cached
    assert engine.run(b.build()).status == "success"


def test_cancel_from_another_thread_stops_between_nodes(engine):
    b = WorkflowBuilder()
    s = b.add("Steps", steps=200)
    b.add("Show", value=s[0])
    started = threading.Event()
    engine_nodes.Steps.on_step = lambda i: (started.set(), __import__("time").sleep(0.002))
    try:
        thread = threading.Thread(target=lambda: (started.wait(5), engine.cancel()))
        thread.start()
        result = engine.run(b.build())
        thread.join()
    finally:
        engine_nodes.Steps.on_step = None
    assert result.status == "cancelled"


def test_cached_event_emitted(engine):
    wf = chain().build()
    engine.run(wf)
    events = []
    engine.run(wf, on_event=events.append)
    assert [e.node_id for e in events if isinstance(e, NodeCached)] == ["1", "2", "3", "4"]


def test_two_inputs_from_one_source_and_runs_with_or_without_a_listener(engine):
    # The executor skips building events when nobody listens and waits for a source once even
    # when two inputs link to it: both runs must agree.
    b = WorkflowBuilder()
    c = b.add("Const", value=4)
    a = b.add("Add", a=c["value"], b=c["value"])
    b.add("Show", value=a["sum"])
    wf = b.build()
    quiet = engine.run(wf, use_cache=False)
    events = []
    heard = engine.run(wf, use_cache=False, on_event=events.append)
    assert quiet.executed == heard.executed == ["1", "2", "3"]
    assert quiet.output("2", "sum") == heard.output("2", "sum") == 8
    assert quiet.ui["3"] == heard.ui["3"]
    assert [e.node_id for e in events if type(e).__name__ == "NodeFinished"] == ["1", "2", "3"]
    assert isinstance(events[-1], RunFinished) and events[-1].executed == ["1", "2", "3"]


def test_use_cache_false_runs_everything_and_leaves_cache(engine):
    wf = chain().build()
    engine.run(wf)
    size = len(engine.cache)
    result = engine.run(wf, use_cache=False)
    assert result.executed == ["1", "2", "3", "4"] and len(engine.cache) == size


def test_outputs_restrict_targets(engine):
    b = WorkflowBuilder()
    b.add("Show", value=b.add("Const", value=1)[0])
    b.add("Show", value=b.add("Const", value=2)[0])
    result = engine.run(b.build(), outputs=["4"])
    assert result.executed == ["3", "4"]


def test_validation_is_memoized_but_not_stale(engine, tmp_path):
    wf = chain().build().to_json_dict()
    first = engine.prepare(wf)
    assert engine.prepare(wf) is first
    assert engine.prepare(wf, {"2.b": 5}) is not first
    changed = {**wf, "nodes": {**wf["nodes"], "2": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": 9}}}}
    assert engine.prepare(changed).nodes["2"].constants["b"] == 9
    engine.registry.register(engine_nodes.Const, pack="late", name="Late")
    assert engine.prepare(wf) is not first  # the registry changed
    from graphgen.overrides import parse_set_arguments

    text = engine.prepare(wf, parse_set_arguments(["2.b=5"]))
    assert text.nodes["2"].constants["b"] == 5


def test_a_10000_deep_chain_validates_and_runs(tmp_path):
    """Nothing in validation, planning or the execution list recurses per node."""
    engine = Engine(registry=make_registry(), output_dir=tmp_path, cache_entries=20_000)
    depth = 10_000
    wf = {"0": {"class_type": "Const", "inputs": {"value": 0}}}
    for i in range(1, depth):
        wf[str(i)] = {"class_type": "Add", "inputs": {"a": [str(i - 1), 0], "b": 1}}
    wf["out"] = {"class_type": "Show", "inputs": {"value": [str(depth - 1), 0]}}
    result = engine.run(wf)
    assert result.ok and result.ui["out"] == {"values": [{"value": depth - 1}]}
    assert len(result.executed) == depth + 1
    assert len(engine.run(wf).cached) == depth + 1
