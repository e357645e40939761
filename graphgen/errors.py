"""Errors a user can cause, in a structured form that prints as one readable line each."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class Issue:
    """One problem with a workflow, found before anything runs.

    Attributes:
        code: Machine-readable kind, e.g. `unknown_node_type`, `value_not_in_list`.
        message: What is wrong.
        node_id: The node it concerns (None for workflow-level problems).
        node_type: That node's type.
        input: The input it concerns.
        hint: How to fix it.
    """

    code: str
    message: str
    node_id: str | None = None
    node_type: str | None = None
    input: str | None = None
    hint: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def where(self) -> str:
        """`node 14 (KolorsSampler), input steps` or `workflow`."""
        parts = []
        if self.node_id is not None:
            parts.append(f"node {self.node_id}" + (f" ({self.node_type})" if self.node_type else ""))
        if self.input:
            parts.append(f"input {self.input!r}")
        return ", ".join(parts) or "workflow"

    def __str__(self) -> str:
        text = f"{self.where()}: {self.message}"
        return f"{text} (fix: {self.hint})" if self.hint else text


class WorkflowError(ValueError):
    """A workflow cannot run. `issues` holds every problem found, not just the first."""

    def __init__(self, issues: list[Issue]) -> None:
        self.issues = list(issues)
        first = str(self.issues[0]) if self.issues else "invalid workflow"
        more = f" (and {len(self.issues) - 1} more)" if len(self.issues) > 1 else ""
        super().__init__(first + more)

    def to_dict(self) -> dict[str, Any]:
        return {"error": "invalid_workflow", "issues": [i.to_dict() for i in self.issues]}


@dataclass
class NodeError:
    """A node that failed while running."""

    node_id: str
    node_type: str
    message: str
    error_type: str
    traceback: str = ""

    def __str__(self) -> str:
        return f"node {self.node_id} ({self.node_type}) failed: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
