"""The graph of one run: the validated workflow plus the nodes that running nodes add (expansion).

A node may return a graph to run in its place (`ExecutionOutcome.expand`: a dict in ComfyUI's
API format, or an object with `.finalize()` returning one, such as ComfyUI's `GraphBuilder`).
Its nodes join the run as "ephemeral" nodes: prepared here without the full validation (as
ComfyUI does, their inputs may hold any Python value the expanding node passed on), and they may
link to any node already in the run. Their ids must be new: builders prefix them with
`NodeContext.graph_prefix()`. A cycle among them is reported on the node that expanded.

`LiveGraph` also answers ComfyUI's `DYNPROMPT` hidden input (`get_node`, `get_real_node_id`...).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from graphgen.spec import NodeSpec
from graphgen.validation import PreparedNode, PreparedWorkflow

if TYPE_CHECKING:
    from graphgen.registry import NodeRegistry


class ExpansionError(Exception):
    """An expansion graph cannot run (unknown type, bad link, duplicate id, cycle)."""


def is_link(value: Any) -> bool:
    """ComfyUI's test for a link: `[node id (str), output index (int)]`."""
    return (isinstance(value, (list, tuple)) and len(value) == 2 and isinstance(value[0], str)
            and isinstance(value[1], int) and not isinstance(value[1], bool))


