"""Nodes exercising ComfyUI's execution model, each written twice: as graphgen `Node` classes
(type names `N...`) and as ComfyUI classic classes (`C...`), so every semantic is tested in both
declaration styles. `CALLS` records which node ids ran (in order)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from graphgen import Bool, Int, Node, Output, Result, String
from graphgen.blocker import ExecutionBlocker
from graphgen.context import current_context
from graphgen.node import Input
from graphgen.registry import NodeRegistry

CALLS: list[str] = []
SLEEPS: list[tuple[str, float, float]] = []  # (node id, start, end) of async sleeps


def _called(ctx_or_id: Any) -> None:
    CALLS.append(getattr(ctx_or_id, "node_id", ctx_or_id))


# -- graphgen-style nodes ----------------------------------------------------------------------------

class NConst(Node):
    inputs = [Int("value", default=0, min=-10**9, max=10**9)]
    outputs = [Output("INT", "value")]

    def run(self, value: int) -> int:
        _called(self.ctx)
        return value


class NAdd(Node):
    inputs = [Int("a"), Int("b", default=0)]
    outputs = [Output("INT", "sum")]

    def run(self, a: int, b: int) -> int:
        _called(self.ctx)
        return a + b


class NSwitch(Node):
    """Picks one of two lazily computed values."""

    inputs = [Bool("use_first", default=True), Int("first", lazy=True, force_link=True),
              Int("second", lazy=True, force_link=True), Int("tag", default=0)]
    outputs = [Output("INT", "value")]

    def check_lazy_status(self, use_first: bool, first: int | None, second: int | None, tag: int) -> list[str]:
        return ["first"] if use_first and first is None else ["second"] if not use_first and second is None else []

    def run(self, use_first: bool, first: int | None, second: int | None, tag: int) -> int:
        _called(self.ctx)
        return first if use_first else second  # type: ignore[return-value]


class NShow(Node):
    output_node = True
    inputs = [Input("value", "*")]
    outputs: list[Output] = []

    def run(self, value: Any) -> Result:
        _called(self.ctx)
        return Result(ui={"values": [value]})


class NMakeList(Node):
    inputs = [Int("a"), Int("b"), Int("c", optional=True)]
    outputs = [Output("INT", "items")]
    output_is_list = (True,)

    def run(self, a: int, b: int, c: int | None = None) -> list[int]:
        _called(self.ctx)
        return [a, b] + ([] if c is None else [c])


class NEq(Node):
    inputs = [Int("a"), Int("b")]
    outputs = [Output("BOOLEAN", "equal")]

    def run(self, a: int, b: int) -> bool:
        _called(self.ctx)
        return a == b


class NSum(Node):
    input_is_list = True
    inputs = [Int("items")]
    outputs = [Output("INT", "total")]

    def run(self, items: list[int]) -> int:
        _called(self.ctx)
        return sum(items)


class NCountdown(Node):
    """Adds `step` to `value` `times` times by expanding into itself (a loop built by expansion)."""

    inputs = [Int("value"), Int("times", default=1, min=0), Int("step", default=1)]
    outputs = [Output("INT", "value")]

    def run(self, value: int, times: int, step: int) -> Any:
        _called(self.ctx)
        if times == 0:
            return value
        prefix = self.ctx.graph_prefix()
        graph = {prefix + "add": {"class_type": "NAdd", "inputs": {"a": value, "b": step}},
                 prefix + "next": {"class_type": "NCountdown",
                                   "inputs": {"value": [prefix + "add", 0], "times": times - 1, "step": step}}}
        return Result([prefix + "next", 0], expand=graph)


class NBlock(Node):
    inputs = [Input("value", "*"), Bool("block", default=False), String("message", default="")]
    outputs = [Output("*", "value")]

    def run(self, value: Any, block: bool, message: str) -> Any:
        _called(self.ctx)
        return ExecutionBlocker(message or None) if block else value


class NSleep(Node):
    inputs = [Input("value", "*"), Input("seconds", "FLOAT", default=0.3)]
    outputs = [Output("*", "value")]

    async def run(self, value: Any, seconds: float) -> Any:
        _called(self.ctx)
        start = time.perf_counter()
        steps = 5
        for i in range(steps):
            await asyncio.sleep(seconds / steps)
            self.ctx.progress(i + 1, steps)
        current = current_context()
        SLEEPS.append((current.node_id if current is not None else "?", start, time.perf_counter()))
        return value


class NBounded(Node):
    inputs = [Int("value", default=0, min=0, max=10)]
    outputs = [Output("INT", "value")]

    @classmethod
    def validate_inputs(cls, value: int) -> bool | str:
        return True if value != 13 else "13 is unlucky"

    def run(self, value: int) -> int:
        _called(self.ctx)
        return value


# -- ComfyUI classic nodes -------------------------------------------------------------------------

class CConst:
    RETURN_TYPES = ("INT",)
    FUNCTION = "go"

    @classmethod
    def INPUT_TYPES(cls):  # noqa: N802 - ComfyUI's name
        return {"required": {"value": ("INT", {"default": 0, "min": -10**9, "max": 10**9})},
                "hidden": {"unique_id": "UNIQUE_ID"}}

    def go(self, value, unique_id):
        _called(unique_id)
        return (value,)


class CAdd:
    RETURN_TYPES = ("INT",)
    FUNCTION = "go"

    @classmethod
    def INPUT_TYPES(cls):  # noqa: N802
        return {"required": {"a": ("INT", {"default": 0}), "b": ("INT", {"default": 0})},
                "hidden": {"unique_id": "UNIQUE_ID"}}

    def go(self, a, b, unique_id):
        _called(unique_id)
        return (a + b,)


class CSwitch:
    RETURN_TYPES = ("INT",)
    FUNCTION = "go"

    @classmethod
    def INPUT_TYPES(cls):  # noqa: N802
        return {"required": {"use_first": ("BOOLEAN", {"default": True}),
                             "first": ("INT", {"lazy": True, "forceInput": True}),
                             "second": ("INT", {"lazy": True, "forceInput": True})},
                "hidden": {"unique_id": "UNIQUE_ID"}}

    def check_lazy_status(self, use_first, first, second, unique_id):
        return ["first"] if use_first and first is None else ["second"] if not use_first and second is None else []

    def go(self, use_first, first, second, unique_id):
        _called(unique_id)
        return (first if use_first else second,)


class CShow:
    RETURN_TYPES = ()
    FUNCTION = "go"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):  # noqa: N802
        return {"required": {"value": ("*",)}, "hidden": {"unique_id": "UNIQUE_ID"}}

    def go(self, value, unique_id):
        _called(unique_id)
        return {"ui": {"values": [value]}}


class CMakeList:
    RETURN_TYPES = ("INT",)
    OUTPUT_IS_LIST = (True,)
    FUNCTION = "go"

    @classmethod
    def INPUT_TYPES(cls):  # noqa: N802
        return {"required": {"a": ("INT",), "b": ("INT",)}, "optional": {"c": ("INT",)},
                "hidden": {"unique_id": "UNIQUE_ID"}}

    def go(self, a, b, unique_id, c=None):
        _called(unique_id)
        return ([a, b] + ([] if c is None else [c]),)


class CEq:
    RETURN_TYPES = ("BOOLEAN",)
    FUNCTION = "go"

    @classmethod
    def INPUT_TYPES(cls):  # noqa: N802
        return {"required": {"a": ("INT",), "b": ("INT",)}, "hidden": {"unique_id": "UNIQUE_ID"}}

    def go(self, a, b, unique_id):
        _called(unique_id)
        return (a == b,)


class CSum:
    RETURN_TYPES = ("INT",)
    INPUT_IS_LIST = True
    FUNCTION = "go"

    @classmethod
    def INPUT_TYPES(cls):  # noqa: N802
        return {"required": {"items": ("INT",)}, "hidden": {"unique_id": "UNIQUE_ID"}}

    def go(self, items, unique_id):
        _called(unique_id[0])
        return (sum(items),)


class CCountdown:
    RETURN_TYPES = ("INT",)
    FUNCTION = "go"

    @classmethod
    def INPUT_TYPES(cls):  # noqa: N802
        return {"required": {"value": ("INT",), "times": ("INT", {"default": 1, "min": 0}),
                             "step": ("INT", {"default": 1})},
                "hidden": {"unique_id": "UNIQUE_ID"}}

    def go(self, value, times, step, unique_id):
        _called(unique_id)
        if times == 0:
            return (value,)
        prefix = f"{unique_id}.0.0."  # what GraphBuilder's default prefix gives
        graph = {prefix + "add": {"class_type": "CAdd", "inputs": {"a": value, "b": step}},
                 prefix + "next": {"class_type": "CCountdown",
                                   "inputs": {"value": [prefix + "add", 0], "times": times - 1, "step": step}}}
        return {"result": ([prefix + "next", 0],), "expand": graph}


class CBlock:
    RETURN_TYPES = ("*",)
    FUNCTION = "go"

    @classmethod
    def INPUT_TYPES(cls):  # noqa: N802
        return {"required": {"value": ("*",), "block": ("BOOLEAN", {"default": False}),
                             "message": ("STRING", {"default": ""})},
                "hidden": {"unique_id": "UNIQUE_ID"}}

    def go(self, value, block, message, unique_id):
        _called(unique_id)
        return (ExecutionBlocker(message or None) if block else value,)


class CSleep:
    RETURN_TYPES = ("*",)
    FUNCTION = "go"

    @classmethod
    def INPUT_TYPES(cls):  # noqa: N802
        return {"required": {"value": ("*",), "seconds": ("FLOAT", {"default": 0.3})},
                "hidden": {"unique_id": "UNIQUE_ID"}}

    async def go(self, value, seconds, unique_id):
        _called(unique_id)
        start = time.perf_counter()
        await asyncio.sleep(seconds)
        current = current_context()
        assert current is not None and current.node_id == unique_id
        SLEEPS.append((unique_id, start, time.perf_counter()))
        return (value,)


class CBounded:
    RETURN_TYPES = ("INT",)
    FUNCTION = "go"

    @classmethod
    def INPUT_TYPES(cls):  # noqa: N802
        return {"required": {"value": ("INT", {"default": 0, "min": 0, "max": 10})},
                "hidden": {"unique_id": "UNIQUE_ID"}}

    @classmethod
    def VALIDATE_INPUTS(cls, value):  # noqa: N802
        return True if value != 13 else "13 is unlucky"

    def go(self, value, unique_id):
        _called(unique_id)
        return (value,)


NATIVE = {"Const": "NConst", "Add": "NAdd", "Switch": "NSwitch", "Show": "NShow", "MakeList": "NMakeList",
          "Sum": "NSum", "Countdown": "NCountdown", "Block": "NBlock", "Sleep": "NSleep", "Bounded": "NBounded",
          "Eq": "NEq"}
CLASSIC = {name: "C" + value[1:] for name, value in NATIVE.items()}
STYLES = {"native": NATIVE, "classic": CLASSIC}


def make_registry() -> NodeRegistry:
    registry = NodeRegistry()
    for cls in (NConst, NAdd, NSwitch, NShow, NMakeList, NSum, NCountdown, NBlock, NSleep, NBounded, NEq):
        registry.register(cls, pack="exec")
    for cls in (CConst, CAdd, CSwitch, CShow, CMakeList, CSum, CCountdown, CBlock, CSleep, CBounded, CEq):
        registry.register(cls, pack="exec")
    return registry
