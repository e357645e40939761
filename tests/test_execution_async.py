"""Async nodes: awaited on the run's event loop, independent ones overlapping; progress, the
current node context and cancellation work inside them."""

from __future__ import annotations

import asyncio

import execution_nodes as xn
import pytest

from graphgen import Engine, Node, Output
from graphgen.events import NodeProgress
from graphgen.node import Input


@pytest.fixture()
def engine(tmp_path):
    xn.CALLS.clear()
    xn.SLEEPS.clear()
    return Engine(registry=xn.make_registry(), output_dir=tmp_path / "out")


def parallel(t: dict[str, str], seconds: float = 0.3) -> dict:
    wf = {"c": {"class_type": t["Const"], "inputs": {"value": 7}}}
    for i in range(3):
        wf[f"s{i}"] = {"class_type": t["Sleep"], "inputs": {"value": ["c", 0], "seconds": seconds}}
        wf[f"show{i}"] = {"class_type": t["Show"], "inputs": {"value": [f"s{i}", 0]}}
    return wf


@pytest.mark.parametrize("style", ["native", "classic"])
def test_independent_async_nodes_run_concurrently(engine, style):
    result = engine.run(parallel(xn.STYLES[style]))
    assert result.ok and all(result.ui[f"show{i}"] == {"values": [7]} for i in range(3))
    assert sorted(n for n, _, _ in xn.SLEEPS) == ["s0", "s1", "s2"]  # each saw its own current_context()
    # Every sleep started before any of them ended: they overlapped instead of running in turn.
    assert max(start for _, start, _ in xn.SLEEPS) < min(end for _, _, end in xn.SLEEPS)


def test_progress_inside_async_nodes_names_the_right_node(engine):
    events: list[NodeProgress] = []
    engine.run(parallel(xn.NATIVE, 0.1), on_event=lambda e: events.append(e) if isinstance(e, NodeProgress) else None)
    by_node = {e.node_id for e in events}
    assert by_node == {"s0", "s1", "s2"}
    assert all(sum(1 for e in events if e.node_id == n) == 5 for n in by_node)


def test_cancel_reaches_a_running_async_node(engine):
    def on_event(event):
        if isinstance(event, NodeProgress):
            engine.cancel()

    result = engine.run(parallel(xn.NATIVE, 2.0), on_event=on_event)
    assert result.status == "cancelled"
    assert not xn.SLEEPS  # none finished its sleep
    assert {"show0", "show1", "show2"} <= set(result.skipped)


class Boom(Node):
    inputs = [Input("value", "*")]
    outputs = [Output("*", "value")]

    async def run(self, value):
        await asyncio.sleep(0.01)
        raise RuntimeError("async failure")


def test_an_async_failure_fails_that_node_only(tmp_path):
    registry = xn.make_registry()
    registry.register(Boom, pack="exec")
    xn.SLEEPS.clear()
    wf = parallel(xn.NATIVE, 0.05)
    wf["boom"] = {"class_type": "Boom", "inputs": {"value": ["c", 0]}}
    wf["show_boom"] = {"class_type": "NShow", "inputs": {"value": ["boom", 0]}}
    result = Engine(registry=registry, output_dir=tmp_path).run(wf)
    assert result.status == "failed" and set(result.failed) == {"boom"}
    assert "async failure" in result.failed["boom"].message and "show_boom" in result.skipped
    assert len(xn.SLEEPS) == 3


def test_a_run_started_from_inside_an_event_loop_still_works(engine):
    async def main():
        return engine.run(parallel(xn.NATIVE, 0.01))

    assert asyncio.run(main()).ok
