"""Typed events a run emits to its `on_event` callback (and `graphgen run --json` prints)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar


@dataclass
class Event:
    """Base class; `kind` names the event in its JSON form."""

    kind: ClassVar[str] = "event"
    run_id: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form: `{"event": kind, ...fields}`."""
        out: dict[str, Any] = {"event": self.kind}
        for f in dataclasses.fields(self):
            out[f.name] = getattr(self, f.name)
        return out


@dataclass
class RunStarted(Event):
    kind: ClassVar[str] = "run_started"
    nodes: list[str] = field(default_factory=list)
    """Ids of the nodes this run needs, in execution order."""
    node_types: dict[str, str] = field(default_factory=dict)


@dataclass
class NodeStarted(Event):
    kind: ClassVar[str] = "node_started"
    node_id: str = ""
    node_type: str = ""
    display_node_id: str = ""
    """The id editors show (for a node an expansion added: the node that expanded)."""
    reason: str = ""
    """Why it runs instead of coming from the cache."""


@dataclass
class NodeCached(Event):
    kind: ClassVar[str] = "node_cached"
    node_id: str = ""
    node_type: str = ""
    ui: dict[str, Any] | None = None
    """The cached result's UI data (an output node's text or files), shown as on its first run."""


@dataclass
class NodeProgress(Event):
    kind: ClassVar[str] = "node_progress"
    node_id: str = ""
    value: int = 0
    total: int | None = None
    message: str = ""


@dataclass
class _NodeNote(Event):
    """A line of text about a node's work (the fields warnings and infos share)."""

    node_id: str = ""
    node_type: str = ""
    message: str = ""


@dataclass
class NodeWarning(_NodeNote):
    """Something the user should know that did not stop the node (`ctx.warn`)."""

    kind: ClassVar[str] = "node_warning"


@dataclass
class NodeInfo(_NodeNote):
    """Something worth showing about a node's work that is not a problem (`ctx.info`), e.g. a report."""

    kind: ClassVar[str] = "node_info"


@dataclass
class NodeMessage(Event):
    """A message a node sends to whoever watches the run (`ctx.send`; ComfyUI's `send_sync`)."""

    kind: ClassVar[str] = "node_message"
    node_id: str = ""
    message: str = ""
    """The message's type (ComfyUI's `event` argument; named so that it does not clash with the
    JSON form's `"event": "node_message"`)."""
    data: Any = None


@dataclass
class NodePreview(Event):
    """An image a running node wants shown now (e.g. a training sample grid), before it finishes.

    `ui` has the shape of a node's UI data: `{"images": [{"path", "filename", "subfolder", "type"}]}`.
    """

    kind: ClassVar[str] = "node_preview"
    node_id: str = ""
    node_type: str = ""
    message: str = ""
    ui: dict[str, Any] | None = None


@dataclass
class NodeFinished(Event):
    kind: ClassVar[str] = "node_finished"
    node_id: str = ""
    node_type: str = ""
    seconds: float = 0.0
    ui: dict[str, Any] | None = None
    display_node_id: str = ""


@dataclass
class NodeFailed(Event):
    kind: ClassVar[str] = "node_failed"
    node_id: str = ""
    node_type: str = ""
    error: str = ""
    error_type: str = ""
    display_node_id: str = ""


@dataclass
class NodeSkipped(Event):
    """A node did not run because a node it depends on failed (or the run was cancelled)."""

    kind: ClassVar[str] = "node_skipped"
    node_id: str = ""
    node_type: str = ""
    reason: str = ""


@dataclass
class RunFinished(Event):
    kind: ClassVar[str] = "run_finished"
    status: str = "success"
    """`success`, `failed` (some node failed) or `cancelled`."""
    executed: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0


def ignore_event(_: Event) -> None:
    """The listener of a run nobody listens to: the executor sees it and builds no events."""
    return None
