"""The plan: which nodes a run needs, in which order.

Only nodes that lead to an output node run. Ties in the topological order are broken by node id,
so that the same workflow always runs in the same order.
"""

from __future__ import annotations

from collections.abc import Iterable

import networkx as nx

from graphgen.validation import PreparedWorkflow


def needed_nodes(graph: nx.DiGraph, targets: Iterable[str]) -> set[str]:
    """The targets and every node they depend on."""
    needed: set[str] = set()
    stack = list(targets)
    pred = graph.pred
    while stack:
        node = stack.pop()
        if node in needed:
            continue
        needed.add(node)
        stack.extend(p for p in pred[node] if p not in needed)
    return needed


def execution_order(prepared: PreparedWorkflow, targets: Iterable[str] | None = None) -> list[str]:
    """Nodes to run, dependencies first.

    Args:
        prepared: A validated workflow.
        targets: Output nodes to produce; all output nodes when None.
    """
    key = None if targets is None else tuple(sorted(targets))
    cached = prepared.orders.get(key)
    if cached is not None:
        return cached
    order = _compute_order(prepared, targets)
    prepared.orders[key] = order
    return order


def execution_ranks(prepared: PreparedWorkflow, targets: Iterable[str] | None = None) -> dict[str, tuple[int, ...]]:
    """Each node of `execution_order(prepared, targets)` by its rank, `(position,)`; computed once
    per target set and shared (a run copies it, then ranks the nodes it adds after these)."""
    key = None if targets is None else tuple(sorted(targets))
    ranks = prepared.ranks.get(key)
    if ranks is None:
        ranks = {node_id: (i,) for i, node_id in enumerate(execution_order(prepared, targets))}
        prepared.ranks[key] = ranks
    return ranks


def _compute_order(prepared: PreparedWorkflow, targets: Iterable[str] | None) -> list[str]:
    wanted = needed_nodes(prepared.graph, prepared.output_nodes if targets is None else targets)
    # Sorting the whole graph and filtering is much cheaper than sorting a subgraph view.
    order = nx.lexicographical_topological_sort(prepared.graph, key=_sort_key)
    if len(wanted) == prepared.graph.number_of_nodes():
        return list(order)
    return [node for node in order if node in wanted]


def _sort_key(node_id: str) -> str:
    # Numeric ids sort numerically ("2" before "10"), as users number ComfyUI nodes.
    return node_id.zfill(12) if node_id.isdigit() else "~" + node_id
