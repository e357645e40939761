"""`RunResult`: what a run did (outputs, UI data, which nodes ran or came from the cache and why)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from graphgen.errors import NodeError


@dataclass
class RunResult:
    """What a run did.

    Attributes:
        run_id: Unique id of the run.
        status: `success`, `failed` (a node failed) or `cancelled`.
        outputs: Output values of every node that executed or came from the cache, by node id
            and output name (a list where a node produced several items: list mapping).
        ui: What output nodes reported (saved files...), by node id.
        executed: Nodes that ran, in the order they finished.
        cached: Nodes served from the cache.
        failed: Errors of the nodes that failed.
        skipped: Nodes that did not run because something they depend on failed, with the reason.
        timings: Seconds each executed node took.
        warnings: Warnings nodes reported, by node id.
        node_types: The type of each node the run needed (nodes added by expansion included).
        reasons: Why each executed node ran instead of coming from the cache.
        seconds: Wall time of the whole run.
    """

    run_id: str
    status: str = "success"
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    ui: dict[str, dict[str, Any]] = field(default_factory=dict)
    executed: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    failed: dict[str, NodeError] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    warnings: dict[str, list[str]] = field(default_factory=dict)
    node_types: dict[str, str] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "success"

    def output(self, node_id: str, name: str | int = 0) -> Any:
        """One output value of a node, by output name or index."""
        values = self.outputs[node_id]
        if isinstance(name, int):
            return list(values.values())[name]
        return values[name]