class LiveGraph:
    """The run's nodes: the prepared workflow's and the ephemeral ones expansions added."""

    def __init__(self, prepared: PreparedWorkflow, registry: NodeRegistry | None) -> None:
        self.prepared = prepared
        self.registry = registry
        self.extra: dict[str, PreparedNode] = {}
        self.nodes: dict[str, PreparedNode] = dict(prepared.nodes)
        """Every node of the run by id, the expanded ones included."""

    def node(self, node_id: str) -> PreparedNode:
        return self.nodes[node_id]

    # -- ComfyUI's DynamicPrompt interface (the DYNPROMPT hidden input) ---------------------------
    def has_node(self, node_id: str) -> bool:
        return node_id in self.extra or node_id in self.prepared.workflow.nodes

    def get_node(self, node_id: str) -> dict[str, Any]:
        """`{"class_type", "inputs"}` of a node, its links as `[id, output]`."""
        extra = self.extra.get(node_id)
        if extra is not None:
            return {"class_type": extra.spec.type_name, "inputs": dict(extra.raw_inputs or {})}
        entry = self.prepared.workflow.nodes.get(node_id)
        if entry is None:
            raise KeyError(f"node {node_id!r} is not in the run")
        return {"class_type": entry.class_type, "inputs": dict(entry.inputs)}

    def get_original_prompt(self) -> dict[str, Any]:
        return {node_id: {"class_type": e.class_type, "inputs": dict(e.inputs)}
                for node_id, e in self.prepared.workflow.nodes.items()}

    def get_parent_node_id(self, node_id: str) -> str | None:
        extra = self.extra.get(node_id)
        return extra.parent if extra is not None else None

    def get_real_node_id(self, node_id: str) -> str:
        """The workflow node an ephemeral node descends from (the node itself otherwise)."""
        while node_id in self.extra and self.extra[node_id].parent is not None:
            node_id = self.extra[node_id].parent  # type: ignore[assignment]
        return node_id

    def get_display_node_id(self, node_id: str) -> str:
        extra = self.extra.get(node_id)
        return (extra.display_id or node_id) if extra is not None else node_id

    def all_node_ids(self) -> set[str]:
        return set(self.prepared.workflow.nodes) | set(self.extra)

    # -- expansion ---------------------------------------------------------------------------------
    def expand(self, parent: PreparedNode, graph: Any) -> list[PreparedNode]:
        """Add an expansion graph's nodes; returns them, each after the nodes it links to."""
        if hasattr(graph, "finalize") and callable(graph.finalize):
            graph = graph.finalize()
        if not isinstance(graph, dict):
            raise ExpansionError(f"the expansion must be a graph dict or have .finalize(), got {type(graph).__name__}")
        if self.registry is None:
            raise ExpansionError("this engine has no node registry to expand graphs with")
        display = parent.display_id or parent.node_id
        new: dict[str, PreparedNode] = {}
        for raw_id, info in graph.items():
            node_id = str(raw_id)
            if self.has_node(node_id) or node_id in new:
                raise ExpansionError(f"the expansion adds node {node_id!r}, which already exists; build it with "
                                     "GraphBuilder (it gives ids unique to this node) or prefix the ids")
            if not isinstance(info, dict) or not isinstance(info.get("class_type"), str):
                raise ExpansionError(f"expanded node {node_id!r} needs a class_type")
            try:
                spec = self.registry.get(info["class_type"])
            except Exception:
                raise ExpansionError(f"expanded node {node_id!r} has unknown type {info['class_type']!r}") from None
            inputs = info.get("inputs") or {}
            new[node_id] = PreparedNode(node_id=node_id, spec=spec, constants={}, links={}, parent=parent.node_id,
                                        display_id=str(info.get("override_display_id") or display),
                                        raw_inputs=dict(inputs))
        for node in new.values():
            self._resolve_inputs(node, new)
        order = _dependency_order(new)
        self.extra.update(new)
        self.nodes.update(new)
        return [new[node_id] for node_id in order]

    def _resolve_inputs(self, node: PreparedNode, new: dict[str, PreparedNode]) -> None:
        spec: NodeSpec = node.spec
        for name, value in (node.raw_inputs or {}).items():
            declared = spec.inputs.get(name)
            if is_link(value):
                source_id, output = str(value[0]), value[1]
                source = new.get(source_id) or (self.node(source_id) if self.has_node(source_id) else None)
                if source is None:
                    raise ExpansionError(f"expanded node {node.node_id} ({spec.type_name}) input {name!r} links to "
                                         f"node {source_id!r}, which is not in the run")
                if source.spec.output_index(output) is None:
                    raise ExpansionError(f"expanded node {node.node_id} ({spec.type_name}) input {name!r} links to "
                                         f"output {output} of node {source_id} ({source.spec.type_name}), "
                                         "which has no such output")
                if declared is None and not spec.accepts_undeclared:
                    raise ExpansionError(f"expanded node {node.node_id} ({spec.type_name}) has no input {name!r}")
                node.links[name] = (source_id, output)
            elif declared is not None:
                if isinstance(value, dict) and len(value) == 1 and "__value__" in value:
                    value = value["__value__"]
                node.constants[name] = value
        for name, declared in spec.inputs.items():
            if name in node.constants or name in node.links or declared.hidden or declared.optional:
                continue
            if declared.has_default:
                node.constants[name] = declared.default
            else:
                raise ExpansionError(f"expanded node {node.node_id} ({spec.type_name}) misses required input {name!r}")


def _dependency_order(new: dict[str, PreparedNode]) -> list[str]:
    """The new nodes, each after the new nodes it links to; raises on a cycle among them."""
    order: list[str] = []
    state: dict[str, int] = {}  # 1: being visited, 2: done
    for start in new:
        if state.get(start) == 2:
            continue
        stack: list[tuple[str, bool]] = [(start, False)]
        while stack:
            node_id, leaving = stack.pop()
            if leaving:
                state[node_id] = 2
                order.append(node_id)
                continue
            if state.get(node_id) == 2:
                continue
            if state.get(node_id) == 1:
                continue
            state[node_id] = 1
            stack.append((node_id, True))
            for source, _ in new[node_id].links.values():
                if source not in new:
                    continue
                if state.get(source) == 1:
                    raise ExpansionError(f"the expansion makes a dependency cycle: nodes {source} and {node_id} "
                                         "depend on each other")
                if state.get(source) != 2:
                    stack.append((source, False))
    return order
