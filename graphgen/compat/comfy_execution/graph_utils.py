"""`comfy_execution.graph_utils`: building the graphs that nodes expand into.

A node that expands returns `{"result": (...), "expand": graph.finalize()}`; `result` may hold links
(`[node_id, output_index]`) into the expanded graph. Node ids get a prefix so that graphs built by
different nodes (or by the same node in another run of a loop) never collide: by default the prefix
is derived from the node that is running (`<node id>.<call>.<graph>.`), as ComfyUI does.
"""

from __future__ import annotations

import itertools
import threading
from typing import Any

from graphgen.compat import _runtime


def is_link(obj: Any) -> bool:
    """Whether `obj` is a link: `[node_id (str), output_index (int)]`."""
    return (isinstance(obj, list) and len(obj) == 2 and isinstance(obj[0], str)
            and isinstance(obj[1], int) and not isinstance(obj[1], bool))


class Node:
    """One node of a graph being built; `out(i)` is a link to its i-th output."""

    def __init__(self, id: str, class_type: str, inputs: dict[str, Any]) -> None:
        self.id = id
        self.class_type = class_type
        self.inputs = inputs
        self.override_display_id: str | None = None

    def out(self, index: int) -> list[Any]:
        return [self.id, index]

    def set_input(self, key: str, value: Any) -> None:
        """Set an input; None removes it."""
        if value is None:
            self.inputs.pop(key, None)
        else:
            self.inputs[key] = value

    def get_input(self, key: str) -> Any:
        return self.inputs.get(key)

    def set_override_display_id(self, override_display_id: str) -> None:
        """Report progress and results of this node under another node's id (the loop's, say)."""
        self.override_display_id = override_display_id

    def serialize(self) -> dict[str, Any]:
        out: dict[str, Any] = {"class_type": self.class_type, "inputs": self.inputs}
        if self.override_display_id is not None:
            out["override_display_id"] = self.override_display_id
        return out


class GraphBuilder:
    """Builds an API-format graph: `node(class_type, id=None, **inputs)`, then `finalize()`."""

    # A prefix set by the engine around a node's execution (ComfyUI's hook); a builder made without
    # an explicit prefix takes `<root>.<call index>.<n>.`, n counting builders since it was set.
    _prefix_lock = threading.Lock()
    _default_prefix_root = ""
    _default_prefix_call_index = 0
    _default_prefix_graph_index = 0

    def __init__(self, prefix: str | None = None) -> None:
        self.prefix = self.alloc_prefix() if prefix is None else prefix
        self.nodes: dict[str, Node] = {}
        self._ids = itertools.count(1)

    @classmethod
    def set_default_prefix(cls, prefix_root: str, call_index: int, graph_index: int = 0) -> None:
        with cls._prefix_lock:
            cls._default_prefix_root = prefix_root
            cls._default_prefix_call_index = call_index
            cls._default_prefix_graph_index = graph_index

    @classmethod
    def alloc_prefix(cls, root: str | None = None, call_index: int | None = None,
                     graph_index: int | None = None) -> str:
        """A fresh prefix. Inside a running node it is unique to that node's call (and the same on
        every run, so that expanded nodes are cached like any other)."""
        ctx = _runtime.context()
        if root is None and call_index is None and graph_index is None and ctx is not None:
            return str(ctx.graph_prefix())
        with cls._prefix_lock:
            if root is None:
                root = cls._default_prefix_root
            if call_index is None:
                call_index = cls._default_prefix_call_index
            if graph_index is None:
                graph_index = cls._default_prefix_graph_index
                cls._default_prefix_graph_index += 1
        return f"{root}.{call_index}.{graph_index}."

    def node(self, class_type: str, id: str | None = None, **kwargs: Any) -> Node:
        """Add (or, for an id already present, return) a node; inputs are keyword arguments."""
        node_id = str(next(self._ids)) if id is None else str(id)
        node_id = self.prefix + node_id
        existing = self.nodes.get(node_id)
        if existing is not None:
            return existing
        node = Node(node_id, class_type, dict(kwargs))
        self.nodes[node_id] = node
        return node

    def lookup_node(self, id: str) -> Node | None:
        return self.nodes.get(self.prefix + str(id))

    def remove_node(self, id: str) -> None:
        self.nodes.pop(self.prefix + str(id), None)

    def replace_node_output(self, node_id: str, index: int, new_value: Any) -> None:
        """Every input linked to output `index` of `node_id` takes `new_value` (None removes it)."""
        full_id = self.prefix + str(node_id)
        for node in self.nodes.values():
            for key, value in list(node.inputs.items()):
                if is_link(value) and value[0] == full_id and value[1] == index:
                    node.set_input(key, new_value)

    def finalize(self) -> dict[str, Any]:
        """The graph in ComfyUI's API format."""
        return {node_id: node.serialize() for node_id, node in self.nodes.items()}


def add_graph_prefix(graph: dict[str, Any], outputs: list[Any], prefix: str) -> tuple[dict[str, Any], list[Any]]:
    """`graph` with every node id (and every link inside it and in `outputs`) prefixed."""
    def fix(value: Any) -> Any:
        return [prefix + value[0], value[1]] if is_link(value) and value[0] in graph else value

    renamed = {prefix + node_id: {**node, "inputs": {k: fix(v) for k, v in node.get("inputs", {}).items()}}
               for node_id, node in graph.items()}
    return renamed, [fix(value) for value in outputs]
