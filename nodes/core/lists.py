"""A base for nodes that take whole lists and return lists (ComfyUI's INPUT_IS_LIST / OUTPUT_IS_LIST).

Such a node is called once with every input as a list (constants too: `batch_size` arrives as
`[4]`) and returns, per output, a list whose items flow on as separate values (downstream nodes
run once per item). The engine's list mapping reads the `input_is_list` / `output_is_list` fields
of the node's spec; this base sets them.
"""

from __future__ import annotations

from typing import Any, ClassVar

from graphgen import Node
from graphgen.spec import NodeSpec


class ListNode(Node):
    """A graphgen node whose inputs arrive as lists and whose outputs are lists of items."""

    output_is_list: ClassVar[tuple[bool, ...]] = (True,)

    @classmethod
    def spec(cls) -> NodeSpec:
        spec = super().spec()
        # Engines without list mapping have no such fields; the node then sees single values
        # (its run() accepts both) and its list output is passed on as one value.
        if hasattr(spec, "input_is_list"):
            spec.input_is_list = True
            spec.output_is_list = tuple(cls.output_is_list)
        return spec


def as_list(value: Any) -> list[Any]:
    """The items of a list input (a single value, from an engine without list mapping, is one item)."""
    return list(value) if isinstance(value, list) else [value]
