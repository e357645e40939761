"""Trivial nodes for engine tests (no torch): arithmetic, text, failures, progress, randomness."""

from __future__ import annotations

import os
import random
from collections.abc import Hashable
from typing import Any

from graphgen import Float, Int, Link, Node, Output, Result, String
from graphgen.registry import NodeRegistry

CALLS: list[str] = []


class Const(Node):
    """An integer constant."""

    category = "test"
    inputs = [Int("value", default=0, min=-1000, max=1000)]
    outputs = [Output("INT", "value")]

    def run(self, value: int) -> int:
        CALLS.append(self.ctx.node_id)
        return value


class Add(Node):
    category = "test"
    inputs = [Int("a"), Int("b", default=1), Int("c", optional=True)]
    outputs = [Output("INT", "sum")]

    def run(self, a: int, b: int, c: int = 0) -> int:
        CALLS.append(self.ctx.node_id)
        return a + b + c


class Scale(Node):
    category = "test"
    inputs = [Int("x"), Float("factor", default=1.0, min=0.0, max=10.0)]
    outputs = [Output("FLOAT", "y")]

    def run(self, x: int, factor: float) -> float:
        CALLS.append(self.ctx.node_id)
        return x * factor


class Text(Node):
    category = "test"
    inputs = [String("text", default="", multiline=True), Link("n", "INT", optional=True)]
    outputs = [Output("STRING", "text")]

    def run(self, text: str, n: int = 1) -> str:
        CALLS.append(self.ctx.node_id)
        return text * n


class Fail(Node):
    category = "test"
    inputs = [Int("x", default=0)]
    outputs = [Output("INT", "x")]

    def run(self, x: int) -> int:
        CALLS.append(self.ctx.node_id)
        raise RuntimeError(f"boom {x}")


class Steps(Node):
    """Reports steps, checking for cancellation at each."""

    category = "test"
    inputs = [Int("steps", default=3, min=1, max=1000)]
    outputs = [Output("INT", "steps")]
    on_step: Any = None

    def run(self, steps: int) -> int:
        CALLS.append(self.ctx.node_id)
        for i in range(steps):
            if Steps.on_step:
                Steps.on_step(i)
            self.ctx.progress(i + 1, steps)
        return steps


class Noise(Node):
    """Internal randomness: must never come from the cache."""

    category = "test"
    deterministic = False
    inputs = [Int("x", default=0)]
    outputs = [Output("INT", "noise")]

    def run(self, x: int) -> int:
        CALLS.append(self.ctx.node_id)
        return x + random.randint(0, 10**9)


class ReadFile(Node):
    """Reads a text file; its fingerprint is the file's size and mtime."""

    category = "test"
    inputs = [String("path")]
    outputs = [Output("STRING", "text")]

    @classmethod
    def fingerprint(cls, path: str, **_: Any) -> Hashable:
        stat = os.stat(path)
        return (stat.st_size, stat.st_mtime_ns)

    def run(self, path: str) -> str:
        CALLS.append(self.ctx.node_id)
        with open(path, encoding="utf-8") as handle:
            return handle.read()


class Show(Node):
    """Output node: reports its value as UI data."""

    category = "test"
    output_node = True
    inputs = [Int("value", optional=True), Float("number", optional=True), String("text", optional=True)]

    def run(self, **values: Any) -> Result:
        CALLS.append(self.ctx.node_id)
        return Result(ui={"values": [values]})


NODES = [Const, Add, Scale, Text, Fail, Steps, Noise, ReadFile, Show]


def make_registry() -> NodeRegistry:
    registry = NodeRegistry()
    for node in NODES:
        registry.register(node, pack="test")
    return registry
