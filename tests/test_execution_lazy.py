"""Lazy inputs: only the branches a node asks for run; it is asked again after each batch."""

from __future__ import annotations

from typing import Any

import execution_nodes as xn
import pytest

from graphgen import Engine, Int, Node, Output


@pytest.fixture()
def engine(tmp_path):
    xn.CALLS.clear()
    return Engine(registry=xn.make_registry(), output_dir=tmp_path / "out")


def switch_workflow(t: dict[str, str], use_first: bool) -> dict[str, Any]:
    return {"a": {"class_type": t["Const"], "inputs": {"value": 1}},
            "b": {"class_type": t["Const"], "inputs": {"value": 2}},
            "s": {"class_type": t["Switch"], "inputs": {"use_first": use_first, "first": ["a", 0], "second": ["b", 0]}},
            "out": {"class_type": t["Show"], "inputs": {"value": ["s", 0]}}}


@pytest.mark.parametrize("style", ["native", "classic"])
def test_unneeded_branch_never_runs(engine, style):
    t = xn.STYLES[style]
    result = engine.run(switch_workflow(t, use_first=True))
    assert result.ok and result.ui["out"] == {"values": [1]}
    assert "b" not in xn.CALLS and "a" in xn.CALLS
    assert "b" not in result.executed and "b" not in result.cached

    xn.CALLS.clear()
    second = engine.run(switch_workflow(t, use_first=False))
    assert second.ui["out"] == {"values": [2]}
    assert xn.CALLS == ["b", "s", "out"]  # "a" is cached; only the newly needed branch runs
    assert "a" in second.cached


@pytest.mark.parametrize("style", ["native", "classic"])
def test_lazy_result_is_cached_like_any_other(engine, style):
    t = xn.STYLES[style]
    engine.run(switch_workflow(t, use_first=True))
    xn.CALLS.clear()
    again = engine.run(switch_workflow(t, use_first=True))
    assert again.executed == [] and xn.CALLS == []
    assert set(again.cached) == {"a", "s", "out"}


class Chain(Node):
    """Asks for `a` first; only once it knows `a` does it decide whether it needs `b`."""

    inputs = [Int("a", lazy=True, force_link=True), Int("b", lazy=True, force_link=True)]
    outputs = [Output("INT", "value")]
    asked: list[tuple[Any, Any]] = []

    def check_lazy_status(self, a: int | None, b: int | None) -> list[str]:
        Chain.asked.append((a, b))
        if a is None:
            return ["a"]
        return ["b"] if a > 0 and b is None else []

    def run(self, a: int, b: int | None) -> int:
        return a + (b or 0)


@pytest.mark.parametrize("first, expected_calls", [(5, ["x", "y"]), (-5, ["x"])])
def test_check_lazy_status_is_asked_again_after_each_batch(tmp_path, first, expected_calls):
    registry = xn.make_registry()
    registry.register(Chain, pack="exec")
    engine = Engine(registry=registry, output_dir=tmp_path)
    xn.CALLS.clear()
    Chain.asked.clear()
    wf = {"x": {"class_type": "NConst", "inputs": {"value": first}},
          "y": {"class_type": "NConst", "inputs": {"value": 10}},
          "c": {"class_type": "Chain", "inputs": {"a": ["x", 0], "b": ["y", 0]}},
          "out": {"class_type": "NShow", "inputs": {"value": ["c", 0]}}}
    result = engine.run(wf)
    assert [c for c in xn.CALLS if c in ("x", "y")] == expected_calls
    assert Chain.asked[0] == (None, None) and Chain.asked[1] == (first, None)
    assert result.ui["out"] == {"values": [first + (10 if first > 0 else 0)]}


class Fails(Node):
    outputs = [Output("INT", "value")]

    def run(self) -> int:
        raise ValueError("broken branch")


def test_a_failing_lazy_branch_fails_only_what_asked_for_it(tmp_path):
    registry = xn.make_registry()
    registry.register(Fails, pack="exec")
    wf = switch_workflow(xn.NATIVE, use_first=True)
    wf["a"] = {"class_type": "Fails", "inputs": {}}
    wf["other"] = {"class_type": "NShow", "inputs": {"value": ["b", 0]}}
    result = Engine(registry=registry, output_dir=tmp_path).run(wf)
    assert set(result.failed) == {"a"} and "broken branch" in result.failed["a"].message
    assert set(result.skipped) == {"s", "out"}
    assert result.ui["other"] == {"values": [2]}
