"""Node expansion: graphs nodes return run in the same run, are cached, may expand again."""

from __future__ import annotations

from typing import Any

import execution_nodes as xn
import pytest

from graphgen import Engine, Int, Node, Output, Result
from graphgen.node import Input


@pytest.fixture()
def engine(tmp_path):
    xn.CALLS.clear()
    return Engine(registry=xn.make_registry(), output_dir=tmp_path / "out")


def countdown(t: dict[str, str], times: int) -> dict[str, Any]:
    return {"start": {"class_type": t["Const"], "inputs": {"value": 1}},
            "loop": {"class_type": t["Countdown"], "inputs": {"value": ["start", 0], "times": times, "step": 2}},
            "show": {"class_type": t["Show"], "inputs": {"value": ["loop", 0]}}}


@pytest.mark.parametrize("style", ["native", "classic"])
def test_a_loop_built_by_expansion_runs_in_the_same_run(engine, style):
    t = xn.STYLES[style]
    result = engine.run(countdown(t, 3))
    assert result.ok and result.ui["show"] == {"values": [7]}
    adds = [n for n in result.executed if result.node_types[n] == t["Add"]]
    assert len(adds) == 3
    assert adds[0] == "loop.0.0.add" and all(a.startswith("loop.0.0.") for a in adds)  # GraphBuilder's ids
    assert result.output("loop") == 7


@pytest.mark.parametrize("style", ["native", "classic"])
def test_expanded_results_are_cached_and_a_change_reruns_exactly_what_depends_on_it(engine, style):
    t = xn.STYLES[style]
    engine.run(countdown(t, 3))
    xn.CALLS.clear()
    again = engine.run(countdown(t, 3))
    assert again.executed == [] and xn.CALLS == [] and "loop" in again.cached
    uncached = Engine(registry=xn.make_registry()).run(countdown(t, 4), use_cache=False)
    changed = engine.run(countdown(t, 4))
    assert changed.ui == uncached.ui == {"show": {"values": [9]}}
    assert "start" in changed.cached and "loop" in changed.executed


class Expander(Node):
    """Expands into whatever graph the test gives (`graph` names a module-level entry)."""

    inputs = [Input("which", "STRING", default="")]
    outputs = [Output("INT", "value")]
    graphs: dict[str, Any] = {}

    def run(self, which: str) -> Result:
        graph, link = Expander.graphs[which]
        return Result(link, expand=graph)


@pytest.fixture()
def expander_engine(tmp_path):
    registry = xn.make_registry()
    registry.register(Expander, pack="exec")
    return Engine(registry=registry, output_dir=tmp_path)


@pytest.mark.parametrize("which, graph, words", [
    ("cycle", {"x.a": {"class_type": "NAdd", "inputs": {"a": ["x.b", 0]}},
               "x.b": {"class_type": "NAdd", "inputs": {"a": ["x.a", 0]}}}, "cycle"),
    ("dup", {"e": {"class_type": "NConst", "inputs": {"value": 1}}}, "already exists"),
    ("unknown", {"x.u": {"class_type": "Nope", "inputs": {}}}, "unknown type 'Nope'"),
    ("badlink", {"x.l": {"class_type": "NAdd", "inputs": {"a": ["nowhere", 0]}}}, "not in the run"),
])
def test_a_bad_expansion_is_reported_on_the_node_that_expanded(expander_engine, which, graph, words):
    Expander.graphs[which] = (graph, [next(iter(graph)), 0])
    wf = {"e": {"class_type": "Expander", "inputs": {"which": which}},
          "other": {"class_type": "NConst", "inputs": {"value": 3}},
          "show": {"class_type": "NShow", "inputs": {"value": ["e", 0]}},
          "show2": {"class_type": "NShow", "inputs": {"value": ["other", 0]}}}
    result = expander_engine.run(wf)
    assert result.status == "failed" and set(result.failed) == {"e"}
    assert words in result.failed["e"].message
    assert "show" in result.skipped and result.ui["show2"] == {"values": [3]}  # the rest still runs


def test_a_cycle_made_through_lazy_links_at_run_time_is_blamed_on_the_expanding_node(expander_engine):
    graph = {"e.0.0.s1": {"class_type": "NSwitch", "inputs": {"use_first": True, "first": ["e.0.0.s2", 0],
                                                               "second": ["e.0.0.s2", 0]}},
             "e.0.0.s2": {"class_type": "NSwitch", "inputs": {"use_first": True, "first": ["e.0.0.s1", 0],
                                                               "second": ["e.0.0.s1", 0]}}}
    Expander.graphs["lazycycle"] = (graph, ["e.0.0.s1", 0])
    wf = {"e": {"class_type": "Expander", "inputs": {"which": "lazycycle"}},
          "show": {"class_type": "NShow", "inputs": {"value": ["e", 0]}}}
    result = expander_engine.run(wf)
    assert set(result.failed) == {"e"} and "cycle" in result.failed["e"].message


def test_dynprompt_sees_expanded_nodes(tmp_path):
    seen: dict[str, Any] = {}

    class Peek:
        RETURN_TYPES = ("INT",)
        FUNCTION = "go"

        @classmethod
        def INPUT_TYPES(cls):  # noqa: N802
            return {"required": {"value": ("INT",)}, "hidden": {"dynprompt": "DYNPROMPT", "unique_id": "UNIQUE_ID",
                                                                "prompt": "PROMPT"}}

        def go(self, value, dynprompt, unique_id, prompt):
            seen["node"] = dynprompt.get_node(unique_id)
            seen["real"] = dynprompt.get_real_node_id(unique_id)
            seen["prompt_ids"] = sorted(prompt)
            return (value,)

    class Wrap(Node):
        inputs = [Int("value")]
        outputs = [Output("INT", "value")]

        def run(self, value: int) -> Result:
            prefix = self.ctx.graph_prefix()
            return Result([prefix + "peek", 0], expand={prefix + "peek": {"class_type": "Peek",
                                                                         "inputs": {"value": value}}})

    registry = xn.make_registry()
    registry.register(Peek, pack="exec")
    registry.register(Wrap, pack="exec")
    result = Engine(registry=registry, output_dir=tmp_path).run(
        {"w": {"class_type": "Wrap", "inputs": {"value": 5}},
         "show": {"class_type": "NShow", "inputs": {"value": ["w", 0]}}})
    assert result.ui["show"] == {"values": [5]}
    assert seen == {"node": {"class_type": "Peek", "inputs": {"value": 5}}, "real": "w",
                    "prompt_ids": ["show", "w"]}
